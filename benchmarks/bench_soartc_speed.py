"""How fast is SOARTC? Against the seeds' way, by image size, and for a batch on both cores.

Prints, in one run, and writes to ``benchmarks/RESULTS_soartc.md``:

* the seeds' way (a Python loop over windows calling their ``calc_soaRT3``: numba dot products
  and ``scipy.spatial.distance.chebyshev``; then the same anomaly stage and heatmap as ``soartc``,
  in numpy) against ``soartc`` on the same rendered pair, window 8, stride 1, one thread, at
  250 x 250 and 100 x 100. The seeds did not align images, so the like-for-like ratio is against
  ``soartc(align=False)``; the default (``align=True``) is shown too. Both give the same metrics
  (checked in the run). Timings are the best of several runs of CPU time of the calling thread
  for both sides (the machine is shared). For the ``selfsim`` descriptor the seeds' way builds
  each window's self-similarity matrix in the loop; it is timed on the first windows only and
  extrapolated per window;
* time per call and per pixel by image size (should be linear in pixels);
* a batch of 64 pairs (250 x 250): one after another on one and on two numba threads, and
  ``soartc_many`` with two workers (a pair per core);
* the cost of photometric normalisation: the Space's call, ``soartc(reference, test,
  register=True)`` on the two panels of a generated composite, with ``normalisation="none"``
  (before) and each normalisation (after, ``joint`` the default), and the normalisation alone
  (section ``speed-normalisation``; ``--part normalisation`` runs only it).

Usage:
    python -m benchmarks.bench_soartc_speed [--repeats 3] [--part all|normalisation]
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
from collections.abc import Callable

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("NUMBA_NUM_THREADS", "2")

import numba  # noqa: E402
import numpy as np  # noqa: E402
from numba import jit  # noqa: E402
from scipy.spatial.distance import chebyshev  # noqa: E402

from benchmarks._soartc_results import machine, write_section  # noqa: E402
from dataset_tools.render import ConnectorSpec, Nuisances, render_connector  # noqa: E402
from qeu_space.geometry import ConnectorGeometry  # noqa: E402
from qeu_space.soartc import _reference, soartc, soartc_many, to_gray  # noqa: E402
from qeu_space.vocabulary import Finding  # noqa: E402

NUISANCES = Nuisances(
    gain=0.2, gradient=0.0, noise=3.0, blur=0.0, shift=1.0, rotation=0.0, jpeg=None
)
WINDOW, STRIDE = 8, 1
SELFSIM_WINDOWS = 3000


# --------------------------------------------------------------------------- the seeds' way


@jit(nopython=True)
def cal_linear(x, y):
    """The seeds' numba part of SOART3, as published."""
    xx = np.dot(x, x) + 0.0001
    xy = np.dot(x, y) + 0.0001
    beta = xy / xx
    m_distance = np.linalg.norm(y - beta * x, ord=1)
    return beta, m_distance


def calc_soart3(sig, tani):
    """The seeds' ``calc_soaRT3(tsr_sig_array, tsr_tani_array)``, as published."""
    beta, m_distance = cal_linear(tani, sig)
    v_distance = chebyshev(sig, beta * tani)
    log_beta = math.log(beta)
    log_yita = math.log(m_distance + 1.0)
    log_gamma = math.log(v_distance + 1.0) - log_yita
    return log_beta, log_yita, log_gamma


def seeds_stage1_pixels(ref: np.ndarray, test: np.ndarray, limit: int | None = None) -> np.ndarray:
    gh, gw = (ref.shape[0] - WINDOW) // STRIDE + 1, (ref.shape[1] - WINDOW) // STRIDE + 1
    out = np.zeros((3, gh, gw))
    n = 0
    for i in range(gh):
        for j in range(gw):
            y0, x0 = i * STRIDE, j * STRIDE
            sig = test[y0 : y0 + WINDOW, x0 : x0 + WINDOW].ravel()
            tani = ref[y0 : y0 + WINDOW, x0 : x0 + WINDOW].ravel()
            out[:, i, j] = calc_soart3(sig, tani)
            n += 1
            if limit is not None and n >= limit:
                return out
    return out


