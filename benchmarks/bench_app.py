"""Latency of the Space's API through gradio_client on CPU: ``/soartc`` and a full ``/inspect``.

Launches ``python app.py`` (127.0.0.1, offline) and times sequential, warm requests the way an API
user makes them: each call uploads its images (``handle_file``) and downloads the heatmap it
returns. Prints p50 / p95 / mean per endpoint and, in the same run, the baseline: the same work
called in process without Gradio (``run_soartc`` and ``InspectionApp.inspect_image``, in a worker
thread as Gradio runs handlers), so the difference is what serving costs. Served and baseline
calls take turns, so a change in the load of this shared machine falls on both.

Two clients are timed. ``gradio_client`` builds a new ``httpx`` client for every HTTP request it
makes (each upload, the queue join, the event stream, each download) and ``httpx`` loads the CA
bundle into a fresh SSL context each time, about 35 ms even for ``http://``; a ``Client`` given one
SSL context to reuse (``ssl_verify=ssl.create_default_context()``, still verifying certificates)
skips that. Both rows are reported: "default" is ``Client(url)``, "shared SSL context" the latter.

``--profile`` adds where the time of one call goes: on the client, the milliseconds gradio_client
spends uploading, joining the queue, waiting for the result and downloading (its internal
methods, timed on 10 calls per endpoint with the shared SSL context); on the server, Gradio's own
trace (``GRADIO_PROFILING=1``: queue wait, pre-processing, the handler, post-processing).

Models (``--models``, ``embedded`` by default): ``embedded`` (what ``python app.py`` loads: the
folders under ``models/``) and ``tiny`` (random-weight Idefics3 + LoRA, ViT and Florence-2 built in
a temporary folder: every panel runs). Generation is capped at ``--max-new-tokens``.

Usage:
    python -m benchmarks.bench_app [--requests 20] [--warmup 3] [--models embedded tiny] \\
        [--max-new-tokens 32] [--profile] [--out benchmarks/RESULTS_app.md]
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
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import date
from pathlib import Path

# One thread: on this 2-core machine shared with training jobs, 2 OpenMP threads spin against the
# other jobs and make every figure (served and in process) noisy by a factor of 5-20.
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("NUMBA_NUM_THREADS", "1")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

DEFECTS = (
    "C7 missing pin",
    "U3 bent pin (left)",
    "",
    "D1 missing pin; C4 bent pin (up)",
    "U9 bent pin (down)",
)
GOALS_MS = {"/soartc": 100, "/inspect": 500}
CLIENT_PHASES = {
    "_upload_file": "uploads",
    "send_data": "join the queue",
    "_sse_fn_v1plus": "wait for the result",
    "_download_file": "downloads",
}


@dataclass(frozen=True)
class Timing:
    name: str
    seconds: list[float]

    @property
    def p50(self) -> float:
        return float(np.percentile(self.seconds, 50) * 1000)

    def row(self) -> str:
        ms = np.array(self.seconds) * 1000
        return (
            f"| {self.name} | {len(ms)} | {np.percentile(ms, 50):.0f} | "
            f"{np.percentile(ms, 95):.0f} | {ms.mean():.0f} |"
        )


def timed_rounds(
    fns: dict[str, Callable[[int], object]], requests: int, warmup: int
) -> list[Timing]:
    """Round ``i`` calls every function once, in turn."""
    for i in range(warmup):
        for fn in fns.values():
            fn(i)
    seconds: dict[str, list[float]] = {name: [] for name in fns}
    for i in range(requests):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn(i)
            seconds[name].append(time.perf_counter() - start)
    for name, values in seconds.items():
        print(f"{name}: p50 {statistics.median(values) * 1000:.0f} ms", flush=True)
    return [Timing(name, values) for name, values in seconds.items()]


def client_phases(call: Callable[[int], object], calls: int) -> dict[str, float]:
    """Mean milliseconds per call spent in gradio_client's own steps (methods wrapped)."""
    from gradio_client import client as gc

    spent: dict[str, float] = dict.fromkeys(CLIENT_PHASES.values(), 0.0)
    owners = {"send_data": gc.Client}
    originals = {}
    for name, phase in CLIENT_PHASES.items():
        owner = owners.get(name, gc.Endpoint)
        original = getattr(owner, name)
        originals[name] = (owner, original)

        def timed(*a, __f=original, __phase=phase, **k):
            start = time.perf_counter()
            try:
                return __f(*a, **k)
            finally:
                spent[__phase] += time.perf_counter() - start

        setattr(owner, name, timed)
    start = time.perf_counter()
    try:
        for i in range(calls):
            call(i)
    finally:
        for name, (owner, original) in originals.items():
            setattr(owner, name, original)
    total = time.perf_counter() - start
    out = {phase: 1000 * value / calls for phase, value in spent.items()}
    out["whole call"] = 1000 * total / calls
    return out


