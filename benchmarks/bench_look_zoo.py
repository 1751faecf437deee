"""Look zoo: registration, SOARTC and every model of the Space, per look family, held-out apart.

Issue 18, item 4 (and the figures issue 19 asks for). The project's own renders read 1.000 on
everything; a user's connector is not drawn our way. Each look family of
:data:`dataset_tools.looks.LOOK_FAMILIES` (the held-out ones were never trained on, nor used to
choose anything) gets ``--cases`` fresh pairs: one product look, two shots (reference good, test
under inspection), as :func:`dataset_tools.compose.make_sample` draws them. A third of the cases
pass; the others carry one or two defects, cycling bent / missing / short pins over all 27
positions.

Per family, with 95 % bootstrap intervals (cases resampled, 1000 draws):

* **registration**: refused share of real 3 x 9 connectors (the Space's ``/inspect`` refusal:
  "no connector found (...)"), wrong-lattice share (a panel registered with some pin more than
  half a pitch from its true centre: a shifted window), RMS pin-centre error of both panels
  against the renderer's true homography (``Rendered.pose``), worst pin, ms per panel, and how
  far apart the two panels' frames put the same pin (RMS, canonical px: what a model comparing
  reference and test sees; the pins stand above the housing plane the truth is given in, so
  parallax moves both frames alike);
* **SOARTC** (the Space's threshold): false alarms (good pairs flagged), detection (defective
  pairs flagged) and top-1 hit (the most anomalous pin cell is a defective one);
* **models** (unless ``--no-models``), through the Space's own inspection path
  (``InspectionApp.inspect_image``: what ``/inspect`` runs, in process): ViT verdict accuracy
  (defect or not) and good products flagged, chat VLM base and adapter findings F1 (position and
  kind) and unreadable answers, Florence-2 ``<OD>`` findings F1 (the answer the Space reports:
  its adapter's when one is loaded). A refused case counts as wrong
  for every model (no answer); an unreadable answer as no findings.

Seeds: case ``i`` of family ``f`` comes from ``numpy.random.default_rng([9300, f, i])``
(``--seed``); no dataset, training run, threshold or checkpoint choice used seeds 9300 and up.

``--vit-only`` loads the ViT alone (no chat VLM, no OD) and scores only it, through
``inspect_image`` (refusals are the Space's), adding its verdict on answered cases and its
detection per defect kind (a case counts for each kind it holds);
``--vit-model`` names another ViT folder (e.g. the single-image one, for a baseline).

``--conditions`` is the robustness bench on the looks (issue 19, item 5): each case's test shot
is also scored under imaging conditions of :mod:`benchmarks.soartc_conditions` the reference did
not have (``gamma-0.6``, ``gamma-1.6``, ``defocus``, ``vignetting``, ``textured-bench``,
``combined``, ...), the same pairs under every condition, one table per condition; tilt and bench
are the look families' own (``steep-tilt``, ``black-on-wood``, ``textured-bench``).

Usage:
    OMP_NUM_THREADS=1 python -m benchmarks.bench_look_zoo [--cases 48] [--looks all]
        [--no-models | --vit-only [--vit-model FOLDER]] [--adapter short-pin]
        [--conditions plain,gamma-0.6,gamma-1.6,defocus] [--out benchmarks/RESULTS_look_zoo.md]
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

import argparse  # noqa: E402
import platform  # noqa: E402
import shlex  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable, Sequence  # noqa: E402
from dataclasses import dataclass, field  # noqa: E402
from datetime import date  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "RESULTS_look_zoo.md"
SEED = 9300
DRAWS = 1000
KINDS = ("bent pin", "missing pin", "short pin")
GOALS = {  # issue 18 / 19 "done when", held-out look families
    "refused": ("<=", 0.02),
    "wrong_lattice": ("<=", 0.0),
    "rms": ("<=", 0.5),
    "soartc_false_alarm": ("<=", 0.02),
    "soartc_detection": (">=", 0.95),
    "soartc_top1": (">=", 0.95),
    "vit_accuracy": (">=", 0.95),
    "vit_false_alarm": ("<=", 0.03),
    "base_f1": (">=", 0.90),
    "od_f1": (">=", 0.90),
}


@dataclass(frozen=True)
class Case:
    """One pair of a family: what the test product carries (empty: it passes)."""

    family: str
    index: int
    findings: tuple  # of Finding, boxes in composite pixels once drawn


@dataclass
class Outcome:
    """What one case scored; ``None`` where a figure does not apply (e.g. top-1 on a good pair)."""

    defective: bool
    kinds: tuple[str, ...] = ()  # the defect kinds the test carries
    refused: bool = False
    wrong_lattice: bool = False
    sq_errors: list[float] = field(default_factory=list)  # squared pin errors, both panels
    # squared canonical distance between where the reference's and the test's registration put
    # each true pin centre (empty unless both panels registered on the right lattice)
    sq_disagreement: list[float] = field(default_factory=list)
    worst: float = float("nan")
    reg_ms: list[float] = field(default_factory=list)
    soartc_flag: bool | None = None
    soartc_top1: bool | None = None
    vit_flag: bool | None = None
    counts: dict[str, tuple[int, int, int]] = field(default_factory=dict)  # model -> TP, FP, FN
    unreadable: dict[str, bool] = field(default_factory=dict)


def draw_findings(family_index: int, index: int, seed: int) -> tuple:
    """A third pass; the rest carry 1 or 2 defects, kinds and positions cycling fairly."""
    from qeu_space.vocabulary import ALL_POSITIONS, DefectKind, Direction, Finding

    if index % 3 == 0:
        return ()
    rng = np.random.default_rng([seed, family_index, index, 1])
    count = 1 if index % 3 == 1 else 2
    positions = rng.choice(len(ALL_POSITIONS), count, replace=False)
    out = []
    for k, p in enumerate(sorted(positions)):
        kind = DefectKind(KINDS[(index + k) % len(KINDS)])
        direction = list(Direction)[int(rng.integers(4))] if kind is DefectKind.BENT else None
        out.append(Finding(ALL_POSITIONS[int(p)], kind, direction))
    return tuple(out)


def make_sample_for(case: Case, family_index: int, seed: int):
    from dataset_tools.compose import SampleSpec, make_sample
    from qeu_space.geometry import CompositeLayout

    rng = np.random.default_rng([seed, family_index, case.index])
    spec = SampleSpec(f"zoo-{case.family}-{case.index}", "standard", "square", case.findings, True)
    return make_sample(spec, rng, layout=CompositeLayout(448), look=case.family)


def under_condition(sample, condition: str, family_index: int, case: Case, seed: int):
    """``sample`` with its test shot as imaging ``condition`` shows it (the reference as drawn;
    ``plain``: the sample itself). The condition's draws come from the case's own seed."""
    from dataclasses import replace

    from benchmarks.soartc_conditions import CONDITIONS, apply_condition

    if condition == "plain":
        return sample
    rng = np.random.default_rng([seed, family_index, case.index, list(CONDITIONS).index(condition)])
    return replace(sample, test=apply_condition(condition, sample.test, rng))


def pin_errors(image: np.ndarray, pose: np.ndarray) -> tuple[np.ndarray | None, float, bool]:
    """Per-pin errors (px) of registering ``image`` against its true homography ``pose``, the
    milliseconds it took, and whether it was refused."""
    errors, ms, refused, _ = _pin_errors(image, pose)
    return errors, ms, refused


def _pin_errors(image: np.ndarray, pose: np.ndarray):
    """:func:`pin_errors` and the ``(27, 2)`` canonical offsets of the true pin centres as the
    registration maps them back (``None`` when refused)."""
    from qeu_space.views.registration import NoConnectorError, register
    from qeu_space.vocabulary import ALL_POSITIONS

    start = time.perf_counter()
    try:
        reg = register(image)
    except NoConnectorError:
        return None, (time.perf_counter() - start) * 1e3, True, None
    ms = (time.perf_counter() - start) * 1e3
    sites = np.array([reg.geometry.pin_center(p) for p in ALL_POSITIONS], np.float64)
    homogeneous = np.c_[sites, np.ones(len(sites))] @ np.asarray(pose, np.float64).T
    truth = homogeneous[:, :2] / homogeneous[:, 2:]
    errors = np.linalg.norm(reg.to_image(sites) - truth, axis=1)
    return errors, ms, False, reg.to_canonical(truth) - sites


def score_registration(sample, out: Outcome) -> None:
    geo_pitch = None
    offsets = []
    for image, pose in ((sample.reference, sample.reference_pose),
                        (sample.test, sample.test_pose)):  # fmt: skip
        errors, ms, refused, canonical = _pin_errors(image, pose)
        out.reg_ms.append(ms)
        if refused:
            out.refused = True
            continue
        if geo_pitch is None:
            geo_pitch = min(sample.layout.connector.pitch)
        if errors.max() > 0.5 * geo_pitch:
            out.wrong_lattice = True
            continue
        out.sq_errors.extend((errors**2).tolist())
        out.worst = float(np.nanmax([out.worst, errors.max()]))
        offsets.append(canonical)
    if len(offsets) == 2:  # what the models compare: the two frames against each other
        out.sq_disagreement = ((offsets[0] - offsets[1]) ** 2).sum(1).tolist()


def score_soartc(sample, out: Outcome) -> None:
    """The Space's own SOARTC panel (``run_soartc``: registration, threshold, top positions)."""
    from PIL import Image

    from qeu_space.ui.soartc_view import run_soartc
    from qeu_space.views.registration import NoConnectorError

    try:
        view = run_soartc(Image.fromarray(sample.reference), Image.fromarray(sample.test), k=1)
    except NoConnectorError:
        return
    out.soartc_flag = view.verdict == "defective"
    if out.defective:
        out.soartc_top1 = str(view.top[0][0]) in {str(f.position) for f in sample.findings}


