"""Do model calls starve the light endpoints? ``/feedback`` and ``/soartc`` p50, idle and under
``--inspectors`` concurrent ``/inspect`` calls, in one run of one ``python app.py``.

Issue 21, item 4: with 20 ``/inspect`` running, ``/feedback`` p50 was 2.6x and ``/soartc`` 2.3x
their idle p50: the queue lanes kept them from being refused, not from waiting for the CPU. The
Space now bounds torch's threads for model calls (``QEU_MODEL_THREADS``, default all cores but
one) and, on the CPU, runs its models in a worker process (``QEU_MODEL_WORKER``), so a model call
holds neither the web server's GIL nor its CPU priority. The goal: each light endpoint's p50 under
load within 1.5x of its idle p50.

One app is launched (embedded models, as ``python app.py`` serves them, ``OMP_NUM_THREADS`` left
unset so torch picks its threads as it would on a Space). An idle phase times ``--requests``
sequential ``/feedback`` and ``/soartc`` calls taking turns, through gradio_client the way an API
user calls them (``/soartc`` uploads its two images and downloads the heatmap); a loaded phase
starts ``--inspectors`` clients that each call ``/inspect`` again and again (so that many are
queued or running throughout), waits ``--ramp`` seconds, and times the same calls again. Idle and
loaded phases take turns ``--cycles`` times against the same server, so a change in the load of
this shared machine falls on both; the ratio of the p50s is the figure (absolute times depend on
the machine's other load, reported). ``--baseline`` first measures the same with the models in
the web server's process (``QEU_MODEL_WORKER=0``, as before the worker), in the same run.

Usage:
    python -m benchmarks.bench_light_load [--inspectors 20] [--requests 10] [--cycles 2] \\
        [--ramp 5] [--model-worker 0|1] [--worker-nice 10] [--baseline] [--out FILE.md]
"""

from __future__ import annotations

import argparse
import os
import platform
import shlex
import ssl
import statistics
import sys
import tempfile
import threading
import time
from datetime import date
from pathlib import Path

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

GOAL = 1.5


def p50_ms(seconds: list[float]) -> float:
    return statistics.median(seconds) * 1000


def _launch(tmp: Path, args: argparse.Namespace, model_worker: str | None):
    from tests.browser.app_server import app_env, launched_app

    env = app_env(
        tmp,
        {},
        QEU_QUEUE_SIZE=str(args.inspectors + 8),
        QEU_FEEDBACK_PER_MINUTE="100000",
        QEU_MAX_UPLOAD_MB="10",
    )
    for name in ("OMP_NUM_THREADS", "NUMBA_NUM_THREADS"):  # as a Space runs: torch decides
        env.pop(name, None)
        if name in os.environ:
            env[name] = os.environ[name]
    if args.model_threads is not None:
        env["QEU_MODEL_THREADS"] = args.model_threads
    if model_worker is not None:
        env["QEU_MODEL_WORKER"] = model_worker
    if args.worker_nice is not None:
        env["QEU_MODEL_WORKER_NICE"] = args.worker_nice
    return launched_app(tmp, env)


def measure(args: argparse.Namespace, model_worker: str | None) -> dict:
    import httpx
    from gradio_client import Client, handle_file
    from PIL import Image

    from qeu_space.geometry import CompositeLayout

    tmp = Path(tempfile.mkdtemp(prefix="bench-light-"))
    started = time.monotonic()
    with _launch(tmp, args, model_worker) as running:
        startup = time.monotonic() - started
        client = Client(
            running.url,
            verbose=False,
            download_files=str(tmp / "dl"),
            ssl_verify=ssl.create_default_context(),
        )
        composite, truth, _ = client.predict(
            "standard", "square", "C7 missing pin", True, False, 7, api_name="/generate"
        )
        layout = CompositeLayout(448)
        pair = []
        for panel in ("reference", "test"):
            pair.append(tmp / f"{panel}.png")
            Image.open(composite).crop(layout.crop_box(panel)).save(pair[-1])
        inspection_id, report, _ = client.predict(
            handle_file(composite), truth, api_name="/inspect"
        )
        rated = "base" if report["base"]["status"] in ("ok", "unreadable") else "fine-tuned"
        count = [0]

        def feedback() -> None:
            count[0] += 1
            client.predict(
                inspection_id, rated, "wrong", "C7 missing pin", f"bench {count[0]}",
                api_name="/feedback",
            )  # fmt: skip

        def soartc() -> None:
            client.predict(*map(handle_file, pair), api_name="/soartc")

        def phase() -> dict[str, list[float]]:
            times: dict[str, list[float]] = {"/feedback": [], "/soartc": []}
            for _ in range(args.requests):
                for name, call in (("/feedback", feedback), ("/soartc", soartc)):
                    start = time.perf_counter()
                    call()
                    times[name].append(time.perf_counter() - start)
            return times

        feedback(), soartc()  # warm both
        load_before = os.getloadavg()
        api = running.url + "/gradio_api"
        with open(composite, "rb") as f:
            sent = httpx.post(api + "/upload", files={"files": ("c.png", f)}, timeout=60).json()
        image = {"path": sent[0], "meta": {"_type": "gradio.FileData"}}
        stop = threading.Event()
        done = [0]
        refused = [0]

        def inspector() -> None:
            with httpx.Client(timeout=600) as http:
                while not stop.is_set():
                    try:
                        reply = http.post(api + "/call/inspect", json={"data": [image, "", ""]})
                        if reply.status_code != 200:
                            refused[0] += 1
                            time.sleep(0.5)
                            continue
                        event = reply.json()["event_id"]
                        http.get(api + f"/call/inspect/{event}").raise_for_status()
                        done[0] += 1
                    except httpx.HTTPError:
                        if not stop.is_set():
                            raise

        idle: dict[str, list[float]] = {"/feedback": [], "/soartc": []}
        loaded: dict[str, list[float]] = {"/feedback": [], "/soartc": []}
        load_seconds, inspected = 0.0, 0
        for _ in range(args.cycles):  # idle and loaded take turns: the machine's drift hits both
            for name, times in phase().items():
                idle[name] += times
            stop.clear()
            threads = [
                threading.Thread(target=inspector, daemon=True) for _ in range(args.inspectors)
            ]
            for t in threads:
                t.start()
            time.sleep(args.ramp)
            load_start, answered = time.monotonic(), done[0]
            for name, times in phase().items():
                loaded[name] += times
            load_seconds += time.monotonic() - load_start
            inspected += done[0] - answered
            stop.set()
            for t in threads:
                t.join(timeout=300)
        load_after = os.getloadavg()
        model_threads = running.env.get("QEU_MODEL_THREADS", "default (all cores but one)")
        worker = "model worker" in running.log.read_text()
        nice = running.env.get("QEU_MODEL_WORKER_NICE", "10, the default")
    return {
        "idle": idle,
        "loaded": loaded,
        "startup": startup,
        "inspected": inspected,
        "refused": refused[0],
        "load_seconds": load_seconds,
        "loadavg": (load_before, load_after),
        "model_threads": model_threads,
        "worker": worker,
        "nice": nice,
    }


