"""Dataset rows for the three configs, and the ``DatasetDict`` builder.

``qa`` rows teach a chat VLM to answer in the canonical text, ``od`` rows teach Florence-2 ``<OD>``
with ``bbox_str`` targets, ``cls`` rows teach a ViT one connector's label. All three come from the
same :class:`~dataset_tools.compose.Sample`, so their truths agree by construction.

Example:
    >>> dd = build_dataset(BuildConfig("qa", num=4, seed=0, size=224))
    >>> sorted(dd), dd["train"][0]["answer"][:6] in ("Passed", "Defect")
    (['test', 'test_unseen_housing', 'train', 'validation'], True)
"""

from __future__ import annotations

import io
import math
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import datasets
from datasets import ClassLabel, Features, List, Value
from PIL import Image

from dataset_tools.compose import Sample, make_sample
from dataset_tools.render import HOUSINGS, SEEN_HOUSINGS, UNSEEN_HOUSING, Nuisances
from dataset_tools.sampling import (
    CONFIGS,
    SPLITS,
    TRAIN_POSITION_CHOICES,
    Config,
    Split,
    draw_spec,
    row_rng,
)
from qeu_space.geometry import CompositeLayout
from qeu_space.vocabulary import (
    CLASS_LABELS,
    DEFAULT_KINDS,
    INSPECTION_QUESTION,
    OD_PROMPT,
    DefectKind,
    class_label_of,
    class_labels,
    format_answer,
    format_bbox_str,
    kinds_in_order,
    verdict_of,
)

MIN_COMPOSITE = 224
"""Smallest composite side: its connectors (212 px wide) are the smallest registration reads."""

_FINDING = {
    "position": Value("string"),
    "kind": Value("string"),
    "direction": Value("string"),
    "box": List(Value("float32"), length=4),
}
_COMMON = {
    "id": Value("string"),
    "image": datasets.Image(),
    "housing": Value("string"),
    "pins": Value("string"),
    "labels_drawn": Value("bool"),
    "variant": Value("string"),
}
FEATURES: dict[Config, Features] = {
    "qa": Features(
        {
            **_COMMON,
            "question": Value("string"),
            "answer": Value("string"),
            "findings": List(_FINDING),
            "verdict": Value("string"),
        }
    ),
    "od": Features(
        {
            **_COMMON,
            "prompt": Value("string"),
            "bbox_str": Value("string"),
            "objects": {
                "bbox": List(List(Value("float32"), length=4)),
                "category": List(Value("string")),
            },
        }
    ),
    "cls": Features(
        {**_COMMON, "label": ClassLabel(names=list(CLASS_LABELS)), "findings": List(_FINDING)}
    ),
}


def _nsoart(sample: Sample) -> Image.Image:
    from dataset_tools.nsoart import nsoart_image  # needs SOARTC: import only when asked for

    return nsoart_image(sample.image, sample.layout)


VARIANTS: dict[str, Callable[[Sample], Image.Image]] = {
    "plain": lambda sample: sample.image,
    "nsoart": _nsoart,
}
"""Image variants of a composite: ``plain``, or ``nsoart`` (SOARTC map blended over the test)."""


def features(config: Config, kinds: tuple[DefectKind, ...] = DEFAULT_KINDS) -> Features:
    """The features of ``config`` rows showing ``kinds``: :data:`FEATURES` unless an opt-in kind
    adds a class (``cls`` with ``short pin`` has ``OK``, ``BENDNG``, ``NUKENG``, ``SHORTNG``)."""
    labels = class_labels(kinds)
    if config != "cls" or labels == CLASS_LABELS:
        return FEATURES[config]
    return Features({**FEATURES["cls"], "label": ClassLabel(names=list(labels))})


