"""Calibrate the Space's SOARTC threshold on good pairs of many looks; measure it per look.

The SOARTC panel of the Space says *defective* when the image score (the anomaly map's maximum,
in robust standard deviations) is above a threshold. A threshold fitted to one way of drawing a
connector does not hold for another camera, plastic or bench, so it is set on good pairs of
every **training** look family (``dataset_tools.looks.TRAIN_FAMILIES``; ``classic`` also under
the training imaging conditions of :mod:`benchmarks.soartc_conditions`) and then measured on
**fresh seeds**, per group, the held-out families (``HELD_OUT_FAMILIES``, and ``classic`` under
the held-out conditions: gamma 0.6 / 1.6, vignetting, a textured bench, all combined) apart.

Pairs are made as the gallery makes them (``make_sample(spec, rng, look=family)``: one product,
two shots) and scored as the Space scores them (``soartc(reference, test, register=True)``) in
the *registered frame*: ``--frame found`` (default) registers each panel with
``qeu_space.views.registration`` as the Space does (refusals are counted and left out), so the
threshold holds for the frames the Space really reads, their registration errors included;
``--frame truth`` hands SOARTC each panel's true registration (the renderer's homography), to
measure SOARTC apart from registration.
Each pair is also scored without photometric normalisation (``normalisation="none"``, the old
way) as a baseline, with its own threshold from the same rule.

The rule (set before the fresh seeds were scored): the threshold is the largest, over the training
groups, of each group's ``--quantile`` (default 99th) percentile of its calibration good scores,
times ``--margin`` (default 1.1). Defective pairs have one bent, missing or short pin. Rates come
with 95 % percentile-bootstrap intervals (``scipy.stats.bootstrap``) and, for false alarms, the
exact (Clopper-Pearson) upper bound, which stays informative at 0 counts.

The threshold and its provenance go to ``qeu_space/ui/soartc_threshold.json``; the per-group
table to ``benchmarks/RESULTS_soartc.md`` (section *Threshold across looks*).

Usage:
    python -m benchmarks.calibrate_soartc_threshold [--good 24] [--eval-good 40]
        [--eval-defective 20] [--seed 11] [--eval-seed 31] [--quantile 99] [--margin 1.1]
        [--frame found|truth] [--out qeu_space/ui/soartc_threshold.json] [--no-write]
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import time
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("NUMBA_NUM_THREADS", "1")

import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402
from scipy import ndimage as ndi  # noqa: E402
from scipy.stats import binomtest, bootstrap  # noqa: E402

from benchmarks._soartc_results import machine, write_section  # noqa: E402
from benchmarks.soartc_conditions import (  # noqa: E402
    HELD_OUT_CONDITIONS,
    TRAIN_CONDITIONS,
    apply_condition,
)
from dataset_tools.compose import SampleSpec, make_sample  # noqa: E402
from dataset_tools.looks import HELD_OUT_FAMILIES, TRAIN_FAMILIES  # noqa: E402
from dataset_tools.render import HOUSINGS, PIN_STYLES  # noqa: E402
from qeu_space.geometry import CompositeLayout, ConnectorGeometry  # noqa: E402
from qeu_space.soartc import soartc, top_positions  # noqa: E402
from qeu_space.soartc.photometric import DEFAULT_NORMALISATION  # noqa: E402
from qeu_space.ui.cases import COMPOSITE_SIZE  # noqa: E402
from qeu_space.ui.soartc_view import THRESHOLD_FILE  # noqa: E402
from qeu_space.views.registration import NoConnectorError  # noqa: E402
from qeu_space.vocabulary import ALL_POSITIONS, DefectKind, Direction, Finding  # noqa: E402

LAYOUT = CompositeLayout(COMPOSITE_SIZE)
GEO = LAYOUT.connector
METHODS = (DEFAULT_NORMALISATION, "none")
PHOTOMETRIC_TRAIN = "classic + train conditions"
PHOTOMETRIC_HELD_OUT = "classic + held-out conditions"


@dataclass(frozen=True)
class Group:
    """Where pairs come from: a look family, and optionally imaging conditions on the test."""

    name: str
    family: str
    conditions: tuple[str, ...] = ()
    held_out: bool = False


GROUPS: tuple[Group, ...] = (
    *(Group(f, f) for f in TRAIN_FAMILIES),
    Group(PHOTOMETRIC_TRAIN, "classic", tuple(c for c in TRAIN_CONDITIONS if c != "plain")),
    *(Group(f, f, held_out=True) for f in HELD_OUT_FAMILIES),
    Group(PHOTOMETRIC_HELD_OUT, "classic", HELD_OUT_CONDITIONS, held_out=True),
)


@dataclass(frozen=True)
class TrueRegistration:
    """A panel's true registration (the renderer's canonical-to-image homography).

    Duck-types :class:`qeu_space.views.registration.Registration` for ``soartc(...,
    registrations=...)``: ``matrix``, ``geometry``, ``warp`` and ``seen``, warping by the full
    homography (perspective included).
    """

    matrix: np.ndarray
    geometry: ConnectorGeometry = field(default=GEO)

    def _data(self) -> tuple[float, ...]:
        m = np.asarray(self.matrix, np.float64)
        return tuple((m / m[2, 2]).ravel()[:8])

    def warp(self, image: Image.Image, fill: tuple[int, ...] | None = None) -> Image.Image:
        size = (self.geometry.width, self.geometry.height)
        return image.convert("RGB").transform(
            size, Image.PERSPECTIVE, self._data(), resample=Image.BILINEAR, fillcolor=fill
        )

    def seen(self, source_size: tuple[int, int]) -> np.ndarray:
        size = (self.geometry.width, self.geometry.height)
        ones = Image.new("L", source_size, 255)
        mask = ones.transform(size, Image.PERSPECTIVE, self._data(), resample=Image.NEAREST)
        return ndi.binary_erosion(np.asarray(mask) > 0, iterations=2, border_value=1)


@dataclass
class Scored:
    group: str
    index: int
    defective: bool
    refused: bool = False
    scores: dict[str, float] = field(default_factory=dict)
    hits: dict[str, bool] = field(default_factory=dict)


def _findings(rng: np.random.Generator) -> tuple[Finding, ...]:
    position = ALL_POSITIONS[int(rng.integers(len(ALL_POSITIONS)))]
    kind = list(DefectKind)[int(rng.integers(len(DefectKind)))]
    if kind is DefectKind.BENT:
        return (Finding(position, kind, list(Direction)[int(rng.integers(len(Direction)))]),)
    return (Finding(position, kind),)


def score_pair(group: Group, seed: int, index: int, defective: bool, frame: str) -> Scored:
    """Render one pair of ``group`` (seed set ``(seed, group, index)``) and score it both ways."""
    gi = GROUPS.index(group)
    rng = np.random.default_rng([seed, gi, index, int(defective)])
    findings = _findings(rng) if defective else ()
    housing, pins = str(rng.choice(HOUSINGS)), str(rng.choice(PIN_STYLES))
    spec = SampleSpec(f"calibration-{seed}-{gi}-{index}", housing, pins, findings, True)
    sample = make_sample(spec, rng, layout=LAYOUT, look=group.family)
    test = sample.test
    if group.conditions:
        test = apply_condition(str(rng.choice(group.conditions)), test, rng)
    regs = None
    if frame == "truth":
        regs = (TrueRegistration(sample.reference_pose), TrueRegistration(sample.test_pose))
    out = Scored(group.name, index, defective)
    for method in METHODS:
        try:
            result = soartc(sample.reference, test, register=True, registrations=regs,
                            normalisation=method)  # fmt: skip
        except NoConnectorError:
            out.refused = True
            return out
        out.scores[method] = float(result.image_score)
        if defective:
            top = top_positions(result, GEO, k=1)[0][0]
            out.hits[method] = top == findings[0].position
    return out


def choose_threshold(calibration: list[Scored], method: str, quantile: float, margin: float):
    """The rule: max over training groups of the group's quantile of good scores, x margin."""
    per_group = {}
    for g in GROUPS:
        if g.held_out:
            continue
        s = [r.scores[method] for r in calibration if r.group == g.name and not r.refused]
        if s:
            per_group[g.name] = float(np.percentile(s, quantile))
    worst = max(per_group, key=per_group.get)
    return per_group[worst] * margin, per_group, worst


