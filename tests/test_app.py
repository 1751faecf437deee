"""The launched Space end to end through gradio_client: inspect, SOARTC, feedback, bad uploads.

One ``python app.py`` process (127.0.0.1, ephemeral port, offline) serves one test made of
checks run in order (one test, so that ``pytest -n 2`` never launches the app twice), on tiny
random-weight models: the tests assert on plumbing (both answers exist and differ because the
adapter is on for one and off for the other, panels fill, rows land in the store), never on
answer quality. SOARTC is real, so its top position on a clean render is the defect's.
"""

from __future__ import annotations

import asyncio
import io
import struct
import zlib
from pathlib import Path

import httpx
import pytest
from gradio_client import Client, handle_file
from gradio_client.exceptions import AppError
from PIL import Image

from qeu_space.feedback import FeedbackStore
from qeu_space.geometry import CompositeLayout
from tests.browser.app_server import RunningApp, app_env, launched_app, make_tiny_models

pytestmark = pytest.mark.timeout(600)


def test_space_end_to_end(tmp_path: Path) -> None:
    env = app_env(tmp_path, make_tiny_models(tmp_path / "models"))
    with launched_app(tmp_path, env) as running:
        client = Client(running.url, verbose=False, download_files=str(tmp_path / "dl"))
        check_named_endpoints(client)
        sample = generate_sample(client)
        check_inspect_then_feedback(client, running, sample)
        check_soartc_takes_reference_then_test(client, sample, tmp_path)
        check_bad_composites(client, tmp_path, sample)
        check_not_a_connector_is_refused(client, tmp_path)
        check_mismatched_pair_and_tiny_connector(client, tmp_path)
        check_oversized_upload(running)
        check_bad_feedback(client, sample)
        check_200_concurrent_feedback_submissions(running)
        assert running.process.poll() is None  # still serving after all of it


def generate_sample(client: Client) -> tuple[str, str]:
    """A generated composite with a missing pin at C7, no nuisances (composite path, truth)."""
    composite, truth, source = client.predict(
        "standard", "square", "C7 missing pin", True, False, 7, api_name="/generate"
    )
    assert source == "generated seed 7"
    return composite, truth


def check_named_endpoints(client: Client) -> None:
    api = client.view_api(print_info=False, return_format="dict")["named_endpoints"]
    assert {"/inspect", "/soartc", "/feedback", "/generate"} <= set(api)
    assert [p["label"] for p in api["/soartc"]["parameters"]] == ["Reference (good)", "Test"]
    assert [r["label"] for r in api["/soartc"]["returns"]] == [
        "SOARTC heatmap",
        "Image score",
        "Top positions",
    ]


def check_inspect_then_feedback(
    client: Client, running: RunningApp, sample: tuple[str, str]
) -> None:
    composite, truth = sample
    assert truth == "Defective. 1 defect: C7 missing pin."
    out = client.predict(handle_file(composite), truth, api_name="/inspect")
    (heatmap, score, top, vit_label, vit_attention, vit_note, base, tuned) = out[:8]
    base_marked, tuned_marked, comparison, od_image, od_note = out[8:]
    assert Image.open(heatmap).size[0] > 200
    assert score > 0
    assert top["headers"] == ["position", "score"] and len(top["data"]) == 5
    assert top["data"][0][0] == "C7"  # SOARTC finds the missing pin on a clean render
    assert vit_label["label"] in ("OK", "BENDNG", "NUKENG")
    assert Image.open(vit_attention).size == (423, 204)  # the test connector of a 448 composite
    assert vit_note.startswith("ViT verdict: **")
    assert isinstance(base, str) and isinstance(tuned, str) and base and tuned
    assert base != tuned  # the adapter is on for one answer and off for the other
    assert Image.open(base_marked).size == (896, 896)
    assert Image.open(tuned_marked).size == (896, 896)
    assert "**base**" in comparison and "**fine-tuned**" in comparison
    assert "**truth**: Defective. 1 defect: C7 missing pin." in comparison
    assert Image.open(od_image).size == (896, 896)
    assert "<OD>" in od_note

    status, recent = client.predict(
        handle_file(composite),
        base,
        tuned,
        "fine-tuned",
        "wrong",
        "c7 is missing",
        '<img src=x onerror="alert(1)"> wrong pin',
        truth,
        "generated seed 7",
        api_name="/feedback",
    )
    assert status.startswith("Thank you: feedback #")
    assert "&lt;img src=x onerror=&quot;alert(1)&quot;&gt; wrong pin" in recent
    assert "<img" not in recent

    store = FeedbackStore(running.feedback_db)
    row = next(r for r in store.rows() if r.comment.endswith("wrong pin"))
    assert (row.base_answer, row.tuned_answer) == (base, tuned)
    assert not row.correct and row.rated == "fine-tuned"
    assert row.corrected_answer == "Defective. 1 defect: C7 missing pin."
    assert row.truth == truth and row.source == "generated seed 7"
    assert store.image(row.image_sha256).size == (448, 448)


def check_soartc_takes_reference_then_test(
    client: Client, sample: tuple[str, str], tmp_path: Path
) -> None:
    from qeu_space.geometry import CompositeLayout

    layout = CompositeLayout(448)
    composite = Image.open(sample[0])
    paths = []
    for panel in ("reference", "test"):
        paths.append(tmp_path / f"{panel}.png")
        composite.crop(layout.crop_box(panel)).save(paths[-1])
    heatmap, score, top = client.predict(*map(handle_file, paths), api_name="/soartc")
    assert Image.open(heatmap).size[0] > layout.connector.width / 2
    assert score > 0 and top["data"][0][0] == "C7"


