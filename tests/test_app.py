"""The launched Space end to end through gradio_client: inspect, SOARTC, feedback, bad uploads.

One ``python app.py`` process (127.0.0.1, ephemeral port, offline) serves one test made of
checks run in order (one test, so that ``pytest -n 2`` never launches the app twice), on tiny
random-weight models: the tests assert on plumbing (both answers exist and differ because the
adapter is on for one and off for the other, each of the two named adapters answers when named,
the report fills, rows land in the store with the server's own answers), never on answer
quality. SOARTC is real, so its top position on a clean
render is the defect's.
"""

from __future__ import annotations

import asyncio
import io
import re
import struct
import threading
import time
import zlib
from pathlib import Path

import httpx
import numpy as np
import pytest
from gradio_client import Client, handle_file
from gradio_client.exceptions import AppError
from PIL import Image

from qeu_space.feedback import FeedbackStore
from qeu_space.geometry import CompositeLayout
from tests.browser.app_server import (
    TINY_ADAPTERS,
    RunningApp,
    app_env,
    launched_app,
    make_tiny_models,
)

pytestmark = pytest.mark.timeout(600)


def test_space_end_to_end(tmp_path: Path) -> None:
    env = app_env(
        tmp_path,
        make_tiny_models(tmp_path / "models"),
        QEU_QUEUE_SIZE="2",
        QEU_FEEDBACK_PER_MINUTE="100",
    )
    with launched_app(tmp_path, env) as running:
        client = Client(running.url, verbose=False, download_files=str(tmp_path / "dl"))
        check_named_endpoints(client)
        sample = generate_sample(client)
        check_inspect_then_feedback(client, running, sample)
        check_each_adapter_answers_by_name(client, running, sample)
        check_forged_or_unknown_inspection_is_refused(client, running, sample)
        check_refused_truth(client, sample)
        check_soartc_takes_reference_then_test(client, sample, tmp_path)
        check_bad_composites(client, tmp_path, sample)
        check_server_paths_are_not_read(running)
        check_not_a_connector_is_refused(client, tmp_path)
        check_mismatched_pair_and_tiny_connector(client, tmp_path)
        check_oversized_upload(running)
        check_bad_feedback(client, sample)
        check_every_refusal_has_a_message(running, sample)
        check_light_endpoints_answer_while_the_model_queue_is_full(client, running, sample)
        check_200_concurrent_feedback_submissions(client, running, sample)
        assert running.process.poll() is None  # still serving after all of it
    check_the_model_worker_ended_with_the_app(running)
    check_inspections_survive_a_restart(tmp_path, env)


def check_the_model_worker_ended_with_the_app(running: RunningApp) -> None:
    """Issue 21, item 4: on the CPU the models ran in the model worker, and stopping the app
    (SIGTERM: no atexit runs) stopped it too."""
    from tests.test_model_worker import wait_gone

    started = re.search(r"model worker (\d+) ready", running.log.read_text())
    assert started, "the app did not run its models in the model worker"
    assert wait_gone(int(started.group(1))), "the model worker outlived the app"


def generate_sample(client: Client) -> tuple[str, str]:
    """A generated composite with a missing pin at C7, no nuisances (composite path, truth)."""
    composite, truth, source = client.predict(
        "standard", "square", "C7 missing pin", True, False, 7, api_name="/generate"
    )
    assert source == "generated seed 7"
    return composite, truth


def check_named_endpoints(client: Client) -> None:
    api = client.view_api(print_info=False, return_format="dict")["named_endpoints"]
    assert set(api) == {"/inspect", "/soartc", "/feedback", "/generate", "/compose"}
    names = {name: [p["parameter_name"] for p in api[name]["parameters"]] for name in api}
    assert names["/soartc"] == ["reference", "test"]
    assert names["/inspect"] == ["composite", "truth", "adapter"]
    adapter = api["/inspect"]["parameters"][2]
    assert adapter["parameter_has_default"] and adapter["parameter_default"] == ""
    assert names["/feedback"] == [
        "inspection_id",
        "rated",
        "judgement",
        "corrected_answer",
        "comment",
    ]


def inspect(client: Client, composite: str, truth: str) -> tuple[str, dict, str | None]:
    return client.predict(handle_file(composite), truth, api_name="/inspect")


