"""SOART3 and SOARTC: a training-free metric that draws where a product departs from a good one.

See :mod:`qeu_space.soartc.core` for the method, :func:`top_positions` for grid positions and
:mod:`qeu_space.soartc.overlay` for pictures. ``python -m qeu_space.soartc REFERENCE TEST``
runs it from the shell.
"""

from qeu_space.soartc.core import (
    DEFAULT_DESCRIPTOR,
    DESCRIPTORS,
    METRIC_NAMES,
    Soart3,
    SoartcResult,
    UnitSpace,
    soart3,
    soart3_batch,
    soartc,
    soartc_many,
    to_gray,
)
from qeu_space.soartc.overlay import blend_heatmap, colorize, heatmap_overlay
from qeu_space.soartc.positions import top_positions

__all__ = [
    "DEFAULT_DESCRIPTOR",
    "DESCRIPTORS",
    "METRIC_NAMES",
    "Soart3",
    "SoartcResult",
    "UnitSpace",
    "blend_heatmap",
    "colorize",
    "heatmap_overlay",
    "soart3",
    "soart3_batch",
    "soartc",
    "soartc_many",
    "to_gray",
    "top_positions",
]
