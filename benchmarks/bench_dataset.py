"""How fast the dataset tools make composites and whole datasets, against a baseline, in one run.

Prints, in one run (load average at the start and the end):

* composites per second at 448 x 448 (renderer + composite, nuisances and camera placement on,
  the ``qa`` mix) in one process and one thread, and with 2 worker processes; the same with the
  clean-product caches cleared before every composite (the full-redraw baseline);
* PNG encoding, ms per composite and KiB: PIL at ``compress_level=1`` (what the builder used
  before issue 12), zlib level 1 with the composite's top shared (this encoder before ISA-L),
  and :func:`dataset_tools.png.encode_png` at each ``--png-level`` (ISA-L 1-3, 0 stored: the top
  compressed once by zlib level 3, the rest by ISA-L or stored), and all stored;
* end to end, what a user waits for: ``python -m dataset_tools build --config qa`` from process
  start to the last parquet file, composites (rows) per second with ``--num-proc 1`` and ``2``,
  and their ratio; the same with ``--png-level 0``, and for a baseline checkout (``--baseline``,
  default main before the issue-20 speed work, extracted with ``git archive``).

Goals (issues 12 and 20): end to end >= 100 composites per second with one process (one core),
and ``--num-proc 2`` >= 1.7 x one process. The machine these run on is shared, so the figures to
compare are those of one run, in process CPU time (user + system, workers included): the last
line gives end to end against rendering alone (the in-process loop above), which says what share
of a build's CPU the renderer is and what the rest (start-up, PNG, parquet) costs.

Usage (from the repository root):
    python -m benchmarks.bench_dataset [--rows 2000 8000] [--repeats 3] [--composites 600]
        [--baseline REF | none]
"""

from __future__ import annotations

import argparse
import io
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
import zlib
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

os.environ.setdefault("NUMBA_NUM_THREADS", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402

from dataset_tools import compose, png, render  # noqa: E402
from dataset_tools.png import encode_png  # noqa: E402
from dataset_tools.sampling import draw_spec, row_rng  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
BASELINE = "50c0599"
"""Main before the issue-20 build speed work (``060b9c7``: before issue 12's, PIL PNG and
datasets' from_generator + to_parquet)."""


def _composites(indices: range, clear_cache: bool = False) -> int:
    for i in indices:
        if clear_cache:
            render._clean_connector.cache_clear()
            render._bare_housing.cache_clear()
            compose.reference_rendered.cache_clear()
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


def _png_ms(n: int, settings: dict[str, dict]) -> dict[str, tuple[float, float, float]]:
    """ms per composite (CPU time) with every top already compressed, ms per composite with each
    top compressed on first sight (the ``n`` composites have a few dozen different tops: a
    build of thousands has at most 96), and KiB, of each PNG encoder setting on the same ``n``
    composites: ``"PIL"`` (level 1, no shared top), ``"zlib 1"`` (the encoder before ISA-L: the
    top compressed once at zlib level 1, the rest at zlib level 1 each time), else
    :func:`encode_png` keywords, the top shared."""
    samples = []
    for i in range(n):
        rng = row_rng(0, "train", i)
        samples.append(compose.make_sample(draw_spec("qa", "train", i, rng), rng))
    top = samples[0].layout.origin("test")[1]
    images = [np.asarray(s.image) for s in samples]
    out = {}
    for name, kwargs in settings.items():
        tops: dict[bytes, int] = {}
        png._LOCAL = png.threading.local()  # each setting compresses its own tops once
        times = []
        for _ in range(2):  # cold, then warm
            start, size = time.thread_time(), 0
            for s, image in zip(samples, images, strict=True):
                if name == "PIL":
                    buf = io.BytesIO()
                    s.image.save(buf, format="PNG", compress_level=1)
                    size += buf.tell()
                elif name == "zlib 1":
                    raw = np.zeros((image.shape[0], image.shape[1] * 3 + 1), np.uint8)
                    raw[:, 1:] = image.reshape(image.shape[0], -1)
                    flat = raw.reshape(-1)
                    cut = top * raw.shape[1]
                    key = flat[:cut].tobytes()
                    if key not in tops:
                        head = zlib.compressobj(1, zlib.DEFLATED, 15, 9)
                        tops[key] = len(head.compress(key) + head.flush(zlib.Z_FULL_FLUSH))
                    tail = zlib.compressobj(1, zlib.DEFLATED, -15, 9)
                    size += tops[key] + len(tail.compress(flat[cut:]) + tail.flush()) + 4 + 57
                else:
                    size += len(encode_png(image, shared_rows=top, **kwargs))
            times.append((time.thread_time() - start) / n * 1000)
        out[name] = (times[1], times[0], size / n / 1024)
    return out


def _cli(root: Path, rows: int, num_proc: int, *extra: str) -> tuple[float, float, int]:
    """Wall seconds from the start of ``python -m dataset_tools build`` to its exit, its CPU
    seconds (user + system, its worker processes included), and the rows written."""
    out = Path(tempfile.mkdtemp(prefix="qeu-bench-")) / "qa"
    command = [sys.executable, "-m", "dataset_tools", "build", "--config", "qa", "--num",
               str(rows), "--seed", "0", "--out", str(out), "--num-proc", str(num_proc),
               "--quiet", *extra]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(root)}
    os.sync()  # the last build's parquet is not written back while this one runs
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    subprocess.run(command, cwd=root, env=env, check=True, capture_output=True)
    seconds = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    import pyarrow.parquet as pq

    total = sum(pq.ParquetFile(f).metadata.num_rows for f in (out / "qa").glob("*.parquet"))
    assert total, "the build wrote nothing"
    shutil.rmtree(out.parent)
    return seconds, cpu, total


