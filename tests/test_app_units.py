"""The Space's parts in process: settings, cases, drawing, feedback HTML, model slots, panels."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from qeu_space.geometry import CompositeLayout
from qeu_space.modeling.devices import detect_device
from qeu_space.ui.adapter_panel import adapter_markdown, models_markdown
from qeu_space.ui.cases import normalise_composite, parse_defects, parse_truth, split_composite
from qeu_space.ui.comparison import compare, comparison_markdown, describe_comparison
from qeu_space.ui.drawing import COLOURS, DISPLAY_SCALE, mark_findings
from qeu_space.ui.feedback_view import feedback_table, toggle_finding
from qeu_space.ui.layout import launch_options, open_feedback_store
from qeu_space.ui.models import Answer, load_models
from qeu_space.ui.settings import DEFAULT_BASE, DEFAULT_OD, REPO_ROOT, AppSettings
from qeu_space.views.image_io import UploadError
from qeu_space.vocabulary import Finding
from tests.browser.app_server import make_tiny_adapter, make_tiny_vit


def test_settings_defaults_are_the_embedded_models() -> None:
    s = AppSettings.from_env({})
    assert s.base_model == str(REPO_ROOT / "models" / "inspection-vlm-base") == DEFAULT_BASE
    assert s.adapter == str(REPO_ROOT / "models" / "inspection-vlm-lora")
    assert s.vit_model == str(REPO_ROOT / "models" / "vit-inspector")
    assert s.od_model == str(REPO_ROOT / "models" / "inspection-od-base") == DEFAULT_OD
    assert s.od_adapter == str(REPO_ROOT / "models" / "inspection-od-lora")
    assert s.feedback_repo is None
    assert s.trust_remote_code is False
    assert (s.queue_size, s.model_concurrency, s.max_upload_bytes) == (16, 1, 10_000_000)


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
        }
    )
    assert s.base_model == "HuggingFaceTB/SmolVLM-256M-Instruct"  # a Hub id is kept as given
    assert s.adapter is None and s.od_model is None
    assert s.vit_model == str((tmp_path / "vit").resolve())
    assert s.trust_remote_code and s.feedback_repo == "me/feedback"
    assert s.feedback_db == tmp_path / "fb.sqlite3"
    assert (s.queue_size, s.max_upload_bytes) == (4, 2_500_000)


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
    ],
)
def test_bad_settings_name_the_variable(env: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        AppSettings.from_env(env)


def test_launch_options_follow_gradio_variables() -> None:
    s = AppSettings.from_env({"QEU_MAX_UPLOAD_MB": "3"})
    opts = launch_options(s, {"GRADIO_SERVER_PORT": "7999"})
    assert opts["server_port"] == 7999 and opts["server_name"] == "127.0.0.1"
    assert opts["share"] is False and opts["max_file_size"] == 3_000_000
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
    ],
)
def test_parse_defects(text: str, expected: tuple) -> None:
    assert parse_defects(text) == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [("some words", "no defect read"), ("U3 bent pin", "needs a direction")],
)
def test_parse_defects_errors(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_defects(text)


def test_truth_box() -> None:
    assert parse_truth("") is None and parse_truth(None) is None
    assert parse_truth("Passed. No defects found.") == ()
    with pytest.raises(UploadError, match="cannot read the ground truth"):
        parse_truth("who knows")


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
    base = Answer("nonsense", ())
    tuned = Answer("Defective. 1 defect: C7 missing pin.", truth)
    text = comparison_markdown(base, tuned, truth)
    assert "**base**: no verdict could be read" in text
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
    assert models.vlm.reason == f"model not available: {missing} (see README)"
    assert models.vit.status() == f"ViT: model not available: {missing}-vit (see README)"
    text = models_markdown(models)
    assert "**Device**: CPU" in text and "chat VLM: model not available" in text


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
    assert adapter_markdown(None).startswith("No adapter configured")
    assert "not available locally" in adapter_markdown("/no/such/adapter")


def test_missing_adapter_keeps_the_base(tiny_vlm, tmp_path: Path) -> None:
    base, _ = tiny_vlm
    settings = AppSettings.from_env(
        {"QEU_BASE_MODEL": str(base), "QEU_ADAPTER": str(tmp_path / "gone"), "QEU_VIT_MODEL": ""}
    )
    models = load_models(settings, detect_device({"QEU_DEVICE": "cpu"}))
    assert models.vlm.available and not models.vlm.has_adapter
    assert models.vlm.adapter_reason == (
        f"adapter model not available: {tmp_path / 'gone'} (see README)"
    )
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
    app = InspectionApp(settings, models, source=None, store=None, gallery=[])  # type: ignore[arg-type]
    truth = (Finding("C4", "missing pin"),)
    spec = SampleSpec("od", "standard", "square", truth, True)
    sample = make_sample(spec, np.random.default_rng(3))
    image, note = app._od(sample.image, truth)
    assert image.size == (2 * 896, 896)  # base | fine-tuned
    assert note.count("C4 missing pin") >= 2 and "**base**" in note and "**fine-tuned**" in note
    x1, y1, x2, y2 = (round(v * DISPLAY_SCALE) for v in sample.findings[0].box)
    for offset in (0, 896):  # each panel has a box outline in the box colour around the truth
        crop = np.asarray(image.crop((offset + x1 - 8, y1 - 8, offset + x2 + 8, y2 + 8)))
        assert (crop == COLOURS["found"]).all(axis=-1).sum() > 50
