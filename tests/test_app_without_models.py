"""Without its models (issue 5's and issue 14's folders absent) the Space still starts and
serves SOARTC and samples, and each model panel says which model is missing instead of
answering."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import pytest
from gradio_client import Client, handle_file
from PIL import Image

from tests.browser.app_server import app_env, launched_app

pytestmark = pytest.mark.timeout(600)


def test_app_serves_soartc_and_names_missing_models(tmp_path: Path) -> None:
    missing = {
        "QEU_BASE_MODEL": str(tmp_path / "models" / "inspection-vlm-base"),
        "QEU_ADAPTER": str(tmp_path / "models" / "inspection-vlm-lora"),
        "QEU_VIT_MODEL": str(tmp_path / "models" / "vit-inspector"),
        "QEU_OD_MODEL": str(tmp_path / "models" / "inspection-od-base"),
        "QEU_OD_ADAPTER": str(tmp_path / "models" / "inspection-od-lora"),
    }
    env = app_env(tmp_path, missing, QEU_QUEUE_SIZE="1")
    with launched_app(tmp_path, env) as app:
        page = httpx.get(app.url, timeout=30)
        assert page.status_code == 200
        client = Client(app.url, verbose=False, download_files=str(tmp_path / "dl"))
        composite, truth, _ = client.predict(
            "ribbed", "round", "D4 bent pin (up)", True, False, 1, api_name="/generate"
        )
        out = client.predict(handle_file(composite), truth, api_name="/inspect")
        heatmap, score, top, vit_label, vit_attention, vit_note, base, tuned = out[:8]
        base_marked, tuned_marked, comparison, od_image, od_note = out[8:]
        assert Image.open(heatmap).size[0] > 200 and score > 0
        assert top["data"][0][0] == "D4"
        assert not vit_label and vit_attention is None  # an empty Label reads as {}
        assert vit_note == f"ViT: model not available: {missing['QEU_VIT_MODEL']} (see README)"
        assert base == f"model not available: {missing['QEU_BASE_MODEL']} (see README)"
        assert tuned == base  # no fake answer for the fine-tuned panel either
        assert base_marked is None and tuned_marked is None and od_image is None
        assert comparison == "**truth**: Defective. 1 defect: D4 bent pin (up)."
        assert od_note == (
            f"Florence-2 OD: model not available: {missing['QEU_OD_MODEL']} (see README)"
        )
        check_queue_limit(app.url, composite)
        log = app.log.read_text()
        assert "chat VLM: model not available" in log
        assert "Traceback" not in log


def check_queue_limit(url: str, composite: str) -> None:
    """With ``QEU_QUEUE_SIZE=1`` a burst of inspections is refused past one waiting call, while
    feedback (no queue) is still taken."""
    api = url + "/gradio_api"
    with open(composite, "rb") as f:
        uploaded = httpx.post(api + "/upload", files={"files": ("c.png", f)}, timeout=60).json()
    image = {"path": uploaded[0], "meta": {"_type": "gradio.FileData"}}

    async def burst() -> list[str]:
        async with httpx.AsyncClient(timeout=120) as http:
            joins = [http.post(api + "/call/inspect", json={"data": [image, ""]}) for _ in range(8)]
            return [r.text for r in await asyncio.gather(*joins)]

    replies = asyncio.run(burst())
    refused = [r for r in replies if "Queue is full. Max size is 1" in r]
    accepted = [r for r in replies if "event_id" in r]
    assert refused and accepted and len(refused) + len(accepted) == 8
    data = [image, "a", "b", "base", "correct", "", "during a full queue", "", ""]
    taken = httpx.post(api + "/run/feedback", json={"data": data}, timeout=60)
    assert taken.status_code == 200 and "Thank you" in taken.text