def _counts(truth: Sequence, said: Sequence) -> tuple[int, int, int]:
    t = {(f.position.name, f.kind) for f in truth}
    s = {(f.position.name, f.kind) for f in said}
    return len(t & s), len(s - t), len(t - s)


def score_models(app, sample, out: Outcome, adapter: str, vit_only: bool = False) -> None:
    """Run the Space's own inspection on the composite (what ``/inspect`` runs); ``vit_only``:
    only the ViT was loaded, the other models are not scored."""
    done = app.inspect_image(sample.image, tuple(sample.findings), adapter=adapter)
    truth = sample.findings
    if vit_only:
        out.refused = out.refused or bool(done.refused)
        label = None if done.refused or done.vit is None else done.vit.label
        out.vit_flag = None if label is None else label != "OK"  # None: no verdict, wrong
        return
    if done.refused:
        out.refused = True
        for who in ("base", "adapter", "od"):
            out.counts[who] = _counts(truth, ())
        out.vit_flag = None
        return
    out.vit_flag = done.vit is not None and done.vit.label not in (None, "OK")
    for who, answer in (("base", done.record.base), ("adapter", done.record.tuned)):
        said = answer.findings if answer.status == "ok" else ()
        out.counts[who] = _counts(truth, said)
        out.unreadable[who] = answer.status != "ok"
    od_findings = done.od.findings if done.od is not None else ()
    out.counts["od"] = _counts(truth, od_findings)
    out.unreadable["od"] = done.od is None or "unreadable" in (done.od.note or "")