def rate(flags: list[bool]) -> tuple[float, float, float]:
    """Mean of 0/1 flags and its 95 % percentile-bootstrap interval."""
    x = np.asarray(flags, float)
    if x.size == 0:
        return float("nan"), float("nan"), float("nan")
    if np.all(x == x[0]):
        return float(x[0]), float(x[0]), float(x[0])
    ci = bootstrap((x,), np.mean, confidence_level=0.95, n_resamples=4000, method="percentile",
                   random_state=np.random.default_rng(0)).confidence_interval  # fmt: skip
    return float(x.mean()), float(ci.low), float(ci.high)


def _fmt(r: tuple[float, float, float]) -> str:
    return "-" if np.isnan(r[0]) else f"{r[0]:.3f} [{r[1]:.3f}, {r[2]:.3f}]"


def evaluate(fresh: list[Scored], method: str, threshold: float) -> list[dict]:
    rows = []
    for held in (False, True):
        names = [g.name for g in GROUPS if g.held_out == held]
        for name in [*names, "all training" if not held else "all held-out"]:
            pick = names if name.startswith("all ") else [name]
            rs = [r for r in fresh if r.group in pick]
            ok = [r for r in rs if not r.refused]
            good = [r.scores[method] > threshold for r in ok if not r.defective]
            bad = [r for r in ok if r.defective]
            alarms = int(sum(good))
            rows.append({
                "group": name,
                "held_out": held,
                "refused": f"{sum(r.refused for r in rs)}/{len(rs)}",
                "good_pairs": len(good),
                "false_alarms": alarms,
                "false_alarm_rate": rate(good),
                "false_alarm_exact_upper": (
                    float(binomtest(alarms, len(good)).proportion_ci(0.95).high) if good
                    else float("nan")
                ),
                "good_median": float(np.median([r.scores[method] for r in ok if not r.defective]
                                               or [np.nan])),  # fmt: skip
                "defective_pairs": len(bad),
                "detected": rate([r.scores[method] > threshold for r in bad]),
                "top1_hit": rate([r.hits[method] for r in bad]),
            })  # fmt: skip
    return rows


