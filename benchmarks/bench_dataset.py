"""How fast the dataset tools make composites and rows.

Prints, in one run:
* composites per second at 448 x 448 (renderer + composite, nuisances on) in one process, one
  thread, and with 2 worker processes (what ``--num-proc 2`` shares out);
* the same in one process with the clean-product cache cleared before every composite: the
  baseline of drawing every pin of both products from scratch each time;
* rows per second of ``python -m dataset_tools build`` including PNG encoding and parquet writing,
  with ``--num-proc 1`` and ``2``.

Goal (issue 2): at least 200 composites per second per core.

Usage:
    python -m benchmarks.bench_dataset [--composites 600] [--rows 400]   (from the repository root)
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

os.environ.setdefault("NUMBA_NUM_THREADS", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")

import datasets  # noqa: E402

from dataset_tools import compose, render  # noqa: E402
from dataset_tools.builders import BuildConfig  # noqa: E402
from dataset_tools.sampling import draw_spec, row_rng  # noqa: E402
from dataset_tools.save import build_to_folder  # noqa: E402


def _composites(indices: range, clear_cache: bool = False) -> int:
    for i in indices:
        if clear_cache:
            render._clean_connector.cache_clear()
            render._bare_housing.cache_clear()
            compose.reference_image.cache_clear()
        rng = row_rng(0, "train", i)
        compose.make_sample(draw_spec("qa", "train", i, rng), rng)
    return len(indices)


def _rate(fn, *args) -> float:
    start = time.perf_counter()
    n = fn(*args)
    return n / (time.perf_counter() - start)


def _parallel(n: int, workers: int) -> float:
    chunks = [range(k, n, workers) for k in range(workers)]
    with ProcessPoolExecutor(workers) as pool:
        list(pool.map(_composites, [range(0, 8 * workers)] * workers))  # warm up each worker
        start = time.perf_counter()
        done = sum(pool.map(_composites, chunks))
    return done / (time.perf_counter() - start)


def _rows(n: int, num_proc: int) -> float:
    out = Path(tempfile.mkdtemp(prefix="qeu-bench-")) / "qa"
    cfg = BuildConfig("qa", num=n, seed=0, eval_fraction=0.1, num_proc=num_proc)
    start = time.perf_counter()
    rows = build_to_folder(cfg, out, command="bench")
    rate = sum(rows.values()) / (time.perf_counter() - start)
    shutil.rmtree(out.parent)
    return rate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--composites", type=int, default=600, help="composites per measurement")
    parser.add_argument("--rows", type=int, default=400, help="train rows per build measurement")
    args = parser.parse_args()
    datasets.disable_progress_bars()
    _composites(range(20))  # compile numba kernels, fill caches

    one = _rate(_composites, range(args.composites))
    baseline = _rate(_composites, range(args.composites // 6), True)
    two = _parallel(args.composites, 2)
    rows1 = _rows(args.rows, 1)
    rows2 = _rows(args.rows, 2)

    print(f"machine: {os.cpu_count()} cores; composites 448 x 448, nuisances on, qa mix")
    print(f"composites/s, 1 process, 1 thread : {one:8.1f}   (goal >= 200 per core)")
    print(
        f"baseline: full redraw each time   : {baseline:8.1f}   "
        f"-> cache speed-up x{one / baseline:.1f}"
    )
    print(f"composites/s, 2 processes         : {two:8.1f}   ({two / one:.2f} x one process)")
    print(f"rows/s incl. PNG + parquet, 1 proc: {rows1:8.1f}")
    print(f"rows/s incl. PNG + parquet, 2 proc: {rows2:8.1f}")


if __name__ == "__main__":
    main()