@dataclass(frozen=True)
class BuildConfig:
    """One dataset build; the CLI's options map one to one onto these fields.

    Attributes:
        config: ``qa``, ``od`` or ``cls``.
        num: rows in ``train``; ``validation``, ``test`` and ``test_unseen_housing`` get
            ``eval_fraction * num`` rows each (at least one).
        seed: the same seed gives the same rows, whatever ``num_proc``.
        size: composite side in pixels (``cls`` images are the lower connector of it).
        variant: ``plain`` or ``nsoart``.
        unlabelled_fraction: share of ``qa``/``od`` composites drawn without coordinate labels.
        nuisances: lighting, noise, blur, shift, rotation and JPEG settings.
        housings: housing variants of ``train``, ``validation`` and ``test``.
        unseen_housing: the one housing of ``test_unseen_housing`` (not among ``housings``).
        train_positions: ``held-out`` (train defects avoid the validation/test positions) or
            ``all`` (a pre-training set with defects anywhere).
        kinds: the defect kinds drawn (names, labels or keywords such as ``short``; kept in
            canonical order): ``bent pin`` and ``missing pin`` by default, ``short pin`` opt-in.
        num_proc: worker processes.
    """

    config: Config
    num: int
    seed: int = 0
    size: int = 448
    eval_fraction: float = 0.1
    variant: str = "plain"
    unlabelled_fraction: float = 0.15
    nuisances: Nuisances = field(default_factory=Nuisances)
    housings: tuple[str, ...] = SEEN_HOUSINGS
    unseen_housing: str = UNSEEN_HOUSING
    train_positions: str = "held-out"
    kinds: tuple[DefectKind, ...] = DEFAULT_KINDS
    num_proc: int = 1

    def __post_init__(self) -> None:
        try:
            object.__setattr__(self, "kinds", kinds_in_order(self.kinds))
        except ValueError as e:
            choices = " ".join(k.keyword for k in DefectKind)
            raise ValueError(f"--kinds: {e} (choose from {choices})") from None
        if self.config not in CONFIGS:
            raise ValueError(f"unknown config {self.config!r}; choose one of {', '.join(CONFIGS)}")
        if self.num < 1:
            raise ValueError(f"--num must be at least 1 (rows in the train split), got {self.num}")
        if self.variant not in VARIANTS:
            raise ValueError(f"unknown variant {self.variant!r}; choose one of {list(VARIANTS)}")
        if self.variant != "plain" and self.config == "cls":
            raise ValueError("cls rows are single connectors: only the plain variant applies")
        if not 0 < self.eval_fraction <= 1:
            raise ValueError(f"eval_fraction must be in (0, 1], got {self.eval_fraction}")
        if not 0 <= self.unlabelled_fraction <= 1:
            raise ValueError(
                f"unlabelled_fraction must be in [0, 1], got {self.unlabelled_fraction}"
            )
        unknown = [h for h in (*self.housings, self.unseen_housing) if h not in HOUSINGS]
        if unknown or not self.housings:
            raise ValueError(
                f"housings must be some of {', '.join(HOUSINGS)}; got {unknown or 'none'}"
            )
        if self.unseen_housing in self.housings:
            raise ValueError(
                f"the unseen housing {self.unseen_housing!r} must not be among --housings"
            )
        if self.train_positions not in TRAIN_POSITION_CHOICES:
            raise ValueError(
                f"--train-positions must be one of {', '.join(TRAIN_POSITION_CHOICES)}, "
                f"got {self.train_positions!r}"
            )
        if self.num_proc < 1:
            raise ValueError(f"--num-proc must be at least 1, got {self.num_proc}")
        CompositeLayout(self.size)  # validates the size
        if self.size < MIN_COMPOSITE:
            raise ValueError(
                f"--size must be at least {MIN_COMPOSITE}: every model reads the registered frame, "
                f"and registration needs pins of a few pixels (got {self.size})"
            )

    @property
    def split_sizes(self) -> dict[Split, int]:
        held_out = max(1, math.ceil(self.num * self.eval_fraction))
        return {s: (self.num if s == "train" else held_out) for s in SPLITS}


def _png(image: Image.Image) -> dict:
    """PNG bytes for the ``Image()`` feature (fast compression: rows are rebuilt, not archived)."""
    buf = io.BytesIO()
    image.save(buf, format="PNG", compress_level=1)
    return {"bytes": buf.getvalue(), "path": None}


