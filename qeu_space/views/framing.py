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

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from PIL import Image

from qeu_space.geometry import CompositeLayout, ConnectorGeometry
from qeu_space.views.registration import (
    CompositeRegistration,
    Registration,
    register,
    register_composite,
    transform_box,
    warp_into,
    warp_map,
)
from qeu_space.vocabulary import Box

FRAMINGS: tuple[str, ...] = ("connector_grid", "composite_test_grid")
CONFIG_KEY = "qeu_framing"
Source = Literal["connector", "composite"]
SOURCES: tuple[str, ...] = ("connector", "composite")
_SOURCE_OF: dict[str, Source] = {
    "connector_grid": "connector",
    "composite_test_grid": "composite",
}
_REGISTER: ContextVar[bool] = ContextVar("qeu_register", default=True)


@contextmanager
def registration_off() -> Iterator[None]:
    """Frame without registration inside this block (the robustness benchmark's ablation).

    Every caller reads the registered frame by default; this is how a benchmark measures what a
    model does when the product is *not* put back where the canonical frame has it.
    """
    token = _REGISTER.set(False)
    try:
        yield
    finally:
        _REGISTER.reset(token)


def registration_enabled() -> bool:
    return _REGISTER.get()


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
    """Where ``framing``'s view lies in a canonical image of ``image_size`` (``(width, height)``).

    Raises:
        ValueError: the image cannot hold that view (too small, or not a square composite).
    """
    width, height = image_size
    if framing is None:
        return (0.0, 0.0, float(width), float(height))
    if framing == "connector_grid":
        return ConnectorGeometry(width, height).grid_box()
    if framing == "composite_test_grid":
        _check_composite(image_size)
        layout = CompositeLayout(width)
        return layout.to_composite(layout.connector.grid_box(), "test")
    raise ValueError(f"unknown framing {framing!r} (known: {', '.join(FRAMINGS)})")


def _check_composite(image_size: tuple[int, int]) -> None:
    width, height = image_size
    if width != height or width % 2 or width < 96:
        raise ValueError(
            f"this model reads composites (square, even side of at least 96 px, reference on "
            f"top, test below); got {width} x {height}: compose the pair first"
        )


@dataclass(frozen=True)
class View:
    """What a model reads of one image, and how the view's pixels map back to the image.

    Attributes:
        image: the view (RGB), before the model's processor resizes it.
        source_size: ``(width, height)`` of the image the view was taken from.
        to_source: 3 x 3 matrix from view pixels to image pixels, when one matrix maps the whole
            view (a framed grid, or a whole connector); ``None`` for a whole composite, whose two
            panels move separately (use :meth:`box_to_source`).
        registration: where the product(s) lay in the image (``None``: registration was off).
    """

    image: Image.Image
    source_size: tuple[int, int]
    to_source: np.ndarray | None
    registration: Registration | CompositeRegistration | None

    def box_to_source(self, box: Box) -> Box:
        """A box in view pixels as the image-axis bounds it covers in the source image."""
        if self.to_source is not None:
            return transform_box(self.to_source, box)
        reg = self.registration
        if not isinstance(reg, CompositeRegistration):  # registration off: the view is the image
            return box
        cy = (box[1] + box[3]) / 2
        panel = "test" if cy >= reg.layout.panel_height else "reference"
        x1, y1, x2, y2 = reg.layout.crop_box(panel)
        if not (x1 <= (box[0] + box[2]) / 2 <= x2 and y1 <= cy <= y2):
            return box  # over the labels or the margins, which do not move
        return reg.box_to_composite(box, panel)

    def map_to_source(self, heat: np.ndarray) -> np.ndarray:
        """A float map over the view, resampled onto the source image (0 outside the view)."""
        if self.to_source is None:
            raise ValueError("a whole composite view has no single map back; use box_to_source")
        inverse = np.linalg.inv(self.to_source)
        canvas = Image.fromarray(np.asarray(heat, np.float32), mode="F")
        size = self.image.size
        if canvas.size != size:
            canvas = canvas.resize(size, Image.Resampling.BILINEAR)
        return warp_map(np.asarray(canvas, np.float32), inverse, self.source_size)


def _translation(dx: float, dy: float) -> np.ndarray:
    return np.array([[1.0, 0.0, dx], [0.0, 1.0, dy], [0.0, 0.0, 1.0]])


def frame(image: Image.Image, framing: str | None, *, source: Source | None = None) -> View:
    """``image`` as a model with ``framing`` reads it: registered, then framed.

    Args:
        image: one connector (``source="connector"``) or a square composite (``"composite"``).
        framing: the model's ``qeu_framing`` (``None``: the whole image).
        source: what ``image`` shows; implied by a framing, needed for ``None``.

    The product is found and warped into the canonical frame (:mod:`.registration`) unless
    :func:`registration_off` is active; a framed view is cut from the canonical frame in the same
    resampling step, so at rest the view is an exact crop.

    Raises:
        NoConnectorError: no connector was found (a ``ValueError``; the message says why).
        ValueError: the image cannot hold the view (e.g. a composite framing on a non-square).
    """
    image = image if image.mode == "RGB" else image.convert("RGB")
    if framing is not None and framing not in FRAMINGS:
        raise ValueError(f"unknown framing {framing!r} (known: {', '.join(FRAMINGS)})")
    kind = _SOURCE_OF.get(framing or "", source)
    if kind not in SOURCES:
        raise ValueError(f"say what the image shows: source must be one of {SOURCES}")
    if kind == "composite":
        _check_composite(image.size)
    box = tuple(round(v) for v in grid_box(image.size, framing))
    size = (box[2] - box[0], box[3] - box[1])
    if not registration_enabled():
        view = image if framing is None else image.crop(box)
        return View(view, image.size, _translation(box[0], box[1]), None)
    if kind == "connector":
        reg = register(image)
        to_source = reg.matrix @ _translation(box[0], box[1])
        return View(warp_into(image, to_source, size), image.size, to_source, reg)
    regs = register_composite(image)
    if framing is None:
        return View(regs.warp(image), image.size, None, regs)
    ox, oy = regs.layout.origin("test")
    in_panel = regs.test.matrix @ _translation(box[0] - ox, box[1] - oy)
    # sampled from the test panel alone: where the moved product left the panel the view shows
    # fill, as a connector image does, never the labels or the reference beside it
    panel = image.crop(regs.layout.crop_box("test"))
    to_source = _translation(ox, oy) @ in_panel
    return View(warp_into(panel, in_panel, size), image.size, to_source, regs)
