"""How fast a looked connector renders, against the classic renderer, in one run on one core.

Prints, per look family, the median milliseconds per connector image (423 x 204, the 448 px
composite's panel) over ``--samples`` samples, each a new look (its flat layers drawn, then two
shots: a good reference and a test with the ``qa`` mix of defects), so the per-look cost is
shared by the two images of a sample as in a dataset build; and the same for the classic renderer
(default nuisances) in the same process, interleaved sample by sample so that load on the machine
hits both alike. OpenCV, numba and BLAS run on one thread.

Goal (issue 18): a looked image in <= 8 ms median on one core. CPU time (this thread's) is the
figure: on a shared machine the wall time also counts waiting for a core.

Usage (from the repository root):
    python -m benchmarks.bench_looks [--samples 60]
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("NUMBA_NUM_THREADS", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")

import cv2  # noqa: E402
import numpy as np  # noqa: E402

from dataset_tools.looks import LOOK_FAMILIES, draw_look  # noqa: E402
from dataset_tools.render import ConnectorSpec, Nuisances, render_connector  # noqa: E402
from dataset_tools.sampling import draw_spec, row_rng  # noqa: E402
from qeu_space.geometry import CompositeLayout  # noqa: E402

GOAL_MS = 8.0


def _pair(family: str, i: int, geo) -> tuple[float, float]:
    """CPU and wall seconds per image of one sample of ``family`` (reference and test)."""
    rng = row_rng(18, "train", i)
    spec = draw_spec("qa", "train", i, rng)
    start, cpu = time.perf_counter(), time.thread_time()
    if family == "classic":
        render_connector(ConnectorSpec(spec.housing, spec.pins), geo, Nuisances(), rng)
        render_connector(
            ConnectorSpec(spec.housing, spec.pins, spec.findings), geo, Nuisances(), rng
        )
    else:
        look = draw_look(family, rng, geo)
        render_connector(ConnectorSpec(), geo, Nuisances(), rng, look=look)
        spec2 = ConnectorSpec(findings=spec.findings)
        render_connector(spec2, geo, Nuisances(), rng, look=look.shot(rng, geo))
    return (time.thread_time() - cpu) / 2, (time.perf_counter() - start) / 2


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=60, help="samples per family (60)")
    args = parser.parse_args(argv)
    cv2.setNumThreads(1)
    geo = CompositeLayout().connector
    families = [f for f in LOOK_FAMILIES if f != "classic"]
    for family in ["classic", *families]:  # warm up: numba compiles, the texture banks fill
        _pair(family, 10**6, geo)
    times: dict[str, list[tuple[float, float]]] = {f: [] for f in ["classic", *families]}
    load = os.getloadavg()[0]
    for i in range(args.samples):
        for family in times:
            times[family].append(_pair(family, i, geo))
    print(f"load average {load:.2f} -> {os.getloadavg()[0]:.2f}; {os.cpu_count()} cores")
    ms = {f: np.array(ts) * 1e3 for f, ts in times.items()}  # (samples, [cpu, wall])
    classic = np.median(ms["classic"], axis=0)
    print(f"{'family':<16}{'CPU ms/image':>13}{'p90':>8}{'x classic':>11}{'wall ms':>9}")
    for family, m in ms.items():
        cpu, wall = np.median(m, axis=0)
        p90 = np.percentile(m[:, 0], 90)
        print(f"{family:<16}{cpu:>13.2f}{p90:>8.2f}{cpu / classic[0]:>11.2f}{wall:>9.2f}")
    looked = np.concatenate([m for f, m in ms.items() if f != "classic"])
    cpu, wall = np.median(looked, axis=0)
    verdict = "meets" if cpu <= GOAL_MS else "misses"
    print(
        f"all looks: median {cpu:.2f} ms CPU per image ({cpu / classic[0]:.2f} x classic "
        f"{classic[0]:.2f} ms), wall {wall:.2f} ms; {verdict} the {GOAL_MS:.0f} ms goal"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