def check_inspect_then_feedback(
    client: Client, running: RunningApp, sample: tuple[str, str]
) -> None:
    composite, truth = sample
    assert truth == "Defective. 1 defect: C7 missing pin."
    inspection_id, report, heatmap = inspect(client, composite, truth)
    assert len(inspection_id) >= 22 and report["inspection_id"] == inspection_id
    assert Image.open(heatmap).size == (423, 204 + 30)  # the test panel and its colour bar
    soartc = report["soartc"]
    assert soartc["score"] > soartc["threshold"] > 0 and soartc["verdict"] == "defective"
    assert soartc["top"][0][0] == "C7"  # SOARTC finds the missing pin on a clean render
    assert report["vit"]["label"] in ("OK", "BENDNG", "NUKENG")
    base, tuned = report["base"], report["fine_tuned"]
    for answer in (base, tuned):  # random weights: text, but not the canonical form
        assert answer["status"] in ("unreadable", "empty", "ok") and "text" in answer
    assert base["text"] != tuned["text"]  # the adapter is on for one answer and off for the other
    assert report["truth"] == truth and report["source"] == "generated seed 7"
    assert report["adapter"] == TINY_ADAPTERS[0]  # no name: the default, the first
    od_note = report["od"]["note"]
    assert od_note.startswith(("`<OD>` output", "**unreadable")) or "Florence-2" in od_note

    rated = "fine-tuned" if tuned["status"] != "empty" else "base"
    status = client.predict(
        inspection_id, rated, "wrong", "c7 is missing", "<b>wrong pin</b>", api_name="/feedback"
    )
    assert status.startswith("Thank you: feedback #")

    store = FeedbackStore(running.feedback_db)
    row = next(r for r in store.rows() if r.comment == "<b>wrong pin</b>")
    assert (row.base_answer, row.tuned_answer) == (base["text"], tuned["text"])
    assert not row.correct and row.rated == rated and row.inspection_id == inspection_id
    assert row.corrected_answer == "Defective. 1 defect: C7 missing pin."
    assert row.truth == truth and row.source == "generated seed 7"
    assert row.truth_source == "server" and row.client  # who judged: a keyed hash
    assert row.adapter_name == TINY_ADAPTERS[0] and row.adapter == "vlm-lora"
    stored = store.image(row.image_sha256)
    assert stored.size == (448, 448)
    assert np.array_equal(np.asarray(stored), np.asarray(Image.open(composite).convert("RGB")))


def check_each_adapter_answers_by_name(
    client: Client, running: RunningApp, sample: tuple[str, str]
) -> None:
    """Issue 13, item 3: the Space holds two adapters; ``/inspect`` answers with the one it is
    named, the base's answer stays the same, feedback records which adapter was rated, and an
    unknown name is refused with the known ones."""
    composite, truth = sample
    reports = {}
    for name in TINY_ADAPTERS:
        inspection_id, report, _ = client.predict(
            handle_file(composite), truth, name, api_name="/inspect"
        )
        assert report["adapter"] == name and report["fine_tuned"]["status"] != "unavailable"
        reports[name] = (inspection_id, report)
    first, second = (reports[name][1] for name in TINY_ADAPTERS)
    assert first["base"]["text"] == second["base"]["text"]
    assert first["fine_tuned"]["text"] != second["fine_tuned"]["text"]  # two adapters, not one
    inspection_id, report = reports[TINY_ADAPTERS[1]]
    rated = "fine-tuned" if report["fine_tuned"]["status"] != "empty" else "base"
    client.predict(inspection_id, rated, "wrong", "C7 missing pin", "second", api_name="/feedback")
    row = next(r for r in FeedbackStore(running.feedback_db).rows() if r.comment == "second")
    assert row.adapter_name == TINY_ADAPTERS[1] and row.adapter == "vlm-short-pin-lora"
    assert row.corrected_answer == "Defective. 1 defect: C7 missing pin."
    assert row.tuned_answer == report["fine_tuned"]["text"]
    with pytest.raises(AppError) as err:
        client.predict(handle_file(composite), truth, "nope", api_name="/inspect")
    assert "unknown adapter 'nope'; this Space's adapters: latched, short-pin" in str(err.value)


def check_forged_or_unknown_inspection_is_refused(
    client: Client, running: RunningApp, sample: tuple[str, str]
) -> None:
    """Issue 11, item 2: only the server's own inspections can be judged."""
    before = FeedbackStore(running.feedback_db).count()
    for forged in ("", "forged-id", "A" * 22, "x" * 5000):
        with pytest.raises(AppError) as err:
            client.predict(forged, "base", "wrong", "C7 missing pin", "", api_name="/feedback")
        message = str(err.value)
        assert "no inspection to judge" in message or "unknown inspection id" in message
        assert "never issued" in message or not forged
    assert FeedbackStore(running.feedback_db).count() == before