# --------------------------------------------------------------------------- statistics


def interval(values: np.ndarray, stat: Callable[[np.ndarray], float], seed: int = 0):
    """``stat`` of per-case rows and its 95 % percentile-bootstrap interval (cases resampled)."""
    values = np.asarray(values, np.float64)
    if len(values) == 0:
        return float("nan"), float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    n = len(values)
    draws = [stat(values[rng.integers(0, n, n)]) for _ in range(DRAWS)]
    low, high = np.nanpercentile(draws, [2.5, 97.5])
    return stat(values), float(low), float(high)


def exact_interval(flags: Sequence[bool]) -> tuple[float, float, float, int, int]:
    """The share of ``flags`` that are true, its exact (Clopper-Pearson) 95 % interval, and
    ``k`` / ``n``: a bootstrap of 0 of n is [0, 0] and says nothing about how rare it is,
    while 0 of 100 still allows up to 3.6 %."""
    from scipy.stats import binomtest

    n, k = len(flags), int(np.sum(flags))
    if n == 0:
        return float("nan"), float("nan"), float("nan"), 0, 0
    ci = binomtest(k, n).proportion_ci(confidence_level=0.95, method="exact")
    return k / n, float(ci.low), float(ci.high), k, n


def _mean(v: np.ndarray) -> float:
    return float(np.mean(v)) if len(v) else float("nan")


