"""Latency of the Space's API through gradio_client on CPU: ``/soartc`` and a full ``/inspect``.

Launches ``python app.py`` (127.0.0.1, offline) and times sequential requests the way an API user
makes them (each call uploads its images). Prints p50 / p95 / mean per endpoint and, in the same
run, the baseline: the same work called in process without Gradio (``run_soartc`` and
``InspectionApp.inspect_image``), so the difference is what serving costs (upload, queue, image
encoding of the outputs).

Models (``--models``, both by default): ``tiny`` (random-weight Idefics3 + LoRA, ViT and
Florence-2 built in a temporary folder: every panel runs) and ``embedded`` (what ``python app.py``
loads: the folders under ``models/``; panels whose model is not shipped are skipped). Generation
is capped at ``--max-new-tokens``.

Usage:
    python -m benchmarks.bench_app [--requests 20] [--warmup 3] [--models tiny embedded] \\
        [--max-new-tokens 32] [--out benchmarks/RESULTS_app.md]
"""

from __future__ import annotations

import argparse
import os
import platform
import shlex
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "2")
os.environ.setdefault("NUMBA_NUM_THREADS", "2")
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


@dataclass(frozen=True)
class Timing:
    name: str
    seconds: list[float]

    def row(self) -> str:
        ms = np.array(self.seconds) * 1000
        return (
            f"| {self.name} | {len(ms)} | {np.percentile(ms, 50):.0f} | "
            f"{np.percentile(ms, 95):.0f} | {ms.mean():.0f} |"
        )


def timed_rounds(
    fns: dict[str, Callable[[int], object]], requests: int, warmup: int
) -> list[Timing]:
    """Round ``i`` calls every function once, in turn, so that a change in the load of this shared
    machine falls on the served and the baseline figures alike."""
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


def measure(kind: str, args: argparse.Namespace) -> tuple[list[Timing], float, str]:
    """Launch the app on ``kind`` models and time both endpoints against their baselines.

    Returns the timings, the start-up seconds and a line saying which models answered.
    """
    from gradio_client import Client, handle_file

    from qeu_space.feedback import FeedbackStore
    from qeu_space.geometry import CompositeLayout
    from qeu_space.modeling.devices import detect_device
    from qeu_space.ui.adapter_panel import models_markdown
    from qeu_space.ui.handlers import InspectionApp
    from qeu_space.ui.models import load_models
    from qeu_space.ui.settings import AppSettings
    from qeu_space.ui.soartc_view import run_soartc
    from qeu_space.vocabulary import parse_answer
    from tests.browser.app_server import app_env, launched_app, make_tiny_models

    with tempfile.TemporaryDirectory(prefix="qeu-bench-app-") as tmp_name:
        tmp = Path(tmp_name)
        models = make_tiny_models(tmp / "models") if kind == "tiny" else {}
        env = app_env(tmp, models, QEU_MAX_NEW_TOKENS=str(args.max_new_tokens))
        env["OMP_NUM_THREADS"] = env["NUMBA_NUM_THREADS"] = os.environ["OMP_NUM_THREADS"]
        # Baseline: the same work in this process, no Gradio (same models, same settings).
        settings = AppSettings.from_env({k: v for k, v in env.items() if k.startswith("QEU_")})
        loaded = load_models(settings, detect_device({"QEU_DEVICE": "cpu"}))
        which = "; ".join(line[2:] for line in models_markdown(loaded).splitlines()[2:])
        store = FeedbackStore(tmp / "baseline.sqlite3")
        inproc = InspectionApp(settings, loaded, source=None, store=store, gallery=[])
        start = time.perf_counter()
        with launched_app(tmp, env) as app:
            startup = time.perf_counter() - start
            client = Client(app.url, verbose=False, download_files=str(tmp / "dl"))
            layout = CompositeLayout(448)
            cases = []
            for i, defects in enumerate(DEFECTS):
                composite, truth, _ = client.predict(
                    "standard", "square", defects, True, True, i, api_name="/generate"
                )
                image = Image.open(composite).convert("RGB")
                ref, test = tmp / f"ref{i}.png", tmp / f"test{i}.png"
                image.crop(layout.crop_box("reference")).save(ref)
                image.crop(layout.crop_box("test")).save(test)
                cases.append((composite, truth, ref, test, image))

            def api_soartc(i: int) -> object:
                _, _, ref, test, _ = cases[i % len(cases)]
                return client.predict(handle_file(ref), handle_file(test), api_name="/soartc")

            def api_inspect(i: int) -> object:
                composite, truth, *_ = cases[i % len(cases)]
                return client.predict(handle_file(composite), truth, api_name="/inspect")

            def direct_soartc(i: int) -> object:
                image = cases[i % len(cases)][4]
                ref, test = (image.crop(layout.crop_box(p)) for p in ("reference", "test"))
                return run_soartc(ref, test)

            def direct_inspect(i: int) -> object:
                _, truth, _, _, image = cases[i % len(cases)]
                return inproc.inspect_image(image, parse_answer(truth).findings)

            timings = timed_rounds(
                {
                    "/soartc via gradio_client": api_soartc,
                    "run_soartc in process (baseline)": direct_soartc,
                    "/inspect via gradio_client": api_inspect,
                    "inspect_image in process (baseline)": direct_inspect,
                },
                args.requests,
                args.warmup,
            )
        store.close()
    return timings, startup, which


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument(
        "--models", nargs="+", choices=("tiny", "embedded"), default=["tiny", "embedded"]
    )
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/RESULTS_app.md"))
    args = parser.parse_args(argv)

    command = "python -m benchmarks.bench_app " + shlex.join(sys.argv[1:] if argv is None else argv)
    lines = [
        "# Space API latency (CPU)",
        "",
        f"Command: `{command.strip()}`",
        "",
        f"Machine: {platform.machine()}, {os.cpu_count()} CPU cores shared with other work (load "
        f"average {os.getloadavg()[0]:.1f} at the start), OMP/NUMBA threads "
        f"{os.environ['OMP_NUM_THREADS']}, Python {platform.python_version()}; answers capped at "
        f"{args.max_new_tokens} new tokens.",
        "",
        "Sequential requests after warm-up, served and baseline calls taking turns; each API "
        "call uploads its images (one composite for `/inspect`, a reference and a test image for "
        "`/soartc`) and downloads the output images. `/inspect` runs SOARTC and every model that "
        "is available (ViT, the chat VLM twice: adapter off then on, Florence-2 `<OD>`); the "
        "baseline rows are the same calls in one process without Gradio.",
        "",
    ]
    for kind in args.models:
        timings, startup, which = measure(kind, args)
        title = "tiny random-weight models" if kind == "tiny" else "embedded models (`models/`)"
        lines += [
            f"## {title}",
            "",
            f"{which}. App start-up (imports, model loading, gallery): {startup:.1f} s.",
            "",
            "| what | requests | p50 ms | p95 ms | mean ms |",
            "|---|---:|---:|---:|---:|",
            *(t.row() for t in timings),
            "",
        ]
    text = "\n".join(lines)
    print(text)
    args.out.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