def _common(sample: Sample, image: Image.Image, variant: str) -> dict:
    return {
        "id": sample.id,
        "image": _png(image),
        "housing": sample.housing,
        "pins": sample.pins,
        "labels_drawn": sample.labels_drawn,
        "variant": variant,
    }


def qa_row(sample: Sample, variant: str = "plain") -> dict:
    return {
        **_common(sample, VARIANTS[variant](sample), variant),
        "question": INSPECTION_QUESTION,
        "answer": format_answer(sample.findings),
        "findings": [f.to_dict() for f in sample.findings],
        "verdict": verdict_of(sample.findings),
    }


def od_row(sample: Sample, variant: str = "plain") -> dict:
    image = VARIANTS[variant](sample)
    boxes = [f.box for f in sample.findings]
    return {
        **_common(sample, image, variant),
        "prompt": OD_PROMPT,
        "bbox_str": format_bbox_str(sample.findings, image.size),
        "objects": {
            "bbox": [[b[0], b[1], b[2] - b[0], b[3] - b[1]] for b in boxes],
            "category": [f.kind.value for f in sample.findings],
        },
    }


def cls_row(sample: Sample, variant: str = "plain", labels: tuple[str, ...] = CLASS_LABELS) -> dict:
    """One connector (the lower product) and its label (an index of ``labels``); findings in that
    image's pixels."""
    ox, oy = sample.layout.origin("test")
    findings = [f.to_dict() for f in sample.findings]
    for f in findings:
        x1, y1, x2, y2 = f["box"]
        f["box"] = [x1 - ox, y1 - oy, x2 - ox, y2 - oy]
    return {
        **_common(sample, Image.fromarray(sample.test), variant),
        "label": labels.index(class_label_of(sample.findings)),
        "findings": findings,
    }


ROW_BUILDERS: dict[Config, Callable[[Sample, str], dict]] = {
    "qa": qa_row,
    "od": od_row,
    "cls": cls_row,
}


def make_row(cfg: BuildConfig, split: Split, index: int) -> dict:
    """Row ``index`` of ``split``: a pure function of ``(cfg, split, index)``."""
    rng = row_rng(cfg.seed, split, index)
    spec = draw_spec(
        cfg.config,
        split,
        index,
        rng,
        unlabelled_fraction=cfg.unlabelled_fraction,
        housings=cfg.housings,
        unseen_housing=cfg.unseen_housing,
        train_positions=cfg.train_positions,
        kinds=cfg.kinds,
    )
    sample = make_sample(spec, rng, layout=CompositeLayout(cfg.size), nuisances=cfg.nuisances)
    if cfg.config == "cls":
        return cls_row(sample, cfg.variant, class_labels(cfg.kinds))
    return ROW_BUILDERS[cfg.config](sample, cfg.variant)


def _generate_rows(indices: list[int], cfg: BuildConfig, split: Split) -> Iterator[dict]:
    for index in indices:
        yield make_row(cfg, split, index)


def build_dataset(cfg: BuildConfig, *, cache_dir: str | None = None) -> datasets.DatasetDict:
    """Build all four splits with ``datasets.Dataset.from_generator`` (sharded over processes).

    ``cache_dir`` holds the Arrow files ``datasets`` writes (and must outlive the result); without
    it the rows are kept in memory and a temporary folder is used, so a renderer change can never
    be served a stale cache. Progress bars are ``datasets``' own (``disable_progress_bars()``).
    """
    with tempfile.TemporaryDirectory(prefix="qeu-build-") as tmp:
        splits = {}
        for split, n in cfg.split_sizes.items():
            splits[split] = datasets.Dataset.from_generator(
                _generate_rows,
                features=features(cfg.config, cfg.kinds),
                gen_kwargs={"indices": list(range(n)), "cfg": cfg, "split": split},
                num_proc=min(cfg.num_proc, n) if cfg.num_proc > 1 else None,
                cache_dir=cache_dir or tmp,
                split=datasets.NamedSplit(split),
                keep_in_memory=cache_dir is None,
            )
        return datasets.DatasetDict(splits)