def _f1(rows: np.ndarray) -> float:
    tp, fp, fn = rows.sum(0) if len(rows) else (0, 0, 0)
    return float(2 * tp / (2 * tp + fp + fn)) if tp + fp + fn else float("nan")


def _rms(rows: np.ndarray) -> float:
    # rows: (sum of squared errors, pins) per case
    total = rows.sum(0) if len(rows) else (0, 0)
    return float(np.sqrt(total[0] / total[1])) if total[1] else float("nan")


def figures(outcomes: list[Outcome], with_models: bool) -> dict[str, tuple[float, float, float]]:
    """Every figure of one family (or a pool of families), each ``(value, low, high)``; a model
    that was not loaded gets NaN figures."""
    f: dict[str, tuple[float, float, float]] = {}
    refused = np.array([o.refused for o in outcomes], float)
    f["refused"] = interval(refused, _mean)
    answered = [o for o in outcomes if not o.refused]
    f["wrong_lattice"] = interval(np.array([o.wrong_lattice for o in answered], float), _mean)
    rms_rows = np.array([(sum(o.sq_errors), len(o.sq_errors)) for o in answered if o.sq_errors])
    f["rms"] = interval(rms_rows, _rms)
    agree = np.array([(sum(o.sq_disagreement), len(o.sq_disagreement)) for o in answered
                      if o.sq_disagreement])  # fmt: skip
    f["frame_disagreement"] = interval(agree, _rms)
    worst = [o.worst for o in answered if not np.isnan(o.worst)]
    f["worst_pin"] = (max(worst) if worst else float("nan"),) * 3
    ms = [m for o in outcomes for m in o.reg_ms]
    f["reg_ms"] = (float(np.median(ms)) if ms else float("nan"),) * 3
    good = [o for o in outcomes if not o.defective and o.soartc_flag is not None]
    bad = [o for o in outcomes if o.defective]
    f["soartc_false_alarm"] = interval(np.array([o.soartc_flag for o in good], float), _mean)
    f["soartc_detection"] = interval(np.array([bool(o.soartc_flag) for o in bad], float), _mean)
    f["soartc_top1"] = interval(np.array([bool(o.soartc_top1) for o in bad], float), _mean)
    if with_models:
        vit_right = [(o.vit_flag is not None and o.vit_flag == o.defective) for o in outcomes]
        f["vit_accuracy"] = interval(np.array(vit_right, float), _mean)
        good_all = [o for o in outcomes if not o.defective]
        good_flags = [bool(o.vit_flag is None or o.vit_flag) for o in good_all]
        f["vit_false_alarm"] = interval(np.array(good_flags, float), _mean)
        f["vit_false_alarm_exact"] = exact_interval(good_flags)
        answered_vit = [o.vit_flag == o.defective for o in outcomes if not o.refused]
        f["vit_answered"] = interval(np.array(answered_vit, float), _mean)
        good_answered = [bool(o.vit_flag) for o in good_all if not o.refused]
        f["vit_good_answered"] = interval(np.array(good_answered, float), _mean)
        for kind in KINDS:
            holding = [o for o in outcomes if kind in o.kinds]
            f[f"vit_{kind.split()[0]}"] = interval(
                np.array([bool(o.vit_flag) for o in holding], float), _mean
            )
        for who in ("base", "adapter", "od"):
            if not any(who in o.counts for o in outcomes):  # not loaded (--vit-only)
                f[f"{who}_f1"] = f[f"{who}_unreadable"] = (float("nan"),) * 3
                continue
            rows = np.array([o.counts.get(who, (0, 0, 0)) for o in outcomes], float)
            f[f"{who}_f1"] = interval(rows, _f1)
            unread = np.array([o.unreadable.get(who, False) for o in outcomes], float)
            f[f"{who}_unreadable"] = interval(unread, _mean)
    return f


