"""Which sample each row is: splits, held-out defect positions, and the draw from a row's seed.

A row's content depends only on ``(seed, split, index)``, never on which process made it or in what
order, so ``--num-proc`` can shard the work and the same command always gives the same rows.

The seeds shifted the validation pins away from the training pins; here the three splits place
their defects at three disjoint sets of positions, so a model has to read the grid rather than
remember where defects were. ``test_unseen_housing`` puts defects anywhere, on the housing that no
other split shows.
"""

from __future__ import annotations

from typing import Literal

import numpy as np

from dataset_tools.compose import SampleSpec
from dataset_tools.render import PIN_STYLES, SEEN_HOUSINGS, UNSEEN_HOUSING
from qeu_space.vocabulary import (
    ALL_POSITIONS,
    DEFAULT_KINDS,
    DefectKind,
    Direction,
    Finding,
    Position,
)

Split = Literal["train", "validation", "test", "test_unseen_housing", "test_held_out_looks"]
SPLITS: tuple[Split, ...] = ("train", "validation", "test", "test_unseen_housing")
"""The splits of every build (a row's seed depends on its split's index here)."""
HELD_OUT_LOOKS_SPLIT: Split = "test_held_out_looks"
"""The split a build trained on looks adds: rows of the held-out look families only
(:data:`dataset_tools.looks.HELD_OUT_FAMILIES`), defects at every position."""
ALL_SPLITS: tuple[Split, ...] = (*SPLITS, HELD_OUT_LOOKS_SPLIT)
Config = Literal["qa", "od", "cls"]
CONFIGS: tuple[Config, ...] = ("qa", "od", "cls")

TEST_POSITIONS = tuple(Position.parse(p) for p in ("U2", "U7", "C4", "C9", "D1", "D6"))
VALIDATION_POSITIONS = tuple(Position.parse(p) for p in ("U5", "C2", "C7", "D4", "D9"))
TRAIN_POSITIONS = tuple(
    p for p in ALL_POSITIONS if p not in TEST_POSITIONS and p not in VALIDATION_POSITIONS
)
SPLIT_POSITIONS: dict[Split, tuple[Position, ...]] = {
    "train": TRAIN_POSITIONS,
    "validation": VALIDATION_POSITIONS,
    "test": TEST_POSITIONS,
    "test_unseen_housing": ALL_POSITIONS,
    "test_held_out_looks": ALL_POSITIONS,
}

VARIANT_NAMES: tuple[str, ...] = ("plain", "nsoart")
"""Image variants of a composite (drawn by :data:`dataset_tools.builders.VARIANTS`)."""

TRAIN_POSITION_CHOICES: tuple[str, ...] = ("held-out", "all")
"""Where ``train`` defects may sit: off the validation/test positions, or anywhere."""

DEFECT_COUNTS = (0, 1, 2, 3)
DEFECT_COUNT_WEIGHTS = (0.30, 0.45, 0.18, 0.07)
"""Q/A and OD rows: share of passed, one-, two- and three-defect products."""
KIND_SHARES: dict[DefectKind, float] = {
    DefectKind.BENT: 0.45,
    DefectKind.MISSING: 0.30,
    DefectKind.SHORT: 0.25,
}
"""Q/A and OD rows: share of each kind among defects, renormalised over the kinds a build shows:
bent 0.6 / missing 0.4 by default (``--kinds bent missing``), bent 0.45 / missing 0.3 / short 0.25
with ``--kinds bent missing short`` (a short pin in about one defective row in three, while bent
and missing keep most of the rows, so an adapter learning the new kind forgets nothing)."""


def row_rng(seed: int, split: Split, index: int) -> np.random.Generator:
    """The generator of one row: everything about it (content and nuisances) comes from here."""
    return np.random.default_rng([seed, ALL_SPLITS.index(split), index])


def draw_spec(
    config: Config,
    split: Split,
    index: int,
    rng: np.random.Generator,
    *,
    unlabelled_fraction: float = 0.15,
    housings: tuple[str, ...] = SEEN_HOUSINGS,
    unseen_housing: str = UNSEEN_HOUSING,
    train_positions: str = "held-out",
    kinds: tuple[DefectKind, ...] = DEFAULT_KINDS,
) -> SampleSpec:
    """Draw what row ``index`` of ``split`` shows.

    ``cls`` rows are balanced over ``OK`` and each of ``kinds`` (``OK`` / ``BENDNG`` / ``NUKENG``
    by default) with at most one defect; ``qa``/``od`` rows follow :data:`DEFECT_COUNT_WEIGHTS`
    and :data:`KIND_SHARES`. ``kinds`` are in canonical order
    (:func:`~qeu_space.vocabulary.kinds_in_order`); with the default ones every draw from ``rng``
    is what it was before short pins existed, so default datasets are unchanged. ``housings``
    appear in every split but ``test_unseen_housing``, which shows only ``unseen_housing``.
    ``train_positions="all"`` puts ``train`` defects at every position (a pre-training set, whose
    validation and test positions are then no longer held out from it); the default keeps them off
    the other splits' positions.
    (:class:`~dataset_tools.builders.BuildConfig` checks the settings once, before any row.)
    """
    housing = unseen_housing if split == "test_unseen_housing" else str(rng.choice(housings))
    pins = str(rng.choice(PIN_STYLES))
    positions = SPLIT_POSITIONS[split]
    if split == "train" and train_positions == "all":
        positions = ALL_POSITIONS
    if config == "cls":
        label = int(rng.integers(1 + len(kinds)))  # 0 OK, then kinds (1 bent, 2 missing, ...)
        count = 0 if label == 0 else 1
        drawn = [kinds[label - 1]] if label else []
    else:
        count = int(rng.choice(DEFECT_COUNTS, p=DEFECT_COUNT_WEIGHTS))
        drawn = [_kind(rng.random(), kinds) for _ in range(count)]
    chosen = rng.choice(len(positions), size=count, replace=False) if count else []
    findings = []
    for kind, i in zip(drawn, chosen, strict=True):
        direction = rng.choice(list(Direction)) if kind is DefectKind.BENT else None
        findings.append(Finding(positions[int(i)], kind, direction))
    labels_drawn = config != "cls" and bool(rng.random() >= unlabelled_fraction)
    return SampleSpec(
        id=f"{config}-{split}-{index:06d}",
        housing=housing,
        pins=pins,
        findings=tuple(findings),
        labels_drawn=labels_drawn,
    )


def _kind(u: float, kinds: tuple[DefectKind, ...]) -> DefectKind:
    """The kind a uniform draw ``u`` picks, by :data:`KIND_SHARES` renormalised over ``kinds``.

    By default the bent threshold is ``0.45 / 0.75``, exactly 0.6 in floating point: the share
    (and so every row) of the builds made before short pins existed.
    """
    total = sum(KIND_SHARES[k] for k in kinds)
    edge = 0.0
    for kind in kinds[:-1]:
        edge += KIND_SHARES[kind]
        if u < edge / total:
            return kind
    return kinds[-1]
