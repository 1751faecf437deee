"""What part of an image a model looks at: the whole image, or only the pin grid.

The shipped models are small and trained from scratch, and both measured far better when their
patches were aligned with the pins: cropped to :meth:`ConnectorGeometry.grid_box` and resized so
that the 9 columns fill 9 patch columns, every pin sits in the same place of its own patch at
every grid position, a held-out position included, and the housing outside the grid (where an
unseen housing differs most) is cut away. A model says which view it wants with one field of its
``config.json``, ``qeu_framing``, so the view travels with the weights and every caller (training,
evaluation, the Space) frames the same way; a model without the field sees the whole image.

Framings:
    ``connector_grid``: a single connector image (the ``cls`` rows) cropped to its pin grid.
    ``composite_test_grid``: a square composite (reference on top, test below) cropped to the
    pin grid of the product under inspection.

Example:
    >>> view, box = frame(composite, "composite_test_grid")
    >>> tuple(round(v, 1) for v in box)  # where the view lies in the 448 px composite
    (36.6, 269.5, 436.4, 422.5)
"""

from __future__ import annotations

from typing import Any

from PIL import Image

from qeu_space.geometry import CompositeLayout, ConnectorGeometry
from qeu_space.vocabulary import Box

FRAMINGS: tuple[str, ...] = ("connector_grid", "composite_test_grid")
CONFIG_KEY = "qeu_framing"


def framing_of(config: Any) -> str | None:
    """The framing a model config asks for (``None``: the whole image).

    Raises:
        ValueError: the config names a framing this version does not know.
    """
    name = getattr(config, CONFIG_KEY, None)
    if name is not None and name not in FRAMINGS:
        raise ValueError(
            f"the model asks for framing {name!r}, which this version of qeu_space does not know "
            f"(known: {', '.join(FRAMINGS)}); upgrade qeu_space or remove {CONFIG_KEY} from its "
            "config.json"
        )
    return name


def grid_box(image_size: tuple[int, int], framing: str | None) -> Box:
    """Where ``framing``'s view lies in an image of ``image_size`` (``(width, height)``).

    Raises:
        ValueError: the image cannot hold that view (too small, or not a square composite).
    """
    width, height = image_size
    if framing is None:
        return (0.0, 0.0, float(width), float(height))
    if framing == "connector_grid":
        return ConnectorGeometry(width, height).grid_box()
    if framing == "composite_test_grid":
        if width != height or width % 2 or width < 96:
            raise ValueError(
                f"this model reads composites (square, even side of at least 96 px, reference on "
                f"top, test below); got {width} x {height}: compose the pair first"
            )
        layout = CompositeLayout(width)
        return layout.to_composite(layout.connector.grid_box(), "test")
    raise ValueError(f"unknown framing {framing!r} (known: {', '.join(FRAMINGS)})")


def frame(image: Image.Image, framing: str | None) -> tuple[Image.Image, Box]:
    """``image`` as a model with ``framing`` sees it (before its processor resizes it), and where
    that view lies in ``image``.
    """
    box = grid_box(image.size, framing)
    if framing is None:
        return image, box
    return image.crop(tuple(round(v) for v in box)), box