def server_phases(url: str) -> dict[str, dict[str, float]]:
    """Gradio's traces (``GRADIO_PROFILING=1``), p50 ms per endpoint and phase."""
    import httpx

    traces = httpx.get(url + "/gradio_api/profiling/traces", timeout=60).json()
    if isinstance(traces, dict):
        traces = traces.get("traces", [])
    phases = ("queue_wait", "preprocess", "fn_call", "postprocess", "total")
    out: dict[str, dict[str, float]] = {}
    for fn in {t["fn_name"] for t in traces}:
        rows = [t for t in traces if t["fn_name"] == fn]
        out[fn] = {p: float(np.median([t[f"{p}_ms"] for t in rows])) for p in phases}
        out[fn]["count"] = len(rows)
    return out


def profile_lines(calls: dict[str, Callable[[int], object]], url: str) -> list[str]:
    """Where the time of a call goes, client side and server side (Markdown)."""
    lines = [
        "Where the time goes (`--profile`, shared SSL context, 10 calls each; client: mean ms "
        "per call in gradio_client's steps; server: Gradio's trace, p50 ms):",
        "",
        "| endpoint | " + " | ".join(CLIENT_PHASES.values()) + " | whole call |",
        "|---|" + "---:|" * (len(CLIENT_PHASES) + 1),
    ]
    for name, call in calls.items():
        spent = client_phases(call, 10)
        cells = [f"{spent[p]:.0f}" for p in (*CLIENT_PHASES.values(), "whole call")]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "| server event | calls | queue wait | pre-process | handler | post-process | total |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for fn, p in sorted(server_phases(url).items(), key=lambda kv: str(kv[0])):
        lines.append(
            f"| {fn} | {p['count']:.0f} | {p['queue_wait']:.1f} | {p['preprocess']:.1f} | "
            f"{p['fn_call']:.1f} | {p['postprocess']:.1f} | {p['total']:.1f} |"
        )
    return [*lines, ""]


