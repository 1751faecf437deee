"""Robustness: every model of the Space and SOARTC on the same products under placement and imaging
conditions, with registration (the default path) and without it (the ablation).

Issue 10, item 5. Paired cases: case ``i`` is one product (a third each passed / one bent pin / one
missing pin; bent and missing pins each visit all 27 positions; all 4 housings x 3 pin styles)
shown beside a golden reference, and every condition shows that same product, changed only by the
condition:

* ``none``; *placement of the product under inspection* (the reference stays golden): shift
  4 / 8 / 16 / 24 px (the length of the move, in a direction fixed per case), rotation 2 / 4 / 6
  degrees (sign fixed per case), scale 0.88 / 0.94 / 1.06 / 1.12; *imaging* of the product under
  inspection: gain 0.6 / 1.4, Gaussian blur sigma 1.5 px, JPEG quality 50, Gaussian noise sigma 8
  grey levels (8/255);
* *both products moved* (``both ...``): the same placements, the reference moved too (its own
  direction and sign per case).

Every product is drawn by the renderer at the exact pose (``render_connector(..., pose=...)``;
``Rendered.pose`` is the truth for the registration error) with the renderer's default
*photometric* nuisances (a camera: gain +-15 %, a lighting gradient, sensor noise sigma 3 grey
levels, blur up to 0.7 px, JPEG 75-95 for half of the images; each product its own draws, the
same under every condition) and no geometric one; the imaging conditions are applied on top, to
the drawn test image. ``--base-nuisances off`` draws noise-free products instead (SOARTC's unit
space is then degenerate: a pair that differs nowhere has no normal variation to measure
against). Sizes are those of the 448 px composite (connector images 423 x 204).

Per condition, through the Space's own inference path (``load_model``; ``vit.predict`` on the test
connector image; ``chat_vlm.generate`` on the composite, the base inside ``loaded.base_only()``;
``soartc(reference, test, register=True)`` + ``top_positions``), with registration on and, inside
``registration_off()`` (SOARTC: ``register=False``, its old small-motion alignment), off:

* ViT accuracy (OK / BENDNG / NUKENG); VLM base and adapter findings F1 (``qa_metrics``), verdict
  accuracy and unreadable answers (an answer whose verdict cannot be parsed); SOARTC top-1 hit
  (the most anomalous pin cell is the defect's, over defective cases) and image AUROC (image score,
  defective vs passed); registration error (RMS px of the 27 pin centres, ``lattice_error``);
  without registration, the misalignment the models face instead (the identity's error);
* an image where no connector is found is refused ("no connector found (...)"), as the Space
  refuses it: counted, and scored as wrong (no answer; a SOARTC miss; ranked as flagged);
* 95 % bootstrap intervals (cases resampled with all their conditions, 1000 draws) of the pooled
  headline figures: findings F1 per model, ViT accuracy, SOARTC top-1 hit.

Seeds: the products of case ``i`` come from ``numpy.random.default_rng([9000, ...])`` (``--seed``);
no dataset, training run or checkpoint choice used seeds 9000 and up.

Cheap to rerun: each (condition, registration on/off, model) result is cached per case in
``--cache`` (default ``out/bench_robustness``), keyed by the model files' digest, the code's digest
and the seed, so an interrupted run resumes and a rerun on the same models only re-renders the
report; a retrained model is measured afresh. ``--quick`` is a smoke run on tiny random models
(seconds; ``tests/test_bench_robustness.py``).

Usage:
    OMP_NUM_THREADS=1 python -m benchmarks.bench_robustness [--cases 150] [--conditions all]
        [--models vit,base,adapter,soartc] [--paths on,off] [--off-conditions PATTERNS]
        [--vit PATH] [--base PATH] [--adapter PATH] [--workers 1] [--quick]
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("NUMBA_NUM_THREADS", "1")

import argparse  # noqa: E402
import contextlib  # noqa: E402
import fnmatch  # noqa: E402
import functools  # noqa: E402
import hashlib  # noqa: E402
import io  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import platform  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable, Iterator, Sequence  # noqa: E402
from dataclasses import dataclass, field  # noqa: E402
from datetime import date  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402
from scipy import ndimage as ndi  # noqa: E402

from dataset_tools.compose import compose  # noqa: E402
from dataset_tools.render import (  # noqa: E402
    HOUSINGS,
    PIN_STYLES,
    ConnectorSpec,
    Nuisances,
    Placement,
    Pose,
    render_connector,
)
from qeu_space.geometry import CompositeLayout  # noqa: E402
from qeu_space.views.framing import registration_off  # noqa: E402
from qeu_space.views.registration import (  # noqa: E402
    NoConnectorError,
    Registration,
    lattice_error,
    register,
    register_composite,
)
from qeu_space.vocabulary import (  # noqa: E402
    ALL_POSITIONS,
    Direction,
    Finding,
    class_label_of,
    parse_answer,
)

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "RESULTS_robustness.md"
FIGURE = ROOT / "benchmarks" / "robustness.png"
CACHE = ROOT / "out" / "bench_robustness"
MODELS = {
    "vit": ROOT / "models" / "vit-inspector",
    "base": ROOT / "models" / "inspection-vlm-base",
    "adapter": ROOT / "models" / "inspection-vlm-lora",
}
LAYOUT = CompositeLayout(448)
GEO = LAYOUT.connector
SEED = 9000
CHUNK = 16  # cases rendered and answered together (VLM batch size)
MAX_NEW_TOKENS = 64  # the Space's default (QEU_MAX_NEW_TOKENS)
DRAWS = 1000
KINDS = ("passed", "bent pin", "missing pin")
COMPONENTS = ("registration", "vit", "soartc", "adapter", "base")
PATHS = ("on", "off")
#: the issue's goals, checked on the registered path
GOALS = {"vit": 0.99, "adapter_f1": 0.95, "adapter_f1_low": 0.93, "soartc_hit": 0.97, "reg": 1.0}


# --------------------------------------------------------------------------- conditions


@dataclass(frozen=True)
class Condition:
    """One way the scene differs from ``none``.

    Attributes:
        kind: ``none``, ``shift`` (px), ``rotation`` (degrees), ``scale``, ``gain``, ``blur``
            (Gaussian sigma, px), ``jpeg`` (quality) or ``noise`` (sigma, grey levels).
        value: the condition's size.
        both: the reference is moved too (placement conditions only).
    """

    kind: str
    value: float = 0.0
    both: bool = False

    @property
    def geometric(self) -> bool:
        return self.kind in ("shift", "rotation", "scale")

    @property
    def name(self) -> str:
        unit = {"shift": " px", "rotation": " deg", "blur": " px", "noise": "/255"}.get(self.kind)
        text = "none" if self.kind == "none" else f"{self.kind} {self.value:g}{unit or ''}"
        return f"both: {text}" if self.both else text

    @property
    def slug(self) -> str:
        text = "none" if self.kind == "none" else f"{self.kind}-{self.value:g}"
        return f"both-{text}" if self.both else text

    def test_pose(self, case: Case) -> Pose | None:
        return pose_for(self, case.direction, case.sign)

    def reference_pose(self, case: Case) -> Pose | None:
        return pose_for(self, case.ref_direction, case.ref_sign) if self.both else None


def pose_for(cond: Condition, direction: float, sign: int) -> Pose | None:
    """The move a placement condition makes in a case's direction / sense (``None``: none)."""
    if cond.kind == "shift":
        return Pose(cond.value * math.cos(direction), cond.value * math.sin(direction))
    if cond.kind == "rotation":
        return Pose(angle=sign * cond.value)
    if cond.kind == "scale":
        return Pose(scale=cond.value)
    return None  # unmoved: drawn without a warp (exactly the canonical pixels)