def check_refused_truth(client: Client, sample: tuple[str, str]) -> None:
    """Issue 11, item 6, through the API: nothing is inspected against a truth it misreads;
    issue 21, item 1: nor against a typed truth that contradicts the one the server knows."""
    with pytest.raises(AppError, match="unknown position 'Z9' in 'Z9 missing pin'"):
        inspect(client, sample[0], "C7 missing pin; Z9 missing pin")
    with pytest.raises(AppError, match="has 'exploded pin' for C7"):
        inspect(client, sample[0], "Defective. 1 defect: C7 exploded pin.")
    with pytest.raises(AppError) as err:
        inspect(client, sample[0], "D9 missing pin")
    assert "the server knows this sample's truth (generated seed 7)" in str(err.value)
    assert "'Defective. 1 defect: C7 missing pin.'" in str(err.value)


def check_soartc_takes_reference_then_test(
    client: Client, sample: tuple[str, str], tmp_path: Path
) -> None:
    layout = CompositeLayout(448)
    composite = Image.open(sample[0])
    paths = []
    for panel in ("reference", "test"):
        paths.append(tmp_path / f"{panel}.png")
        composite.crop(layout.crop_box(panel)).save(paths[-1])
    heatmap, result = client.predict(*map(handle_file, paths), api_name="/soartc")
    assert Image.open(heatmap).size[0] == layout.connector.width
    assert result["score"] > result["threshold"] and result["top"][0][0] == "C7"
    assert result["verdict"] == "defective" and result["units"] == "robust SD"


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
        _, result = client.predict(handle_file(good), handle_file(good), api_name="/soartc")
        assert result["score"] >= 0, f"not serving after {case}"


def check_server_paths_are_not_read(running: RunningApp) -> None:
    """A payload naming a file on the server (not an upload), a ``../`` path or a URL is refused
    at the gate with a message naming the parameter, never moved, fetched or inspected."""
    model_file = Path(running.env["QEU_VIT_MODEL"]) / "config.json"
    upload = Path(running.env["GRADIO_TEMP_DIR"])
    for path in (
        "/etc/hostname",
        str(model_file),
        str(upload / ".." / ".." / "feedback.sqlite3"),
        "http://127.0.0.1:9/x.png",
    ):
        data = [{"path": path, "meta": {"_type": "gradio.FileData"}}, "", ""]
        reply = httpx.post(running.url + "/gradio_api/call/inspect", json={"data": data})
        assert reply.status_code == 422, reply.text
        assert "the composite was not received: upload the file" in reply.text
        assert "server paths and URLs are not read" in reply.text
    url = {"path": "x.png", "url": "http://127.0.0.1:9/x.png", "meta": {"_type": "gradio.FileData"}}
    reply = httpx.post(running.url + "/gradio_api/call/inspect", json={"data": [url, "", ""]})
    assert reply.status_code == 422 and "was not received" in reply.text
    assert "Cannot move" not in running.log.read_text()  # refused before Gradio tried


def check_not_a_connector_is_refused(client: Client, tmp_path: Path) -> None:
    """A flat image is no connector: /soartc refuses it, /inspect answers nothing, says why,
    and gives no inspection id (so no feedback can be stored about it)."""
    flat = tmp_path / "flat.png"
    Image.new("RGB", (448, 448), (90, 90, 90)).save(flat)
    panel = tmp_path / "flat-panel.png"
    Image.new("RGB", (423, 204), (90, 90, 90)).save(panel)
    with pytest.raises(AppError, match=r"no connector found \("):
        client.predict(handle_file(panel), handle_file(panel), api_name="/soartc")
    inspection_id, report, heatmap = inspect(client, str(flat), "")
    assert report["refused"].startswith("no connector found (")
    assert inspection_id == "" and report["inspection_id"] is None and heatmap is None
    assert report["soartc"] is None and report["vit"] is None  # no score, no ViT verdict
    assert report["base"] is None and report["fine_tuned"] is None


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
    assert "2097152" in response.text  # 2 MB of 1,048,576 bytes, as Gradio's toast counts


