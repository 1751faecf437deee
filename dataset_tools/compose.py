"""The composite: a good reference on top, the product under inspection below, grid labels on both.

A :class:`Sample` is the one object that flows from here into every dataset builder: the composite
image, its truth (findings with boxes in composite pixels) and how it was made.

Example:
    >>> import numpy as np
    >>> spec = SampleSpec("s0", "standard", "square", (Finding("C7", "missing pin"),), True)
    >>> sample = make_sample(spec, np.random.default_rng(0))
    >>> sample.image.size, sample.findings[0].position.name
    ((448, 448), 'C7')
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from functools import cached_property, lru_cache

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from dataset_tools.looks import CLASSIC, Look, draw_look
from dataset_tools.render import (
    ConnectorSpec,
    Nuisances,
    Rendered,
    _work_buffer,
    render_connector,
)
from qeu_space.geometry import CompositeLayout, ConnectorGeometry
from qeu_space.views.image_io import letterbox
from qeu_space.vocabulary import Finding, sort_findings

_CANVAS = (24, 26, 30)
_LABEL = (236, 236, 228)
REFERENCE_POOL = 4
"""Good references per (housing, pins, size, nuisances): a line keeps a few golden images."""


@dataclass(frozen=True)
class SampleSpec:
    """What one sample shows; the builders draw it from the row's seed."""

    id: str
    housing: str
    pins: str
    findings: tuple[Finding, ...]
    labels_drawn: bool


@dataclass(frozen=True)
class Sample:
    """One inspection sample: composite image, truth in composite pixels, and its making.

    Attributes:
        image: the composite (RGB, ``layout.size`` square), composed when first asked for (a
            dataset builder encodes the composite from the arrays and never needs it).
        findings: the truth in canonical order, boxes in composite pixels (empty = passed).
        reference / test: the two connector images as drawn (uint8 RGB), before composing.
        look: the look family both panels were drawn in (``classic``: the first renderer).
        reference_pose / test_pose: each panel's true homography (canonical housing-top
            coordinates to that panel's pixels, :attr:`~dataset_tools.render.Rendered.pose`).
        reference_top_pose / test_top_pose: the same for the plane of the good pins' tops
            (:attr:`~dataset_tools.render.Rendered.top_pose`; the pose where the product is flat).
        looks: the reference's and the test's :class:`~dataset_tools.looks.Look` (one product,
            two shots), ``None`` for ``classic``.
    """

    id: str
    findings: tuple[Finding, ...]
    housing: str
    pins: str
    labels_drawn: bool
    layout: CompositeLayout
    reference: np.ndarray
    test: np.ndarray
    variant: str = "plain"
    look: str = CLASSIC
    reference_pose: np.ndarray | None = None
    test_pose: np.ndarray | None = None
    looks: tuple[Look, Look] | None = None
    reference_top_pose: np.ndarray | None = None
    test_top_pose: np.ndarray | None = None

    @cached_property
    def image(self) -> Image.Image:
        """The composite: the reference on top, the product under inspection below."""
        return compose(self.reference, self.test, self.layout, self.labels_drawn)


@lru_cache(maxsize=8)
def _canvas(size: int, labels_drawn: bool) -> np.ndarray:
    """The background with the coordinate labels, drawn once per size (read-only)."""
    layout = CompositeLayout(size)
    img = Image.new("RGB", (size, size), _CANVAS)
    if labels_drawn:
        draw = ImageDraw.Draw(img)
        font = ImageFont.load_default(size=max(9, round(size * 0.034)))
        for panel in ("reference", "test"):
            for text, x, y in layout.label_anchors(panel):
                draw.text((x, y), text, fill=_LABEL, font=font, anchor="mm")
    arr = np.asarray(img).copy()
    arr.setflags(write=False)
    return arr


def compose_into(
    out: np.ndarray,
    reference: np.ndarray,
    test: np.ndarray,
    layout: CompositeLayout,
    labels_drawn: bool = True,
) -> np.ndarray:
    """Place two connector images (each ``layout.connector`` sized) on the labelled canvas in
    ``out`` (uint8, ``layout.size`` square, RGB) and return it: the composite as an array."""
    conn = layout.connector
    for name, arr in (("reference", reference), ("test", test)):
        if arr.shape != (conn.height, conn.width, 3) or arr.dtype != np.uint8:
            raise ValueError(
                f"{name} image must be uint8 RGB of {conn.width} x {conn.height} for a "
                f"{layout.size} composite, got shape {arr.shape} {arr.dtype}"
            )
    np.copyto(out, _canvas(layout.size, labels_drawn))
    for panel, arr in (("reference", reference), ("test", test)):
        x1, y1, x2, y2 = layout.crop_box(panel)
        out[y1:y2, x1:x2] = arr
    return out


