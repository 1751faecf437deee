"""Answers that are always well formed (issue 19, item 3): the answer grammar, its token tables,
its logits processor, and generation under it on tiny random-weight models; unreadable ``<OD>``
output is shown and counted as unreadable, never as a pass."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

from dataset_tools.builders import BuildConfig, build_dataset
from qeu_space.modeling import answer_grammar as ag
from qeu_space.modeling.families import chat_vlm, florence2
from qeu_space.modeling.loading import load_model
from qeu_space.modeling.local_tokenizer import (
    corpus_texts,
    florence2_tokenizer,
    idefics3_tokenizer,
)
from qeu_space.modeling.tiny_models import make_tiny_florence2, make_tiny_idefics3
from qeu_space.ui.reading import canonical_findings
from qeu_space.vocabulary import (
    ALL_POSITIONS,
    DefectKind,
    Direction,
    Finding,
    format_answer,
    format_bbox_str,
    parse_answer,
)

GRAMMAR = ag.AnswerGrammar()

finding_lists = st.lists(
    st.tuples(
        st.sampled_from(ALL_POSITIONS),
        st.sampled_from(list(DefectKind)),
        st.sampled_from([None, *Direction]),
    ),
    max_size=len(ALL_POSITIONS),
    unique_by=lambda t: t[0],
).map(lambda items: [Finding(p, k, d if k.has_direction else None) for p, k, d in items])


@settings(max_examples=300, deadline=None)
@given(finding_lists)
def test_every_canonical_answer_is_accepted_and_every_prefix_continues(findings) -> None:
    text = format_answer(findings)
    assert GRAMMAR.accepts(text) and GRAMMAR.accepts(" " + text)
    for cut in range(len(text)):
        state = GRAMMAR.walk(text[:cut])
        assert state is not None and not GRAMMAR.complete(state)
        # no dead ends: the shortest completion of any prefix is a whole answer
        assert GRAMMAR.accepts(text[:cut] + GRAMMAR.completion(state))


@settings(max_examples=200, deadline=None)
@given(st.integers(0, 2**32 - 1))
def test_every_accepted_answer_is_canonical(seed: int) -> None:
    """A random walk through the automaton always ends in an answer the vocabulary writes."""
    rng = random.Random(seed)
    state, text = GRAMMAR.initial, ""
    while not GRAMMAR.complete(state):
        char = rng.choice(sorted(GRAMMAR.next_chars(state)))
        state, text = GRAMMAR.step(state, char), text + char
    findings = canonical_findings(text)
    assert findings is not None, text
    assert format_answer(findings) == text.strip()
    assert parse_answer(text).findings == findings


@pytest.mark.parametrize(
    "text",
    [
        "Defective. 3 U U U U1 U2 U U U U U89333333333 U122222 bent U43",
        "Passed. No defects found found1 defect: D7 missing pin.",
        "Passed. No defects found. ",
        "passed. no defects found.",
        "Defective. 2 defects: U3 missing pin; U3 bent pin (left).",  # a position twice
        "Defective. 2 defects: C7 missing pin; U3 bent pin (left).",  # not in canonical order
        "Defective. 3 defects: U3 missing pin; C7 missing pin.",  # N is not the number listed
        "Defective. 1 defects: U3 missing pin.",  # plural for one
        "Defective. 2 defect: U3 missing pin; C7 missing pin.",  # singular for two
        "Defective. 1 defect: U3 missing pin (left).",  # a direction on a missing pin
        "Defective. 1 defect: U3 short pin (up).",
        "Defective. 1 defect: U3 bent pin (sideways).",
        "Defective. 1 defect: Z3 missing pin.",
        "Defective. 1 defect: U0 missing pin.",
        "Defective. 1 defect: U3 exploded pin.",
        "Defective. 0 defects: .",
        "Defective. 28 defects: U1 missing pin.",
        "Defective. 1 defect: U3 missing pin",  # unfinished
        "Defective. 1 defect: U3 missing pin.Passed.",
        "  Passed. No defects found.",
    ],
)
def test_malformed_answers_are_rejected(text: str) -> None:
    assert not GRAMMAR.accepts(text)


def test_a_count_is_offered_only_where_that_many_findings_fit_in_order() -> None:
    last = GRAMMAR.walk("Defective. 27 defects: U1 missing pin; U2 missing pin; ")
    assert set(GRAMMAR.next_chars(last)) == {"U"}  # U3 must come next: 25 still to place
    assert GRAMMAR.walk("Defective. 2 defects: D9 ") is None  # nothing may follow D9


def test_kinds_can_be_restricted() -> None:
    two = ag.AnswerGrammar(["bent pin", "missing pin"])
    assert two.accepts("Defective. 1 defect: U3 bent pin (up).")
    assert not two.accepts("Defective. 1 defect: U3 short pin.")


# --------------------------------------------------------------------------- token tables


def _metaspace_tokenizer() -> PreTrainedTokenizerFast:
    """A SentencePiece-style tokenizer (``▁`` marks a space), as Llama's and many VLMs' are."""
    backend = Tokenizer(models.BPE(unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Metaspace()
    backend.decoder = decoders.Metaspace()
    trainer = trainers.BpeTrainer(
        vocab_size=500, special_tokens=["<s>", "</s>", "<pad>", "<unk>"], show_progress=False
    )
    backend.train_from_iterator(corpus_texts() * 3, trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        bos_token="<s>",
        eos_token="</s>",
        pad_token="<pad>",
        unk_token="<unk>",
    )


TOKENIZERS = {
    "byte-level (Ġ)": idefics3_tokenizer,
    "florence2 (Ġ, loc atoms)": florence2_tokenizer,
    "metaspace (▁)": _metaspace_tokenizer,
}


@pytest.fixture(scope="module", params=sorted(TOKENIZERS))
def tokenizer(request) -> PreTrainedTokenizerFast:
    return TOKENIZERS[request.param]()


@pytest.mark.parametrize(
    "findings",
    [
        [],
        [Finding("C7", "missing pin")],
        [Finding("U3", "bent pin", "left"), Finding("C7", "missing pin")],
        [Finding("D9", "short pin"), Finding("U1", "bent pin"), Finding("C4", "bent pin", "down")],
    ],
)
def test_the_tokenizers_own_tokens_of_an_answer_are_allowed(tokenizer, findings) -> None:
    """Each token of the tokenizer's own encoding (``Ġ``/``▁`` pieces, tokens spanning several
    symbols) is allowed where it comes, and the answer then ends with end-of-sequence only."""
    constraint = ag.answer_constraint(tokenizer)
    assert ag.answer_constraint(tokenizer) is constraint  # built once per tokenizer
    eos = tokenizer.eos_token_id
    processor = ag.GrammarLogitsProcessor(constraint, [eos], tokenizer.pad_token_id)
    prompt = [tokenizer.pad_token_id] * 3
    text = " " + format_answer(findings)
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    assert tokenizer.decode(ids).strip() == text.strip()
    for n in range(len(ids) + 1):
        scores = processor(torch.tensor([prompt + ids[:n]]), torch.zeros(1, len(tokenizer)))
        allowed = set(torch.nonzero(scores[0] == 0).flatten().tolist())
        assert (ids + [eos])[n] in allowed
        if n == len(ids):
            assert allowed == {eos}
        else:
            assert eos not in allowed


@pytest.mark.parametrize("budget", [8, 12, 20, 40, 64])
@pytest.mark.parametrize("seed", range(6))
def test_random_logits_under_the_grammar_end_in_a_canonical_answer_in_time(
    tokenizer, budget: int, seed: int
) -> None:
    """A stand-in model with random logits (a batch of 3, greedy): every row ends in time with
    a canonical answer (the budget keeps a long count from being started)."""
    generator = torch.Generator().manual_seed(seed)
    constraint = ag.answer_constraint(tokenizer)
    eos = tokenizer.eos_token_id
    processor = ag.GrammarLogitsProcessor(constraint, [eos], tokenizer.pad_token_id, budget)
    rows = torch.full((3, 2), tokenizer.pad_token_id)
    done = torch.zeros(3, dtype=torch.bool)
    for _ in range(budget):
        scores = torch.randn(3, len(tokenizer) + 7, generator=generator) * 5  # padded lm head
        token = processor(rows, scores).argmax(-1)
        token = torch.where(done, torch.full_like(token, tokenizer.pad_token_id), token)
        done |= token == eos
        rows = torch.cat([rows, token[:, None]], dim=1)
    for row in rows[:, 2:].tolist():
        text = tokenizer.decode([t for t in row if t != eos], skip_special_tokens=True)
        assert GRAMMAR.accepts(text), (budget, text)


# --------------------------------------------------------------------------- tiny models


@pytest.fixture(scope="module")
def composites() -> list[Image.Image]:
    rows = build_dataset(BuildConfig("qa", num=2, seed=3, size=224))["train"]
    return [image.convert("RGB") for image in rows["image"]]


def test_a_random_chat_vlm_answers_canonically_only_under_the_grammar(
    tmp_path: Path, composites
) -> None:
    torch.set_num_threads(1)
    free, constrained = [], []
    for seed in range(8):
        loaded = load_model(make_tiny_idefics3(tmp_path / f"vlm{seed}", seed=seed), device="cpu")
        free += chat_vlm.generate(loaded, composites, max_new_tokens=40, grammar=False)
        constrained += chat_vlm.generate(loaded, composites, max_new_tokens=40)
    assert all(GRAMMAR.accepts(t) and canonical_findings(t) is not None for t in constrained), (
        constrained
    )
    assert not any(canonical_findings(t) is not None for t in free), free  # garbage without it


def test_a_random_florence2_writes_readable_boxes_only_under_the_grammar(
    tmp_path: Path, composites
) -> None:
    torch.set_num_threads(1)
    free, constrained = [], []
    for seed in (0, 3, 4, 5):
        loaded = load_model(make_tiny_florence2(tmp_path / f"od{seed}", seed=seed), device="cpu")
        free += florence2.generate(loaded, composites, max_new_tokens=40, grammar=False)
        constrained += florence2.generate(loaded, composites, max_new_tokens=40)
    assert all(florence2.readable(t) for t in constrained), constrained
    assert any(t for t in constrained)  # not only the empty output
    assert not any(t and florence2.readable(t) for t in free), free


def test_od_grammar_reads_every_bbox_str() -> None:
    tokenizer = florence2_tokenizer()
    constraint = ag.od_constraint(tokenizer)
    atoms = constraint.table.atoms
    grammar = constraint.grammar
    findings = [Finding("U3", "bent pin", "up", (10, 10, 20, 30)),
                Finding("D9", "short pin", None, (0, 0, 447, 447))]  # fmt: skip
    text = format_bbox_str(findings, (448, 448))
    as_atoms = text
    for n in range(1000):
        as_atoms = as_atoms.replace(f"<loc_{n}>", atoms[f"<loc_{n}>"])
    assert grammar.accepts(as_atoms) and grammar.accepts("") and grammar.accepts(atoms["<s>"])
    assert not grammar.accepts(text)  # locations spelt out in pieces are not location tokens
    assert not grammar.accepts("bent pin" + atoms["<loc_1>"] * 3)


# --------------------------------------------------------------------------- unreadable <OD>

GARBAGE = "bentbent pin<loc_0><loc_0><loc_85>missing bent pin<loc_23>"


@pytest.mark.parametrize(
    ("text", "ok"),
    [
        ("", True),
        ("bent pin<loc_1><loc_2><loc_3><loc_4>short pin<loc_5><loc_6><loc_7><loc_8>", True),
        ("<s>missing pin<loc_1><loc_2><loc_3><loc_4></s>", True),
        (GARBAGE, False),
        ("bent<loc_1><loc_2><loc_3><loc_4>", False),  # a keyword is not a category
        ("BENDNG<loc_1><loc_2><loc_3><loc_4>", False),
        ("bent pin <loc_1><loc_2><loc_3><loc_4>", False),
        ("bent pin<loc_1><loc_2><loc_3><loc_4>bent pin", False),
        ("bent pin<loc_1><loc_2><loc_3><loc_4><loc_5>", False),
        ("Passed. No defects found.", False),
    ],
)
def test_only_clean_box_sequences_are_readable(text: str, ok: bool) -> None:
    assert florence2.readable(text) is ok


def test_the_space_shows_od_garbage_as_unreadable_not_as_a_pass(
    tmp_path: Path, monkeypatch
) -> None:
    from types import SimpleNamespace

    from app import SyntheticSamples
    from qeu_space.ui import models as model_fns
    from qeu_space.ui.handlers import InspectionApp
    from qeu_space.ui.layout import open_feedback_store
    from qeu_space.ui.models import Models, ModelSlot
    from qeu_space.ui.settings import AppSettings

    said = {"text": GARBAGE}

    def detect(image, *, max_new_tokens, tuned=True):
        return model_fns.Answer(said["text"], tuple(florence2.parse(said["text"], image.size)))

    monkeypatch.setattr(model_fns, "detect_with_florence", detect)
    settings = AppSettings.from_env({"QEU_FEEDBACK_DB": str(tmp_path / "fb.sqlite3")})
    od = ModelSlot("Florence-2 OD", "scripted", loaded=SimpleNamespace(has_adapter=False))
    source = SyntheticSamples()
    case = source.gallery(1, 0)[0]
    app = InspectionApp(settings, Models(od=od), source, open_feedback_store(settings), [])
    view = app._od(case.composite, None)
    assert view.status == "unreadable" and view.findings == ()
    assert view.note.startswith("**unreadable `<OD>` output**")
    assert "Passed" not in view.note and "box(es)" not in view.note
    assert view.report()["status"] == "unreadable" and view.report()["findings"] == []

    said["text"] = ""  # the trained answer for a good product: no box at all
    view = app._od(case.composite, None)
    assert view.status == "ok" and "0 box(es); read on the grid: Passed" in view.note


def test_evaluation_counts_od_garbage_as_unreadable(tmp_path: Path, monkeypatch) -> None:
    from qeu_space.evaluation import evaluate as ev

    rows = build_dataset(BuildConfig("od", num=2, seed=4, size=224))["test"]
    loaded = load_model(make_tiny_florence2(tmp_path / "od"), device="cpu")
    monkeypatch.setattr(florence2, "generate", lambda loaded, images, **_: [GARBAGE] * len(images))
    report = ev.evaluate(loaded, rows, task="od", max_new_tokens=8, progress=False)
    run = report.runs[0]
    assert run.od.n_unreadable == len(rows) and run.od.unreadable_rate == 1.0


def test_evaluation_generates_under_the_grammar_unless_told_not_to(tmp_path: Path) -> None:
    from qeu_space.evaluate import build_parser
    from qeu_space.evaluation import evaluate as ev

    rows = build_dataset(BuildConfig("qa", num=2, seed=4, size=224))["test"]
    loaded = load_model(make_tiny_idefics3(tmp_path / "vlm", seed=1), device="cpu")
    runs = {
        grammar: ev.evaluate(
            loaded, rows, task="qa", max_new_tokens=40, progress=False, grammar=grammar
        )
        for grammar in (True, False)
    }
    assert all(canonical_findings(p.text) is not None for p in runs[True].runs[0].predictions)
    assert not any(canonical_findings(p.text) for p in runs[False].runs[0].predictions)
    assert runs[True].grammar and not runs[False].grammar
    assert "no grammar" in runs[False].to_markdown() and "grammar" not in runs[True].to_markdown()
    assert ev.EvalReport.from_dict(runs[False].to_dict()) == runs[False]
    args = ["--task", "qa", "--base", "b", "--dataset", "d", "--report", "r.json"]
    assert build_parser().parse_args(args).grammar
    assert not build_parser().parse_args([*args, "--no-grammar"]).grammar


@pytest.mark.parametrize(
    ("value", "on"), [(None, True), ("", True), ("1", True), ("on", True), ("0", False)]
)
def test_the_space_generates_under_the_grammar_unless_told_not_to(value, on) -> None:
    from qeu_space.ui.settings import AppSettings

    env = {} if value is None else {"QEU_ANSWER_GRAMMAR": value}
    assert AppSettings.from_env(env).answer_grammar is on
    with pytest.raises(ValueError, match="QEU_ANSWER_GRAMMAR must be"):
        AppSettings.from_env({"QEU_ANSWER_GRAMMAR": "maybe"})


def test_the_space_models_generate_with_the_setting(monkeypatch) -> None:
    import contextlib
    from types import SimpleNamespace

    from qeu_space.ui import models as model_fns

    seen: list[tuple[str, bool]] = []

    def recorder(name: str, text: str):
        def generate(loaded, images, **options):
            seen.append((name, options["grammar"]))
            return [text] * len(images)

        return generate

    monkeypatch.setattr(chat_vlm, "generate", recorder("vlm", "Passed. No defects found."))
    monkeypatch.setattr(florence2, "generate", recorder("od", ""))
    composite = Image.new("RGB", (448, 448))
    for grammar in (True, False):
        slots = {
            role: model_fns.ModelSlot(role, "scripted", loaded=SimpleNamespace(
                family=family, base_only=contextlib.nullcontext, has_adapter=False))
            for role, family in (("vlm", "chat_vlm"), ("od", "florence2"))
        }  # fmt: skip
        monkeypatch.setattr(model_fns, "MODELS", model_fns.Models(**slots, grammar=grammar))
        model_fns.answer_with_vlm(composite, adapter=None, max_new_tokens=9)
        model_fns.answers_with_vlm([composite], adapter=None, max_new_tokens=9)
        model_fns.detect_with_florence(composite, max_new_tokens=9)
    assert seen == [("vlm", True), ("vlm", True), ("od", True)] + [
        ("vlm", False),
        ("vlm", False),
        ("od", False),
    ]