Builds = list[tuple[tuple[float, float, int], tuple[float, float, int]]]
"""Each turn's ``(--num-proc 1, --num-proc 2)`` builds, each ``(wall s, CPU s, rows)``."""


def _builds(root: Path, rows: int, repeats: int, *extra: str) -> Builds:
    """``repeats`` turns of a 1-process and a 2-process build of ``rows`` train rows."""
    return [(_cli(root, rows, 1, *extra), _cli(root, rows, 2, *extra)) for _ in range(repeats)]


def _medians(runs: Builds) -> tuple[tuple[float, float, int], tuple[float, float, int]]:
    """Median wall and CPU seconds of the 1- and 2-process builds (rows as built)."""
    return tuple(  # type: ignore[return-value]
        (
            float(np.median([r[k][0] for r in runs])),
            float(np.median([r[k][1] for r in runs])),
            runs[0][k][2],
        )
        for k in (0, 1)
    )


def _print_builds(name: str, runs: Builds) -> None:
    (w1, c1, n), (w2, c2, _) = _medians(runs)
    ratios = [one[0] / two[0] for one, two in runs]
    print(f"  {name:<18} --num-proc 1: {n / w1:6.1f} /s ({n} rows, {w1:5.1f} s wall, "
          f"{n / c1:6.1f} per CPU-s); --num-proc 2: {n / w2:6.1f} /s ({w2:5.1f} s wall, "
          f"CPU {c2 / c1:.2f} x), x{w1 / w2:.2f} "
          f"(x{min(ratios):.2f}-{max(ratios):.2f})")  # fmt: skip


