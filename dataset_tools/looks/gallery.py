"""One sample of each look family: what the Space's gallery and the README show a visitor."""

from __future__ import annotations

import numpy as np

from dataset_tools.looks.look import LOOK_FAMILIES
from qeu_space.geometry import CompositeLayout
from qeu_space.vocabulary import DefectKind, Direction, Finding, Position

GALLERY_DEFECTS: tuple[Finding, ...] = (
    Finding(Position.parse("U3"), DefectKind.BENT, Direction.LEFT),
    Finding(Position.parse("C7"), DefectKind.MISSING),
    Finding(Position.parse("D5"), DefectKind.SHORT),
)
"""The defects every gallery sample shows: one of each kind."""


def gallery_samples(seed: int = 0, size: int = 448, families: tuple[str, ...] | None = None):
    """``[(family, Sample)]``: one composite per look family (a good reference over a test with
    :data:`GALLERY_DEFECTS`), deterministic given ``seed``."""
    from dataset_tools.compose import SampleSpec, make_sample

    layout = CompositeLayout(size)
    out = []
    for i, family in enumerate(families or tuple(LOOK_FAMILIES)):
        spec = SampleSpec(f"gallery-{family}", "standard", "square", GALLERY_DEFECTS, True)
        rng = np.random.default_rng([seed, 18, i])
        out.append((family, make_sample(spec, rng, layout=layout, look=family)))
    return out