def measure(
    kind: str, args: argparse.Namespace
) -> tuple[list[Timing], float, str, float, list[str]]:
    """Launch the app on ``kind`` models and time both endpoints against their baselines.

    Returns the timings, the start-up seconds, a line saying which models answered, the 1-minute
    load average after the run and, with ``--profile``, the profile's Markdown lines.
    """
    from gradio_client import Client, handle_file

    from qeu_space.feedback import FeedbackStore
    from qeu_space.geometry import CompositeLayout
    from qeu_space.modeling.devices import detect_device
    from qeu_space.ui.adapter_panel import models_markdown
    from qeu_space.ui.handlers import InspectionApp
    from qeu_space.ui.models import load_models
    from qeu_space.ui.reading import read_findings
    from qeu_space.ui.settings import AppSettings
    from qeu_space.ui.soartc_view import run_soartc
    from tests.browser.app_server import app_env, launched_app, make_tiny_models

    with tempfile.TemporaryDirectory(prefix="qeu-bench-app-") as tmp_name:
        tmp = Path(tmp_name)
        models = make_tiny_models(tmp / "models") if kind == "tiny" else {}
        env = app_env(tmp, models, QEU_MAX_NEW_TOKENS=str(args.max_new_tokens))
        env["OMP_NUM_THREADS"] = env["NUMBA_NUM_THREADS"] = os.environ["OMP_NUM_THREADS"]
        if args.profile:
            env["GRADIO_PROFILING"] = "1"
        # Baseline: the same work in this process, no Gradio (same models, same settings).
        settings = AppSettings.from_env({k: v for k, v in env.items() if k.startswith("QEU_")})
        loaded = load_models(settings, detect_device({"QEU_DEVICE": "cpu"}))
        which = "; ".join(line[2:] for line in models_markdown(loaded).splitlines())
        store = FeedbackStore(tmp / "baseline.sqlite3")
        inproc = InspectionApp(settings, loaded, source=None, store=store, gallery=[])
        start = time.perf_counter()
        with launched_app(tmp, env) as app:
            startup = time.perf_counter() - start
            dl = str(tmp / "dl")
            default = Client(app.url, verbose=False, download_files=dl)
            shared = Client(
                app.url, verbose=False, download_files=dl, ssl_verify=ssl.create_default_context()
            )
            layout = CompositeLayout(448)
            cases = []
            for i, defects in enumerate(DEFECTS):
                composite, truth, _ = default.predict(
                    "standard", "square", defects, True, True, i, api_name="/generate"
                )
                image = Image.open(composite).convert("RGB")
                ref, test = tmp / f"ref{i}.png", tmp / f"test{i}.png"
                image.crop(layout.crop_box("reference")).save(ref)
                image.crop(layout.crop_box("test")).save(test)
                cases.append((composite, truth, ref, test, image))

            def api_soartc(client: Client) -> Callable[[int], object]:
                def call(i: int) -> object:
                    _, _, ref, test, _ = cases[i % len(cases)]
                    heat, result = client.predict(
                        handle_file(ref), handle_file(test), api_name="/soartc"
                    )
                    assert Path(heat).is_file() and result["verdict"]
                    return result

                return call

            def api_inspect(client: Client) -> Callable[[int], object]:
                def call(i: int) -> object:
                    composite, truth, *_ = cases[i % len(cases)]
                    iid, report, heat = client.predict(
                        handle_file(composite), truth, api_name="/inspect"
                    )
                    assert iid and Path(heat).is_file() and report["soartc"]
                    return report

                return call

            def soartc_work(i: int) -> object:
                image = cases[i % len(cases)][4]
                ref, test = (image.crop(layout.crop_box(p)) for p in ("reference", "test"))
                return run_soartc(ref, test)

            def inspect_work(i: int) -> object:
                _, truth, _, _, image = cases[i % len(cases)]
                return inproc.inspect_image(image, read_findings(truth))

            # In a worker thread, as Gradio runs a handler: torch's OpenMP team differs between
            # the main thread and the others, and on a busy machine that alone was a factor of
            # 5-20 with 2 threads (spinning against other jobs).
            worker = ThreadPoolExecutor(1)

            def direct_soartc(i: int) -> object:
                return worker.submit(soartc_work, i).result()

            def direct_inspect(i: int) -> object:
                return worker.submit(inspect_work, i).result()

            timings = timed_rounds(
                {
                    "/soartc via gradio_client, shared SSL context": api_soartc(shared),
                    "/soartc via gradio_client, default": api_soartc(default),
                    "run_soartc in process (baseline)": direct_soartc,
                    "/inspect via gradio_client, shared SSL context": api_inspect(shared),
                    "/inspect via gradio_client, default": api_inspect(default),
                    "inspect_image in process (baseline)": direct_inspect,
                },
                args.requests,
                args.warmup,
            )
            profile = []
            if args.profile:
                profile = profile_lines(
                    {"/soartc": api_soartc(shared), "/inspect": api_inspect(shared)}, app.url
                )
            worker.shutdown()
        store.close()
    return timings, startup, which, os.getloadavg()[0], profile


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--models", nargs="+", choices=("tiny", "embedded"), default=["embedded"])
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument("--profile", action="store_true", help="where the time goes")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/RESULTS_app.md"))
    args = parser.parse_args(argv)

    command = "python -m benchmarks.bench_app " + shlex.join(sys.argv[1:] if argv is None else argv)
    load_start = os.getloadavg()
    lines = [
        "# Space API latency (CPU)",
        "",
        f"Command: `{command.strip()}` ({date.today().isoformat()})",
        "",
        f"Machine: {platform.machine()}, {os.cpu_count()} CPU cores shared with other work (load "
        f"average {load_start[0]:.1f} / {load_start[1]:.1f} / {load_start[2]:.1f} at the start), "
        f"OMP/NUMBA threads {os.environ['OMP_NUM_THREADS']}, Python {platform.python_version()}; "
        f"answers capped at {args.max_new_tokens} new tokens. Goals (issue 11): `/soartc` p50 <= "
        f"{GOALS_MS['/soartc']} ms, `/inspect` p50 <= {GOALS_MS['/inspect']} ms.",
        "",
        "Sequential warm requests, served and baseline calls taking turns. `/soartc` uploads a "
        "reference and a test image and downloads the heatmap (JPEG) it returns with its JSON "
        "result; `/inspect` uploads one composite, runs SOARTC and every available model (ViT, the "
        "chat VLM twice: adapter off then on, Florence-2 `<OD>`) and returns the inspection id, "
        "the JSON report and the heatmap, which is downloaded. *default* is `Client(url)`; "
        "*shared SSL context* is `Client(url, ssl_verify=ssl.create_default_context())`, which "
        "spares gradio_client a fresh CA-bundle load (~35 ms) on each of its HTTP requests. "
        "The baseline rows are the same work in one process without Gradio, run in a worker "
        "thread as Gradio runs its handlers (with 2 OpenMP threads, torch in the main thread was "
        "5-20 x slower than in a worker thread on this busy machine).",
        "",
    ]
    for kind in args.models:
        timings, startup, which, load_end, profile = measure(kind, args)
        title = "tiny random-weight models" if kind == "tiny" else "embedded models (`models/`)"
        by_name = {t.name: t for t in timings}
        ratios = []
        for endpoint, baseline in (
            ("/soartc", "run_soartc in process (baseline)"),
            ("/inspect", "inspect_image in process (baseline)"),
        ):
            for client in ("shared SSL context", "default"):
                served = by_name[f"{endpoint} via gradio_client, {client}"]
                ratios.append(
                    f"{endpoint} {client}: {served.p50:.0f} ms = "
                    f"{served.p50 / by_name[baseline].p50:.1f} x the in-process p50"
                )
        lines += [
            f"## {title}",
            "",
            f"{which}. App start-up (imports, model loading, gallery): {startup:.1f} s. Load "
            f"average at the end: {load_end:.1f}.",
            "",
            "| what | requests | p50 ms | p95 ms | mean ms |",
            "|---|---:|---:|---:|---:|",
            *(t.row() for t in timings),
            "",
            "Served against in process (p50): " + "; ".join(ratios) + ".",
            "",
            *profile,
        ]
    text = "\n".join(lines)
    print(text)
    args.out.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