def _checkout(ref: str) -> Path | None:
    """``ref``'s tracked files in a temporary folder (``git archive``), or None without git."""
    folder = Path(tempfile.mkdtemp(prefix="qeu-baseline-"))
    try:
        archive = subprocess.run(
            ["git", "archive", ref], cwd=ROOT, check=True, capture_output=True
        ).stdout
    except (OSError, subprocess.CalledProcessError) as err:
        print(f"baseline {ref}: not available ({err})")
        shutil.rmtree(folder)
        return None
    subprocess.run(["tar", "-x", "-C", str(folder)], input=archive, check=True)
    return folder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--composites", type=int, default=600, help="composites per measurement")
    parser.add_argument(
        "--rows",
        type=int,
        nargs="+",
        default=[2000, 8000],
        help="train rows of each CLI build (default 2000 8000): the first size is compared with "
        "--png-level 0 and the baseline, the others (this tree only) show how --num-proc 2 "
        "scales once the serial start-up is a smaller share",
    )
    parser.add_argument(
        "--repeats",
        type=int,
        default=3,
        help="builds of each kind, 1 and 2 processes taking turns (default 3): a shared machine's "
        "wall clock moves by a fifth from one build to the next, so medians are reported",
    )
    parser.add_argument("--baseline", default=BASELINE, help="git ref to compare with, or none")
    args = parser.parse_args()
    load_start = os.getloadavg()
    _composites(range(20))  # compile numba kernels, fill caches

    cpu_start = time.thread_time()
    one = _rate(_composites, range(args.composites))
    one_cpu = args.composites / (time.thread_time() - cpu_start)
    redraw = _rate(_composites, range(args.composites // 6), True)
    two = _parallel(args.composites, 2)
    pngs = _png_ms(
        60,
        {
            "PIL": {},
            "zlib 1": {},
            **{f"--png-level {level}": {"level": level} for level in (1, 2, 3, 0)},
            "all stored": {"level": 0, "top_level": 0},
        },
    )
    builds = {}
    trees = {"this tree": ROOT}
    baseline = None if args.baseline == "none" else _checkout(args.baseline)
    if baseline is not None:
        trees[f"baseline {args.baseline}"] = baseline
    startup = {}
    rows, *larger = args.rows
    stored_name = "--png-level 0"
    for name, root in trees.items():
        _cli(root, 1, 1)  # a fresh checkout compiles its numba kernels once (cached on disk)
        startup[name] = _cli(root, 1, 1)[1]  # CPU s of a 4-row build: start-up, the serial part
        builds[name] = _builds(root, rows, args.repeats)
        if root == ROOT:
            startup[stored_name] = _cli(root, 1, 1, "--png-level", "0")[1]
            builds[stored_name] = _builds(root, rows, 1, "--png-level", "0")
    scaling = {n: _builds(ROOT, n, args.repeats) for n in larger}
    if baseline is not None:
        shutil.rmtree(baseline)
    load_end = os.getloadavg()

    print(f"machine: {os.cpu_count()} cores; load average {load_start[0]:.2f} at the start, "
          f"{load_end[0]:.2f} at the end")  # fmt: skip
    print("composites 448 x 448, nuisances + camera placement on (the defaults), qa mix")
    print(f"composites/s, 1 process, 1 thread : {one:8.1f}   ({one_cpu:.1f} per CPU second)")
    print(
        f"baseline: full redraw each time   : {redraw:8.1f}   (cache speed-up x{one / redraw:.1f})"
    )
    print(f"composites/s, 2 processes         : {two:8.1f}   ({two / one:.2f} x one process)")
    print("PNG per composite (CPU; the top shared, compressed once per content; default "
          "--png-level 2):")  # fmt: skip
    print("  warm: every top already known; cold: each top compressed on first sight")
    for name, (warm, cold, kib) in pngs.items():
        label = {"PIL": "PIL, compress_level=1 (before issue 12)",
                 "zlib 1": "zlib level 1 (this encoder before isal)"}.get(name, name)  # fmt: skip
        print(f"  {label:<40}: {warm:6.2f} ms warm (x{pngs['zlib 1'][0] / warm:4.1f} against "
              f"zlib level 1), {cold:6.2f} ms cold, {kib:4.0f} KiB")  # fmt: skip
    print(f"end to end: python -m dataset_tools build --config qa --num {rows} --quiet")
    print("  (composites per wall second; per CPU second of the build and its workers, which a")
    print(f"  busy machine inflates less; medians of {args.repeats} builds, 1 and 2 processes")
    print("  taking turns, the x range over the pairs of one turn)")
    names = [*trees]
    names.insert(1, stored_name)
    for name in names:
        _print_builds(name, builds[name])
        (w1, c1, n), (w2, c2, _) = _medians(builds[name])
        serial = startup[name]
        model = c1 / (serial + (c2 - serial) / 2)
        print(f"  {'':<18} start-up {serial:.2f} CPU-s; on 2 idle cores (CPU-time model: start-up "
              f"serial, the rest shared) --num-proc 2 would be x{model:.2f}")  # fmt: skip
    for n, runs in scaling.items():
        _print_builds(f"--num {n}", runs)
    if baseline is not None:
        mine = _medians(builds["this tree"])[0]
        base = _medians(builds[f"baseline {args.baseline}"])[0]
        print(f"  speed-up over the baseline, one process: x{base[0] / mine[0]:.1f} wall, "
              f"x{base[1] / mine[1]:.1f} CPU")  # fmt: skip
    for name in ("this tree", stored_name):
        (w1, c1, n), (w2, c2, _) = _medians(builds[name])
        serial = startup[name]
        print(
            f"goals ({name}, --num {rows}): >= 100 composites/s with one process: "
            f"{n / w1:.1f} per wall second, "
            f"{n / c1:.1f} per CPU second; --num-proc 2 >= 1.7 x one process: x{w1 / w2:.2f} "
            f"wall, x{c1 / (serial + (c2 - serial) / 2):.2f} by CPU time"
        )
        print(
            f"  --num-proc 2 end to end x{w1 / w2:.2f} against rendering alone's x{two / one:.2f} "
            f"in 2 processes (this run): the build keeps {w1 / w2 / (two / one):.2f} of what the "
            "machine gives the renderer"
        )
        print(
            f"  end to end against rendering alone (CPU time, this run): {n / c1:.1f} vs "
            f"{one_cpu:.1f} composites per CPU second = {n / c1 / one_cpu:.2f} of the renderer's "
            "rate"
        )


if __name__ == "__main__":
    main()
