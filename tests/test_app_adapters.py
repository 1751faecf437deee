"""Several adapters in the Space (issue 13, item 3), in process on tiny random-weight models.

One chat VLM holds every adapter of ``QEU_ADAPTERS`` under its own PEFT name; each answer must be
exactly what a model loaded with that adapter alone answers (so switching never mixes them up,
even with calls in parallel), an unknown name is refused with the known ones, a damaged adapter
is left out without harming the others, and the "where they differ" view lists the samples on
which an adapter and the base disagree.
"""

from __future__ import annotations

import functools
import itertools
import re
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import torch
from PIL import Image

from qeu_space.modeling.devices import detect_device
from qeu_space.modeling.families import chat_vlm
from qeu_space.modeling.loading import load_model
from qeu_space.ui.differences import Differences
from qeu_space.ui.layout import open_feedback_store
from qeu_space.ui.models import load_models
from qeu_space.ui.records import ModelAnswer
from qeu_space.ui.settings import AppSettings
from qeu_space.vocabulary import DefectKind
from tests.browser.app_server import make_tiny_adapter
from tests.test_app_units import damaged_adapter

MAX_NEW_TOKENS = 6
NAMES = ("latched", "short-pin")


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module", autouse=True)
def unconstrained():
    """Plumbing tests: random adapters must answer apart in MAX_NEW_TOKENS tokens, and under the
    answer grammar 6 tokens leave every model "Passed. No defects found." only."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(chat_vlm, "generate", functools.partial(chat_vlm.generate, grammar=False))
        yield


@pytest.fixture(scope="module")
def source():
    from app import SyntheticSamples  # first: importing app.py loads its own models once

    return SyntheticSamples()


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory, source) -> dict[str, Path]:
    from qeu_space.modeling.loading import load_processor
    from qeu_space.modeling.tiny_models import make_tiny_idefics3
    from qeu_space.training.run import word_token_ids

    root = tmp_path_factory.mktemp("adapters")
    base = make_tiny_idefics3(root / "base")
    short = word_token_ids(load_processor(base), ("short",))  # as train --new-words short
    return {
        "base": base,
        "latched": make_tiny_adapter(base, root / "latched-lora"),
        "short-pin": make_tiny_adapter(
            base, root / "short-pin-lora", seed=2, f1=0.5, token_indices=short
        ),
    }


@pytest.fixture(scope="module")
def images(source) -> list[Image.Image]:
    return [case.composite for case in source.gallery(3, 0)]


@pytest.fixture(scope="module")
def alone(tiny, images) -> dict[str | None, list[str]]:
    """What each model answers loaded on its own: the base, and the base with one adapter."""
    out: dict[str | None, list[str]] = {}
    for name in (None, *NAMES):
        loaded = load_model(tiny["base"], tiny[name] if name else None, device="cpu")
        out[name] = chat_vlm.generate(loaded, images, max_new_tokens=MAX_NEW_TOKENS, batch_size=1)
    return out


def settings_for(tmp_path: Path, tiny, adapters: str) -> AppSettings:
    return AppSettings.from_env(
        {
            "QEU_BASE_MODEL": str(tiny["base"]),
            "QEU_ADAPTERS": adapters,
            "QEU_VIT_MODEL": "",
            "QEU_FEEDBACK_DB": str(tmp_path / "fb.sqlite3"),
            "QEU_MAX_NEW_TOKENS": str(MAX_NEW_TOKENS),
            "QEU_DIFF_SAMPLES": "4",
            "QEU_ANSWER_GRAMMAR": "0",  # see unconstrained()
        }
    )


def make_app(settings: AppSettings, source, samples: int = 4):
    from qeu_space.ui.handlers import InspectionApp

    models = load_models(settings, detect_device({"QEU_DEVICE": "cpu"}))
    cases = source.gallery(samples, 0)
    store = open_feedback_store(settings)
    return InspectionApp(settings, models, source, store, cases[:2], samples=cases)


@pytest.fixture(scope="module")
def two_loaded(tiny, source, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("two")
    adapters = f"latched={tiny['latched']},short-pin={tiny['short-pin']}"
    return make_app(settings_for(tmp, tiny, adapters), source)


@pytest.fixture
def two(two_loaded):
    """The app with both adapters (loaded once for the module's tests), its models the ones
    the model functions run (another test's app may have loaded others since)."""
    from qeu_space.ui.models import use_models

    use_models(two_loaded.models)
    return two_loaded


def test_two_adapters_answer_by_name_on_one_model(two, images, alone) -> None:
    vlm = two.models.vlm
    assert [a.name for a in vlm.adapters] == list(NAMES) and all(a.in_use for a in vlm.adapters)
    assert set(vlm.loaded.model.peft_config) == {"qeu_adapter_00", "qeu_adapter_01"}  # one model
    for name in ("", *NAMES, ""):  # "" is the default (the first); back to it after the second
        for image, base, tuned in zip(images, alone[None], alone[name or NAMES[0]], strict=True):
            done = two.inspect_image(image, None, adapter=name)
            assert done.report()["adapter"] == done.record.adapter == (name or NAMES[0])
            assert (done.record.base.text, done.record.tuned.text) == (base, tuned)
    assert alone["latched"] != alone["short-pin"]  # so the test can tell them apart


def test_an_adapter_with_trainable_tokens_first_still_loads_both(
    tiny, source, images, alone, tmp_path
) -> None:
    """The Space's default order names the short-pin adapter (trainable tokens) first; PEFT
    cannot add a plain LoRA after one, so the loader adds it last and the picker keeps the
    configured order. Each answers as it does alone; added by hand in the wrong order, the
    error says what to do."""
    from qeu_space.modeling.loading import AdapterMismatchError, add_adapter, has_trainable_tokens
    from qeu_space.ui.models import use_models

    assert has_trainable_tokens(tiny["short-pin"]) and not has_trainable_tokens(tiny["latched"])
    app = make_app(
        settings_for(tmp_path, tiny, f"short-pin={tiny['short-pin']},latched={tiny['latched']}"),
        source,
    )
    use_models(app.models)
    assert [a.name for a in app.models.vlm.adapters] == ["short-pin", "latched"]
    assert all(a.in_use for a in app.models.vlm.adapters), [
        a.reason for a in app.models.vlm.adapters
    ]
    for name in ("short-pin", "latched"):
        done = app.inspect_image(images[0], None, adapter=name)
        assert done.record.tuned.text == alone[name][0]
    first = add_adapter(load_model(tiny["base"], device="cpu"), tiny["short-pin"], "a")
    with pytest.raises(AdapterMismatchError, match="load adapters without trainable tokens"):
        add_adapter(first, tiny["latched"], "b")


def test_an_unknown_adapter_is_refused_with_the_known_names(two, images) -> None:
    import gradio as gr

    from qeu_space.ui.handlers import UnknownAdapter

    known = "this Space's adapters: latched, short-pin (an empty name means latched)"
    with pytest.raises(UnknownAdapter, match=re.escape(f"unknown adapter 'nope'; {known}")):
        two.inspect_image(images[0], None, adapter="nope")
    with pytest.raises(gr.Error, match="unknown adapter 'nope'"):
        two.ui_inspect(None, "", "nope")  # refused before the upload is even read
    assert two.adapter_choice("short-pin") == "short-pin"


def test_switching_adapters_is_safe_with_calls_in_parallel(two, images, alone) -> None:
    """Four threads ask for the base and both adapters in turn (QEU_MODEL_CONCURRENCY > 1):
    every answer is the one that model gives alone, because choosing the adapter and generating
    happen under one lock."""
    from qeu_space.ui import models as model_fns

    calls = list(itertools.product(range(len(images)), (None, *NAMES))) * 3

    def ask(call: tuple[int, str | None]) -> tuple[str, str]:
        i, name = call
        text = model_fns.answer_with_vlm(images[i], adapter=name, max_new_tokens=MAX_NEW_TOKENS)
        return text.text, alone[name][i]

    with ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(ask, calls))
    assert all(got == expected for got, expected in results)


@pytest.mark.parametrize(
    ("how", "reason"),
    [
        ("truncated", "adapter not used: Error while deserializing header"),
        ("garbage", "adapter not used: its weights hold NaN or infinite values"),
        ("misfit", "adapter not used: adapter "),  # ... does not fit base ...: size mismatch
    ],
)
def test_a_damaged_second_adapter_leaves_the_first_working(
    tiny, source, images, alone, tmp_path: Path, how: str, reason: str
) -> None:
    from qeu_space.ui.adapter_panel import adapters_markdown

    bad = (
        misfit_adapter(tiny["short-pin"], tmp_path / "bad-lora")
        if how == "misfit"
        else damaged_adapter(tiny["short-pin"], tmp_path / "bad-lora", how)
    )
    app = make_app(settings_for(tmp_path, tiny, f"latched={tiny['latched']},bad={bad}"), source)
    first, second = app.models.vlm.adapters
    assert first.in_use and second.reason.startswith(reason), second.reason
    assert set(app.models.vlm.loaded.model.peft_config) == {"qeu_adapter_00"}
    if how == "misfit":
        assert "does not fit base" in second.reason
    done = app.inspect_image(images[0], None, adapter="latched")
    assert (done.record.base.text, done.record.tuned.text) == (alone[None][0], alone["latched"][0])
    refused = app.inspect_image(images[0], None, adapter="bad")
    assert refused.record.tuned.status == "unavailable"
    assert refused.record.tuned.note.startswith(reason)
    assert refused.record.base.text == alone[None][0]
    panel = adapters_markdown(app.models.vlm)
    assert "**Adapter** `latched` (`latched-lora`)" in panel  # the first: its card's figures
    assert "| QEU connectors (qa) / test | findings F1 | 0.625 |" in panel
    assert f"**Adapter `bad` (`bad-lora`) is not in use**: {reason}" in panel
    assert str(tmp_path) not in panel
    view = app.difference_view("bad")
    assert isinstance(view, str) and view.startswith("Nothing to compare: " + reason)


def misfit_adapter(adapter: Path, out: Path) -> Path:
    """A copy of ``adapter`` whose LoRA tensors have rank 1 while its config says 2: the file
    reads, the weights are numbers, and it fits no module (PEFT fails half-way into loading)."""
    import shutil

    from safetensors.torch import load_file, save_file

    shutil.copytree(adapter, out)
    weights = out / "adapter_model.safetensors"
    tensors = load_file(weights)
    shrunk = {k: (v[:1] if "lora_A" in k else v[:, :1]).contiguous() for k, v in tensors.items()}
    save_file(shrunk, weights)
    return out


def test_the_models_tab_shows_every_adapter_with_its_card(two) -> None:
    from qeu_space.ui.adapter_panel import adapters_markdown, models_markdown

    panel = adapters_markdown(two.models.vlm)
    assert panel.index("`latched` (`latched-lora`)") < panel.index("`short-pin` (`short-pin-lora`)")
    assert "| findings F1 | 0.625 |" in panel and "| findings F1 | 0.5 |" in panel
    assert "is not in use" not in panel
    status = models_markdown(two.models)
    assert "adapter `latched` (`latched-lora`) in use" in status
    assert "adapter `short-pin` (`short-pin-lora`) in use" in status


def test_where_they_differ_lists_only_disagreements_with_the_truth(two) -> None:
    """On the real tiny models: every listed sample's answers differ, every other sample's
    agree, and each listed answer is the one Inspect gives for that sample."""
    view = two.difference_view("short-pin")
    assert view.samples == len(two.samples) == 4
    listed = {d.index for d in view.differences}
    for d in view.differences:
        done = two.inspect_image(d.case.composite, None, adapter="short-pin")
        assert (done.record.base.text, done.record.tuned.text) == (d.base.text, d.tuned.text)
        assert d.base.text != d.tuned.text
    assert listed  # random adapters: the answers differ somewhere
    markdown = view.markdown()
    assert f"disagree on **{len(listed)} of 4**" in markdown
    assert markdown.count("\n| ") == len(listed) + 1  # header + one row per sample
    assert two.differences.cached("short-pin") and not two.differences.cached("latched")


def scripted(script: dict[str | None, list[str]], calls: list):
    """An ``answer(images, adapter)`` giving the scripted texts in order, recording each call."""
    from qeu_space.ui.reading import canonical_findings

    given = {name: 0 for name in script}

    def answer(images, adapter):
        calls.append(adapter)
        texts = script[adapter][given[adapter] : given[adapter] + len(images)]
        given[adapter] += len(images)
        return [ModelAnswer.from_text(t, tuple(canonical_findings(t) or ()), "x") for t in texts]

    return answer


def test_differences_are_computed_once_per_adapter_and_escaped(source) -> None:
    cases = source.gallery(4, 0)
    both = "Defective. 2 defects: U3 bent pin (left); C7 missing pin."
    script = {
        None: ["Passed. No defects found.", "Defective. 1 defect: C4 missing pin.", "<b>x", both],
        "short-pin": [
            "Passed. No defects found.",
            "Defective. 1 defect: C4 short pin.",
            "<b>x",
            "Defective. 2 defects: C7 missing pin; U3 bent pin (left).",  # same findings
        ],
    }
    calls: list[str | None] = []
    differences = Differences(cases, scripted(script, calls))
    fractions: list[float] = []
    view = differences.view("short-pin", lambda f, d: fractions.append(f))
    assert [d.index for d in view.differences] == [1]
    assert fractions[-1] == 1.0 and fractions == sorted(fractions)
    again = differences.view("short-pin")
    assert again == view and calls == [None, "short-pin"]  # one chunk each, then kept
    markdown = view.markdown()
    assert "disagree on **1 of 4**" in markdown
    row = markdown.splitlines()[-1]
    assert row.startswith(f"| 2 | {cases[1].truth_text} | ✗ Defective. 1 defect: C4 missing")
    assert row.endswith("C4 short pin. |") and view.gallery()[0][1].startswith("#2 ")

    odd = {None: [""] * 4, "short-pin": ["<b>|odd\nanswer`*"] * 4}
    text = Differences(cases, scripted(odd, [])).view("short-pin").markdown()
    assert "<b>" not in text and "&lt;b&gt;&#124;odd answer&#96;&#42;" in text
    assert text.count("\n") == 3 + 4  # summary, blank, header, rule, then one line per sample


def test_the_gallery_shows_every_kind_unless_told(source) -> None:
    kinds = {f.kind for case in source.gallery(24, 0) for f in case.truth}
    assert DefectKind.SHORT in kinds and len(kinds) == 3
    plain = source.gallery(24, 0, kinds=(DefectKind.BENT, DefectKind.MISSING))
    assert all(f.kind is not DefectKind.SHORT for case in plain for f in case.truth)
    assert [len(c.truth) for c in plain] == [len(c.truth) for c in source.gallery(24, 0)]
