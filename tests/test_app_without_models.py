"""Without its models (issue 5's and issue 14's folders absent), or with a damaged adapter, the
Space still starts and serves, and each model panel says why it has no answer instead of
answering (issue 11, item 3)."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from gradio_client import Client, handle_file
from PIL import Image

from tests.browser.app_server import app_env, launched_app, make_tiny_adapter
from tests.test_app_units import damaged_adapter

pytestmark = pytest.mark.timeout(600)


def test_app_serves_soartc_and_names_missing_models(tmp_path: Path) -> None:
    missing = {
        "QEU_BASE_MODEL": str(tmp_path / "models" / "inspection-vlm-base"),
        "QEU_ADAPTER": str(tmp_path / "models" / "inspection-vlm-lora"),
        "QEU_VIT_MODEL": str(tmp_path / "models" / "vit-inspector"),
        "QEU_OD_MODEL": str(tmp_path / "models" / "inspection-od-base"),
        "QEU_OD_ADAPTER": str(tmp_path / "models" / "inspection-od-lora"),
    }
    env = app_env(tmp_path, missing)
    with launched_app(tmp_path, env) as app:
        page = httpx.get(app.url, timeout=30)
        assert page.status_code == 200
        client = Client(app.url, verbose=False, download_files=str(tmp_path / "dl"))
        composite, truth, _ = client.predict(
            "ribbed", "round", "D4 bent pin (up)", True, False, 1, api_name="/generate"
        )
        inspection_id, report, heatmap = client.predict(
            handle_file(composite), truth, api_name="/inspect"
        )
        assert Image.open(heatmap).size[0] > 200 and report["soartc"]["score"] > 0
        assert report["soartc"]["top"][0][0] == "D4"
        vit, base, tuned = report["vit"], report["base"], report["fine_tuned"]
        assert vit["label"] is None and vit["probabilities"] is None
        assert vit["note"] == "ViT: model not available: vit-inspector (see README)"
        assert base == {
            "status": "unavailable",
            "text": "",
            "answer": None,
            "findings": [],
            "note": "model not available: inspection-vlm-base (see README)",
        }
        assert tuned["status"] == "unavailable" and tuned["text"] == ""  # no fake answer
        assert report["od"]["note"] == (
            "Florence-2 OD: model not available: inspection-od-base (see README)"
        )
        with pytest.raises(Exception, match="the base model gave no answer in this inspection"):
            client.predict(inspection_id, "base", "correct", "", "", api_name="/feedback")
        log = app.log.read_text()
        assert "chat VLM: model not available" in log
        assert "Traceback" not in log
        assert str(tmp_path / "models") not in page.text + httpx.get(app.url + "/config").text


def test_a_garbage_adapter_leaves_the_app_serving_with_the_reason(tmp_path: Path) -> None:
    """Random bytes in ``adapter_model.safetensors`` load "fine" and answer nothing: the app
    leaves the adapter out, says why in the fine-tuned panel and the Models tab, and the base
    still answers."""
    from qeu_space.modeling.tiny_models import make_tiny_idefics3

    base = make_tiny_idefics3(tmp_path / "models" / "vlm-base")
    adapter = make_tiny_adapter(base, tmp_path / "models" / "vlm-lora")
    garbage = damaged_adapter(adapter, tmp_path / "models" / "garbage-lora", "garbage")
    models = {"QEU_BASE_MODEL": str(base), "QEU_ADAPTER": str(garbage), "QEU_VIT_MODEL": ""}
    with launched_app(tmp_path, app_env(tmp_path, models)) as app:
        client = Client(app.url, verbose=False, download_files=str(tmp_path / "dl"))
        composite, truth, _ = client.predict(
            "standard", "square", "C7 missing pin", True, False, 2, api_name="/generate"
        )
        _, report, _ = client.predict(handle_file(composite), truth, api_name="/inspect")
        reason = "adapter not used: its weights hold NaN or infinite values"
        assert report["fine_tuned"]["status"] == "unavailable"
        assert report["fine_tuned"]["note"].startswith(reason)
        assert report["base"]["status"] in ("ok", "unreadable", "empty")  # the base ran
        config = httpx.get(app.url + "/config", timeout=30).text
        assert "is not in use" in config and reason in config  # the Models & adapter tab
        assert str(tmp_path / "models") not in config  # model names, not server paths
        assert app.process.poll() is None