def compose(
    reference: np.ndarray, test: np.ndarray, layout: CompositeLayout, labels_drawn: bool = True
) -> Image.Image:
    """Place two connector images (each ``layout.connector`` sized) on the labelled canvas."""
    # assembled in this thread's reused buffer (a fresh 600 kB array costs a page fault per 4 kB)
    canvas = _work_buffer("composite", (layout.size, layout.size, 3), np.uint8)
    compose_into(canvas, reference, test, layout, labels_drawn)
    return Image.frombytes("RGB", (layout.size, layout.size), canvas)  # a copy: canvas is reused


def compose_uploads(
    reference: Image.Image, test: Image.Image, layout: CompositeLayout, labels_drawn: bool = True
) -> Image.Image:
    """A composite of two uploaded connector images, each letterboxed into its panel.

    Each image keeps its aspect (:func:`qeu_space.views.image_io.letterbox`): a stretched
    connector has another pitch ratio, and no 3 x 9 lattice would fit it; the two halves of a
    composite the Space generates come back as the composite they were cut from.
    """
    size = (layout.connector.width, layout.connector.height)
    ref, tst = (np.asarray(letterbox(panel_of(im), size)[0]) for im in (reference, test))
    return compose(ref, tst, layout, labels_drawn)


def panel_of(image: Image.Image) -> Image.Image:
    """``image`` without a composite's label margins, when it is a half of one (2:1, its left
    and top strips the composite's canvas colour); any other image as it is.

    The labels 1-9 stand one pitch above row U and U / C / D one pitch left of column 1: left in,
    they would read as a fourth row or a tenth column of sites.
    """
    width, height = image.size
    if width != 2 * height or width < 96:
        return image
    layout = CompositeLayout(width)
    left, top = layout.margins
    arr = np.asarray(image.convert("RGB")).astype(np.int16)
    strips = np.concatenate([arr[:, :left].reshape(-1, 3), arr[:top].reshape(-1, 3)])
    canvas = np.abs(strips - np.asarray(_CANVAS, np.int16)).max(1) <= 12
    if canvas.mean() < 0.8:
        return image
    return image.crop((left, top, width, height))


@lru_cache(maxsize=256)
def reference_rendered(
    housing: str, pins: str, geometry: ConnectorGeometry, nuisances: Nuisances, k: int
) -> Rendered:
    """Good reference number ``k`` of the pool (classic look): deterministic, independent of
    sample order; its image is read-only."""
    rng = np.random.default_rng([k, geometry.width, geometry.height, *map(ord, housing + pins)])
    out = render_connector(ConnectorSpec(housing, pins), geometry, nuisances, rng)
    out.image.setflags(write=False)
    return out


def reference_image(
    housing: str, pins: str, geometry: ConnectorGeometry, nuisances: Nuisances, k: int
) -> np.ndarray:
    """The image of :func:`reference_rendered` (read-only)."""
    return reference_rendered(housing, pins, geometry, nuisances, k).image


def make_sample(
    spec: SampleSpec,
    rng: np.random.Generator,
    *,
    layout: CompositeLayout | None = None,
    nuisances: Nuisances | None = None,
    look: str | Look = CLASSIC,
) -> Sample:
    """Render the product under inspection and its reference, move boxes (composed lazily).

    ``look``: a look family name (or a drawn :class:`~dataset_tools.looks.Look`). ``classic``
    picks a pool reference and draws the test with ``nuisances`` (the first renderer, unchanged);
    any other family draws one product look from ``rng`` and two shots of it, the reference
    (good) and the test (``spec.findings``), each with its own placement, exposure, white balance,
    focus, noise and JPEG (``nuisances`` are not used: the look's camera is the imaging).
    """
    layout = layout or CompositeLayout()
    nuisances = Nuisances() if nuisances is None else nuisances
    geo = layout.connector
    drawn = draw_look(look, rng, geo)
    if drawn.classic:
        ref = reference_rendered(
            spec.housing, spec.pins, geo, nuisances, int(rng.integers(REFERENCE_POOL))
        )
        rendered = render_connector(
            ConnectorSpec(spec.housing, spec.pins, spec.findings), geo, nuisances, rng
        )
        housing, pins, looks = spec.housing, spec.pins, None
    else:
        ref = render_connector(ConnectorSpec(), geo, nuisances, rng, look=drawn)
        rendered = render_connector(
            ConnectorSpec(findings=spec.findings), geo, nuisances, rng, look=drawn.shot(rng, geo)
        )
        housing, pins = drawn.product.housing.colour, drawn.product.pins.shape
        looks = (ref.look, rendered.look)
    findings = tuple(
        sort_findings(replace(f, box=layout.to_composite(f.box, "test")) for f in rendered.findings)
    )
    return Sample(
        id=spec.id,
        findings=findings,
        housing=housing,
        pins=pins,
        labels_drawn=spec.labels_drawn,
        layout=layout,
        reference=ref.image,
        test=rendered.image,
        look=drawn.family,
        reference_pose=ref.pose,
        test_pose=rendered.pose,
        looks=looks,
        reference_top_pose=ref.pose if ref.top_pose is None else ref.top_pose,
        test_top_pose=rendered.pose if rendered.top_pose is None else rendered.top_pose,
    )
