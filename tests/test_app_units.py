"""The Space's parts in process: settings, cases, drawing, feedback HTML, model slots, panels."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from qeu_space.geometry import CompositeLayout
from qeu_space.modeling.devices import detect_device
from qeu_space.ui.adapter_panel import (
    adapter_markdown,
    adapters_markdown,
    device_markdown,
    models_markdown,
)
from qeu_space.ui.cases import (
    normalise_composite,
    parse_defects,
    parse_truth,
    short_truth,
    split_composite,
)
from qeu_space.ui.comparison import compare, comparison_markdown, describe_comparison
from qeu_space.ui.drawing import COLOURS, DISPLAY_SCALE, mark_findings
from qeu_space.ui.feedback_view import feedback_table, toggle_finding
from qeu_space.ui.layout import launch_options, open_feedback_store
from qeu_space.ui.models import display_name, load_models, public_text
from qeu_space.ui.reading import ReadError
from qeu_space.ui.records import ModelAnswer
from qeu_space.ui.settings import DEFAULT_BASE, DEFAULT_OD, REPO_ROOT, AppSettings, NamedAdapter
from qeu_space.views.image_io import UploadError
from qeu_space.vocabulary import Finding
from tests.browser.app_server import make_tiny_adapter, make_tiny_vit


def test_settings_defaults_are_the_embedded_models() -> None:
    s = AppSettings.from_env({})
    assert s.base_model == str(REPO_ROOT / "models" / "inspection-vlm-base") == DEFAULT_BASE
    assert s.adapter == str(REPO_ROOT / "models" / "inspection-vlm-short-pin")
    assert s.adapters == (
        NamedAdapter("short-pin", s.adapter),
        NamedAdapter("latched", str(REPO_ROOT / "models" / "inspection-vlm-lora")),
    )
    assert s.adapter_names == ("short-pin", "latched")
    assert [k.value for k in s.gallery_kinds] == ["bent pin", "missing pin", "short pin"]
    assert s.diff_samples == 24
    assert s.vit_model == str(REPO_ROOT / "models" / "vit-inspector")
    assert s.od_model == str(REPO_ROOT / "models" / "inspection-od-base") == DEFAULT_OD
    assert s.od_adapter == str(REPO_ROOT / "models" / "inspection-od-lora")
    assert s.feedback_repo is None
    assert s.trust_remote_code is False
    assert (s.queue_size, s.model_concurrency, s.max_upload_bytes) == (16, 1, 10 * 2**20)
    assert (s.light_queue_size, s.inspections_kept, s.inspection_minutes) == (32, 256, 60.0)
    assert s.delete_cache == (360, 3600)  # files older than an hour, checked every 6 minutes


def test_settings_read_the_environment(tmp_path: Path) -> None:
    (tmp_path / "vit").mkdir()
    s = AppSettings.from_env(
        {
            "QEU_BASE_MODEL": "HuggingFaceTB/SmolVLM-256M-Instruct",
            "QEU_ADAPTER": "none",
            "QEU_VIT_MODEL": str(tmp_path / "vit"),
            "QEU_OD_MODEL": "",
            "QEU_TRUST_REMOTE_CODE": "1",
            "QEU_FEEDBACK_DB": str(tmp_path / "fb.sqlite3"),
            "QEU_FEEDBACK_REPO": "me/feedback",
            "QEU_QUEUE_SIZE": "4",
            "QEU_MAX_UPLOAD_MB": "2.5",
            "QEU_LIGHT_QUEUE_SIZE": "8",
            "QEU_INSPECTIONS_KEPT": "10",
            "QEU_INSPECTION_TTL": "5",
            "QEU_CACHE_MINUTES": "0.05",
        }
    )
    assert s.base_model == "HuggingFaceTB/SmolVLM-256M-Instruct"  # a Hub id is kept as given
    assert s.adapter is None and s.od_model is None
    assert s.vit_model == str((tmp_path / "vit").resolve())
    assert s.trust_remote_code and s.feedback_repo == "me/feedback"
    assert s.feedback_db == tmp_path / "fb.sqlite3"
    assert (s.queue_size, s.max_upload_bytes) == (4, int(2.5 * 2**20))
    assert (s.light_queue_size, s.inspections_kept, s.inspection_minutes) == (8, 10, 5.0)
    assert s.delete_cache == (1, 3)


LORA = str(REPO_ROOT / "models" / "inspection-vlm-lora")


@pytest.mark.parametrize(
    ("env", "adapters"),
    [
        ({"QEU_ADAPTERS": "none"}, ()),
        ({"QEU_ADAPTERS": ""}, ()),
        ({"QEU_ADAPTER": "none"}, ()),
        ({"QEU_ADAPTER": "me/my-lora"}, (("my-lora", "me/my-lora"),)),  # the alias, one adapter
        ({"QEU_ADAPTER": "fix=me/my-lora"}, (("fix", "me/my-lora"),)),
        (
            {"QEU_ADAPTERS": "latched=models/inspection-vlm-lora, short-pin=me/short-pin-lora"},
            (("latched", LORA), ("short-pin", "me/short-pin-lora")),
        ),
        ({"QEU_ADAPTERS": "me/a,me/b,"}, (("a", "me/a"), ("b", "me/b"))),
    ],
)
def test_adapters_are_read_from_qeu_adapters_or_its_alias(env: dict, adapters: tuple) -> None:
    s = AppSettings.from_env(env)
    assert tuple((a.name, a.source) for a in s.adapters) == adapters
    assert s.adapter == (adapters[0][1] if adapters else None)


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"QEU_ADAPTERS": "a=me/x,a=me/y"}, "QEU_ADAPTERS: the adapter name 'a' is used twice"),
        ({"QEU_ADAPTERS": "a b=me/x"}, "QEU_ADAPTERS: adapter name 'a b' must be 1-40"),
        ({"QEU_ADAPTERS": "a="}, "QEU_ADAPTERS: 'a=' names no adapter"),
        ({"QEU_ADAPTER": "me/x,me/y"}, "QEU_ADAPTER names one adapter; use QEU_ADAPTERS"),
        ({"QEU_ADAPTER": "me/x", "QEU_ADAPTERS": "me/y"}, "set QEU_ADAPTERS .* or QEU_ADAPTER"),
        ({"QEU_GALLERY_KINDS": "bent wobbly"}, "QEU_GALLERY_KINDS: unknown defect kind 'wobbly'"),
        ({"QEU_DIFF_SAMPLES": "1000"}, "QEU_DIFF_SAMPLES must be between 4 and 64"),
    ],
)
def test_bad_adapter_settings_name_the_variable(env: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        AppSettings.from_env(env)


@pytest.mark.parametrize(
    ("value", "on"), [("yes", True), ("On", True), ("no", False), ("0", False)]
)
def test_flags_read_every_spelling_the_error_names(value: str, on: bool) -> None:
    assert AppSettings.from_env({"QEU_TRUST_REMOTE_CODE": value}).trust_remote_code is on


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"QEU_QUEUE_SIZE": "many"}, "QEU_QUEUE_SIZE must be a number"),
        ({"QEU_QUEUE_SIZE": "0"}, "QEU_QUEUE_SIZE must be between 1 and"),
        ({"QEU_TRUST_REMOTE_CODE": "maybe"}, "QEU_TRUST_REMOTE_CODE must be 1/true"),
        ({"QEU_MAX_PIXELS": "10"}, "QEU_MAX_PIXELS must be between"),
        ({"QEU_LIGHT_QUEUE_SIZE": "0"}, "QEU_LIGHT_QUEUE_SIZE must be between"),
        ({"QEU_INSPECTION_TTL": "never"}, "QEU_INSPECTION_TTL must be a number"),
    ],
)
def test_bad_settings_name_the_variable(env: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        AppSettings.from_env(env)


def test_launch_options_follow_gradio_variables() -> None:
    s = AppSettings.from_env({"QEU_MAX_UPLOAD_MB": "3"})
    opts = launch_options(s, {"GRADIO_SERVER_PORT": "7999"})
    assert opts["server_port"] == 7999 and opts["server_name"] == "127.0.0.1"
    assert opts["share"] is False and opts["max_file_size"] == 3 * 2**20  # Gradio's toast: "3.0 Mb"
    assert launch_options(s, {})["server_port"] is None


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", ()),
        ("passed", ()),
        (
            "U3 bent pin (left); C7 missing pin",
            (Finding("U3", "bent pin", "left"), Finding("C7", "missing pin")),
        ),
        ("C4 short pin", (Finding("C4", "short pin"),)),  # the Generate tab places short pins
    ],
)
def test_parse_defects(text: str, expected: tuple) -> None:
    assert parse_defects(text) == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("some words", "'some words', which names no pin position"),
        ("U3 bent pin", "the bent pin at U3 in the defects list needs a direction"),
        ("C7 missing pin; Z9 missing pin", "unknown position 'Z9' in 'Z9 missing pin'"),
    ],
)
def test_parse_defects_errors(text: str, message: str) -> None:
    with pytest.raises(ReadError, match=message):
        parse_defects(text)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", None),
        ("  ", None),
        ("Passed. No defects found.", "Passed. No defects found."),
        ("passed", "Passed. No defects found."),
        ("OK", "Passed. No defects found."),
        ("Defective. 1 defect: C7 missing pin.", "Defective. 1 defect: C7 missing pin."),
        ("7c missing; u3 bent (left)", "Defective. 2 defects: U3 bent pin (left); C7 missing pin."),
        ("position C7 is missing", "Defective. 1 defect: C7 missing pin."),
        ("U-3 BENDNG left, D9 NUKENG", "Defective. 2 defects: U3 bent pin (left); D9 missing pin."),
        ("U3 bent pin", "Defective. 1 defect: U3 bent pin."),  # a truth may not know the way
        ("c4 short; 4D SHORTNG", "Defective. 2 defects: C4 short pin; D4 short pin."),
    ],
)
def test_truth_box_reads_every_finding(text: str, expected: str | None) -> None:
    from qeu_space.vocabulary import format_answer

    found = parse_truth(text)
    assert (None if found is None else format_answer(found)) == expected


#: Issue 11, item 6: each refused truth text, and the part its message must name.
REFUSED_TRUTHS = [
    ("Defective. 1 defect: Z9 exploded pin.", "unknown position 'Z9' in 'Z9 exploded pin'"),
    ("C7 missing pin; Z9 missing pin", "unknown position 'Z9' in 'Z9 missing pin'"),
    ("Defective. 1 defect: C7 exploded pin.", "has 'exploded pin' for C7 in 'C7 exploded pin'"),
    ("C10 missing pin", "unknown position 'C10'"),
    ("who knows", "'who knows', which names no pin position"),
    ("Defective. 2 defects: C7 missing pin.", "says 2 defects but lists 1"),
    ("Defective.", "says Defective but names no defect"),
    ("C7 missing pin (left)", "gives a missing pin a direction in 'C7 missing pin (left)'"),
    ("C4 short pin (up)", "gives a short pin a direction in 'C4 short pin (up)'"),
    ("C7 missing; c7 bent (up)", "names C7 twice"),
    ("Passed. 1 defect: D5 missing pin.", "starts with Passed and then says more"),
    ("C7", "has no defect kind for C7 in 'C7'"),
]


@pytest.mark.parametrize(("text", "message"), REFUSED_TRUTHS)
def test_each_refused_truth_names_the_wrong_part(text: str, message: str) -> None:
    with pytest.raises(ReadError) as err:
        parse_truth(text)
    assert message in str(err.value)
    assert str(err.value).startswith("the ground truth ")


@pytest.mark.parametrize(
    ("text", "findings"),
    [
        ("Passed. No defects found.", ()),
        ("  Defective. 1 defect: C7 missing pin.\n", ("C7",)),
        ("Defective. 2 defects: U3 bent pin (left); C7 missing pin.", ("U3", "C7")),
        ("Defective. 2 defects: C7 missing pin; U3 bent pin (left).", ("U3", "C7")),
        ("Defective. 2 defects: C4 short pin; U3 bent pin (left).", ("U3", "C4")),
        ("Defective. 1 defect: C4 short pin (up).", None),
        ("Passed. No defects found found found … 1 defect: D5 missing pin.", None),
        ("Defective. 1 defects: C7 missing pin.", None),
        ("Defective. 2 defects: C7 missing pin.", None),
        ("Defective. 2 defects: C7 missing pin; C7 missing pin.", None),
        ("Defective. 1 defect: C7 missing pin (left).", None),
        ("position C7 is missing", None),
        ("", None),
    ],
)
def test_only_canonical_answers_are_answers(text: str, findings: tuple | None) -> None:
    from qeu_space.ui.reading import canonical_findings

    got = canonical_findings(text)
    assert (None if got is None else tuple(str(f.position) for f in got)) == findings


@pytest.mark.parametrize(
    ("text", "status"),
    [
        ("Defective. 1 defect: C7 missing pin.", "ok"),
        ("Passed. No defects found found found … 1 defect: D5 missing pin.", "unreadable"),
        ("", "empty"),
        ("   \n", "empty"),
    ],
)
def test_model_answer_status(text: str, status: str) -> None:
    answer = ModelAnswer.from_text(text, (), "fine-tuned")
    assert answer.status == status
    assert answer.answered is (status != "empty")
    if status == "empty":
        assert "fine-tuned model gave an empty answer" in answer.note


def test_unreadable_answer_is_folded_and_escaped() -> None:
    from qeu_space.ui.panels import answer_markdown

    raw = "Passed. No defects found found <b>found</b>"
    text = answer_markdown(ModelAnswer.from_text(raw, (), "base"))
    assert text.startswith("**unreadable answer**")
    assert "<details><summary>raw output (" in text and "&lt;b&gt;found&lt;/b&gt;" in text
    assert "<b>" not in text


def test_gallery_captions_are_short_and_whole() -> None:
    findings = (Finding("U3", "bent pin", "left"), Finding("C7", "missing pin"))
    assert short_truth(findings) == "U3← C7✕"
    assert short_truth((Finding("C4", "short pin"),)) == "C4▾"
    assert short_truth(()) == "OK"


def test_composites_are_square_and_split_into_panels() -> None:
    layout = CompositeLayout(448)
    image = Image.new("RGB", (896, 900))
    assert normalise_composite(image).size == (448, 448)
    with pytest.raises(UploadError, match="a composite is square"):
        normalise_composite(Image.new("RGB", (448, 224)))
    arr = np.zeros((448, 448, 3), np.uint8)
    x1, y1, x2, y2 = layout.crop_box("test")
    arr[y1:y2, x1:x2] = 200
    reference, test = split_composite(Image.fromarray(arr))
    assert reference.size == test.size == (layout.connector.width, layout.connector.height)
    assert np.asarray(test).min() == 200 and np.asarray(reference).max() == 0


def test_compare_and_describe() -> None:
    truth = [Finding("U3", "bent pin", "left"), Finding("C7", "missing pin")]
    said = [Finding("U3", "bent pin", "right"), Finding("D1", "missing pin")]
    cmp = compare(truth, said)
    assert [str(f.position) for f in cmp.hits] == ["U3"]
    assert [str(f.position) for f in cmp.false_alarms] == ["D1"]
    assert [str(f.position) for f in cmp.missed] == ["C7"]
    assert [str(f.position) for f in cmp.wrong_direction] == ["U3"]
    assert describe_comparison(cmp) == (
        "1 right; false alarm: D1 missing pin; missed: C7 missing pin; "
        "wrong direction: U3 bent pin (right)"
    )
    assert compare(truth, truth).exact
    assert describe_comparison(compare([], [])) == "matches the truth (0 findings)"


def test_marks_are_drawn_at_the_pins_in_status_colours() -> None:
    composite = Image.new("RGB", (448, 448), (0, 0, 0))
    layout = CompositeLayout(448)
    truth = [Finding("C7", "missing pin")]
    said = [Finding("C7", "missing pin"), Finding("U1", "missing pin")]
    out = np.asarray(mark_findings(composite, said, truth))
    assert out.shape == (448 * DISPLAY_SCALE, 448 * DISPLAY_SCALE, 3)
    for position, colour in (("C7", "hit"), ("U1", "false alarm")):
        box = layout.to_composite(
            layout.connector.defect_box(
                Finding(position, "missing pin").position,
                Finding(position, "missing pin").kind,
                None,
            ),
            "test",
        )
        x = int(box[0] * DISPLAY_SCALE) + 1
        ys = slice(int(box[1] * DISPLAY_SCALE), int(box[3] * DISPLAY_SCALE))
        column = out[ys, x]
        assert (column == COLOURS[colour]).all(axis=1).any(), position
    plain = np.asarray(mark_findings(composite, said, None))
    assert (plain == COLOURS["found"]).all(axis=-1).any()


def test_toggle_finding_adds_then_removes() -> None:
    text = toggle_finding("", "C7", "missing pin", "left")
    assert text == "Defective. 1 defect: C7 missing pin."
    text = toggle_finding(text, "U3", "bent pin", "left")
    assert text == "Defective. 2 defects: U3 bent pin (left); C7 missing pin."
    assert (
        toggle_finding(text, "C7", "bent pin", "up") == "Defective. 1 defect: U3 bent pin (left)."
    )


def test_feedback_table_escapes_every_text(tmp_path: Path) -> None:
    from qeu_space.feedback import FeedbackEntry, FeedbackStore

    store = FeedbackStore(tmp_path / "fb.sqlite3")
    store.add(
        FeedbackEntry(
            Image.new("RGB", (96, 96)),
            "Passed.",
            "<script>alert('x')</script> Passed.",
            comment='<img src=x onerror="alert(1)">&',
        )
    )
    html = feedback_table(store.recent(), store.count())
    assert "<script>" not in html and "<img" not in html
    assert "&lt;img src=x onerror=&quot;alert(1)&quot;&gt;&amp;" in html
    assert "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt; Passed." in html
    assert feedback_table([], 0) == "<p>No feedback yet.</p>"


def test_comparison_markdown() -> None:
    truth = (Finding("C7", "missing pin"),)
    base = ModelAnswer.from_text("Passed. No defects found found", (), "base")
    tuned = ModelAnswer.from_text("Defective. 1 defect: C7 missing pin.", truth, "fine-tuned")
    text = comparison_markdown(base, tuned, truth)
    assert "**base**: unreadable answer — no verdict to compare" in text
    assert "**fine-tuned**: reads as *Defective. 1 defect: C7 missing pin.*" in text
    assert "matches the truth" in text
    assert "truth unknown" in comparison_markdown(base, None, None)


def test_missing_models_leave_readable_slots(tmp_path: Path) -> None:
    missing = str(tmp_path / "nowhere")
    settings = AppSettings.from_env(
        {"QEU_BASE_MODEL": missing, "QEU_VIT_MODEL": missing + "-vit", "QEU_OD_MODEL": missing}
    )
    models = load_models(settings, detect_device({"QEU_DEVICE": "cpu"}))
    assert not models.vlm.available and not models.vit.available and not models.od.available
    assert models.vlm.reason == "model not available: nowhere (see README)"  # a name, no path
    assert models.vit.status() == "ViT: model not available: nowhere-vit (see README)"
    text = models_markdown(models)
    assert "chat VLM: model not available" in text and str(tmp_path) not in text
    assert "Device" not in text and device_markdown(models).startswith("**Device**: CPU")


def test_visitors_see_names_not_server_paths(tmp_path: Path) -> None:
    assert display_name(str(REPO_ROOT / "models" / "vit-inspector")) == "models/vit-inspector"
    assert display_name(str(tmp_path / "my-lora")) == "my-lora"
    hub_id = "HuggingFaceTB/SmolVLM-256M-Instruct"
    assert display_name(hub_id) == hub_id
    line = f"cannot open {tmp_path}/base/config.json: see https://huggingface.co/docs/x"
    assert public_text(line) == "cannot open config.json: see https://huggingface.co/docs/x"


@pytest.fixture(scope="module")
def tiny_vlm(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    from qeu_space.modeling.tiny_models import make_tiny_idefics3

    root = tmp_path_factory.mktemp("tiny")
    base = make_tiny_idefics3(root / "base")
    return base, make_tiny_adapter(base, root / "lora")


def test_adapter_panel_shows_rank_modules_share_and_card_metrics(tiny_vlm) -> None:
    _, adapter = tiny_vlm
    text = adapter_markdown(str(adapter))
    assert "| rank / alpha | 2 / 4 |" in text
    assert "q_proj" in text and "v_proj" in text
    assert "of the base's" in text  # share of a locally counted base
    assert "| QEU connectors (qa) / test | findings F1 | 0.625 |" in text
    assert "not measured by this app" in text
    assert str(adapter.parent) not in text  # names, not server paths
    assert adapter_markdown(None).startswith("No adapter configured")
    assert "not available locally" in adapter_markdown("/no/such/adapter")


def test_missing_adapter_keeps_the_base(tiny_vlm, tmp_path: Path) -> None:
    base, _ = tiny_vlm
    settings = AppSettings.from_env(
        {"QEU_BASE_MODEL": str(base), "QEU_ADAPTER": str(tmp_path / "gone"), "QEU_VIT_MODEL": ""}
    )
    models = load_models(settings, detect_device({"QEU_DEVICE": "cpu"}))
    assert models.vlm.available and not models.vlm.has_adapter
    assert models.vlm.adapters[0].reason == "adapter model not available: gone (see README)"
    assert models.vit.status() == "ViT: not configured"


def test_vit_slot_refuses_remote_code(tmp_path: Path) -> None:
    import json

    vit = make_tiny_vit(tmp_path / "vit")
    config = json.loads((vit / "config.json").read_text())
    config["auto_map"] = {"AutoModelForImageClassification": "x.Y"}
    (vit / "config.json").write_text(json.dumps(config))
    settings = AppSettings.from_env({"QEU_BASE_MODEL": "", "QEU_VIT_MODEL": str(vit)})
    models = load_models(settings, detect_device({"QEU_DEVICE": "cpu"}))
    assert not models.vit.available
    assert "needs code from its repository" in models.vit.reason


def test_feedback_repo_without_token_stays_local(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))  # no cached login either
    monkeypatch.setattr("huggingface_hub.get_token", lambda: None)
    monkeypatch.setattr("qeu_space.hub.upload.get_token", lambda: None)
    settings = AppSettings.from_env(
        {"QEU_FEEDBACK_DB": str(tmp_path / "fb.sqlite3"), "QEU_FEEDBACK_REPO": "me/feedback"}
    )
    store = open_feedback_store(settings)
    assert store.mirror is None and store.path == tmp_path / "fb.sqlite3"


def test_device_is_cpu_here() -> None:
    info = detect_device({"QEU_DEVICE": "cpu"})
    assert (info.kind, info.torch_device) == ("cpu", "cpu")
    with pytest.raises(ValueError, match="QEU_DEVICE must be"):
        detect_device({"QEU_DEVICE": "tpu"})


# --------------------------------------------------------------------------- faults, records


def damaged_adapter(adapter: Path, out: Path, how: str) -> Path:
    """A copy of ``adapter`` whose weights file is cut in half or holds random bytes."""
    import shutil
    import struct

    shutil.copytree(adapter, out)
    weights = out / "adapter_model.safetensors"
    data = bytearray(weights.read_bytes())
    if how == "truncated":
        data = data[: len(data) // 2]
    else:  # garbage: the header stays valid, every tensor byte is random
        header = 8 + struct.unpack("<Q", data[:8])[0]
        rng = np.random.default_rng(0)
        data[header:] = rng.integers(0, 256, len(data) - header, dtype=np.uint8).tobytes()
    weights.write_bytes(bytes(data))
    return out


@pytest.mark.parametrize(
    ("how", "reason"),
    [
        ("truncated", "adapter not used: Error while deserializing header"),
        ("garbage", "adapter not used: its weights hold NaN or infinite values"),
    ],
)
def test_a_damaged_adapter_is_left_out_with_its_reason(
    tiny_vlm, tmp_path: Path, how: str, reason: str
) -> None:
    """Issue 11, item 3: the base still answers, the panels say why the adapter does not, and
    building the app (the Models & adapter panel) does not raise."""
    from qeu_space.ui.handlers import InspectionApp
    from qeu_space.ui.layout import build_demo
    from qeu_space.ui.panels import answer_markdown

    base, adapter = tiny_vlm
    bad = damaged_adapter(adapter, tmp_path / f"{how}-lora", how)
    settings = AppSettings.from_env(
        {
            "QEU_BASE_MODEL": str(base),
            "QEU_ADAPTER": str(bad),
            "QEU_VIT_MODEL": "",
            "QEU_FEEDBACK_DB": str(tmp_path / "fb.sqlite3"),
            "QEU_GALLERY_SIZE": "1",
            "QEU_MAX_NEW_TOKENS": "4",
        }
    )
    models = load_models(settings, detect_device({"QEU_DEVICE": "cpu"}))
    assert models.vlm.available and not models.vlm.has_adapter
    assert models.vlm.adapters[0].reason.startswith(reason)
    panel = adapters_markdown(models.vlm)
    assert panel.startswith(f"**Adapter `{how}-lora` (`{how}-lora`) is not in use**: {reason}")
    assert str(tmp_path) not in panel

    from app import SyntheticSamples

    source = SyntheticSamples()
    demo = build_demo(settings, source, models=models)  # the panel that crashed the app
    assert demo is not None
    app = InspectionApp(settings, models, source, open_feedback_store(settings), [])
    done = app.inspect_image(source.gallery(1, 0)[0].composite, None)
    assert done.record.tuned.status == "unavailable"
    assert answer_markdown(done.record.tuned).startswith(reason)
    assert done.record.base.status in ("ok", "unreadable", "empty")  # the base ran


@pytest.mark.parametrize("persisted", [False, True])
def test_inspection_log_tells_unknown_expired_and_dropped_ids_apart(
    persisted: bool, tmp_path: Path
) -> None:
    from qeu_space.ui.records import InspectionLog, InspectionRecord, UnknownInspection

    now = [1000.0]
    path = tmp_path / "inspections.sqlite3" if persisted else None
    log = InspectionLog(capacity=2, ttl=60, clock=lambda: now[0], path=path)
    image = Image.new("RGB", (448, 448), (9, 9, 9))
    answer = ModelAnswer.from_text("Passed. No defects found.", (), "base")

    def inspect() -> InspectionRecord:
        return log.add(
            InspectionRecord.new(
                image.copy(), truth=None, source="upload", base=answer, tuned=answer
            )
        )

    first, second = inspect(), inspect()
    assert len(first.id) >= 22 and first.id != second.id
    assert log.get(first.id) is first and first.image is second.image  # one copy of the pixels
    for bad, message in (("", "no inspection to judge"), ("forged-id", "unknown inspection id")):
        with pytest.raises(UnknownInspection, match=message):
            log.get(bad)
    with pytest.raises(UnknownInspection, match="this server never issued it"):
        log.get("forged-id")
    third = inspect()  # capacity 2: the first goes
    with pytest.raises(UnknownInspection, match="no longer kept: 2 newer inspections"):
        log.get(first.id)
    now[0] += 61.0
    with pytest.raises(UnknownInspection, match="has expired: it was answered 1 minutes ago"):
        log.get(third.id)
    with pytest.raises(UnknownInspection) as err:
        log.get(third.id)
    assert "unknown" not in str(err.value)
    assert len(log) == 0


def test_open_inspections_survive_a_restart(tmp_path: Path) -> None:
    """Issue 20, item 5: a record committed before a restart is judged after it, with its image,
    answers, truth and provenance; an id that expired meanwhile is told "expired"."""
    from qeu_space.ui.records import InspectionLog, InspectionRecord, UnknownInspection

    now = [5000.0]
    path = tmp_path / "inspections.sqlite3"
    before = InspectionLog(capacity=8, ttl=600, clock=lambda: now[0], path=path)
    image = Image.fromarray(np.random.default_rng(1).integers(0, 255, (448, 448, 3), np.uint8))
    base = ModelAnswer.from_text("Passed. No defects found.", (), "base")
    tuned = ModelAnswer.from_text(
        "Defective. 1 defect: C7 missing pin.", (Finding("C7", "missing pin"),), "fine-tuned"
    )
    truth = (Finding("C7", "missing pin", None, (1.0, 2.0, 3.0, 4.0)),)
    kept = before.add(
        InspectionRecord.new(
            image, truth=truth, source="generated seed 7", base=base, tuned=tuned,
            adapter="latched", truth_source="server", notes=("odd",),
        )
    )  # fmt: skip
    old = before.add(
        InspectionRecord.new(image, truth=None, source="upload", base=base, tuned=base)
    )
    before.close()  # the process ends (kill -9 keeps committed rows too: WAL)
    now[0] += 300
    after = InspectionLog(capacity=8, ttl=600, clock=lambda: now[0], path=path)
    back = after.get(kept.id)
    assert np.array_equal(np.asarray(back.image), np.asarray(image))
    assert (back.base, back.tuned, back.truth) == (kept.base, kept.tuned, kept.truth)
    assert back.truth[0].box == (1.0, 2.0, 3.0, 4.0) and back.notes == ("odd",)
    assert (back.source, back.adapter, back.truth_source) == (
        "generated seed 7",
        "latched",
        "server",
    )
    now[0] += 301
    with pytest.raises(UnknownInspection, match="has expired"):
        InspectionLog(capacity=8, ttl=600, clock=lambda: now[0], path=path).get(old.id)


@pytest.fixture
def scripted_app(tmp_path: Path, monkeypatch):
    """An InspectionApp whose chat VLM says what the test scripts (``answers[adapter]``: the
    base is ``None``; adapters ``latched`` and ``short-pin``)."""
    from types import SimpleNamespace

    from app import SyntheticSamples
    from qeu_space.ui import models as model_fns
    from qeu_space.ui.handlers import InspectionApp
    from qeu_space.ui.models import AdapterSlot, Models, ModelSlot

    answers = {
        None: "Passed. No defects found.",
        "latched": "Defective. 1 defect: C7 missing pin.",
        "short-pin": "Defective. 1 defect: C4 short pin.",
    }
    monkeypatch.setattr(
        model_fns,
        "answer_with_vlm",
        lambda image, *, adapter, max_new_tokens: model_fns.Answer(answers[adapter], ()),
    )
    slot = ModelSlot(
        "chat VLM",
        "scripted",
        loaded=SimpleNamespace(has_adapter=True),
        adapters=[
            AdapterSlot("latched", "scripted-lora", "qeu_adapter_00"),
            AdapterSlot("short-pin", "scripted-short-pin-lora", "qeu_adapter_01"),
        ],
    )
    settings = AppSettings.from_env(
        {
            "QEU_FEEDBACK_DB": str(tmp_path / "fb.sqlite3"),
            "QEU_ADAPTERS": "latched=scripted-lora,short-pin=scripted-short-pin-lora",
        }
    )
    source = SyntheticSamples()
    gallery = source.gallery(2, 0)
    app = InspectionApp(settings, Models(vlm=slot), source, open_feedback_store(settings), gallery)
    return app, answers


def test_feedback_stores_what_the_server_produced(scripted_app) -> None:
    import gradio as gr

    app, answers = scripted_app
    case = app.gallery[1]
    done = app.inspect_image(case.composite, None)  # truth from the server's own case
    assert done.source == case.source and done.truth == case.truth
    status = app.send_feedback(done.id, "fine-tuned", "wrong", case.truth_text, "not C7")
    assert status.startswith("Thank you: feedback #1 on inspection")
    row = app.store.recent(1)[0]
    assert (row.base_answer, row.tuned_answer) == (answers[None], answers["latched"])
    assert (row.adapter_name, row.adapter) == ("latched", "scripted-lora")  # the default
    assert row.corrected_answer == case.truth_text
    assert row.inspection_id == done.id and row.source == case.source
    assert row.truth == case.truth_text and row.truth_source == "server"
    stored = np.asarray(app.store.image(row.image_sha256))
    assert np.array_equal(stored, np.asarray(case.composite))

    answers["short-pin"] = case.truth_text
    picked = app.inspect_image(case.composite, None, adapter="short-pin")
    assert picked.record.adapter == "short-pin" and picked.report()["adapter"] == "short-pin"
    app.send_feedback(picked.id, "fine-tuned", "correct")
    row = app.store.recent(1)[0]
    assert row.tuned_answer == answers["short-pin"] and row.adapter_name == "short-pin"
    assert row.adapter == "scripted-short-pin-lora" and row.correct

    answers["latched"] = "Passed. No defects found found found"
    odd = app.inspect_image(app.gallery[0].composite, None)
    assert odd.record.tuned.status == "unreadable"
    refusals = [
        (("forged", "base", "correct"), "unknown inspection id 'forged'"),
        ((odd.id, "fine-tuned", "correct"), "answer is unreadable, so it cannot be correct"),
        ((odd.id, "fine-tuned", "wrong", "C7 exploded"), "has 'exploded' for C7"),
        ((odd.id, "fine-tuned", "wrong", ""), "a wrong answer needs the corrected answer"),
        ((odd.id, "base", "maybe"), "say whether the rated answer is correct or wrong"),
    ]
    for args, message in refusals:
        with pytest.raises(gr.Error, match=message):
            app.send_feedback(*args)
    assert app.store.count() == 2


def test_a_server_truth_is_kept_and_a_typed_one_is_a_claim(scripted_app) -> None:
    """Issue 21, item 1: a known sample keeps the server's truth; a typed truth that differs is
    refused naming the known one; a typed truth on an upload is stored as a user claim."""
    import gradio as gr

    from qeu_space.ui.handlers import TruthConflict

    app, _ = scripted_app
    case = app.gallery[1]
    typed = (Finding("D9", "missing pin"),)
    with pytest.raises(TruthConflict, match=f"truth .*'{re.escape(case.truth_text)}'"):
        app.inspect_image(case.composite, typed)
    assert len(app.inspections) == 0  # refused before anything ran
    same = app.inspect_image(case.composite, case.truth)
    assert same.report()["truth_source"] == "server"
    assert same.report()["truth"] == case.truth_text

    upload = Image.fromarray(np.asarray(case.composite)[::-1, ::-1].copy())  # not a known case
    claim = app.inspect_image(upload, typed)
    assert claim.report()["truth_source"] == "user" and claim.source == "upload"
    app.send_feedback(claim.id, "fine-tuned", "wrong", "C1 missing pin", "")  # a claim: open
    row = app.store.recent(1)[0]
    assert (row.truth, row.truth_source) == ("Defective. 1 defect: D9 missing pin.", "user")
    unknown = app.inspect_image(upload, None)
    app.send_feedback(unknown.id, "base", "correct")
    assert app.store.recent(1)[0].truth_source == "" and app.store.recent(1)[0].truth is None

    with pytest.raises(gr.Error, match="typed truth 'Defective. 1 defect: D9 missing pin.'"):
        app._inspect(case.composite, typed)


def test_corrections_contradicting_a_server_truth_are_refused(scripted_app) -> None:
    """Issue 21, item 2: on a sample the server knows, a correction or a "correct" judgement that
    contradicts its truth is refused with the reason, and nothing is stored."""
    import gradio as gr

    app, answers = scripted_app
    case = app.gallery[1]
    assert case.truth  # a defective sample
    done = app.inspect_image(case.composite, None)
    for args, message in [
        (("wrong", "D9 missing pin"), "contradicts this sample's truth, which the server knows"),
        (("wrong", "Passed"), "contradicts this sample's truth"),
        (("correct", ""), "differs from this sample's truth"),  # the base says Passed
    ]:
        with pytest.raises(gr.Error, match=message) as err:
            app.send_feedback(done.id, "base", *args)
        assert case.truth_text in str(err.value)
    assert app.store.count() == 0
    app.send_feedback(done.id, "base", "wrong", case.truth_text)
    assert app.store.count() == 1


def test_one_judgement_per_inspection_rated_answer_and_client(scripted_app) -> None:
    """Issue 21, item 2: a repeat replaces (history kept), the same one again is a no-op, another
    client or the other answer is a judgement of its own."""
    app, _ = scripted_app
    case = app.gallery[1]
    done = app.inspect_image(case.composite, None)
    truth = case.truth_text
    first = app.send_feedback(done.id, "base", "wrong", truth, "first", client="10.0.0.1")
    again = app.send_feedback(done.id, "base", "wrong", truth, "first", client="10.0.0.1")
    assert first.startswith("Thank you") and again.startswith("Unchanged")
    replaced = app.send_feedback(done.id, "base", "wrong", truth, "second", client="10.0.0.1")
    assert "replacing your earlier judgement" in replaced
    app.send_feedback(done.id, "base", "wrong", truth, "other", client="10.0.0.2")
    app.send_feedback(done.id, "fine-tuned", "wrong", truth, "tuned", client="10.0.0.1")
    rows = list(app.store.rows())
    assert sorted(r.comment for r in rows) == ["other", "second", "tuned"]
    assert len({(r.inspection_id, r.rated, r.client) for r in rows}) == 3
    assert all("10.0.0" not in r.client and len(r.client) == 20 for r in rows)  # hashed
    history = app.store.history()
    assert [h[0].comment for h in history] == ["first"]
    second = next(r for r in rows if r.comment == "second")
    assert history[0][2] == second.uid and second.replaces == history[0][0].uid


def test_feedback_is_rate_limited_per_client(scripted_app) -> None:
    import gradio as gr

    from qeu_space.ui.queues import RateLimit

    app, _ = scripted_app
    now = [0.0]
    app.rate_limit = RateLimit(3, clock=lambda: now[0])
    case = app.gallery[1]
    done = app.inspect_image(case.composite, None)
    for i in range(3):
        app.send_feedback(done.id, "base", "wrong", case.truth_text, f"#{i}", client="a")
    with pytest.raises(
        gr.Error, match=r"at most 3 a minute \(QEU_FEEDBACK_PER_MINUTE\); wait 60 s"
    ):
        app.send_feedback(done.id, "base", "wrong", case.truth_text, "#3", client="a")
    app.send_feedback(done.id, "base", "wrong", case.truth_text, "b", client="b")  # its own
    now[0] = 60.0
    app.send_feedback(done.id, "base", "wrong", case.truth_text, "#4", client="a")


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("comment", ["a", "list"], "the comment must be text, got a list"),
        ("corrected", {"x": 1}, "the corrected answer must be text, got dict"),
        ("rated", 3, "the rated answer must be text, got int"),
        ("inspection_id", ["id"], "the inspection id must be text, got a list"),
    ],
)
def test_mistyped_feedback_fields_are_refused_with_a_message(
    scripted_app, field: str, value, message: str
) -> None:
    import gradio as gr

    app, _ = scripted_app
    done = app.inspect_image(app.gallery[1].composite, None)
    args = {"inspection_id": done.id, "rated": "base", "judgement": "wrong",
            "corrected": app.gallery[1].truth_text, "comment": ""}  # fmt: skip
    args[field] = value
    with pytest.raises(gr.Error, match=re.escape(message)):
        app.send_feedback(**args)


@pytest.mark.parametrize(
    ("text", "clean"),
    [
        ("a\x00b", "ab"),
        ("\x1b[31mred\x1b[0m", "[31mred[0m"),
        ("abc\u202edcba", "abcdcba"),
        ("x\u2066y\u2069z\u200f", "xyz"),
        ("line 1\r\nline 2\tend", "line 1\nline 2\tend"),
        ("  ok  ", "ok"),
    ],
)
def test_comments_and_corrections_are_stored_clean(scripted_app, text: str, clean: str) -> None:
    """Issue 21, item 3: control and bidirectional-override characters never reach the store."""
    app, _ = scripted_app
    case = app.gallery[1]
    done = app.inspect_image(case.composite, None)
    app.send_feedback(done.id, "base", "wrong", "\u202e" + case.truth_text + "\x00", text)
    row = app.store.recent(1)[0]
    assert row.comment == clean and row.corrected_answer == case.truth_text
    with app.store._lock:
        length = app.store._conn.execute("SELECT length(comment) FROM feedback").fetchone()[0]
    assert length == len(clean)  # no NUL cuts SQLite's length() short


def test_verdict_disagreement_and_swapped_panels_are_reported(scripted_app) -> None:
    """Issue 21, item 5: SOARTC against the models, and panels that look swapped or upside
    down, are said in the report (and the Space's comparison panel)."""
    from qeu_space.geometry import CompositeLayout
    from qeu_space.ui.panels import Panels

    app, _ = scripted_app
    case = next(c for c in app.gallery if c.truth)
    done = app.inspect_image(case.composite, None)  # base says Passed, SOARTC defective
    assert done.soartc.verdict == "defective"
    warnings = done.report()["warnings"]
    assert any(w.startswith("SOARTC says defective") and "base" in w for w in warnings)
    panels = Panels.of(done, app.corrected_start)
    assert "Look twice" in panels.comparison and "SOARTC says defective" in panels.comparison

    layout = CompositeLayout(448)
    swapped = case.composite.copy()
    upper = case.composite.crop(layout.crop_box("reference"))
    lower = case.composite.crop(layout.crop_box("test"))
    swapped.paste(lower, layout.crop_box("reference")[:2])
    swapped.paste(upper, layout.crop_box("test")[:2])
    notes = app.oddities.layout_notes(swapped)
    assert len(notes) == 1 and "panels look swapped" in notes[0]
    turned = case.composite.rotate(180)
    assert "upside down" in app.oddities.layout_notes(turned)[0]
    assert app.oddities.layout_notes(case.composite) == []


def test_no_connector_no_record(scripted_app) -> None:
    import gradio as gr

    app, _ = scripted_app
    done = app.inspect_image(Image.new("RGB", (448, 448), (90, 90, 90)), None)
    assert done.refused.startswith("no connector found (") and done.id == ""
    assert done.report()["base"] is None and done.report()["soartc"] is None
    with pytest.raises(gr.Error, match="no inspection to judge"):
        app.send_feedback(done.id, "base", "correct")


def test_panels_are_emptied_without_a_score() -> None:
    from qeu_space.ui.panels import NOT_INSPECTED, NOTHING_TO_JUDGE, Panels

    empty = Panels.empty()
    assert empty.soartc == NOT_INSPECTED and "score" not in empty.soartc.lower()
    assert empty.inspection_id is None and empty.judging == NOTHING_TO_JUDGE
    assert empty.heatmap is None and empty.feedback_image is None and empty.corrected == ""
    assert len(empty.values()) == len(Panels.names())


def test_heatmap_has_a_colour_bar_with_the_threshold() -> None:
    from app import SyntheticSamples
    from qeu_space.ui.soartc_view import BAR_HEIGHT, load_threshold, run_soartc

    case = SyntheticSamples().gallery(1, 0)[0]
    reference, test = split_composite(case.composite)
    view = run_soartc(reference, test)
    threshold = load_threshold()
    assert view.threshold == threshold.value
    assert (
        threshold.provenance["good_pairs"] >= 100 and "calibrate" in threshold.provenance["command"]
    )
    assert view.overlay.size == (test.width, test.height + BAR_HEIGHT)
    bar = np.asarray(view.overlay)[test.height :]
    assert bar[:10, 0].max() < 40 and bar[:10, -1].mean() > 200  # dark at 0, bright at the top
    assert view.verdict == ("defective" if view.score > view.threshold else "passed")
    assert f"threshold {view.threshold:.1f}" in view.markdown()


def test_only_uploaded_files_are_read(tmp_path: Path, monkeypatch) -> None:
    from qeu_space.ui.files import upload_path

    monkeypatch.setenv("GRADIO_TEMP_DIR", str(tmp_path / "gradio"))
    uploaded = tmp_path / "gradio" / "abc" / "c.png"
    uploaded.parent.mkdir(parents=True)
    uploaded.write_bytes(b"x")
    assert upload_path({"path": str(uploaded)}, "composite") == str(uploaded.resolve())
    for payload in ("/etc/hostname", {"path": str(tmp_path / "gradio" / ".." / "secret.png")}):
        with pytest.raises(UploadError, match="the composite was not received"):
            upload_path(payload, "composite")
    with pytest.raises(UploadError, match="no composite: upload one first"):
        upload_path(None, "composite")


def test_output_images_are_jpeg_files_that_delete_cache_removes(
    tmp_path: Path, monkeypatch
) -> None:
    from gradio.route_utils import delete_files_created_by_app

    from app import SyntheticSamples
    from qeu_space.ui.layout import build_demo
    from qeu_space.ui.models import Models

    monkeypatch.setenv("GRADIO_TEMP_DIR", str(tmp_path / "gradio"))
    settings = AppSettings.from_env(
        {
            "QEU_FEEDBACK_DB": str(tmp_path / "fb.sqlite3"),
            "QEU_GALLERY_SIZE": "1",
            "QEU_CACHE_MINUTES": "0.05",
        }
    )
    demo = build_demo(settings, SyntheticSamples(), models=Models())
    assert demo.delete_cache == (1, 3)
    payload = demo.inspection_app.outputs.image(Image.new("RGB", (40, 20)), "heatmap")
    path = Path(payload["path"])
    assert path.suffix == ".jpg" and path.is_relative_to(tmp_path / "gradio")
    with Image.open(path) as written:
        assert written.format == "JPEG"
    delete_files_created_by_app(demo, age=None)  # what the schedule does once files are old
    assert not path.exists()


def test_od_panel_draws_the_shipped_boxes_with_their_category_base_beside_adapter() -> None:
    """The embedded OD model and its adapter load offline by default; the panel draws each
    one's boxes where the product really is (moved by the camera), labelled by category."""
    import numpy as np

    from dataset_tools.compose import SampleSpec, make_sample
    from qeu_space.ui.drawing import COLOURS
    from qeu_space.ui.handlers import InspectionApp

    settings = AppSettings.from_env({"QEU_BASE_MODEL": "", "QEU_VIT_MODEL": ""})
    models = load_models(settings, detect_device({"QEU_DEVICE": "cpu"}))
    assert models.od.available and models.od.has_adapter, models.od.status()
    app = InspectionApp(settings, models, None, None, [])  # type: ignore[arg-type]
    truth = (Finding("C4", "missing pin"),)
    spec = SampleSpec("od", "standard", "square", truth, True)
    sample = make_sample(spec, np.random.default_rng(3))
    view = app._od(sample.image, truth)
    image, note = view.image, view.note
    assert image.size == (2 * 896, 896)  # base | fine-tuned
    assert note.count("C4 missing pin") >= 2 and "**base**" in note and "**fine-tuned**" in note
    x1, y1, x2, y2 = (round(v * DISPLAY_SCALE) for v in sample.findings[0].box)
    for offset in (0, 896):  # each panel has a box outline in the box colour around the truth
        crop = np.asarray(image.crop((offset + x1 - 8, y1 - 8, offset + x2 + 8, y2 + 8)))
        assert (crop == COLOURS["found"]).all(axis=-1).sum() > 50


@pytest.mark.parametrize("adapter", ["", "absent"])
def test_od_panel_without_its_adapter_draws_the_base_alone(adapter: str, tmp_path: Path) -> None:
    """QEU_OD_ADAPTER off (empty) or naming a folder that is not there: the base still loads and
    draws its boxes in one panel; a missing adapter is named, never a crash."""
    import numpy as np

    from dataset_tools.compose import SampleSpec, make_sample
    from qeu_space.ui.handlers import InspectionApp

    value = "" if adapter == "" else str(tmp_path / "inspection-od-lora")
    settings = AppSettings.from_env(
        {"QEU_BASE_MODEL": "", "QEU_VIT_MODEL": "", "QEU_OD_ADAPTER": value}
    )
    models = load_models(settings, detect_device({"QEU_DEVICE": "cpu"}))
    assert models.od.available and not models.od.has_adapter
    if adapter == "absent":
        assert "not available" in models.od.status() and str(tmp_path) not in models.od.status()
    app = InspectionApp(settings, models, None, None, [])  # type: ignore[arg-type]
    truth = (Finding("D6", "bent pin", "left"),)
    sample = make_sample(SampleSpec("od", "ribbed", "round", truth, True), np.random.default_rng(5))
    view = app._od(sample.image, truth)
    assert view.image is not None and view.image.size == (896, 896)
    assert "**base**" not in view.note and "D6 bent pin" in view.note
    assert view.findings == (Finding("D6", "bent pin"),)


def test_the_vit_legend_names_the_classes_of_the_loaded_vit() -> None:
    """The shipped ViT is three-class: the legend says it has no short-pin class (a short pin
    reads as another class), and a four-class ViT gets SHORTNG explained."""
    from types import SimpleNamespace

    from qeu_space.ui.layout import vit_labels
    from qeu_space.ui.panels import vit_legend

    three = vit_legend(("OK", "BENDNG", "NUKENG"))
    assert "**NUKENG**: missing pin" in three and "SHORTNG" not in three
    assert "no class for a short pin" in three
    four = vit_legend(("OK", "BENDNG", "NUKENG", "SHORTNG"))
    assert "**SHORTNG**: short pin" in four and "no class" not in four
    config = SimpleNamespace(id2label={1: "BENDNG", 0: "OK", 2: "NUKENG"})
    slot = SimpleNamespace(loaded=SimpleNamespace(model=SimpleNamespace(config=config)))
    assert vit_labels(SimpleNamespace(vit=slot)) == ("OK", "BENDNG", "NUKENG")
    assert vit_labels(SimpleNamespace(vit=SimpleNamespace(loaded=None))) is None


@pytest.mark.parametrize("mode", ["I;16", "LA", "P"])
def test_other_modes_read_as_their_8_bit_original(mode: str) -> None:
    """Issue 21, item 5: a 16-bit (or 32-bit, grey + alpha, palette) copy of a composite is the
    same picture to the models as its 8-bit grey original: the same pixels, so the same answer
    (a 16-bit copy used to be contrast-stretched, and the seed-7 bent pin read as bent down)."""
    import io

    from dataset_tools.compose import SampleSpec, make_sample
    from qeu_space.views.image_io import read_image

    truth = (Finding("U3", "bent pin", "left"), Finding("C7", "missing pin"))
    spec = SampleSpec("modes", "standard", "square", truth, True)
    grey = make_sample(spec, np.random.default_rng(7)).image.convert("L")
    eight = np.asarray(grey)
    if mode == "I;16":
        copy = Image.fromarray(eight.astype(np.uint16) * 257)
    elif mode == "LA":
        copy = grey.convert("LA")
    else:
        copy = grey.convert("P")
    buf = io.BytesIO()
    copy.save(buf, format="PNG")
    original, converted = io.BytesIO(), buf.getvalue()
    grey.save(original, format="PNG")
    assert np.array_equal(
        np.asarray(read_image(converted)), np.asarray(read_image(original.getvalue()))
    )


def test_no_composite_empties_truth_and_case_and_the_limit_reads_as_gradio_says_it() -> None:
    """Issue 21, item 6: after an oversize upload (the browser drops the composite) or a clear,
    truth and case go with the panels; a new composite keeps what came with it. The app's limit
    message and Gradio's toast (``max_file_size`` in MB of 1024 x 1024 bytes, one decimal) say
    the same number."""
    from qeu_space.ui.handlers import InspectionApp
    from qeu_space.ui.panels import Panels
    from qeu_space.views.image_io import UploadLimits, read_image

    cleared = InspectionApp.ui_composite_changed(None, None, "C7 missing pin", "generated seed 7")
    assert cleared[-2:] == ("", "") and cleared[:-2] == Panels.empty().values()
    kept = InspectionApp.ui_composite_changed(None, "/tmp/x.png", "C7 missing pin", "upload")
    assert kept[-2:] == ("C7 missing pin", "upload")

    settings = AppSettings.from_env({})
    limit = launch_options(settings)["max_file_size"]
    toast = f"{limit / 1024 / 1024:.1f} Mb"  # Gradio's own formatting (jedec, toFixed(1))
    assert toast == "10.0 Mb"
    with pytest.raises(UploadError, match=r"the limit is 10\.0 MB"):
        read_image(b"\x89PNG" + bytes(limit + 1), UploadLimits(limit))


def test_gallery_shows_one_sample_of_each_look_family() -> None:
    """The Space's gallery ends with one composite per look family (held-out ones included),
    each captioned with its family, carrying the server's truth, and each one registers: a
    visitor sees what "any look" means and can inspect it."""
    from app import SyntheticSamples
    from dataset_tools.looks import LOOK_FAMILIES
    from qeu_space.views.registration import register_composite

    cases = SyntheticSamples().look_gallery(0)
    assert [c.look for c in cases] == list(LOOK_FAMILIES)
    for case in cases:
        assert case.caption.startswith(f"{case.look}: ") and case.truth
        assert case.composite.size == (448, 448) and case.source == f"look {case.look}"
        register_composite(case.composite)  # raises NoConnectorError when refused


def test_soartc_panel_reads_the_frames_the_inspection_found() -> None:
    """An inspection registers each panel once and hands the frames to SOARTC: the panel scored
    from those frames is the panel SOARTC would find by itself, and frames of another product
    change it (so they are really used)."""
    from app import SyntheticSamples
    from qeu_space.ui.cases import split_composite
    from qeu_space.ui.soartc_view import run_soartc
    from qeu_space.views.registration import register_composite

    looks = SyntheticSamples().look_gallery(0)
    case, other = looks[6], looks[7]
    frame = register_composite(case.composite)
    reference, test = split_composite(case.composite)
    given = run_soartc(reference, test, registrations=(frame.reference, frame.test))
    found = run_soartc(reference, test)
    assert given.score == found.score and given.top == found.top
    wrong = register_composite(other.composite)
    moved = run_soartc(reference, test, registrations=(wrong.reference, wrong.test))
    assert moved.score != given.score