def check_bad_feedback(client: Client, sample: tuple[str, str]) -> None:
    inspection_id, report, _ = inspect(client, sample[0], sample[1])
    rated = "base" if report["base"]["status"] != "empty" else "fine-tuned"
    refusals = [
        ((inspection_id, rated, "wrong", "", ""), "a wrong answer needs the corrected answer"),
        ((inspection_id, rated, "wrong", "C7 missing; Z9 missing", ""), "unknown position 'Z9'"),
        ((inspection_id, rated, "perhaps", "", ""), "say whether the rated answer is correct"),
        ((inspection_id, "both", "wrong", "C7 missing", ""), "rate one of the answers"),
    ]
    for args, message in refusals:
        with pytest.raises(AppError, match=message):
            client.predict(*args, api_name="/feedback")
    if report[{"base": "base", "fine-tuned": "fine_tuned"}[rated]]["status"] == "unreadable":
        with pytest.raises(AppError, match="is unreadable, so it cannot be correct"):
            client.predict(inspection_id, rated, "correct", "", "", api_name="/feedback")


def check_every_refusal_has_a_message(running: RunningApp, sample: tuple[str, str]) -> None:
    """Issue 21, item 3: mistyped fields on every typed endpoint are refused with one line that
    names the field (never ``{"error": null}``), and the app keeps serving."""
    api = running.url + "/gradio_api/call/"
    with open(sample[0], "rb") as f:
        sent = httpx.post(
            running.url + "/gradio_api/upload", files={"files": ("c.png", f)}, timeout=60
        ).json()[0]
    uploaded = {"path": sent, "meta": {"_type": "gradio.FileData"}}
    cases = [
        ("feedback", ["id", "base", "wrong", "C7 missing pin", ["a", "list"]], "the comment must"),
        ("feedback", [["id"], "base", "wrong", "", ""], "the inspection id must be text"),
        ("feedback", ["id", {"r": 1}, "wrong", "", ""], "the rated must be text, got an object"),
        ("inspect", ["not a file", "", ""], "the composite must be a file, got str"),
        ("inspect", [None, "", ""], "no composite: upload one first"),
        ("inspect", [uploaded, ["C7"], ""], "the truth must be text, got a list"),
        ("inspect", [uploaded, "", 3], "the adapter must be text, got int"),
        ("soartc", [{"path": "/etc/passwd"}, None], "the reference was not received"),
        ("generate", [["standard"], "square", "", True, False, 1], "the housing must be text"),
        ("generate", ["standard", "square", "", True, False, "7"], "the seed must be a number"),
    ]
    for endpoint, data, message in cases:
        reply = httpx.post(api + endpoint, json={"data": data}, timeout=60)
        if reply.status_code == 200:
            event = reply.json()["event_id"]
            text = httpx.get(api + f"{endpoint}/{event}", timeout=120).text
        else:
            text = reply.text
        assert message in text, (endpoint, data, text)
        assert "data: null" not in text


def check_200_concurrent_feedback_submissions(
    client: Client, running: RunningApp, sample: tuple[str, str]
) -> None:
    """200 judgements of one inspection at once from one client, through the queue: each is
    answered (stored, replacing the last, or refused by the rate limit with its message), one
    judgement stands, the replaced ones are in the history, nothing is lost or torn."""
    from gradio_client.exceptions import ValidationError

    deadline = time.monotonic() + 180
    while True:  # the model lane drains the flood of the check before
        try:
            inspection_id, report, _ = inspect(client, sample[0], sample[1])
            break
        except ValidationError:
            assert time.monotonic() < deadline, "the model queue never drained"
            time.sleep(1)
    rated = "base" if report["base"]["status"] != "empty" else "fine-tuned"
    api = running.url + "/gradio_api"
    earlier = 20  # at most this many feedback calls went through the handler in the last minute

    async def submit(http: httpx.AsyncClient, i: int) -> str:
        data = [inspection_id, rated, "wrong", "C7 missing pin", f"burst {i}"]
        event = (await http.post(api + "/call/feedback", json={"data": data})).json()["event_id"]
        return (await http.get(api + f"/call/feedback/{event}")).text

    async def burst() -> list[str]:
        # No kept-alive connections: uvicorn closes idle ones after 5 s, racing their reuse.
        limits = httpx.Limits(max_connections=200, max_keepalive_connections=0)
        async with httpx.AsyncClient(timeout=300, limits=limits) as http:
            return await asyncio.gather(*(submit(http, i) for i in range(200)))

    replies = asyncio.run(burst())
    stored = [r for r in replies if "Thank you: feedback #" in r]
    limited = [r for r in replies if "at most 100 a minute (QEU_FEEDBACK_PER_MINUTE)" in r]
    assert len(stored) + len(limited) == 200, [r for r in replies if r not in stored + limited]
    assert 100 - earlier <= len(stored) <= 100  # the rate (QEU_FEEDBACK_PER_MINUTE=100)
    store = FeedbackStore(running.feedback_db)
    rows = [r for r in store.rows() if r.comment.startswith("burst ")]
    assert len(rows) == 1 and rows[0].inspection_id == inspection_id  # one judgement stands
    replaced = [h for h, _, _ in store.history() if h.comment.startswith("burst ")]
    assert len(replaced) == len(stored) - 1  # the earlier ones, each kept in the history
    assert len({h.comment for h in replaced} | {rows[0].comment}) == len(stored)
    assert store.integrity() == "ok"