# --------------------------------------------------------------------------- report

COLUMNS = [
    ("refused", "refused", "pct"),
    ("wrong_lattice", "wrong lattice", "pct"),
    ("rms", "pin RMS px", "px"),
    ("worst_pin", "worst pin px", "px1"),
    ("frame_disagreement", "ref-test frames px", "px"),
    ("reg_ms", "reg ms/panel", "ms"),
    ("soartc_false_alarm", "SOARTC good flagged", "pct"),
    ("soartc_detection", "SOARTC defective flagged", "pct"),
    ("soartc_top1", "SOARTC top-1", "pct"),
    ("vit_accuracy", "ViT verdict", "rate"),
    ("vit_false_alarm", "ViT good flagged", "pct"),
    ("vit_false_alarm_exact", "ViT good flagged, k/n [exact 95 %]", "exact"),
    ("vit_answered", "ViT verdict, answered cases", "rate"),
    ("vit_good_answered", "ViT good flagged, answered", "pct"),
    *((f"vit_{k.split()[0]}", f"ViT {k.split()[0]} flagged", "pct") for k in KINDS),
    ("base_f1", "VLM base F1", "rate"),
    ("adapter_f1", "adapter F1", "rate"),
    ("base_unreadable", "base unreadable", "pct"),
    ("od_f1", "OD F1", "rate"),
]


def _cell(value: tuple, style: str) -> str:
    v, lo, hi = value[:3]
    if np.isnan(v):
        return "-"
    if style == "exact":
        return f"{value[3]}/{value[4]} [{100 * lo:.1f}, {100 * hi:.1f}] %"
    if style in ("px1", "ms"):
        return f"{v:.2f}" if style == "px1" else f"{v:.1f}"
    if style == "pct":
        return f"{100 * v:.1f} % [{100 * lo:.1f}, {100 * hi:.1f}]"
    return f"{v:.3f} [{lo:.3f}, {hi:.3f}]"


def table(rows: list[tuple[str, dict]], with_models: bool, vit_only: bool = False) -> list[str]:
    cols = [c for c in COLUMNS if with_models or c[0] not in _MODEL_KEYS]
    if vit_only:
        cols = [c for c in cols if c[0] == "refused" or c[0].startswith("vit_")]
    else:
        cols = [c for c in cols if c[0] not in _VIT_KIND_KEYS]
    lines = ["| look family | " + " | ".join(c[1] for c in cols) + " |",
             "|---|" + "---:|" * len(cols)]  # fmt: skip
    for name, figs in rows:
        lines.append(f"| {name} | " + " | ".join(_cell(figs[c[0]], c[2]) for c in cols) + " |")
    return lines


_VIT_KIND_KEYS = {"vit_answered", "vit_good_answered", *(f"vit_{k.split()[0]}" for k in KINDS)}
_MODEL_KEYS = {"vit_accuracy", "vit_false_alarm", "vit_false_alarm_exact", "base_f1",
               "adapter_f1", "base_unreadable", "od_f1", *_VIT_KIND_KEYS}  # fmt: skip


def goal_lines(held_out: dict, vit_only: bool = False) -> list[str]:
    out = []
    for key, (op, goal) in GOALS.items():
        if key not in held_out or (vit_only and key != "refused" and not key.startswith("vit_")):
            continue
        v, lo, hi = held_out[key]
        if np.isnan(v):  # a model this run did not load
            continue
        met = v <= goal if op == "<=" else v >= goal
        out.append(f"- {key}: {v:.3f} [{lo:.3f}, {hi:.3f}] (goal {op} {goal}): "
                   f"{'met' if met else '**not met**'}")  # fmt: skip
        exact = held_out.get(f"{key}_exact")
        if exact is not None and not np.isnan(exact[0]):
            shown = exact[2] <= goal if op == "<=" else exact[1] >= goal
            verdict = "shown" if shown else "**not shown** (too few cases or too many flagged)"
            out.append(f"  - exact 95 % interval: {exact[3]}/{exact[4]} = {exact[0]:.3f} "
                       f"[{exact[1]:.3f}, {exact[2]:.3f}]: {op} {goal} {verdict}")  # fmt: skip
    return out