def _responses(img: np.ndarray) -> np.ndarray:
    p = np.pad(img, 1, mode="edge")
    c = p[1:-1, 1:-1]
    return np.stack(
        [
            c,
            0.5 * (p[1:-1, 2:] - p[1:-1, :-2]),
            0.5 * (p[2:, 1:-1] - p[:-2, 1:-1]),
            p[1:-1, :-2] + p[1:-1, 2:] + p[:-2, 1:-1] + p[2:, 1:-1] - 4.0 * c,
        ]
    )


def seeds_stage1_selfsim(ref: np.ndarray, test: np.ndarray, limit: int) -> tuple[np.ndarray, int]:
    """Each window's self-similarity (Gram) matrix built in the loop, then the seeds' SOART3."""
    rr, rt = _responses(ref), _responses(test)
    iu = np.triu_indices(4)
    gw = (ref.shape[1] - WINDOW) // STRIDE + 1
    out = []
    for n in range(limit):
        i, j = divmod(n, gw)
        a = rr[:, i : i + WINDOW, j : j + WINDOW].reshape(4, -1)
        b = rt[:, i : i + WINDOW, j : j + WINDOW].reshape(4, -1)
        out.append(calc_soart3((b @ b.T)[iu], (a @ a.T)[iu]))
    return np.array(out), limit