_PLACEMENTS = [
    *(Condition("shift", v) for v in (4, 8, 16, 24)),
    *(Condition("rotation", v) for v in (2, 4, 6)),
    *(Condition("scale", v) for v in (0.88, 0.94, 1.06, 1.12)),
]
CONDITIONS: tuple[Condition, ...] = (
    Condition("none"),
    *_PLACEMENTS,
    Condition("gain", 0.6),
    Condition("gain", 1.4),
    Condition("blur", 1.5),
    Condition("jpeg", 50),
    Condition("noise", 8),
    *(Condition(c.kind, c.value, both=True) for c in _PLACEMENTS),
)
#: the camera every product is seen through: the renderer's photometric defaults, no placement
BASE_NUISANCES = {
    "default": Nuisances(shift=0.0, rotation=0.0, placement=Placement.off()),
    "off": Nuisances.off(),
}
QUICK_CONDITIONS = ("none", "shift-8", "gain-0.6", "both-rotation-4")


def select(conditions: Sequence[Condition], patterns: str) -> list[Condition]:
    """Conditions whose slug matches one of the comma-separated glob ``patterns`` (``all``: all).

    Raises:
        SystemExit: a pattern that matches nothing (a typo should not shrink the run silently).
    """
    if patterns.strip() in ("", "all"):
        return list(conditions)
    chosen: list[Condition] = []
    for pattern in (p.strip() for p in patterns.split(",")):
        hits = [c for c in conditions if fnmatch.fnmatchcase(c.slug, pattern)]
        if not hits:
            slugs = ", ".join(c.slug for c in conditions)
            raise SystemExit(f"--conditions: {pattern!r} matches no condition (known: {slugs})")
        chosen += [c for c in hits if c not in chosen]
    return [c for c in conditions if c in chosen]