def table(rows: list[dict]) -> str:
    lines = [
        "| group | refused | good pairs | false alarms | rate [95 % CI] | exact upper | "
        "good median | defective | detected [95 % CI] | top-1 hit [95 % CI] |",
        "|---|---:|---:|---:|---|---:|---:|---:|---|---|",
    ]
    for r in rows:
        name = f"**{r['group']}**" if r["group"].startswith("all ") else r["group"]
        name += " (held out)" if r["held_out"] and not r["group"].startswith("all ") else ""
        lines.append(
            f"| {name} | {r['refused']} | {r['good_pairs']} | {r['false_alarms']} | "
            f"{_fmt(r['false_alarm_rate'])} | {r['false_alarm_exact_upper']:.3f} | "
            f"{r['good_median']:.1f} | {r['defective_pairs']} | {_fmt(r['detected'])} | "
            f"{_fmt(r['top1_hit'])} |"
        )
    return "\n".join(lines)


def run(args: argparse.Namespace, command: str) -> dict:
    start = time.perf_counter()
    calibration = [
        score_pair(g, args.seed, i, False, args.frame)
        for g in GROUPS
        if not g.held_out
        for i in range(args.good)
    ]
    fresh = [
        score_pair(g, args.eval_seed, i, defective, args.frame)
        for g in GROUPS
        for defective, n in ((False, args.eval_good), (True, args.eval_defective))
        for i in range(n)
    ]
    seconds = time.perf_counter() - start
    out = {"seconds": seconds, "methods": {}}
    for method in METHODS:
        threshold, per_group, worst = choose_threshold(
            calibration, method, args.quantile, args.margin
        )
        out["methods"][method] = {
            "threshold": threshold,
            "per_group_quantile": per_group,
            "worst_group": worst,
            "rows": evaluate(fresh, method, threshold),
        }
    out["calibration_pairs"] = len(calibration)
    out["refused_calibration"] = sum(r.refused for r in calibration)
    out["fresh_pairs"] = len(fresh)
    out["command"] = command
    return out