def seeds_stage2(metrics: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """The same anomaly stage and heatmap as ``soartc``, in numpy (no per-window loop there)."""
    loc, cov = _reference.robust_unit_space(metrics.reshape(3, -1))
    anomaly = _reference.mahalanobis_grid(metrics, loc, np.linalg.inv(cov))
    return _reference.cover_mean(anomaly, *shape, WINDOW, STRIDE).astype(np.float32)


# --------------------------------------------------------------------------- helpers


def best_of(fn: Callable[[], object], repeats: int, clock=time.thread_time) -> float:
    """Best of ``repeats`` runs; by default CPU seconds of this thread, which other people's
    processes on a shared machine do not inflate (one-thread runs execute on this thread)."""
    best = math.inf
    for _ in range(repeats):
        t0 = clock()
        fn()
        best = min(best, clock() - t0)
    return best


def rendered_pair(size: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    geo = ConnectorGeometry(size, size)
    rng = np.random.default_rng(seed)
    ref = render_connector(ConnectorSpec(), geo, NUISANCES, rng).image
    bent = ConnectorSpec(findings=(Finding("C5", "bent pin", "left"),))
    return to_gray(ref), to_gray(render_connector(bent, geo, NUISANCES, rng).image)


def normalisation_cost(args: argparse.Namespace) -> str:
    """Before/after table of the photometric normalisation, one run, one thread."""
    from dataset_tools.compose import SampleSpec, make_sample
    from qeu_space.geometry import CompositeLayout
    from qeu_space.soartc.core import _housing_mask
    from qeu_space.soartc.photometric import DEFAULT_NORMALISATION, NORMALISATIONS, normalise
    from qeu_space.ui.cases import COMPOSITE_SIZE, split_composite

    started = time.perf_counter()
    layout = CompositeLayout(COMPOSITE_SIZE)
    spec = SampleSpec("speed", "standard", "square", (), True)
    sample = make_sample(spec, np.random.default_rng(0), layout=layout)
    ref, test = (np.asarray(p.convert("RGB")) for p in split_composite(sample.image))
    test = np.clip(255.0 * (test / 255.0) ** 0.6, 0, 255).astype(np.uint8)  # another gamma
    reps = max(15, args.repeats)
    lines = [
        "## Speed of the photometric normalisation",
        "",
        f"`python -m benchmarks.bench_soartc_speed --part normalisation` on {machine()}: the "
        f"Space's call `soartc(reference, test, register=True)` on the two "
        f"{ref.shape[1]} x {ref.shape[0]} panels of a generated composite (the test under gamma "
        f"0.6), one thread, CPU time of the calling thread, best of {reps}; before "
        "(`normalisation='none'`) and after, in one run.",
        "",
        "| normalisation | ms per pair | added | normalisation alone (ms) |",
        "|---|---:|---:|---:|",
    ]
    gray_ref = to_gray(ref)
    gray_test = to_gray(test)
    mask = _housing_mask(layout.connector)
    base = None
    for method in NORMALISATIONS:
        soartc(ref, test, register=True, normalisation=method)  # compile and warm
        sec = best_of(lambda m=method: soartc(ref, test, register=True, normalisation=m), reps)
        alone = best_of(lambda m=method: normalise(gray_ref, gray_test, m, mask), reps)
        base = sec if method == "none" else base
        name = f"`{method}`" + (" (default)" if method == DEFAULT_NORMALISATION else "")
        name += " (before)" if method == "none" else ""
        added = "-" if method == "none" else f"+{(sec - base) * 1e3:.1f} ms"
        lines.append(f"| {name} | {sec * 1e3:.1f} | {added} | {alone * 1e3:.2f} |")
    lines.append(
        "\n`added` is the difference of two best-of times on a shared machine (a few ms of "
        "noise either way); `normalisation alone` (`normalise` on the two grey panels) is the "
        "direct cost."
    )
    lines.append(f"\nRun time {time.perf_counter() - started:.0f} s.")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=3, help="runs of the seeds' way per size")
    parser.add_argument("--no-write", action="store_true", help="do not update RESULTS_soartc.md")
    parser.add_argument("--part", choices=("all", "normalisation"), default="all")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    numba.set_num_threads(1)
    norm_text = normalisation_cost(args)
    print(norm_text)
    if not args.no_write:
        write_section("speed-normalisation", norm_text)
    if args.part == "normalisation":
        return 0
    warm_ref, warm_test = rendered_pair(100)
    soartc(warm_ref, warm_test)
    soartc(warm_ref, warm_test, descriptor="selfsim")
    calc_soart3(warm_test[:8, :8].ravel(), warm_ref[:8, :8].ravel())
    lines = [
        "## Speed",
        "",
        f"`python -m benchmarks.bench_soartc_speed` on {machine()}, numba "
        f"{numba.__version__} ({numba.threading_layer()} threading layer). One-thread times are "
        "CPU seconds of the calling thread (`time.thread_time`), best of several runs, so other "
        "work on this shared machine does not inflate either side; the batch uses wall time.",
        "",
        "### Against the seeds' way (window 8, stride 1, one thread)",
        "",
        "| image | windows | seeds' way | soartc(align=False) | speed-up | soartc (default, "
        "aligned) | speed-up |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    ratios = {}
    for size in (250, 100):
        ref, test = rendered_pair(size)
        n_windows = ((size - WINDOW) // STRIDE + 1) ** 2
        seeds_metrics = seeds_stage1_pixels(ref, test)
        ours = soartc(ref, test, align=False)
        assert np.allclose(seeds_metrics, ours.metrics, atol=1e-9), "the two ways disagree"
        t_seeds = best_of(lambda r=ref, t=test: seeds_stage2(seeds_stage1_pixels(r, t), r.shape),
                          args.repeats)  # fmt: skip
        reps = max(20, args.repeats)
        t_plain = best_of(lambda r=ref, t=test: soartc(r, t, align=False), reps)
        t_default = best_of(lambda r=ref, t=test: soartc(r, t), reps)
        ratios[size] = t_seeds / t_plain
        lines.append(
            f"| {size} x {size} | {n_windows:,} | {t_seeds * 1e3:.0f} ms | {t_plain * 1e3:.2f} ms "
            f"| {t_seeds / t_plain:.0f}x | {t_default * 1e3:.2f} ms | {t_seeds / t_default:.0f}x |"
        )
    ref, test = rendered_pair(250)
    n_windows = (250 - WINDOW + 1) ** 2
    t_sub = best_of(lambda: seeds_stage1_selfsim(ref, test, SELFSIM_WINDOWS), args.repeats)
    t_selfsim_seeds = t_sub / SELFSIM_WINDOWS * n_windows
    t_selfsim = best_of(lambda: soartc(ref, test, descriptor="selfsim", align=False), 20)
    lines += [
        "",
        f"`selfsim` descriptor at 250 x 250: the seeds' way (Gram matrix per window in the loop) "
        f"timed on its first {SELFSIM_WINDOWS:,} windows, {t_sub / SELFSIM_WINDOWS * 1e6:.1f} us "
        f"per window, extrapolated to {n_windows:,} windows: {t_selfsim_seeds * 1e3:.0f} ms; "
        f"`soartc(descriptor='selfsim', align=False)`: {t_selfsim * 1e3:.2f} ms "
        f"({t_selfsim_seeds / t_selfsim:.0f}x).",
        "",
        f"Goal: >= 300x at 250 x 250. Measured like for like: {ratios[250]:.0f}x "
        f"({'met' if ratios[250] >= 300 else 'not met'}).",
    ]

    # where the time goes at 250 x 250
    from qeu_space.soartc import _kernels as k
    from qeu_space.soartc.core import _estimate_motion

    metrics = k.pixel_metrics(ref, test, WINDOW, STRIDE)
    loc, cov = k.robust_unit_space(metrics.reshape(3, -1))
    prec = np.linalg.inv(cov)
    anomaly = k.mahalanobis_grid(metrics, loc, prec)
    parts = {
        "alignment estimate (block profiles, fit)": lambda: _estimate_motion(k, ref, test),
        "two warps (translation path)": lambda: (
            k.warp_image(ref, 0.3, 0.2, 0.0),
            k.warp_image(test, -0.3, -0.2, 0.0),
        ),
        "stage 1: SOART3 of 59,049 window pairs": lambda: k.pixel_metrics(
            ref, test, WINDOW, STRIDE
        ),
        "stage 2: robust unit space": lambda: k.robust_unit_space(metrics.reshape(3, -1)),
        "stage 2: Mahalanobis map": lambda: k.mahalanobis_grid(metrics, loc, prec),
        "heatmap (coverage mean)": lambda: k.cover_mean(anomaly, 250, 250, WINDOW, STRIDE),
    }
    lines += ["", "Where the time goes (250 x 250, one thread):", "", "| part | ms |", "|---|---:|"]
    for name, fn in parts.items():
        lines.append(f"| {name} | {best_of(fn, 20) * 1e3:.2f} |")

    # scaling with size
    lines += [
        "",
        "### Time by image size (one thread, default settings)",
        "",
        "| image | pixels | ms per call | ns per pixel |",
        "|---|---:|---:|---:|",
    ]
    per_pixel = []
    for size in (64, 100, 160, 250, 400, 640):
        r, t = rendered_pair(size, seed=size)
        sec = best_of(lambda r=r, t=t: soartc(r, t), 10)
        per_pixel.append(sec / size**2 * 1e9)
        lines.append(f"| {size} x {size} | {size**2:,} | {sec * 1e3:.2f} | {per_pixel[-1]:.0f} |")
    lines.append(
        f"\nns per pixel from 160 px up stays within {min(per_pixel[2:]):.0f}-"
        f"{max(per_pixel[2:]):.0f}: linear in pixels (small images pay a fixed call overhead)."
    )

    # batch of 64 pairs
    pairs = [rendered_pair(250, seed=100 + i) for i in range(64)]
    lines += [
        "",
        "### Batch of 64 pairs (250 x 250, default settings)",
        "",
        "| how | seconds | pairs/s |",
        "|---|---:|---:|",
    ]
    for threads in (1, 2):
        numba.set_num_threads(threads)
        sec = best_of(lambda: [soartc(r, t) for r, t in pairs], 3, time.perf_counter)
        lines.append(f"| one pair after another, numba {threads} thread(s) | {sec:.3f} | "
                     f"{64 / sec:.0f} |")  # fmt: skip
    numba.set_num_threads(1)
    sec = best_of(lambda: soartc_many(pairs, workers=2), 3, time.perf_counter)
    lines.append(
        f"| `soartc_many(pairs, workers=2)`: a pair per core | {sec:.3f} | {64 / sec:.0f} |"
    )
    lines.append(
        "\nOne parallel call per pair makes numba's threads meet after every stage, and each "
        "meeting waits for the slower core; a pair per core (`soartc_many`) needs no meeting. "
        "Either gains only as much as the second core is free of other work (see the load "
        "average above)."
    )
    lines.append(f"\nRun time {time.perf_counter() - started:.0f} s.")
    text = "\n".join(lines)
    print(text)
    if not args.no_write:
        write_section("speed", text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
