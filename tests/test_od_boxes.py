"""Where the Space's API puts Florence-2's boxes: on the image as submitted, as drawn.

The ``/inspect`` report's ``od.findings[i].box`` must be usable as it stands: in the pixels of
the uploaded image, whether the camera moved the products inside their panels or the composite
was pasted at an offset into a larger canvas (which the Space scales to its composite size).
The embedded ``<OD>`` model runs for real; truth boxes are clipped to what the model sees.
"""

from __future__ import annotations

import pytest

from tests.test_shipped_processor import _rendered, box_errors, od_cases


@pytest.fixture(scope="module")
def od_app(tmp_path_factory: pytest.TempPathFactory):
    """An InspectionApp with the embedded OD base only (no chat VLM, no ViT, no adapter)."""
    from app import SyntheticSamples
    from qeu_space.modeling.devices import detect_device
    from qeu_space.ui.handlers import InspectionApp
    from qeu_space.ui.layout import open_feedback_store
    from qeu_space.ui.models import load_models
    from qeu_space.ui.settings import AppSettings

    folder = tmp_path_factory.mktemp("od-app")
    settings = AppSettings.from_env(
        {
            "QEU_BASE_MODEL": "",
            "QEU_VIT_MODEL": "",
            "QEU_OD_ADAPTER": "",
            "QEU_FEEDBACK_DB": str(folder / "fb.sqlite3"),
        }
    )
    models = load_models(settings, detect_device({"QEU_DEVICE": "cpu"}))
    assert models.od.available, models.od.status()
    app = InspectionApp(settings, models, SyntheticSamples(), open_feedback_store(settings), [])
    return app, folder


@pytest.mark.slow
def test_inspect_report_boxes_are_on_the_submitted_image(
    od_app, monkeypatch: pytest.MonkeyPatch
) -> None:
    app, folder = od_app
    monkeypatch.setenv("GRADIO_TEMP_DIR", str(folder / "gradio"))
    rows = [row for row in _rendered("od", "test", 16) if row["bbox_str"]][:3]
    errors = {}
    for i, (picture, truth) in enumerate(od_cases(rows)):
        path = folder / "gradio" / f"upload{i}" / "composite.png"
        path.parent.mkdir(parents=True)
        picture.save(path)
        _, report, _ = app.api_inspect({"path": str(path)})
        said = {
            "bboxes": [f["box"] for f in report["od"]["findings"]],
            "labels": [f["kind"] for f in report["od"]["findings"]],
        }
        errors[f"{i}: {picture.size}"] = box_errors(said, truth)
    worst = max(e for row in errors.values() for e in row)
    assert worst <= 2.0, errors
    assert any(size.endswith("(544, 544)") for size in errors)  # the pasted ones were seen
