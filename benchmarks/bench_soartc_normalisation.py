"""Which photometric normalisation keeps SOARTC's good pairs low and its defects high?

For each imaging condition of :mod:`benchmarks.soartc_conditions` (applied to the test panel of
a ``classic`` composite pair, as the gallery makes them), ``--pairs`` good and ``--pairs``
one-defect pairs (bent or missing pin) are scored with ``soartc(reference, test, register=True,
normalisation=method)`` for every method of :data:`qeu_space.soartc.photometric.NORMALISATIONS`
(``none`` is the baseline, in the same run on the same pairs). Printed per condition and method:
the good pairs' median and largest score, the defective pairs' smallest and median score, their
top-1 hit, and the gap ``min defective / max good`` (above 1: one threshold separates them all).
Written to ``benchmarks/RESULTS_soartc.md`` (section *Photometric normalisation*).

Usage:
    python -m benchmarks.bench_soartc_normalisation [--pairs 8] [--seed 21] [--no-write]
"""

from __future__ import annotations

import argparse
import os
import sys
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("NUMBA_NUM_THREADS", "1")

import numpy as np  # noqa: E402

from benchmarks._soartc_results import machine, write_section  # noqa: E402
from benchmarks.soartc_conditions import (  # noqa: E402
    CONDITIONS,
    HELD_OUT_CONDITIONS,
    apply_condition,
)
from dataset_tools.compose import SampleSpec, make_sample  # noqa: E402
from dataset_tools.render import HOUSINGS, PIN_STYLES  # noqa: E402
from qeu_space.geometry import CompositeLayout  # noqa: E402
from qeu_space.soartc import soartc, top_positions  # noqa: E402
from qeu_space.soartc.photometric import DEFAULT_NORMALISATION, NORMALISATIONS  # noqa: E402
from qeu_space.ui.cases import COMPOSITE_SIZE  # noqa: E402
from qeu_space.vocabulary import ALL_POSITIONS, DefectKind, Direction, Finding  # noqa: E402

LAYOUT = CompositeLayout(COMPOSITE_SIZE)


def pair(seed: int, index: int, condition: str, defective: bool):
    rng = np.random.default_rng([seed, list(CONDITIONS).index(condition), index, int(defective)])
    housing, pins = str(rng.choice(HOUSINGS)), str(rng.choice(PIN_STYLES))
    findings: tuple[Finding, ...] = ()
    if defective:
        position = ALL_POSITIONS[int(rng.integers(len(ALL_POSITIONS)))]
        if rng.random() < 0.5:
            direction = list(Direction)[int(rng.integers(len(Direction)))]
            findings = (Finding(position, DefectKind.BENT, direction),)
        else:
            findings = (Finding(position, DefectKind.MISSING),)
    sample = make_sample(SampleSpec("n", housing, pins, findings, True), rng, layout=LAYOUT)
    return sample.reference, apply_condition(condition, sample.test, rng), findings


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=8, help="good and defective pairs each")
    parser.add_argument("--seed", type=int, default=21)
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args(argv)
    host, started = machine(), time.perf_counter()
    lines = [
        "## Photometric normalisation",
        "",
        f"`python -m benchmarks.bench_soartc_normalisation --pairs {args.pairs} --seed "
        f"{args.seed}` on {host}. Per imaging condition of the test panel "
        f"(`benchmarks/soartc_conditions.py`; held out from calibration: "
        f"{', '.join(HELD_OUT_CONDITIONS)}), {args.pairs} good and {args.pairs} one-defect "
        "(bent or missing pin) `classic` pairs, every method on the same pairs, scored as the "
        "Space scores them. Gap = smallest defective score / largest good score (above 1: one "
        "threshold separates every pair).",
        "",
        "| condition | normalisation | good median | good max | defective min | defective "
        "median | top-1 hit | gap |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    gaps: dict[str, list[float]] = {m: [] for m in NORMALISATIONS}
    for condition in CONDITIONS:
        goods = [pair(args.seed, i, condition, False) for i in range(args.pairs)]
        bads = [pair(args.seed, i, condition, True) for i in range(args.pairs)]
        for method in NORMALISATIONS:
            g = [soartc(r, t, register=True, normalisation=method).image_score for r, t, _ in goods]
            b, hits = [], 0
            for r, t, f in bads:
                res = soartc(r, t, register=True, normalisation=method)
                b.append(res.image_score)
                hits += top_positions(res, LAYOUT.connector, k=1)[0][0] == f[0].position
            gap = min(b) / max(g)
            gaps[method].append(gap)
            name = f"`{method}`" + (" (default)" if method == DEFAULT_NORMALISATION else "")
            lines.append(
                f"| {condition} | {name} | {np.median(g):.1f} | {max(g):.1f} | {min(b):.1f} | "
                f"{np.median(b):.1f} | {hits}/{len(bads)} | {gap:.2f} |"
            )
    lines += ["", "Smallest gap over the conditions: " + ", ".join(
        f"`{m}` {min(v):.2f}" for m, v in gaps.items()) + "."]  # fmt: skip
    lines.append(f"\nRun time {time.perf_counter() - started:.0f} s.")
    text = "\n".join(lines)
    print(text)
    if not args.no_write:
        write_section("normalisation", text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