# --------------------------------------------------------------------------- main


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.bench_look_zoo",
        description="Registration, SOARTC and the Space's models per look family (held-out "
        "families apart), with 95 %% bootstrap intervals, on fresh seeds.",
    )
    p.add_argument("--cases", type=int, default=48, help="pairs per look family (default 48)")
    p.add_argument("--looks", default="all", help="all, train, held-out or a comma list")
    p.add_argument("--seed", type=int, default=SEED, help=f"case seed (default {SEED})")
    p.add_argument("--no-models", action="store_true",
                   help="registration and SOARTC only (no ViT / VLM / OD)")  # fmt: skip
    p.add_argument("--adapter", default="", help="the Space adapter beside the base ('' = default)")
    p.add_argument(
        "--vit-only",
        action="store_true",
        help="the ViT alone through the Space's inspection (no VLM, no OD loaded)",
    )
    p.add_argument("--vit-model", help="ViT folder for the Space (default: the embedded one)")
    p.add_argument(
        "--conditions",
        default="plain",
        help="comma list of imaging conditions of the test shot (benchmarks/soartc_conditions.py: "
        "plain, gamma-0.6, gamma-1.6, defocus, vignetting, textured-bench, combined, ...); "
        "default plain",
    )
    p.add_argument("--out", type=Path, default=RESULTS, help="Markdown report")
    args = p.parse_args(argv)
    from benchmarks.soartc_conditions import CONDITIONS

    args.condition_list = [c.strip() for c in args.conditions.split(",") if c.strip()]
    unknown = [c for c in args.condition_list if c not in CONDITIONS]
    if unknown or not args.condition_list:
        p.error(f"--conditions: unknown {', '.join(unknown) or '(none given)'}; "
                f"choose from {', '.join(CONDITIONS)}")  # fmt: skip
    if args.cases < 3:
        p.error("--cases must be at least 3 (a good, a one-defect and a two-defect pair)")
    if args.vit_only and args.no_models:
        p.error("--vit-only scores the ViT, --no-models scores no model: choose one")
    if args.vit_model and not Path(args.vit_model, "config.json").is_file():
        p.error(f"--vit-model {args.vit_model}: no config.json there (a ViT model folder)")
    from dataset_tools.looks import resolve_looks

    try:
        args.families = resolve_looks(args.looks)
    except ValueError as err:
        p.error(str(err))
    return args


