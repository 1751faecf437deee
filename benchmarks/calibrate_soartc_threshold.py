"""Calibrate the Space's SOARTC pass/fail threshold on good pairs, and write it with its provenance.

The SOARTC panel of the Space gives a verdict of its own: *defective* when the image score (the
anomaly map's maximum, in robust standard deviations) is above a threshold. The threshold is the
``--quantile`` (default 99.9th percentile) of the image scores of ``--good`` good reference/test
pairs: composites made by ``dataset_tools`` exactly as the gallery makes them (every housing and pin
style, the renderer's default nuisances including the default camera placement, labels drawn),
split into their two panels and scored with ``soartc(reference, test, register=True)``, the call
the Space makes. Pair ``i`` comes from ``numpy.random.default_rng([seed, i])``: the seed set is
``(seed, 0..good-1)``. ``--defective`` pairs with one bent or missing pin (seed set
``(seed + 1, i)``) measure how many defects the threshold catches, for the record.

The result goes to ``qeu_space/ui/soartc_threshold.json`` (read by ``qeu_space.ui.soartc_view``).

Usage:
    python -m benchmarks.calibrate_soartc_threshold [--good 400] [--defective 200] [--seed 11]
        [--quantile 99.9] [--out qeu_space/ui/soartc_threshold.json]
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import time
from datetime import date
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("NUMBA_NUM_THREADS", "1")

import numpy as np  # noqa: E402

from dataset_tools.compose import SampleSpec, make_sample  # noqa: E402
from dataset_tools.render import HOUSINGS, PIN_STYLES  # noqa: E402
from qeu_space.geometry import CompositeLayout  # noqa: E402
from qeu_space.soartc import soartc  # noqa: E402  (after the thread settings)
from qeu_space.ui.cases import COMPOSITE_SIZE, split_composite  # noqa: E402
from qeu_space.ui.soartc_view import THRESHOLD_FILE  # noqa: E402
from qeu_space.vocabulary import ALL_POSITIONS, DefectKind, Direction, Finding  # noqa: E402

LAYOUT = CompositeLayout(COMPOSITE_SIZE)


def pair_score(seed: int, index: int, defective: bool) -> float:
    """The Space's SOARTC image score of one generated composite (good, or one defect)."""
    rng = np.random.default_rng([seed, index])
    housing = str(rng.choice(HOUSINGS))
    pins = str(rng.choice(PIN_STYLES))
    findings: tuple[Finding, ...] = ()
    if defective:
        position = ALL_POSITIONS[int(rng.integers(len(ALL_POSITIONS)))]
        if rng.random() < 0.5:
            findings = (Finding(position, DefectKind.BENT, rng.choice(list(Direction))),)
        else:
            findings = (Finding(position, DefectKind.MISSING),)
    spec = SampleSpec(f"calibration-{seed}-{index}", housing, pins, findings, True)
    sample = make_sample(spec, rng, layout=LAYOUT)  # default nuisances, incl. placement
    reference, test = split_composite(sample.image)
    result = soartc(
        np.asarray(reference.convert("RGB")), np.asarray(test.convert("RGB")), register=True
    )
    return float(result.image_score)


def calibrate(*, good: int, defective: int, seed: int, quantile: float, command: str) -> dict:
    """Score the seed sets and return the threshold record (what the JSON file holds)."""
    start = time.perf_counter()
    good_scores = np.array([pair_score(seed, i, False) for i in range(good)])
    bad_scores = np.array([pair_score(seed + 1, i, True) for i in range(defective)])
    threshold = float(np.percentile(good_scores, quantile))
    record = {
        "threshold": round(threshold, 3),
        "units": "robust standard deviations (SOARTC image score)",
        "statistic": f"{quantile:g}th percentile of the image scores of good pairs",
        "good_pairs": good,
        "good_seed_set": f"numpy.random.default_rng([{seed}, i]) for i in 0..{good - 1}",
        "good_scores": {
            "median": round(float(np.median(good_scores)), 3),
            "p99": round(float(np.percentile(good_scores, 99)), 3),
            "max": round(float(good_scores.max()), 3),
            "above_threshold": int((good_scores > threshold).sum()),
        },
        "defective_pairs": defective,
        "defective_seed_set": (
            f"numpy.random.default_rng([{seed + 1}, i]) for i in 0..{defective - 1}, "
            "one bent or missing pin each"
            if defective
            else None
        ),
        "defects_caught": (round(float((bad_scores > threshold).mean()), 4) if defective else None),
        "pairs": (
            f"dataset_tools.compose.make_sample composites ({COMPOSITE_SIZE} px, labels drawn), "
            f"housings {list(HOUSINGS)}, pins {list(PIN_STYLES)}, default Nuisances() "
            "(lighting, noise, blur, shift, rotation, JPEG and the default camera placement)"
        ),
        "scored_with": "soartc(reference, test, register=True) on the two panels, as the Space",
        "date": date.today().isoformat(),
        "seconds": round(time.perf_counter() - start, 1),
        "command": command,
    }
    return record


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--good", type=int, default=400, help="good pairs (the seed set's size)")
    parser.add_argument("--defective", type=int, default=200, help="one-defect pairs (record)")
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--quantile", type=float, default=99.9)
    parser.add_argument("--out", type=Path, default=THRESHOLD_FILE)
    args = parser.parse_args(argv)
    if args.good < 2 or not 50 <= args.quantile <= 100:
        parser.error("--good must be >= 2 and --quantile between 50 and 100")
    command = "python -m benchmarks.calibrate_soartc_threshold " + shlex.join(
        sys.argv[1:] if argv is None else argv
    )
    record = calibrate(
        good=args.good,
        defective=args.defective,
        seed=args.seed,
        quantile=args.quantile,
        command=command.strip(),
    )
    args.out.write_text(json.dumps(record, indent=2) + "\n")
    print(json.dumps(record, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