def _where(result: dict) -> str:
    if result["worker"]:
        return f"models in a worker process (nice {result['nice']})"
    return "models in the web process"


def report(results: list[dict], args: argparse.Namespace) -> tuple[str, bool]:
    """The table (the last result is the app as measured; earlier ones are baselines)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    before, after = results[0]["loadavg"][0], results[-1]["loadavg"][1]
    apps = "; ".join(
        f"{_where(r)}: {r['inspected']} inspections answered during the {r['load_seconds']:.0f} s "
        f"measured, {r['refused']} refused by the full model queue, started in "
        f"{r['startup']:.0f} s"
        for r in results
    )
    lines = [
        "# Light endpoints under model load (CPU)",
        "",
        f"Command: `python -m benchmarks.bench_light_load {shlex.join(args.argv)}` "
        f"({date.today().isoformat()})",
        "",
        f"Machine: {platform.machine()}, {cores} CPU cores shared with other work (load average "
        f"{before[0]:.1f} before the first idle phase, {after[0]:.1f} at the end), Python "
        f"{platform.python_version()}; `QEU_MODEL_THREADS`: {results[-1]['model_threads']}; "
        f"`OMP_NUM_THREADS` {os.environ.get('OMP_NUM_THREADS', 'unset')}. "
        f"{len(results)} `python app.py` (embedded models)"
        + (", one after the other." if len(results) > 1 else "."),
        "",
        f"{args.cycles} idle and {args.cycles} loaded phases taking turns, per app. Idle: "
        f"{args.requests} sequential `/feedback` and `/soartc` calls taking turns "
        "(gradio_client, shared SSL context; `/soartc` uploads two images and downloads the "
        f"heatmap). Loaded: the same, {args.ramp:g} s after {args.inspectors} clients started "
        f"calling `/inspect` in a loop ({apps}).",
        "",
        "| app | endpoint | idle p50 ms | loaded p50 ms | loaded / idle | goal |",
        "|---|---|---:|---:|---:|---|",
    ]
    ok = True
    for i, result in enumerate(results):
        label = _where(result) + (" (baseline)" if i < len(results) - 1 else "")
        for name in ("/feedback", "/soartc"):
            idle, loaded = p50_ms(result["idle"][name]), p50_ms(result["loaded"][name])
            ratio = loaded / idle
            if i == len(results) - 1:
                ok &= ratio <= GOAL
            lines.append(
                f"| {label} | {name} | {idle:.0f} | {loaded:.0f} | {ratio:.2f} x | "
                f"{'met' if ratio <= GOAL else 'NOT met'} (<= {GOAL} x) |"
            )
    lines.append("")
    return "\n".join(lines), ok


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--inspectors", type=int, default=20, help="concurrent /inspect clients")
    parser.add_argument("--requests", type=int, default=10, help="light calls per phase")
    parser.add_argument("--cycles", type=int, default=2, help="idle / loaded phase pairs")
    parser.add_argument("--ramp", type=float, default=5.0, help="seconds of load before timing")
    parser.add_argument(
        "--model-threads", default=None, help="QEU_MODEL_THREADS for the app (default: its own)"
    )
    parser.add_argument(
        "--model-worker", choices=("0", "1"), default=None,
        help="QEU_MODEL_WORKER for the app (default: its own, on for the CPU)",
    )  # fmt: skip
    parser.add_argument(
        "--worker-nice", default=None, help="QEU_MODEL_WORKER_NICE for the app (default: 10)"
    )
    parser.add_argument(
        "--baseline", action="store_true",
        help="first measure an app with its models in the web process (QEU_MODEL_WORKER=0)",
    )  # fmt: skip
    parser.add_argument("--out", type=Path, default=None, help="write the table here too")
    args = parser.parse_args(argv)
    if args.inspectors < 1 or args.requests < 3 or args.ramp < 0 or args.cycles < 1:
        parser.error("--inspectors >= 1, --requests >= 3, --cycles >= 1 and --ramp >= 0")
    args.argv = sys.argv[1:] if argv is None else argv
    results = [measure(args, "0")] if args.baseline else []
    results.append(measure(args, args.model_worker))
    text, ok = report(results, args)
    print(text)
    if args.out is not None:
        args.out.write_text(text)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