def load_app(tmp: Path, *, vit_only: bool = False, vit_model: str | None = None):
    """The Space's inspection app on its default (embedded) models, on the CPU, in process
    (``vit_only``: the ViT alone; ``vit_model``: another ViT folder)."""
    from qeu_space.feedback import FeedbackStore
    from qeu_space.modeling.devices import detect_device
    from qeu_space.ui.handlers import InspectionApp
    from qeu_space.ui.models import load_models
    from qeu_space.ui.settings import AppSettings

    env = {"QEU_FEEDBACK_DB": str(tmp / "feedback.sqlite3")}
    if vit_only:
        env.update({"QEU_BASE_MODEL": "", "QEU_OD_MODEL": "", "QEU_ADAPTERS": "none"})
    if vit_model:
        env["QEU_VIT_MODEL"] = str(vit_model)
    settings = AppSettings.from_env(env)
    models = load_models(settings, detect_device({"QEU_DEVICE": "cpu"}))
    import torch

    # one thread, as the figures say: torch's own default (a thread per core) spins against
    # whatever else runs on a shared machine and made each inspection several times slower
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    return InspectionApp(settings, models, source=None, store=FeedbackStore(tmp / "f.sqlite3"),
                         gallery=[])  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    import cv2
    from tqdm.auto import tqdm

    # one thread: OpenCV's pool (a thread per core) spins between calls and, on a shared
    # machine, made every model call of an inspection several times slower (4.6 s against 0.8 s)
    cv2.setNumThreads(1)

    from dataset_tools.looks import HELD_OUT_FAMILIES, LOOK_FAMILIES
    from qeu_space.ui.soartc_view import load_threshold

    threshold = load_threshold().value
    names = list(LOOK_FAMILIES)
    start = time.perf_counter()
    conditions = args.condition_list
    per_family: dict[str, dict[str, list[Outcome]]] = {c: {} for c in conditions}
    with tempfile.TemporaryDirectory(prefix="qeu-zoo-") as tmp:
        app = (
            None
            if args.no_models
            else load_app(Path(tmp), vit_only=args.vit_only, vit_model=args.vit_model)
        )
        total = len(args.families) * args.cases * len(conditions)
        bar = tqdm(total=total, desc="look zoo", unit="pair")
        for family in args.families:
            fi = names.index(family)
            for condition in conditions:
                per_family[condition][family] = []
            for i in range(args.cases):
                case = Case(family, i, draw_findings(fi, i, args.seed))
                drawn = make_sample_for(case, fi, args.seed)
                for condition in conditions:
                    sample = under_condition(drawn, condition, fi, case, args.seed)
                    out = Outcome(bool(case.findings), tuple(f.kind.value for f in case.findings))
                    if not args.vit_only:  # the ViT alone: refusals come from inspect_image
                        score_registration(sample, out)
                        score_soartc(sample, out)
                    if app is not None:
                        score_models(app, sample, out, args.adapter, args.vit_only)
                    per_family[condition][family].append(out)
                    bar.update()
        bar.close()
    with_models = not args.no_models
    sections: list[tuple[str, list[tuple[str, dict]], dict | None]] = []
    for condition in conditions:
        outcomes = per_family[condition]
        rows = [(f + (" (held out)" if f in HELD_OUT_FAMILIES else ""), figures(o, with_models))
                for f, o in outcomes.items()]  # fmt: skip
        held = [o for f, outs in outcomes.items() if f in HELD_OUT_FAMILIES for o in outs]
        train = [o for f, outs in outcomes.items() if f not in HELD_OUT_FAMILIES for o in outs]
        pooled = []
        if train:
            pooled.append(("**training looks, pooled**", figures(train, with_models)))
        held_figures = figures(held, with_models) if held else None
        if held_figures is not None:
            pooled.append(("**held-out looks, pooled**", held_figures))
        sections.append((condition, rows + pooled, held_figures))
    seconds = time.perf_counter() - start
    command = "OMP_NUM_THREADS=1 python -m benchmarks.bench_look_zoo " + shlex.join(
        argv if argv is not None else sys.argv[1:]
    )
    lines = [
        "# Look zoo: registration, SOARTC and the Space's models per look family",
        "",
        f"`{command.strip()}` ({date.today()}, {platform.processor() or platform.machine()}, "
        f"{seconds:.0f} s; {args.cases} fresh pairs a family, seed {args.seed}; SOARTC threshold "
        f"{threshold:.2f}). Baseline: the `classic` family, the look every model was trained on.",
        "",
        "Values with 95 % bootstrap intervals (cases resampled). A refused case is wrong for every "
        "model; `wrong lattice` counts answered panels registered more than half a pitch off "
        "(a shifted window); pin RMS is over the panels on the right lattice.",
        "",
    ]
    for condition, rows, held_figures in sections:
        if conditions != ["plain"]:
            drawn = " (as drawn)" if condition == "plain" else ""
            lines += [f"## Test shot: {condition}{drawn}", ""]
        lines += [*table(rows, with_models, args.vit_only), ""]
        if held_figures is not None:
            lines += ["Goals (issues 18 / 19) on the held-out look families, pooled:", "",
                      *goal_lines(held_figures, args.vit_only), ""]  # fmt: skip
    text = "\n".join(lines)
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