def check_inspections_survive_a_restart(tmp_path: Path, env: dict[str, str]) -> None:
    """Issue 20, item 5: an inspection shown before a restart is judged after it."""
    with launched_app(tmp_path, env) as running:
        client = Client(running.url, verbose=False, download_files=str(tmp_path / "dl"))
        sample = generate_sample(client)
        inspection_id, report, _ = inspect(client, *sample)
    with launched_app(tmp_path, env) as running:  # a new process on the same storage
        client = Client(running.url, verbose=False, download_files=str(tmp_path / "dl"))
        rated = "base" if report["base"]["status"] != "empty" else "fine-tuned"
        status = client.predict(
            inspection_id, rated, "wrong", "C7 missing pin", "after restart", api_name="/feedback"
        )
        assert status.startswith("Thank you: feedback #")
        row = next(
            r for r in FeedbackStore(running.feedback_db).rows() if r.comment == "after restart"
        )
        assert row.inspection_id == inspection_id and row.truth_source == "server"
        assert row.base_answer == report["base"]["text"]


def check_light_endpoints_answer_while_the_model_queue_is_full(
    client: Client, running: RunningApp, sample: tuple[str, str]
) -> None:
    """Issue 11, item 4: with ``/inspect``'s queue full (``QEU_QUEUE_SIZE=2``), ``/feedback``,
    ``/soartc`` and ``/generate`` still answer through gradio_client, and a refused inspection
    says what to do."""
    from gradio_client.exceptions import ValidationError

    inspection_id, report, _ = inspect(client, sample[0], sample[1])
    rated = "base" if report["base"]["status"] != "empty" else "fine-tuned"
    api = running.url + "/gradio_api"
    with open(sample[0], "rb") as f:
        uploaded = httpx.post(api + "/upload", files={"files": ("c.png", f)}, timeout=60).json()
    image = {"path": uploaded[0], "meta": {"_type": "gradio.FileData"}}
    refusals: list[float] = []
    stop = threading.Event()

    def flood() -> None:  # keep the model lane full: join /inspect again and again
        with httpx.Client(timeout=60) as http:
            while not stop.is_set():
                reply = http.post(api + "/call/inspect", json={"data": [image, "", ""]})
                if reply.status_code == 422:
                    assert "The queue for model calls (/inspect) is full" in reply.text
                    refusals.append(time.monotonic())
                time.sleep(0.01)

    flooder = threading.Thread(target=flood, daemon=True)
    flooder.start()
    try:
        deadline = time.monotonic() + 60
        while not refusals and time.monotonic() < deadline:
            time.sleep(0.05)
        assert refusals, "the model queue never filled"
        start = time.monotonic()
        status = client.predict(
            inspection_id, rated, "wrong", "C7 missing pin", "", api_name="/feedback"
        )
        composite, _, _ = client.predict(
            "ribbed", "round", "D4 bent pin (up)", True, False, 3, api_name="/generate"
        )
        layout = CompositeLayout(448)
        pair = [running.log.parent / f"lane-{p}.png" for p in ("reference", "test")]
        for path, panel in zip(pair, ("reference", "test"), strict=True):
            Image.open(composite).crop(layout.crop_box(panel)).save(path)
        _, result = client.predict(*map(handle_file, pair), api_name="/soartc")
        with pytest.raises(ValidationError) as refused:
            inspect(client, sample[0], "")
        end = time.monotonic()
    finally:
        stop.set()
        flooder.join(timeout=60)
    assert status.startswith("Thank you: feedback #")
    assert result["top"][0][0] == "D4"
    assert sum(start <= t <= end for t in refusals) >= 2  # full while they were answered
    message = str(refused.value)
    assert "The queue for model calls (/inspect) is full" in message
    assert "try again in a minute" in message and "/feedback have queues of their own" in message