def record(args: argparse.Namespace, out: dict) -> dict:
    """The Space's threshold file: the value and how it was chosen, with the measured rates."""
    best = out["methods"][DEFAULT_NORMALISATION]
    rows = {r["group"]: r for r in best["rows"]}
    short = {
        name: {
            "false_alarms": f"{r['false_alarms']}/{r['good_pairs']}",
            "false_alarm_rate_ci95": [round(v, 4) for v in r["false_alarm_rate"]],
            "detected_ci95": [round(v, 4) for v in r["detected"]],
            "top1_hit_ci95": [round(v, 4) for v in r["top1_hit"]],
            "held_out": r["held_out"],
        }
        for name, r in rows.items()
    }
    return {
        "threshold": round(best["threshold"], 3),
        "units": "robust standard deviations (SOARTC image score)",
        "normalisation": DEFAULT_NORMALISATION,
        "statistic": (
            f"largest {args.quantile:g}th percentile of the calibration good scores over the "
            f"training groups ({best['worst_group']}: "
            f"{best['per_group_quantile'][best['worst_group']]:.3f}), x {args.margin:g}"
        ),
        "good_pairs": out["calibration_pairs"],
        "training_groups": [g.name for g in GROUPS if not g.held_out],
        "held_out_groups": [g.name for g in GROUPS if g.held_out],
        "good_seed_set": (
            f"numpy.random.default_rng([{args.seed}, group, i, 0]) for i in 0..{args.good - 1}, "
            "each training group"
        ),
        "fresh_seed_set": (
            f"numpy.random.default_rng([{args.eval_seed}, group, i, defective]): "
            f"{args.eval_good} good and {args.eval_defective} one-defect (bent, missing or "
            "short pin) pairs per group, every group"
        ),
        "frame": args.frame,
        "measured_on_fresh_seeds": short,
        "pairs": (
            "dataset_tools.compose.make_sample(spec, rng, look=family) panels (one product, two "
            "shots); classic groups' tests under benchmarks.soartc_conditions"
        ),
        "scored_with": "soartc(reference, test, register=True), as the Space",
        "baseline_without_normalisation": {
            "threshold": round(out["methods"]["none"]["threshold"], 3),
            "worst_group": out["methods"]["none"]["worst_group"],
        },
        "date": date.today().isoformat(),
        "seconds": round(out["seconds"], 1),
        "command": out["command"],
    }


def markdown(args: argparse.Namespace, out: dict, host: str) -> str:
    parts = [
        "## Threshold across looks",
        "",
        f"`{out['command']}` on {host}; {out['seconds']:.0f} s.",
        "",
        f"Calibration: {args.good} good pairs per training group (seed {args.seed}); "
        f"threshold = largest {args.quantile:g}th percentile of a training group's good scores "
        f"x {args.margin:g}. Fresh seeds ({args.eval_seed}): {args.eval_good} good and "
        f"{args.eval_defective} one-defect pairs (bent, missing or short pin) per group. Frame: "
        f"`{args.frame}` ({'each panel registered by its true homography' if args.frame == 'truth' else 'registered by qeu_space.views.registration'}). "  # noqa: E501
        "Rates with 95 % percentile-bootstrap intervals; `exact upper`: Clopper-Pearson 95 % "
        "upper bound of the false-alarm rate.",
    ]
    for method in METHODS:
        m = out["methods"][method]
        label = "photometric normalisation `" + method + "` (default)" if method != "none" else (
            "baseline: no normalisation (`normalisation='none'`), same rule")  # fmt: skip
        parts += [
            "",
            f"### {label}: threshold {m['threshold']:.2f} (set by {m['worst_group']})",
            "",
            table(m["rows"]),
        ]
    return "\n".join(parts)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--good", type=int, default=24, help="calibration good pairs per group")
    parser.add_argument("--eval-good", type=int, default=40, help="fresh good pairs per group")
    parser.add_argument("--eval-defective", type=int, default=20, help="fresh defective pairs")
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--eval-seed", type=int, default=31)
    parser.add_argument("--quantile", type=float, default=99.0)
    parser.add_argument("--margin", type=float, default=1.1)
    parser.add_argument("--frame", choices=("found", "truth"), default="found")
    parser.add_argument("--out", type=Path, default=THRESHOLD_FILE)
    parser.add_argument("--no-write", action="store_true", help="print only")
    parser.add_argument("--dump", type=Path, help="also write every figure as JSON here")
    args = parser.parse_args(argv)
    if args.good < 2 or not 50 <= args.quantile <= 100 or args.margin <= 0:
        parser.error("--good must be >= 2, --quantile in 50..100, --margin > 0")
    if args.eval_seed == args.seed:
        parser.error("--eval-seed must differ from --seed: rates are measured on fresh seeds")
    command = "python -m benchmarks.calibrate_soartc_threshold " + shlex.join(
        sys.argv[1:] if argv is None else argv
    )
    host = machine()
    out = run(args, command.strip())
    text = markdown(args, out, host)
    print(text)
    if args.dump:
        args.dump.write_text(json.dumps(out, indent=1, default=float) + "\n")
    if not args.no_write:
        args.out.write_text(json.dumps(record(args, out), indent=2) + "\n")
        write_section("looks", text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