def apply_imaging(cond: Condition, image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """The imaging condition applied to a drawn uint8 RGB product (placement: unchanged)."""
    if cond.kind == "gain":
        return np.clip(np.rint(image.astype(np.float32) * cond.value), 0, 255).astype(np.uint8)
    if cond.kind == "blur":
        blurred = ndi.gaussian_filter(image.astype(np.float32), (cond.value, cond.value, 0))
        return np.clip(np.rint(blurred), 0, 255).astype(np.uint8)
    if cond.kind == "jpeg":
        buf = io.BytesIO()
        Image.fromarray(image).save(buf, format="JPEG", quality=int(cond.value))
        buf.seek(0)
        with Image.open(buf) as decoded:
            return np.asarray(decoded.convert("RGB")).copy()
    if cond.kind == "noise":
        noisy = image.astype(np.float32) + rng.normal(0.0, cond.value, image.shape)
        return np.clip(np.rint(noisy), 0, 255).astype(np.uint8)
    return image


# --------------------------------------------------------------------------- cases


@dataclass(frozen=True)
class Case:
    """One product under inspection and how each placement moves it (fixed per case)."""

    index: int
    housing: str
    pins: str
    findings: tuple[Finding, ...]
    direction: float  # radians: the direction of the test product's shift
    sign: int  # the test product's rotation sense
    ref_direction: float
    ref_sign: int

    @property
    def kind(self) -> str:
        return self.findings[0].kind.value if self.findings else "passed"

    @property
    def label(self) -> str:
        return class_label_of(self.findings)


def make_case(index: int, seed: int = SEED) -> Case:
    """Case ``index``: kind ``index % 3``; the bent and missing cases each walk a fixed
    permutation of the 27 positions; housing ``index % 4`` (balanced with the kind over 12
    cases), pin style ``(index // 12) % 3``; directions from the case's own generator."""
    kind = KINDS[index % 3]
    findings: tuple[Finding, ...] = ()
    if kind != "passed":
        order = np.random.default_rng([seed, 0, KINDS.index(kind)]).permutation(27)
        position = ALL_POSITIONS[int(order[(index // 3) % 27])]
        direction = list(Direction)[(index // 3) % 4] if kind == "bent pin" else None
        findings = (Finding(position, kind, direction),)
    rng = np.random.default_rng([seed, 1, index])
    angles = rng.uniform(0, 2 * math.pi, 2)
    signs = rng.choice([-1, 1], 2)
    return Case(
        index=index,
        housing=HOUSINGS[index % len(HOUSINGS)],
        pins=PIN_STYLES[(index // 12) % len(PIN_STYLES)],
        findings=findings,
        direction=float(angles[0]),
        sign=int(signs[0]),
        ref_direction=float(angles[1]),
        ref_sign=int(signs[1]),
    )


@dataclass(frozen=True)
class Scene:
    """A case under a condition: the two products, their true poses, and the composite."""

    reference: np.ndarray
    test: np.ndarray
    reference_pose: np.ndarray
    test_pose: np.ndarray
    composite: Image.Image


def render_scene(
    case: Case, cond: Condition, seed: int = SEED, base: Nuisances = BASE_NUISANCES["default"]
) -> Scene:
    """Deterministic in ``(seed, case, condition)``; the product is the same under every one
    (the renderer draws the same lighting and noise for the same generator whatever the pose)."""
    spec = ConnectorSpec(case.housing, case.pins, case.findings)
    rng = np.random.default_rng([seed, 2, case.index])
    test = render_connector(spec, GEO, base, rng, pose=cond.test_pose(case))
    reference = render_connector(ConnectorSpec(case.housing, case.pins), GEO, base,
                                 np.random.default_rng([seed, 3, case.index]),
                                 pose=cond.reference_pose(case))  # fmt: skip
    image = apply_imaging(cond, test.image, np.random.default_rng([seed, 4, case.index]))
    return Scene(
        reference=reference.image,
        test=image,
        reference_pose=reference.pose,
        test_pose=test.pose,
        composite=compose(reference.image, image, LAYOUT, labels_drawn=True),
    )


# --------------------------------------------------------------------------- models and cache


def _digest_files(paths: Iterator[Path], root: Path) -> str:
    h = hashlib.sha256()
    for path in sorted(paths):
        h.update(str(path.relative_to(root)).encode())
        h.update(path.read_bytes())
    return h.hexdigest()[:16]


@functools.lru_cache(maxsize=16)
def model_digest(folder: Path) -> str:
    """Digest of a model folder's weights and configs (a retrained model gets a new one)."""
    files = (p for p in folder.iterdir() if p.suffix in (".safetensors", ".json", ".jinja"))
    return _digest_files(files, folder)


def code_digest() -> str:
    """Digest of the code the figures depend on: the library, the renderer and this script."""
    files = [*ROOT.glob("qeu_space/**/*.py"), *ROOT.glob("dataset_tools/**/*.py"), Path(__file__)]
    return _digest_files(iter(files), ROOT)


def _git(*args: str) -> str:
    done = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, check=True)
    return done.stdout.strip()


def git_commit(path: Path) -> str:
    """Last commit touching ``path`` (``+ local changes`` if it differs from it)."""
    try:
        rel = path.resolve().relative_to(ROOT)
    except ValueError:
        return "outside this repository"
    try:
        commit = _git("log", "-1", "--format=%h %cs", "--", str(rel))
        dirty = _git("status", "--porcelain", "--", str(rel))
    except (OSError, subprocess.CalledProcessError):
        return "unknown (no git)"
    return (commit or "not committed") + (" + local changes" if dirty else "")


@dataclass
class Models:
    """Model folders and, loaded on first use, the models (one process each)."""

    paths: dict[str, Path]
    max_new_tokens: int = MAX_NEW_TOKENS
    _loaded: dict[str, object] = field(default_factory=dict)

    def key(self, component: str) -> str:
        if component == "vit":
            return model_digest(self.paths["vit"])
        if component in ("base", "adapter"):
            base = model_digest(self.paths["base"])
            return base if component == "base" else base + model_digest(self.paths["adapter"])
        return "-"

    def vit(self):
        if "vit" not in self._loaded:
            from qeu_space.modeling.loading import load_model

            self._loaded["vit"] = load_model(self.paths["vit"], device="cpu")
        return self._loaded["vit"]

    def vlm(self):
        if "vlm" not in self._loaded:
            from qeu_space.modeling.loading import load_model

            self._loaded["vlm"] = load_model(self.paths["base"], self.paths["adapter"],
                                             device="cpu")  # fmt: skip
        return self._loaded["vlm"]


@dataclass(frozen=True)
class Setup:
    """How the scenes are made: the case seed and the camera (a key of ``BASE_NUISANCES``)."""

    seed: int = SEED
    base: str = "default"

    @property
    def nuisances(self) -> Nuisances:
        return BASE_NUISANCES[self.base]


@dataclass(frozen=True)
class Unit:
    """One cached piece of work: a component on a condition, registration on or off."""

    component: str
    condition: Condition
    path: str

    def file(self, cache: Path, models: Models, code: str, setup: Setup) -> Path:
        key = f"{self.component}|{models.key(self.component)}|{code}|{setup.seed}|{setup.base}"
        digest = hashlib.sha256(key.encode()).hexdigest()[:12]
        return cache / f"{self.condition.slug}.{self.path}.{self.component}.{digest}.json"


def _load(file: Path) -> dict[int, dict]:
    if not file.exists():
        return {}
    return {int(k): v for k, v in json.loads(file.read_text())["cases"].items()}


def _save(file: Path, results: dict[int, dict], unit: Unit) -> None:
    file.parent.mkdir(parents=True, exist_ok=True)
    tmp = file.with_suffix(".tmp")
    payload = {"component": unit.component, "condition": unit.condition.name, "path": unit.path,
               "cases": {str(k): v for k, v in sorted(results.items())}}  # fmt: skip
    tmp.write_text(json.dumps(payload))
    tmp.replace(file)


# --------------------------------------------------------------------------- running


def _refusal(fn: Callable[[], object]) -> str | None:
    try:
        fn()
    except NoConnectorError as err:
        return str(err)
    return None


def _run_registration(scenes: list[Scene], cond: Condition, path: str) -> list[dict]:
    out = []
    for s in scenes:
        if path == "off":
            identity = Registration.identity(GEO)
            out.append({"misalignment": lattice_error(identity, s.test_pose)})
            continue
        row: dict = {"refused": None, "error": None, "ref_error": None}
        try:
            row["error"] = lattice_error(register(s.test), s.test_pose)
            if cond.both:
                row["ref_error"] = lattice_error(register(s.reference), s.reference_pose)
            register_composite(s.composite)  # what the VLM path reads: both panels
        except NoConnectorError as err:
            row["refused"] = str(err)
        out.append(row)
    return out


def _run_vit(scenes: list[Scene], models: Models, path: str) -> list[dict]:
    from qeu_space.modeling.families import vit

    images = [Image.fromarray(s.test) for s in scenes]
    refs = [Image.fromarray(s.reference) for s in scenes]
    loaded = models.vit()
    pair = vit.is_pair(loaded.model.config)  # a pair ViT also reads (and registers) the reference
    refused = [
        None
        if path == "off"
        else _refusal(lambda i=i, f=f: [register(x) for x in (f, i)[not pair :]])
        for i, f in zip(images, refs, strict=True)
    ]
    ok = [i for i, r in zip(images, refused, strict=True) if r is None]
    ok_refs = [f for f, r in zip(refs, refused, strict=True) if r is None] if pair else None
    labels = (
        iter(label for label, _ in vit.predict(loaded, ok, references=ok_refs)) if ok else iter(())
    )
    return [{"label": None} if r else {"label": next(labels)} for r in refused]


def _run_vlm(scenes: list[Scene], models: Models, path: str, base: bool) -> list[dict]:
    from qeu_space.modeling.families import chat_vlm

    composites = [s.composite for s in scenes]
    refused = [None if path == "off" else _refusal(lambda c=c: register_composite(c))
               for c in composites]  # fmt: skip
    ok = [c for c, r in zip(composites, refused, strict=True) if r is None]
    loaded = models.vlm()
    answers: list[str] = []
    if ok:
        with loaded.base_only() if base else contextlib.nullcontext():
            answers = chat_vlm.generate(loaded, ok, batch_size=CHUNK,
                                        max_new_tokens=models.max_new_tokens)  # fmt: skip
    it = iter(answers)
    return [{"answer": None} if r else {"answer": next(it)} for r in refused]


def _run_soartc(scenes: list[Scene], path: str) -> list[dict]:
    from qeu_space.soartc import soartc, top_positions

    out = []
    for s in scenes:
        try:
            result = soartc(s.reference, s.test, register=path == "on")
        except NoConnectorError:
            out.append({"top": None, "score": None})
            continue
        top = top_positions(result, GEO, k=1)[0][0]
        out.append({"top": top.name, "score": result.image_score})
    return out


def run_units(
    units: list[Unit],
    cases: list[Case],
    models: Models,
    cache: Path | None,
    code: str,
    setup: Setup,
    log: Callable[[str], None],
) -> dict[Unit, dict[int, dict]]:
    """Results of ``units`` for ``cases``: from the cache where there, else computed (and cached).

    Units of one (condition, path) are computed together chunk by chunk, so each scene is
    rendered once and each image registered once (``register`` remembers recent images).
    """
    results: dict[Unit, dict[int, dict]] = {}
    groups: dict[tuple[Condition, str], list[Unit]] = {}
    for unit in units:
        file = unit.file(cache, models, code, setup) if cache else None
        results[unit] = _load(file) if file else {}
        groups.setdefault((unit.condition, unit.path), []).append(unit)
    for (cond, path), group in groups.items():
        todo = {u: [c for c in cases if c.index not in results[u]] for u in group}
        needed = sorted({c.index for missing in todo.values() for c in missing})
        if not needed:
            continue
        started = time.perf_counter()
        by_index = {c.index: c for c in cases}
        for start in range(0, len(needed), CHUNK):
            chunk = [by_index[i] for i in needed[start : start + CHUNK]]
            scenes = [render_scene(c, cond, setup.seed, setup.nuisances) for c in chunk]
            context = registration_off() if path == "off" else contextlib.nullcontext()
            with context:
                for unit in group:
                    want = [k for k, c in enumerate(chunk) if c.index not in results[unit]]
                    if not want:
                        continue
                    picked = [scenes[k] for k in want]
                    rows = _compute(unit, picked, models)
                    for k, row in zip(want, rows, strict=True):
                        results[unit][chunk[k].index] = row
        for unit in group:
            if cache:
                _save(unit.file(cache, models, code, setup), results[unit], unit)
        names = ", ".join(u.component for u in group)
        seconds = time.perf_counter() - started
        log(f"  {cond.name:<24} registration {path:<3} {len(needed):4d} cases {seconds:6.1f} s "
            f"({names})")  # fmt: skip
    return results


def _compute(unit: Unit, scenes: list[Scene], models: Models) -> list[dict]:
    if unit.component == "registration":
        return _run_registration(scenes, unit.condition, unit.path)
    if unit.component == "vit":
        return _run_vit(scenes, models, unit.path)
    if unit.component == "soartc":
        return _run_soartc(scenes, unit.path)
    return _run_vlm(scenes, models, unit.path, base=unit.component == "base")


def _worker(job: tuple) -> None:
    """One process's share of the units (``--workers``): results go to the cache."""
    units, cases, paths, max_new_tokens, cache, code, setup = job
    import torch

    torch.set_num_threads(1)
    models = Models(paths, max_new_tokens)
    run_units(units, cases, models, cache, code, setup, lambda line: print(line, flush=True))


# --------------------------------------------------------------------------- scoring


@dataclass
class Row:
    """Scores of one condition on one path (``None``: not measured)."""

    cond: Condition
    path: str
    n: int
    refused: int = 0
    reg_median: float | None = None
    reg_max: float | None = None
    vit: float | None = None
    f1: dict[str, float | None] = field(default_factory=dict)
    verdict: dict[str, float] = field(default_factory=dict)
    unreadable: dict[str, int] = field(default_factory=dict)
    hit: float | None = None
    auroc: float | None = None


def score_row(
    cond: Condition, path: str, cases: list[Case], got: dict[str, dict[int, dict]]
) -> Row:
    from sklearn.metrics import roc_auc_score

    from qeu_space.evaluation.metrics import qa_metrics

    row = Row(cond, path, len(cases))
    reg = got.get("registration")
    if reg is not None:
        rows = [reg[c.index] for c in cases]
        if path == "on":
            row.refused = sum(r["refused"] is not None for r in rows)
            errors = [e for r in rows for e in (r["error"], r["ref_error"]) if e is not None]
        else:
            errors = [r["misalignment"] for r in rows]
        if errors:
            row.reg_median, row.reg_max = float(np.median(errors)), float(np.max(errors))
    if "vit" in got:
        row.vit = float(np.mean([got["vit"][c.index]["label"] == c.label for c in cases]))
    truths = [list(c.findings) for c in cases]
    for model in ("base", "adapter"):
        if model not in got:
            continue
        said = [got[model][c.index]["answer"] for c in cases]
        m = qa_metrics(truths, [a or "" for a in said])
        row.f1[model], row.verdict[model] = m.f1, m.verdict_accuracy
        row.unreadable[model] = sum(a is not None and parse_answer(a).verdict is None for a in said)
    if "soartc" in got:
        res = [got["soartc"][c.index] for c in cases]
        defective = [(c, r) for c, r in zip(cases, res, strict=True) if c.findings]
        row.hit = float(np.mean([r["top"] == c.findings[0].position.name for c, r in defective]))
        scores = [r["score"] for r in res]
        top = max((s for s in scores if s is not None), default=0.0) + 1.0  # refused: flagged
        labels = [bool(c.findings) for c in cases]
        if len(set(labels)) == 2:
            row.auroc = float(roc_auc_score(labels, [top if s is None else s for s in scores]))
    return row


def bootstrap(per_case: np.ndarray, stat: Callable[[np.ndarray], float], draws: int,
              seed: int = 0) -> tuple[float, float, float]:  # fmt: skip
    """``stat`` of ``per_case`` (cases first; summed over cases) and its 95 % interval.

    Cases are resampled with all their conditions (a case is one product seen under every
    condition, so conditions of one case are not independent).
    """
    rng = np.random.default_rng(seed)
    n = per_case.shape[0]
    values = [stat(per_case[rng.integers(0, n, n)].sum(0)) for _ in range(draws)]
    low, high = np.percentile(values, [2.5, 97.5])
    return stat(per_case.sum(0)), float(low), float(high)


def finding_counts(cases: list[Case], answers: list[str]) -> np.ndarray:
    """Per case ``(TP, FP, FN)`` of findings matched on (position, kind), as ``qa_metrics``
    counts them (its totals are checked against these), for resampling cases."""
    out = np.zeros((len(cases), 3))
    for k, (case, answer) in enumerate(zip(cases, answers, strict=True)):
        truth = {(f.position.name, f.kind) for f in case.findings}
        said = {(f.position.name, f.kind) for f in parse_answer(answer).findings}
        out[k] = (len(truth & said), len(said - truth), len(truth - said))
    return out


def _f1(counts: np.ndarray) -> float:
    tp, fp, fn = counts
    return float(2 * tp / (2 * tp + fp + fn)) if tp + fp + fn else float("nan")


def headline(conds: list[Condition], path: str, cases: list[Case], results, draws: int) -> dict:
    """Pooled figures over ``conds`` with bootstrap intervals: ``{name: (value, low, high)}``."""
    from qeu_space.evaluation.metrics import qa_metrics

    out = {}
    index = {c.index: k for k, c in enumerate(cases)}
    for model in ("base", "adapter"):
        units = [results.get(Unit(model, c, path)) for c in conds]
        if any(u is None for u in units):
            continue
        counts = np.zeros((len(cases), 3))
        for got in units:
            answers = [got[c.index]["answer"] or "" for c in cases]
            per_case = finding_counts(cases, answers)
            # the per-case counts are qa_metrics' own: check the condition's totals against it
            m = qa_metrics([list(c.findings) for c in cases], answers)
            if tuple(per_case.sum(0)) != (m.true_positives, m.false_positives, m.false_negatives):
                raise AssertionError("per-case finding counts disagree with qa_metrics")
            counts[[index[c.index] for c in cases]] += per_case
        out[f"VLM {model} findings F1"] = bootstrap(counts, _f1, draws)
    vit = [results.get(Unit("vit", c, path)) for c in conds]
    if vit and all(u is not None for u in vit):
        right = np.zeros((len(cases), 2))
        for got in vit:
            for c in cases:
                right[index[c.index]] += (got[c.index]["label"] == c.label, 1)
        out["ViT accuracy"] = bootstrap(right, lambda s: float(s[0] / s[1]), draws)
    soartc = [results.get(Unit("soartc", c, path)) for c in conds]
    if soartc and all(u is not None for u in soartc):
        hits = np.zeros((len(cases), 2))
        for got in soartc:
            for c in cases:
                if c.findings:
                    top = got[c.index]["top"]
                    hits[index[c.index]] += (top == c.findings[0].position.name, 1)
        out["SOARTC top-1 hit"] = bootstrap(hits, lambda s: float(s[0] / max(s[1], 1)), draws)
    return out


# --------------------------------------------------------------------------- report


def _f(v: float | None, digits: int = 3) -> str:
    return "-" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.{digits}f}"


def table(rows: list[Row]) -> list[str]:
    on = rows[0].path == "on" if rows else True
    reg = "reg. error median / max (px)" if on else "misalignment median / max (px)"
    lines = [
        f"| condition | cases | refused | {reg} | ViT acc. | VLM F1 base / adapter | verdict "
        "acc. base / adapter | unreadable base / adapter | SOARTC top-1 hit | SOARTC image AUROC |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        pair = lambda d, fmt=_f: f"{fmt(d.get('base'))} / {fmt(d.get('adapter'))}"  # noqa: E731
        count = lambda v: "-" if v is None else str(v)  # noqa: E731
        lines.append(
            f"| {r.cond.name} | {r.n} | {r.refused if on else '-'} | "
            f"{_f(r.reg_median, 2)} / {_f(r.reg_max, 2)} | {_f(r.vit)} | {pair(r.f1)} | "
            f"{pair(r.verdict)} | {pair(r.unreadable, count)} | {_f(r.hit)} | {_f(r.auroc)} |"
        )
    return lines


def goals(rows: list[Row], heads: dict) -> list[str]:
    """The issue's goals on the registered path: what holds and what does not."""
    misses = []
    for r in rows:
        if r.vit is not None and r.vit < GOALS["vit"]:
            misses.append(f"ViT {r.vit:.3f} ({r.cond.name})")
        if r.hit is not None and r.hit < GOALS["soartc_hit"]:
            misses.append(f"SOARTC hit {r.hit:.3f} ({r.cond.name})")
        if r.reg_max is not None and r.reg_max > GOALS["reg"]:
            misses.append(f"registration error {r.reg_max:.2f} px ({r.cond.name})")
        if r.refused:
            misses.append(f"{r.refused} refused ({r.cond.name})")
        for model, n in r.unreadable.items():
            if n:
                misses.append(f"{n} unreadable {model} answers ({r.cond.name})")
    f1 = heads.get("VLM adapter findings F1")
    lines = [
        f"- ViT accuracy >= {GOALS['vit']} in every condition; SOARTC top-1 hit >= "
        f"{GOALS['soartc_hit']}; registration error <= {GOALS['reg']:g} px; no unreadable answer; "
        "nothing refused: "
        + ("all met." if not misses else f"{len(misses)} misses: " + "; ".join(misses) + "."),
    ]
    if f1:
        ok = f1[0] >= GOALS["adapter_f1"] and f1[1] >= GOALS["adapter_f1_low"]
        lines.append(
            f"- VLM adapter findings F1 pooled >= {GOALS['adapter_f1']} with the interval's lower "
            f"bound >= {GOALS['adapter_f1_low']}: {f1[0]:.3f} [{f1[1]:.3f}, {f1[2]:.3f}] -> "
            f"{'met' if ok else 'not met'}."
        )
    return lines


def plot(rows: dict[str, list[Row]], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    metrics = [
        ("ViT accuracy", lambda r: r.vit),
        ("VLM base findings F1", lambda r: r.f1.get("base")),
        ("VLM adapter findings F1", lambda r: r.f1.get("adapter")),
        ("SOARTC top-1 hit", lambda r: r.hit),
        ("SOARTC image AUROC", lambda r: r.auroc),
        ("pin-centre error (px):\nregistered / unregistered", lambda r: r.reg_median),
    ]
    names = [r.cond.name for r in rows.get("on") or rows.get("off") or []]
    fig, axes = plt.subplots(len(metrics), 1, figsize=(max(8, 0.42 * len(names) + 2), 15),
                             sharex=True)  # fmt: skip
    styles = {"on": ("tab:blue", "-", "registration on (default)"),
              "off": ("tab:red", "--", "registration off (ablation)")}  # fmt: skip
    for ax, (title, get) in zip(axes, metrics, strict=True):
        for path, (colour, line, label) in styles.items():
            by_name = {r.cond.name: get(r) for r in rows.get(path, [])}
            ys = [by_name.get(n) for n in names]
            ys = [np.nan if v is None else v for v in ys]
            if not all(np.isnan(ys)):
                ax.plot(range(len(names)), ys, line, marker="o", ms=4, color=colour, label=label)
        if title.startswith("pin-centre"):
            ax.set_yscale("symlog", linthresh=1.0)
            ax.axhline(GOALS["reg"], color="0.4", lw=0.8, ls=":")
        else:
            ax.set_ylim(-0.03, 1.03)
        ax.set_ylabel(title, fontsize=9)
        ax.grid(alpha=0.3)
        both = [k for k, n in enumerate(names) if n.startswith("both")]
        if both:
            ax.axvspan(both[0] - 0.5, both[-1] + 0.5, color="0.92", zorder=0)
    axes[0].legend(loc="lower left", fontsize=8)
    axes[0].set_title("Robustness per condition (grey: both products moved; else the product "
                      "under inspection only)", fontsize=10)  # fmt: skip
    axes[-1].set_xticks(range(len(names)), names, rotation=60, ha="right", fontsize=8)
    fig.tight_layout()
    fig.savefig(out, dpi=90)
    plt.close(fig)


def report(args, cases, rows, heads, models: Models, seconds, loads, computed) -> str:
    argv = " ".join(args.argv)
    lines = [
        "# Robustness: registration on vs off, per condition",
        "",
        f"`OMP_NUM_THREADS=1 python -m benchmarks.bench_robustness{' ' + argv if argv else ''}`",
        "",
        f"{date.today().isoformat()}, {platform.machine()}, {_cores()} CPU cores shared with a "
        f"training job (load average {loads[0]:.2f} at the start, {loads[1]:.2f} at the end); "
        f"torch / OMP / numba threads 1, {args.workers} process(es), CPU; {seconds / 60:.1f} min "
        f"({computed} results computed, the rest from the cache).",
        "",
        "| model | path | commit | files digest |",
        "|---|---|---|---|",
    ]
    for name in ("vit", "base", "adapter"):
        if name in args.model_set:
            path = models.paths[name]
            shown = path.relative_to(ROOT) if path.is_relative_to(ROOT) else path
            lines.append(f"| {name} | `{shown}` | {git_commit(path)} | {model_digest(path)} |")
    kinds = {k: sum(c.kind == k for c in cases) for k in KINDS}
    sites = {k: len({c.findings[0].position for c in cases if c.kind == k}) for k in KINDS[1:]}
    lines += [
        "",
        f"{len(cases)} paired cases per condition (seeds `default_rng([{args.seed}, ...])`, never "
        f"used for training or choosing): {kinds['passed']} passed, {kinds['bent pin']} one bent "
        f"pin at {sites['bent pin']} positions, {kinds['missing pin']} one missing pin at "
        f"{sites['missing pin']} positions (of 27), all 4 "
        "housings x 3 pin styles, grid labels drawn, 448 px composites. Products drawn at the "
        f"exact pose through the camera `{args.base_nuisances}` "
        f"(`{BASE_NUISANCES[args.base_nuisances]}`: each product its own draws, the same under "
        "every condition); shift = length of the move (direction fixed per case); "
        "rotation sense fixed per case; imaging conditions on the product under inspection "
        "only; `both:` = the reference moved too (its own direction / sense). VLM: greedy, "
        f"batch {CHUNK}, at most {models.max_new_tokens} new tokens. Refused (no connector "
        "found) = no answer: counted wrong. SOARTC hit over the defective cases. The ViT reads "
        "the test connector image and the inspection VLM's view (`composite_test_grid`) is the "
        "test panel's pin grid: neither sees the reference, so a `both:` row differs from its "
        "test-only row only in what SOARTC and the registration do.",
    ]
    if args.quick:
        lines += ["", "**Quick smoke run on tiny random-weight models: the figures mean nothing.**"]
    for path in args.path_set:
        if not rows.get(path):
            continue
        title = ("Registration on (the Space's default path)" if path == "on" else
                 "Registration off (`registration_off()`; SOARTC `register=False`)")  # fmt: skip
        n_cases = {r.n for r in rows[path]}
        lines += ["", f"## {title}", ""]
        if path == "off" and (n_cases != {len(cases)} or len(rows["off"]) != len(rows["on"])):
            lines += [f"Ablation on {len(rows['off'])} conditions, {'/'.join(map(str, n_cases))} "
                      "cases each (to save time).", ""]  # fmt: skip
        lines += table(rows[path])
    lines += ["", "## Headline: pooled over conditions, 95 % bootstrap intervals", "",
              f"Cases resampled with all their conditions, {args.draws} draws.", "",
              "| figure | registration on | registration off |", "|---|---:|---:|"]  # fmt: skip
    names = list(dict.fromkeys([*heads.get("on", {}), *heads.get("off", {})]))
    for name in names:
        cells = []
        for path in ("on", "off"):
            v = heads.get(path, {}).get(name)
            cells.append("-" if v is None else f"{v[0]:.3f} [{v[1]:.3f}, {v[2]:.3f}]")
        lines.append(f"| {name} | {cells[0]} | {cells[1]} |")
    if heads.get("off") and rows.get("off") and len(rows["off"]) != len(rows.get("on", [])):
        lines += ["", "The two columns pool different condition sets (the ablation ran fewer)."]
    if rows.get("on"):
        lines += ["", "## Goals (issue 10), registered path", "", *goals(rows["on"], heads["on"])]
    return "\n".join(lines) + "\n"


def _cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()


# --------------------------------------------------------------------------- quick models


def tiny_models(folder: Path) -> dict[str, Path]:
    """Random-weight stand-ins with the shipped models' views (``--quick``): a ViT framed on the
    pin grid, an inspection VLM framed on the test product's grid, and a LoRA on its vision."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForImageTextToText

    from qeu_space.modeling.families import chat_vlm, vit
    from qeu_space.modeling.inspection_vlm import InspectionVLMConfig, build_inspection_vlm

    paths = {name: folder / name for name in MODELS}
    if all((p / "config.json").exists() or (p / "adapter_config.json").exists()
           for p in paths.values()):  # fmt: skip
        return paths
    config = vit.PRESETS["vit-pins-scratch"]()
    config.update({"hidden_size": 16, "num_hidden_layers": 1, "num_attention_heads": 2,
                   "intermediate_size": 32})  # fmt: skip
    with torch.random.fork_rng():
        torch.manual_seed(0)
        loaded = vit.new_model(vit.ScratchBase(config))
    loaded.model.save_pretrained(paths["vit"])
    loaded.processor.save_pretrained(paths["vit"])
    small = InspectionVLMConfig(image_size=64, vision_hidden=16, text_hidden=16,
                                vision_intermediate=32, text_intermediate=32, vision_layers=1,
                                text_layers=1)  # fmt: skip
    build_inspection_vlm(paths["base"], small)
    model = AutoModelForImageTextToText.from_pretrained(paths["base"], use_safetensors=True)
    lora = LoraConfig(r=2, lora_alpha=4, target_modules=chat_vlm.lora_target_modules("vision"),
                      init_lora_weights=False)  # fmt: skip
    with torch.random.fork_rng():
        torch.manual_seed(1)
        get_peft_model(model, lora).save_pretrained(paths["adapter"])
    return paths


# --------------------------------------------------------------------------- main


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0].replace("\n", " "))
    p.add_argument("--cases", type=int, default=150, help="paired cases per condition (150)")
    p.add_argument("--conditions", default="all", help="comma-separated slugs or globs "
                   "(e.g. 'none,shift-*,both-*'); default all")  # fmt: skip
    p.add_argument("--off-conditions", default=None, help="conditions of the registration-off "
                   "ablation (default: the same as --conditions)")  # fmt: skip
    p.add_argument("--off-cases", type=int, default=None, help="cases of the ablation (default "
                   "--cases)")  # fmt: skip
    p.add_argument("--models", default="vit,base,adapter,soartc",
                   help="what to score: any of vit, base, adapter, soartc")  # fmt: skip
    p.add_argument("--paths", default="on,off", help="registration on, off or both (on,off)")
    p.add_argument("--vit", type=Path, default=MODELS["vit"])
    p.add_argument("--base", type=Path, default=MODELS["base"])
    p.add_argument("--adapter", type=Path, default=MODELS["adapter"])
    p.add_argument("--seed", type=int, default=SEED, help=f"case seed (default {SEED})")
    p.add_argument("--base-nuisances", choices=tuple(BASE_NUISANCES), default="default",
                   help="the camera every product is seen through (default: the renderer's "
                   "photometric defaults; off: noise-free)")  # fmt: skip
    p.add_argument("--draws", type=int, default=DRAWS, help="bootstrap draws (1000)")
    p.add_argument("--max-new-tokens", type=int, default=MAX_NEW_TOKENS)
    p.add_argument("--workers", type=int, default=1, help="processes (one core each; default "
                   "1: use 2 only on an otherwise idle machine)")  # fmt: skip
    p.add_argument("--cache", type=Path, default=CACHE, help=f"result cache (default {CACHE})")
    p.add_argument("--no-cache", action="store_true", help="compute everything afresh")
    p.add_argument("--results", type=Path, default=RESULTS, help="markdown file to write")
    p.add_argument("--figure", type=Path, default=FIGURE, help="PNG file to write")
    p.add_argument("--no-write", action="store_true", help="print only")
    p.add_argument("--quick", action="store_true", help="smoke run: tiny random models, 3 cases, "
                   f"{len(QUICK_CONDITIONS)} conditions; writes only where --results/--figure "
                   "say (default: a temporary folder)")  # fmt: skip
    args = p.parse_args(argv)
    args.argv = sys.argv[1:] if argv is None else list(argv)
    args.model_set = {m.strip() for m in args.models.split(",") if m.strip()}
    unknown = args.model_set - {"vit", "base", "adapter", "soartc"}
    args.path_set = [x for x in PATHS if x in {s.strip() for s in args.paths.split(",")}]
    if unknown or not args.path_set:
        p.error(f"--models takes vit, base, adapter, soartc; --paths takes on, off "
                f"(got {args.models!r}, {args.paths!r})")  # fmt: skip
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    load_start = os.getloadavg()[0]
    started = time.perf_counter()
    scratch = None
    if args.quick:
        if args.conditions == "all":
            args.conditions = ",".join(QUICK_CONDITIONS)
        args.cases = min(args.cases, 3)
        args.draws = min(args.draws, 50)
        args.max_new_tokens = min(args.max_new_tokens, 8)
        root = args.cache if not args.no_cache else None
        if root is None or args.cache == CACHE:
            scratch = tempfile.TemporaryDirectory(prefix="bench_robustness_")
            root = Path(scratch.name)
            if args.cache == CACHE:
                args.cache = root / "cache"
        if args.results == RESULTS:
            args.results = root / "RESULTS_robustness.md"
        if args.figure == FIGURE:
            args.figure = root / "robustness.png"
        paths = tiny_models(root / "models")
        args.vit, args.base, args.adapter = paths["vit"], paths["base"], paths["adapter"]
    import torch

    torch.set_num_threads(1)
    models = Models({"vit": args.vit, "base": args.base, "adapter": args.adapter},
                    args.max_new_tokens)  # fmt: skip
    cache = None if args.no_cache else args.cache
    code = code_digest()
    cases = [make_case(i, args.seed) for i in range(args.cases)]
    off_cases = cases[: args.off_cases] if args.off_cases else cases
    on_conds = select(CONDITIONS, args.conditions)
    off_conds = select(CONDITIONS, args.off_conditions) if args.off_conditions else on_conds
    components = ["registration", *(c for c in COMPONENTS[1:] if c in args.model_set)]
    plan: list[tuple[Unit, list[Case]]] = []
    for path, conds, its_cases in (("on", on_conds, cases), ("off", off_conds, off_cases)):
        if path in args.path_set:
            plan += [(Unit(comp, c, path), its_cases) for c in conds for comp in components]
    setup = Setup(args.seed, args.base_nuisances)
    before = {u: len(_load(u.file(cache, models, code, setup))) if cache else 0
              for u, _ in plan}  # fmt: skip
    log = lambda line: print(line, file=sys.stderr, flush=True)  # noqa: E731
    if args.workers > 1 and cache is not None:
        _parallel(plan, models, cache, code, Setup(args.seed, args.base_nuisances), args)
    results: dict[Unit, dict[int, dict]] = {}
    for its_cases in (cases, off_cases):
        units = [u for u, c in plan if c is its_cases and u not in results]
        results.update(run_units(units, its_cases, models, cache, code, setup, log))
    computed = sum(max(len(results[u]) - before[u], 0) for u, _ in plan)
    rows: dict[str, list[Row]] = {}
    heads: dict[str, dict] = {}
    for path, conds, its_cases in (("on", on_conds, cases), ("off", off_conds, off_cases)):
        if path not in args.path_set:
            continue
        rows[path] = [
            score_row(c, path, its_cases, {u.component: results[u] for u, _ in plan
                                           if u.condition == c and u.path == path})
            for c in conds
        ]  # fmt: skip
        heads[path] = headline(conds, path, its_cases, results, args.draws)
    seconds = time.perf_counter() - started
    text = report(args, cases, rows, heads, models, seconds,
                  (load_start, os.getloadavg()[0]), computed)  # fmt: skip
    print(text)
    if not args.no_write:
        args.results.parent.mkdir(parents=True, exist_ok=True)
        args.results.write_text(text, encoding="utf-8")
        plot(rows, args.figure)
        print(f"wrote {args.results} and {args.figure}", file=sys.stderr)
    if scratch is not None and args.no_write:
        scratch.cleanup()
    return 0


def _parallel(plan, models: Models, cache: Path, code: str, setup: Setup, args) -> None:
    """Share the (condition, path) groups among ``--workers`` processes (results: the cache)."""
    import multiprocessing as mp

    groups: dict[tuple, list] = {}
    for unit, its_cases in plan:
        groups.setdefault((unit.condition, unit.path, len(its_cases)), []).append((unit, its_cases))
    shares: list[list] = [[] for _ in range(args.workers)]
    for k, group in enumerate(groups.values()):
        shares[k % args.workers].append(group)
    jobs = []
    for share in shares:
        for group in share:
            units = [u for u, _ in group]
            jobs.append((units, group[0][1], models.paths, models.max_new_tokens, cache, code,
                         setup))  # fmt: skip
    with mp.get_context("spawn").Pool(args.workers) as pool:
        pool.map(_worker, jobs, chunksize=1)


if __name__ == "__main__":
    raise SystemExit(main())