def _png(image: Image.Image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


def _bomb_header(width: int, height: int) -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = struct.pack(">I", zlib.crc32(kind + data))
        return struct.pack(">I", len(data)) + kind + data + crc

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IEND", b"")


GOOD = _png(Image.new("RGB", (448, 448), (40, 40, 40)))
BAD_COMPOSITES = {
    "not-an-image": (b"just some text", "the composite is not an image PIL can read"),
    "truncated-png": (GOOD[: len(GOOD) // 2], "the composite is truncated or corrupt"),
    "one-pixel": (_png(Image.new("RGB", (1, 1))), "is 1 x 1 pixels; at least 96 x 96"),
    "bomb-header": (_bomb_header(30000, 30000), "the limit is 4,194,304 pixels"),
    "not-square": (_png(Image.new("RGB", (448, 200))), "a composite is square"),
}


def check_bad_composites(client: Client, tmp_path: Path, sample: tuple[str, str]) -> None:
    """Each bad upload is a readable error, and the app keeps serving after it."""
    layout = CompositeLayout(448)
    good = tmp_path / "good.png"
    Image.open(sample[0]).crop(layout.crop_box("reference")).save(good)
    for case, (data, message) in BAD_COMPOSITES.items():
        path = tmp_path / f"{case}.png"
        path.write_bytes(data)
        with pytest.raises(AppError) as err:
            client.predict(handle_file(path), "", api_name="/inspect")
        assert message in str(err.value), case
        _, score, _ = client.predict(handle_file(good), handle_file(good), api_name="/soartc")
        assert score >= 0, f"not serving after {case}"


def check_not_a_connector_is_refused(client: Client, tmp_path: Path) -> None:
    """A flat image is no connector: /soartc refuses it, /inspect answers nothing, says why."""
    flat = tmp_path / "flat.png"
    Image.new("RGB", (448, 448), (90, 90, 90)).save(flat)
    panel = tmp_path / "flat-panel.png"
    Image.new("RGB", (423, 204), (90, 90, 90)).save(panel)
    with pytest.raises(AppError, match=r"no connector found \("):
        client.predict(handle_file(panel), handle_file(panel), api_name="/soartc")
    out = client.predict(handle_file(flat), "", api_name="/inspect")
    base, tuned = out[6], out[7]
    assert base.startswith("no connector found (") and tuned == base
    assert out[1] is None and not out[3]  # no SOARTC score, no ViT verdict


def check_mismatched_pair_and_tiny_connector(client: Client, tmp_path: Path) -> None:
    a, b, tiny = tmp_path / "a.png", tmp_path / "b.png", tmp_path / "tiny.png"
    Image.new("RGB", (400, 200)).save(a)
    Image.new("RGB", (380, 200)).save(b)
    Image.new("RGB", (1, 1)).save(tiny)
    with pytest.raises(AppError, match="reference image is 400 x 200 and the test image is 380"):
        client.predict(handle_file(a), handle_file(b), api_name="/soartc")
    with pytest.raises(AppError, match="the test image is 1 x 1 pixels; at least 40 x 16"):
        client.predict(handle_file(a), handle_file(tiny), api_name="/soartc")
    with pytest.raises(AppError, match="reference image is 400 x 200 and the test image is 380"):
        client.predict(handle_file(a), handle_file(b), api_name="/compose")


def check_oversized_upload(running: RunningApp) -> None:
    big = b"\x89PNG" + bytes(3_000_000)  # QEU_MAX_UPLOAD_MB=2 in the test app
    response = httpx.post(
        running.url + "/gradio_api/upload", files={"files": ("big.png", big)}, timeout=60
    )
    assert response.status_code == 413
    assert "2000000" in response.text or "2 MB" in response.text


def check_bad_feedback(client: Client, sample: tuple[str, str]) -> None:
    args = [handle_file(sample[0]), "a", "b", "fine-tuned", "wrong", "", "", "", ""]
    with pytest.raises(AppError, match="a wrong answer needs the corrected answer"):
        client.predict(*args, api_name="/feedback")


def check_200_concurrent_feedback_submissions(running: RunningApp) -> None:
    """The browser's path (direct POST, no queue): 200 at once, none refused, 200 rows."""
    api = running.url + "/gradio_api"
    before = FeedbackStore(running.feedback_db).count()
    uploaded = httpx.post(api + "/upload", files={"files": ("c.png", GOOD)}, timeout=60).json()
    image = {"path": uploaded[0], "meta": {"_type": "gradio.FileData"}}

    async def submit(http: httpx.AsyncClient, i: int) -> int:
        data = [image, "Passed.", "Passed.", "base", "correct", "", f"burst {i}", "", ""]
        return (await http.post(api + "/run/feedback", json={"data": data})).status_code

    async def burst() -> list[int]:
        limits = httpx.Limits(max_connections=200)
        async with httpx.AsyncClient(timeout=300, limits=limits) as http:
            return await asyncio.gather(*(submit(http, i) for i in range(200)))

    assert asyncio.run(burst()) == [200] * 200
    store = FeedbackStore(running.feedback_db)
    assert store.count() == before + 200
    burst_rows = sorted(r.comment for r in store.rows() if r.comment.startswith("burst "))
    assert burst_rows == sorted(f"burst {i}" for i in range(200))
    assert store.integrity() == "ok"
