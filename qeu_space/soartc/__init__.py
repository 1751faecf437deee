"""SOART3 and SOARTC: a training-free metric that draws where a product departs from a good one.

See :mod:`qeu_space.soartc.core` for the method, :func:`top_positions` for grid positions and
:mod:`qeu_space.soartc.overlay` for pictures. ``python -m qeu_space.soartc REFERENCE TEST``
runs it from the shell.
"""

import importlib
from typing import Any

_EXPORTS = {
    **dict.fromkeys(
        (
            "DEFAULT_DESCRIPTOR",
            "DESCRIPTORS",
            "METRIC_NAMES",
            "Soart3",
            "SoartcResult",
            "UnitSpace",
            "soart3",
            "soart3_batch",
            "soartc",
            "soartc_many",
            "to_gray",
        ),
        "core",
    ),  # fmt: skip
    **dict.fromkeys(("blend_heatmap", "colorize", "heatmap_overlay"), "overlay"),
    "top_positions": "positions",
}


def __getattr__(name: str) -> Any:
    """Load the kernels (numba, scipy, matplotlib) when a name is first used, not on import:
    ``python -m qeu_space.soartc --help`` then answers at once."""
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
    globals()[name] = value
    return value


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
