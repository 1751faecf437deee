"""Procedural renderer of a connector: housing, 3 x 9 sockets, pins, defects and nuisances.

The seeds rendered terminals in Blender at seconds per image; this draws the same scene as
anti-aliased 2-D shapes in numpy, fast enough for hundreds of composites per second per core:

* the clean product (housing variant + all pins) is drawn once per (housing, pins, size) and cached;
* a defect is a small patch pasted over one pin cell, strictly inside the finding's box, so with
  nuisances off a defective image differs from its reference only inside the truth boxes: a bent
  pin (displaced tip, leaning shaft), a missing pin (the empty socket) or a short pin (pushed into
  the housing: a smaller, dimmer face in a shadow ring, not displaced);
* nuisances (gain and gradient lighting, sensor noise, blur, sub-pixel shift, rotation, JPEG) are
  applied per image, each switchable and drawn from the sample's seeded generator. A geometric
  nuisance moves the truth boxes with the pixels (:func:`render_connector` returns the moved boxes).
* :class:`Placement` is where a camera rig or a hand puts the product: a shift of up to 24 px (at
  the 448 px composite scale), a turn of up to 6 degrees and a scale of 0.88 to 1.12, drawn so
  every socket stays in view. Models read the registered (canonical) frame
  (:mod:`qeu_space.views.registration`) and learn from these rows that a moved product is not a
  defective one; :attr:`Rendered.pose` is the exact canonical-to-image transform.

Example:
    >>> import numpy as np
    >>> from qeu_space.geometry import ConnectorGeometry
    >>> geo = ConnectorGeometry(423, 204)
    >>> out = render_connector(ConnectorSpec(findings=(Finding("C7", "missing pin"),)), geo,
    ...                        Nuisances.off(), np.random.default_rng(0))
    >>> out.image.shape, out.findings[0].box is not None
    ((204, 423, 3), True)
"""

from __future__ import annotations

import io
import math
import threading
from dataclasses import dataclass, field, replace
from functools import lru_cache
from typing import TYPE_CHECKING

import numba
import numpy as np
from PIL import Image

from qeu_space.geometry import ConnectorGeometry
from qeu_space.vocabulary import ALL_POSITIONS, Box, DefectKind, Direction, Finding, Position

if TYPE_CHECKING:
    from dataset_tools.looks import Look

HOUSINGS: tuple[str, ...] = ("standard", "ribbed", "stepped", "latched")
"""Housing variants. ``latched`` is kept out of training splits (``test_unseen_housing``)."""
SEEN_HOUSINGS: tuple[str, ...] = ("standard", "ribbed", "stepped")
UNSEEN_HOUSING = "latched"
PIN_STYLES: tuple[str, ...] = ("square", "round", "mixed")
"""``mixed`` puts round terminals in row C and square ones in rows U and D."""

_BACKGROUND = np.array([38, 41, 47], np.float32)
_HOUSING_COLOURS = {
    "standard": np.array([206, 200, 184], np.float32),
    "ribbed": np.array([224, 222, 214], np.float32),
    "stepped": np.array([150, 152, 156], np.float32),
    "latched": np.array([186, 176, 150], np.float32),
}
_SOCKET = np.array([22, 20, 19], np.float32)
_METAL = np.array([228, 196, 112], np.float32)  # tin-gold plating
_SHAFT = np.array([150, 124, 64], np.float32)  # the side of a leaning pin, in shadow
_SHADOW = np.array([6, 5, 5], np.float32)  # deep in a socket, around a pin pushed into it
_SHORT_FACE = 0.68  # a short pin's face / a pin's side: sunk deeper, it looks smaller
_SHORT_LIGHT = 0.58  # and less of the lamp reaches it


REFERENCE_WIDTH = 423
"""Connector width (px) in the default 448 px composite: the unit of :class:`Placement` shifts."""


@dataclass(frozen=True)
class Pose:
    """One placement of the product: where its canonical frame lands in the image.

    Attributes:
        dx, dy: shift of the product, in pixels of this image.
        angle: rotation in degrees (clockwise on screen, about the image centre).
        scale: size against the canonical framing.
    """

    dx: float = 0.0
    dy: float = 0.0
    angle: float = 0.0
    scale: float = 1.0

    def __post_init__(self) -> None:
        if not 0.5 <= self.scale <= 2.0:
            raise ValueError(f"pose scale must be in [0.5, 2], got {self.scale}")

    @property
    def identity(self) -> bool:
        return self == Pose()

    def matrix(self, size: tuple[int, int]) -> np.ndarray:
        """3 x 3 canonical-to-image matrix for an image of ``size`` (``(width, height)``)."""
        return np.vstack([_affine(size, self.angle, self.dx, self.dy, self.scale), [0, 0, 1]])


@dataclass(frozen=True)
class Placement:
    """Ranges of the product's placement, each drawn uniformly per image (0 / ``(1, 1)``: off).

    Attributes:
        shift: largest shift along each axis, in pixels of a :data:`REFERENCE_WIDTH` px wide
            connector (the 448 px composite); scaled with the image.
        rotation: largest rotation, in degrees.
        scale: ``(low, high)`` range of the product's size against the canonical framing.
        keep_in_view: draw again (up to 32 times, then take the pose shrunk toward none) while a
            socket would leave the image: a rig keeps the whole product in the field of view.
    """

    shift: float = 24.0
    rotation: float = 6.0
    scale: tuple[float, float] = (0.88, 1.12)
    keep_in_view: bool = True

    def __post_init__(self) -> None:
        if self.shift < 0 or self.rotation < 0:
            raise ValueError(f"placement shift and rotation must be >= 0: {self}")
        if self.rotation > 20:
            raise ValueError(f"placement rotation is at most 20 degrees, got {self.rotation}")
        low, high = self.scale
        if not 0.5 <= low <= high <= 2.0:
            raise ValueError(f"placement scale range must satisfy 0.5 <= low <= high <= 2: "
                             f"{self.scale}")  # fmt: skip

    @classmethod
    def off(cls) -> Placement:
        return cls(0.0, 0.0, (1.0, 1.0))

    @property
    def active(self) -> bool:
        return self.shift > 0 or self.rotation > 0 or tuple(self.scale) != (1.0, 1.0)

    def draw(self, geo: ConnectorGeometry, rng: np.random.Generator) -> Pose:
        """A pose from these ranges (a fixed number of draws from ``rng`` per attempt)."""
        size = (geo.width, geo.height)
        reach = self.shift * geo.width / REFERENCE_WIDTH
        pose = Pose()
        for _ in range(32):
            dx, dy = (float(v) for v in rng.uniform(-reach, reach, 2))
            angle = float(rng.uniform(-self.rotation, self.rotation))
            scale = float(rng.uniform(*self.scale))
            pose = Pose(dx, dy, angle, scale)
            if not self.keep_in_view or sockets_in_view(geo, pose.matrix(size)):
                return pose
        for shrink in (0.75, 0.5, 0.25, 0.0):  # rare: take the last pose, smaller
            smaller = Pose(pose.dx * shrink, pose.dy * shrink, pose.angle * shrink,
                           1 + (pose.scale - 1) * shrink)  # fmt: skip
            if sockets_in_view(geo, smaller.matrix(size)):
                return smaller
        return Pose()


@lru_cache(maxsize=8)
def _socket_corners(geo: ConnectorGeometry) -> np.ndarray:
    """``(108, 2)`` canonical corners of every socket (read-only; a pose is drawn several times
    a row, and the corners depend only on the geometry)."""
    h = geo.socket_size / 2
    centres = np.array([geo.pin_center(p) for p in ALL_POSITIONS])
    corners = (centres[:, None, :] + np.array([[-h, -h], [h, -h], [-h, h], [h, h]])).reshape(-1, 2)
    corners.setflags(write=False)
    return corners


def sockets_in_view(geo: ConnectorGeometry, matrix: np.ndarray, margin: float = 1.0) -> bool:
    """Whether every socket's corners land inside the image under canonical-to-image ``matrix``."""
    corners = _socket_corners(geo)
    pts = corners @ matrix[:2, :2].T + matrix[:2, 2]
    return bool(
        (pts[:, 0] >= margin).all()
        and (pts[:, 0] <= geo.width - margin).all()
        and (pts[:, 1] >= margin).all()
        and (pts[:, 1] <= geo.height - margin).all()
    )


@dataclass(frozen=True)
class Nuisances:
    """Per-image disturbances; each one is off at 0 (or ``None`` for JPEG).

    Attributes:
        gain: relative gain drawn from ``1 +- gain`` (a brighter or darker lamp).
        gradient: amplitude of a linear lighting gradient across the image.
        noise: sensor noise sigma, in grey levels.
        blur: largest Gaussian blur radius, in pixels (drawn from ``[0, blur]``).
        shift: largest sub-pixel shift along each axis, in pixels.
        rotation: largest rotation, in degrees.
        jpeg: JPEG quality range ``(low, high)``, or ``None`` for no compression.
        jpeg_probability: share of images saved as JPEG (cameras differ; also halves its cost).
        placement: where the rig puts the product (:class:`Placement`; on by default).
    """

    gain: float = 0.15
    gradient: float = 0.12
    noise: float = 3.0
    blur: float = 0.7
    shift: float = 1.0
    rotation: float = 2.0
    jpeg: tuple[int, int] | None = (75, 95)
    jpeg_probability: float = 0.5
    placement: Placement = field(default_factory=Placement)

    def __post_init__(self) -> None:
        for name in ("gain", "gradient", "noise", "blur", "shift", "rotation"):
            if getattr(self, name) < 0:
                raise ValueError(f"nuisance {name} must be >= 0, got {getattr(self, name)}")
        if self.gain >= 1:
            raise ValueError(f"gain must be < 1 (a factor 1 +- gain), got {self.gain}")
        if self.rotation > 2.0:
            raise ValueError(f"rotation is at most 2 degrees, got {self.rotation}")
        if not 0 <= self.jpeg_probability <= 1:
            raise ValueError(f"jpeg_probability must be in [0, 1], got {self.jpeg_probability}")
        if self.jpeg is not None and not 1 <= self.jpeg[0] <= self.jpeg[1] <= 100:
            raise ValueError(
                f"jpeg quality range must satisfy 1 <= low <= high <= 100: {self.jpeg}"
            )

    @classmethod
    def off(cls) -> Nuisances:
        return cls(0.0, 0.0, 0.0, 0.0, 0.0, 0.0, None, 0.0, Placement.off())

    @property
    def geometric(self) -> bool:
        return self.shift > 0 or self.rotation > 0 or self.placement.active


@dataclass(frozen=True)
class ConnectorSpec:
    """What to draw: the housing variant, the pin style, and the defects (boxes are ignored)."""

    housing: str = "standard"
    pins: str = "square"
    findings: tuple[Finding, ...] = ()

    def __post_init__(self) -> None:
        if self.housing not in HOUSINGS:
            raise ValueError(f"unknown housing {self.housing!r}; choose from {HOUSINGS}")
        if self.pins not in PIN_STYLES:
            raise ValueError(f"unknown pin style {self.pins!r}; choose from {PIN_STYLES}")
        positions = [f.position for f in self.findings]
        if len(set(positions)) != len(positions):
            raise ValueError(f"one defect per pin site, got {[str(p) for p in positions]}")
        for f in self.findings:
            if f.kind is DefectKind.BENT and f.direction is None:
                raise ValueError(f"bent pin at {f.position} needs a direction to be drawn")


@dataclass(frozen=True)
class Rendered:
    """A rendered connector: RGB uint8 pixels and its findings with boxes in these pixels.

    ``pose`` is the 3 x 3 homography from canonical coordinates of the housing top (where the
    socket centres ``geo.pin_center(p)`` lie) to image pixels, the one the product was drawn
    with: what registration should recover (an affine matrix for the classic renderer, a
    perspective one through a look's camera). ``look`` is the look drawn (with the shot's
    camera), ``None`` for the classic renderer. ``top_pose`` is the homography of the good pins'
    top faces (the plane the pins stand up to, what a camera sees of a pin): it differs from
    ``pose`` by the pins' parallax under a tilted camera; ``None`` where they coincide (the
    classic renderer draws a flat product).
    """

    image: np.ndarray
    findings: tuple[Finding, ...] = field(default=())
    pose: np.ndarray = field(default_factory=lambda: np.eye(3))
    look: Look | None = None
    top_pose: np.ndarray | None = None


# --------------------------------------------------------------------------- shapes


def _coverage(sd: np.ndarray) -> np.ndarray:
    """Anti-aliased coverage from a signed distance (pixels; negative inside)."""
    return np.clip(0.5 - sd, 0.0, 1.0)


def _grid(h: int, w: int, y0: float = 0.0, x0: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """Pixel-centre coordinates of an ``h x w`` block whose top-left pixel is at ``(x0, y0)``."""
    ys = np.arange(h, dtype=np.float32)[:, None] + 0.5 + y0
    xs = np.arange(w, dtype=np.float32)[None, :] + 0.5 + x0
    return ys, xs


def _box_sd(ys, xs, cx, cy, hw, hh, radius=0.0):
    """Signed distance to an axis-aligned rectangle with rounded corners."""
    qx = np.abs(xs - cx) - (hw - radius)
    qy = np.abs(ys - cy) - (hh - radius)
    outside = np.hypot(np.maximum(qx, 0), np.maximum(qy, 0))
    inside = np.minimum(np.maximum(qx, qy), 0)
    return outside + inside - radius


def _paint(img: np.ndarray, cov: np.ndarray, colour: np.ndarray) -> None:
    """Blend ``colour`` (per pixel or constant) into ``img`` with coverage ``cov``, in place."""
    c = cov[..., None]
    img *= 1.0 - c
    img += c * colour


def _pin_is_round(pins: str, position: Position) -> bool:
    return pins == "round" or (pins == "mixed" and position.row == "C")


def _draw_pin(img, ys, xs, cx, cy, size, round_pin, colour=_METAL, gloss=60.0):
    """A pin seen from above: a metal face with a bevel lit from the top left (``gloss``: the
    specular spot's grey levels)."""
    half = size / 2
    if round_pin:
        sd = np.hypot(xs - cx, ys - cy) - half
    else:
        sd = _box_sd(ys, xs, cx, cy, half, half, radius=size * 0.12)
    # shading: brighter towards the top-left, a specular spot, darker rim
    t = ((xs - cx) + (ys - cy)) / (size + 1e-6)
    shade = 1.08 - 0.45 * np.clip(t + 0.5, 0, 1)
    rim = np.clip(1.0 + sd / (0.22 * size), 0.0, 1.0)  # 0 in the middle, 1 at the edge
    shade = shade * (1.0 - 0.25 * rim)
    spot = np.exp(
        -(((xs - cx + 0.18 * size) ** 2 + (ys - cy + 0.18 * size) ** 2) / (0.05 * size**2))
    )
    colour_px = np.clip(colour * shade[..., None] + gloss * spot[..., None], 0, 255)
    _paint(img, _coverage(sd), colour_px)


def _draw_socket(img, ys, xs, cx, cy, size):
    half = size / 2
    sd = _box_sd(ys, xs, cx, cy, half, half, radius=size * 0.15)
    # the cavity is darkest at the bottom right (inner shadow)
    depth = 0.75 + 0.25 * np.clip(((xs - cx) + (ys - cy)) / size + 0.5, 0, 1)
    _paint(img, _coverage(sd), _SOCKET[None, None, :] * (2.0 - depth[..., None]))


def _draw_housing(img: np.ndarray, geo: ConnectorGeometry, housing: str) -> None:
    h, w = img.shape[:2]
    ys, xs = _grid(h, w)
    x1, y1, x2, y2 = geo.housing_box
    cx, cy, hw, hh = (x1 + x2) / 2, (y1 + y2) / 2, (x2 - x1) / 2, (y2 - y1) / 2
    base = _HOUSING_COLOURS[housing]
    # moulded plastic: soft vertical light fall-off and a darker edge
    sd = _box_sd(ys, xs, cx, cy, hw, hh, radius=0.06 * h)
    light = 1.04 - 0.10 * (ys - y1) / max(y2 - y1, 1) - 0.06 * np.clip(1 + sd / (0.04 * h), 0, 1)
    _paint(img, _coverage(sd), base * light[..., None])
    px, py = geo.pitch
    if housing == "ribbed":  # the seeds' housing with bumps: ribs along the top and bottom rims
        for column in range(1, 10):
            rx, _ = geo.pin_center(Position("U", column))
            for ry in (y1 + 0.035 * h, y2 - 0.035 * h):
                rib = _box_sd(ys, xs, rx, ry, 0.16 * px, 0.03 * h, radius=0.01 * h)
                _paint(img, _coverage(rib), base * 0.80)
    elif housing == "stepped":  # a raised shoulder along the top third
        step_y = y1 + 0.13 * (y2 - y1)
        band = _box_sd(ys, xs, cx, (y1 + step_y) / 2, hw - 0.01 * w, (step_y - y1) / 2)
        _paint(img, _coverage(band), base * 1.18)
        edge = _box_sd(ys, xs, cx, step_y, hw - 0.01 * w, 0.8)
        _paint(img, _coverage(edge), base * 0.6)
    elif housing == "latched":  # a latch tab on the right end and a key notch at the top
        tab = _box_sd(ys, xs, x2 - 0.012 * w, cy, 0.016 * w, 0.22 * h, radius=0.01 * h)
        _paint(img, _coverage(tab), base * 0.68)
        notch = _box_sd(ys, xs, cx, y1 + 0.02 * h, 0.05 * w, 0.03 * h)
        _paint(img, _coverage(notch), _BACKGROUND * 1.3)


@lru_cache(maxsize=64)
def _clean_connector(housing: str, pins: str, width: int, height: int) -> np.ndarray:
    """The defect-free product as float32 RGB, drawn once and cached (read-only)."""
    geo = ConnectorGeometry(width, height)
    img = _bare_housing(housing, width, height).copy()
    for position in ALL_POSITIONS:
        _draw_site(img, geo, position, pins, None)
    img.setflags(write=False)
    return img


@lru_cache(maxsize=1024)
def _site_window(geo: ConnectorGeometry, position: Position) -> tuple[int, int, int, int]:
    """Pixel window (x1, y1, x2, y2) holding everything a defect at ``position`` draws.

    Cached: it is geometry only, and asked twice per defect of every image.
    """
    boxes = [geo.defect_box(position, DefectKind.BENT, d, pad=0.0) for d in Direction]
    x1 = math.floor(min(b[0] for b in boxes))
    y1 = math.floor(min(b[1] for b in boxes))
    x2 = math.ceil(max(b[2] for b in boxes))
    y2 = math.ceil(max(b[3] for b in boxes))
    return max(x1, 0), max(y1, 0), min(x2, geo.width), min(y2, geo.height)


def _draw_site(img, geo, position, pins, finding: Finding | None):
    """Draw one pin site (socket + pin as the finding says) into ``img`` (the whole image)."""
    x1, y1, x2, y2 = _site_window(geo, position)
    block = img[y1:y2, x1:x2]
    ys, xs = _grid(y2 - y1, x2 - x1, y1, x1)
    cx, cy = geo.pin_center(position)
    _draw_socket(block, ys, xs, cx, cy, geo.socket_size)
    round_pin = _pin_is_round(pins, position)
    if finding is None:
        _draw_pin(block, ys, xs, cx, cy, geo.pin_size, round_pin)
    elif finding.kind is DefectKind.BENT:
        dx, dy = geo.bend_offset(finding.direction)
        # the leaning shaft, seen from above, joins the socket to the displaced tip
        sw = geo.pin_size * 0.36
        shaft = _box_sd(
            ys, xs, cx + dx / 2, cy + dy / 2, abs(dx) / 2 + sw, abs(dy) / 2 + sw, radius=sw * 0.5
        )
        _paint(block, _coverage(shaft), _SHAFT)
        _draw_pin(block, ys, xs, cx + dx, cy + dy, geo.pin_size * 0.92, round_pin)
    elif finding.kind is DefectKind.SHORT:  # all inside the socket: draw on its pixels only
        r = geo.socket_size / 2 + 1
        sx1, sx2 = max(math.floor(cx - r) - x1, 0), math.ceil(cx + r) - x1
        sy1, sy2 = max(math.floor(cy - r) - y1, 0), math.ceil(cy + r) - y1
        socket = block[sy1:sy2, sx1:sx2]
        _draw_short_pin(socket, ys[sy1:sy2], xs[:, sx1:sx2], cx, cy, geo.pin_size, round_pin)
    # a missing pin leaves the empty socket drawn above


def _draw_short_pin(img, ys, xs, cx, cy, pin_size, round_pin):
    """A terminal pushed into the housing, centred in its socket (no lateral offset).

    Its face sits deeper: it looks smaller (:data:`_SHORT_FACE`), less light reaches it
    (:data:`_SHORT_LIGHT`, a dimmer specular spot), and the socket walls cast a shadow ring around
    it, darker than the socket floor. Unlike a missing pin the socket is not empty (a dim metal
    face in its middle), unlike a bent pin nothing moves; all of it stays inside the socket.
    """
    face = pin_size * _SHORT_FACE
    reach = face / 2 + 0.2 * pin_size  # the shadow's outer edge (the socket's half side is 0.725)
    if round_pin:
        sd = np.hypot(xs - cx, ys - cy) - reach
    else:
        sd = _box_sd(ys, xs, cx, cy, reach, reach, radius=0.2 * pin_size)
    soft = 0.12 * pin_size  # a soft outer edge: a shadow, not a painted ring
    _paint(img, np.clip(0.5 - sd / soft, 0.0, 1.0) * 0.85, _SHADOW)
    _draw_pin(img, ys, xs, cx, cy, face, round_pin, _METAL * _SHORT_LIGHT, gloss=25.0)


@lru_cache(maxsize=64)
def _bare_housing(housing: str, width: int, height: int) -> np.ndarray:
    """The housing with no sockets or pins: what a defect's site is redrawn on."""
    img = np.empty((height, width, 3), np.float32)
    img[:] = _BACKGROUND
    _draw_housing(img, ConnectorGeometry(width, height), housing)
    img.setflags(write=False)
    return img


def draw_clean_with_defects(
    spec: ConnectorSpec, geo: ConnectorGeometry, out: np.ndarray | None = None
) -> np.ndarray:
    """The product with its defects and no nuisance, float32 RGB in [0, 255].

    Without findings this is the cached clean product (read-only); with findings it is drawn into
    ``out`` (a float32 image of this size) or, without ``out``, into a new array.
    """
    clean = _clean_connector(spec.housing, spec.pins, geo.width, geo.height)
    if not spec.findings:
        return clean
    bare = _bare_housing(spec.housing, geo.width, geo.height)
    if out is None:
        img = clean.copy()
    else:
        img = out
        np.copyto(img, clean)
    for finding in spec.findings:
        x1, y1, x2, y2 = _site_window(geo, finding.position)
        img[y1:y2, x1:x2] = bare[y1:y2, x1:x2]
        _draw_site(img, geo, finding.position, spec.pins, finding)
    return img


# --------------------------------------------------------------------------- nuisances


@numba.njit(cache=True, fastmath=True)
def _blur3_steps(flat, a, dst, ring, start, stop):  # pragma: no cover - compiled
    """Steps ``start`` to ``stop - 1`` of the separable 3-tap Gaussian ``[a, 1 - 2a, a]``.

    The blur nuisance (sigma <= 1 px) on RGB rows ``(h, w * 3)``, without an image-sized temporary:
    step ``y`` (from -1 to ``h - 1``, run in order) does the horizontal pass of row ``y + 1`` into
    ``ring`` (three rows, which stay in L1) and the vertical pass of row ``y`` into ``dst``, so
    row ``y`` of ``dst`` is final after step ``y``. :func:`_finish` runs the steps just ahead of
    the rows it samples, while they are still in cache, instead of blurring the whole image first.
    """
    h, n = flat.shape
    c = 3
    b = np.float32(1.0 - 2.0 * a)
    a = np.float32(a)
    for y in range(start, stop):
        yn = y + 1
        if yn < h:  # horizontal pass of row y + 1
            row = flat[yn]
            t = ring[yn % 3]
            for i in range(c):
                t[i] = b * row[i] + a * (row[i] + row[i + c])
            for i in range(c, n - c):
                t[i] = b * row[i] + a * (row[i - c] + row[i + c])
            for i in range(n - c, n):
                t[i] = b * row[i] + a * (row[i - c] + row[i])
        if y >= 0:  # vertical pass of row y, from rows y - 1, y and y + 1 (edges repeated)
            tm = ring[y % 3]
            tu = ring[max(y - 1, 0) % 3]
            td = ring[min(y + 1, h - 1) % 3]
            o = dst[y]
            for i in range(n):
                o[i] = b * tm[i] + a * (tu[i] + td[i])


@numba.njit(cache=True, fastmath=True, inline="always")
def _to_uint8(v):  # pragma: no cover - compiled
    """Round a grey value to uint8, saturating."""
    return 0 if v < 0 else (255 if v > 255 else np.uint8(v + np.float32(0.5)))


@numba.njit(cache=True, fastmath=True)
def _finish_row(sf, y, h, w, inv, warp, f, noise, fill, xc, idx, axs, ays, o):  # pragma: no cover
    """Row ``y`` of :func:`_finish`: sample ``sf`` (the flat source), light, add noise, round.

    ``f`` and ``noise`` hold the row's lighting factors and noise. The source coordinates of the
    whole row are computed first (float64, no divisions, a loop LLVM vectorises; ``int`` is a floor
    because the coordinates of inside pixels are >= 0), then one branch-light pass gathers, lights
    and rounds.
    """
    c = 3
    n = w * c
    one = np.float32(1.0)
    if not warp:
        p = y * n
        for x in range(w):
            fx = f[x]
            nx = noise[x]
            q = x * c
            for k in range(c):
                o[q + k] = _to_uint8(sf[p + q + k] * fx + nx)
        return
    xmax = w - 1.0
    ymax = h - 1.0
    rx = inv[1] * (y + 0.5) + inv[2] - 0.5
    ry = inv[4] * (y + 0.5) + inv[5] - 0.5
    for x in range(w):
        sx = inv[0] * xc[x] + rx
        sy = inv[3] * xc[x] + ry
        inside = (0.0 <= sx) & (sx < xmax) & (0.0 <= sy) & (sy < ymax)
        sx = max(sx, 0.0)
        sy = max(sy, 0.0)
        x0 = np.int32(sx)
        y0 = np.int32(sy)
        axs[x] = np.float32(sx - x0)
        ays[x] = np.float32(sy - y0)
        idx[x] = (y0 * n + x0 * c) if inside else -1
    for x in range(w):
        p = idx[x]
        q = x * c
        fx = f[x]
        nx = noise[x]
        if p >= 0:
            ax = axs[x]
            ay = ays[x]
            bx = one - ax
            by = one - ay
            p2 = p + n
            for k in range(c):
                t = bx * sf[p + k] + ax * sf[p + c + k]
                u = bx * sf[p2 + k] + ax * sf[p2 + c + k]
                v = by * t + ay * u
                o[q + k] = _to_uint8(v * fx + nx)
        else:
            for k in range(c):
                o[q + k] = _to_uint8(fill[k] * fx + nx)


@numba.njit(cache=True, fastmath=True)
def _finish(  # pragma: no cover - compiled
    src, blur, work, inv, warp, gain, gx, gy, bank, offset, sigma, fill, out
):
    """Blur, warp (bilinear), lighting, noise and rounding to uint8, fused in one numba pass.

    ``src`` is the float32 RGB product; with ``blur > 0`` it is blurred (``[blur, 1 - 2 blur,
    blur]``) into ``work``, a few rows ahead of where the warp samples, and the warp reads
    ``work``. ``inv`` maps output pixel centres to source pixel centres (a 2x3 affine,
    flattened). Noise is read from a fixed bank of standard normals from ``offset`` on (one grey
    value for all three channels, like a luminance-dominated sensor). The result goes into ``out``
    (uint8, the shape of ``src``).

    The arithmetic is that of the plain per-pixel loop (the same images); it is laid out for
    speed: per-row terms are hoisted, the warp and no-warp cases have their own loops, and the
    caller passes reused buffers because a fresh 1 MB array costs a page fault per 4 kB.
    """
    h, w, c = src.shape
    if c != 3:
        raise ValueError("_finish takes RGB images")
    n = w * c
    xc = np.empty(w, np.float64)  # pixel centres
    col = np.empty(w, np.float64)  # 1 + the horizontal lighting gradient
    for x in range(w):
        xc[x] = x + 0.5
        col[x] = 1.0 + gx * ((x + 0.5) / w - 0.5)
    f = np.empty(w, np.float32)
    noise = np.empty(w, np.float32)
    idx = np.empty(w, np.int32)  # flat index of the top-left source sample; -1 = outside
    axs = np.empty(w, np.float32)
    ays = np.empty(w, np.float32)
    s = np.float32(sigma)
    flat = src.reshape(h, n)
    dst = out.reshape(h, n)
    blurred = work.reshape(h, n)
    src_flat = src.reshape(h * n)
    work_flat = work.reshape(h * n)
    ring = np.empty((3, n), np.float32)
    done = -1  # the next blur step
    for y in range(h):
        fy = gy * ((y + 0.5) / h - 0.5)
        base = offset + y * w
        for x in range(w):
            f[x] = np.float32(gain * (col[x] + fy))
            noise[x] = s * bank[base + x]
        if blur <= 0:
            _finish_row(src_flat, y, h, w, inv, warp, f, noise, fill, xc, idx, axs, ays, dst[y])
            continue
        # blur down to the last source row this output row reads (sy is linear in x: an end of
        # the row has the largest), with a row to spare
        need = y
        if warp:
            ry = inv[4] * (y + 0.5) + inv[5] - 0.5
            far = max(inv[3] * xc[0] + ry, inv[3] * xc[w - 1] + ry, 0.0)
            need = min(int(far) + 2, h - 1)
        if done <= need:
            _blur3_steps(flat, blur, blurred, ring, done, need + 1)
            done = need + 1
        _finish_row(work_flat, y, h, w, inv, warp, f, noise, fill, xc, idx, axs, ays, dst[y])
    return out


_NOISE_BANK = 1 << 22  # > 4 x the pixels of a 2048 x 512 connector image


@lru_cache(maxsize=1)
def _noise_bank() -> np.ndarray:
    """A fixed bank of standard normals; an image's noise starts at a random offset in it."""
    return np.random.default_rng(20240308).standard_normal(_NOISE_BANK, dtype=np.float32)


_WORK = threading.local()


def _work_buffer(name: str, shape: tuple[int, ...], dtype) -> np.ndarray:
    """This thread's reusable scratch array ``name`` (contents undefined).

    The per-image intermediates are each about 1 MB; a fresh array of that size is new memory from
    the system, with a page fault per 4 kB on first touch, and those faults cost more than the
    kernels that fill them. Reusing one buffer per thread keeps them out.
    """
    buffers = getattr(_WORK, "buffers", None)
    if buffers is None:
        buffers = _WORK.buffers = {}
    key = (name, shape, np.dtype(dtype).str)
    buf = buffers.get(key)
    if buf is None:
        if len(buffers) >= 16:  # many image sizes in one thread: start over
            buffers.clear()
        buf = buffers[key] = np.empty(shape, dtype)
    return buf


_IDENTITY = np.array([1.0, 0.0, 0.0, 0.0, 1.0, 0.0])


def _affine(
    size: tuple[int, int], angle_deg: float, tx: float, ty: float, scale: float = 1.0
) -> np.ndarray:
    """Forward 2x3 matrix: rotate and scale about the image centre, then translate."""
    w, h = size
    a = math.radians(angle_deg)
    c, s = math.cos(a) * scale, math.sin(a) * scale
    cx, cy = w / 2, h / 2
    return np.array(
        [[c, -s, cx - c * cx + s * cy + tx], [s, c, cy - s * cx - c * cy + ty]], np.float64
    )


def _move_box(box: Box, m: np.ndarray, size: tuple[int, int]) -> Box:
    x1, y1, x2, y2 = box
    pts = np.array([[x1, y1, 1], [x2, y1, 1], [x1, y2, 1], [x2, y2, 1]], np.float64) @ m.T
    w, h = size
    return (
        float(np.clip(pts[:, 0].min(), 0, w)),
        float(np.clip(pts[:, 1].min(), 0, h)),
        float(np.clip(pts[:, 0].max(), 0, w)),
        float(np.clip(pts[:, 1].max(), 0, h)),
    )


def render_connector(
    spec: ConnectorSpec,
    geo: ConnectorGeometry,
    nuisances: Nuisances,
    rng: np.random.Generator,
    *,
    box_pad: float = 2.0,
    pose: Pose | None = None,
    look: Look | None = None,
) -> Rendered:
    """Render one product under ``nuisances`` drawn from ``rng``.

    With a ``look`` (:mod:`dataset_tools.looks`, not ``classic``) the product is the look's
    (housing, pins, light, bench; ``spec`` gives only the defects) drawn through its 3-D camera,
    and ``nuisances`` are not used: the look's camera is the imaging. Without one (or with the
    ``classic`` family) the image is the first renderer's, byte for byte.

    Returns the uint8 RGB image and ``spec.findings`` with boxes in this image's pixels (moved by
    any shift, rotation or placement, and grown by ``box_pad``). ``pose`` places the product
    exactly instead of drawing from ``nuisances.placement`` (the robustness benchmark's
    conditions); the draws from ``rng`` are the same either way, so a product keeps its
    lighting and noise under every pose.
    """
    if look is not None and not look.classic:
        from dataset_tools.looks.scene import render_look

        return render_look(spec, geo, look, rng, box_pad=box_pad, pose=pose)
    shape = (geo.height, geo.width, 3)
    img = draw_clean_with_defects(spec, geo, _work_buffer("defects", shape, np.float32))
    size = (geo.width, geo.height)
    boxes = [geo.defect_box(f.position, f.kind, f.direction, pad=box_pad) for f in spec.findings]
    n = nuisances
    gain = 1.0 + rng.uniform(-n.gain, n.gain) if n.gain else 1.0
    gx, gy = (float(v) for v in rng.uniform(-n.gradient, n.gradient, 2)) if n.gradient else (0, 0)
    sigma_blur = rng.uniform(0, n.blur) if n.blur else 0.0
    blur_a = 0.0
    if sigma_blur > 0.25:
        side = math.exp(-1.0 / (2 * sigma_blur**2))
        blur_a = side / (1 + 2 * side)
    inv = _IDENTITY
    matrix = np.eye(3)
    if n.geometric or pose is not None:
        angle = rng.uniform(-n.rotation, n.rotation) if n.rotation else 0.0
        tx, ty = rng.uniform(-n.shift, n.shift, 2) if n.shift else (0.0, 0.0)
        matrix = np.vstack([_affine(size, angle, tx, ty), [0, 0, 1]])
        if n.placement.active:
            drawn = n.placement.draw(geo, rng)
            pose = drawn if pose is None else pose
        if pose is not None:
            matrix = pose.matrix(size) @ matrix
        m = matrix[:2]
        inv = np.linalg.inv(matrix)[:2].ravel()
        boxes = [_move_box(b, m, size) for b in boxes]
    offset = int(rng.integers(0, _NOISE_BANK - geo.width * geo.height))
    quality = None  # drawn here, in the generator's order, so the pixels' buffer is known below
    if n.jpeg is not None and rng.random() < n.jpeg_probability:
        quality = int(rng.integers(n.jpeg[0], n.jpeg[1] + 1))
    work = _work_buffer("blurred", shape, np.float32)
    # a JPEG-bound image is only an intermediate (PIL copies it), the others are returned
    out = np.empty(shape, np.uint8) if quality is None else _work_buffer("8bit", shape, np.uint8)
    lighting = (gain, gx, gy)
    noise = (_noise_bank(), offset, float(n.noise))
    warp = bool(n.geometric or pose is not None)
    _finish(img, blur_a, work, inv, warp, *lighting, *noise, _BACKGROUND, out)
    if quality is not None:
        buf = io.BytesIO()
        Image.fromarray(out).save(buf, format="JPEG", quality=quality)
        buf.seek(0)
        with Image.open(buf) as decoded:
            out = np.asarray(decoded if decoded.mode == "RGB" else decoded.convert("RGB"))
    findings = tuple(replace(f, box=b) for f, b in zip(spec.findings, boxes, strict=True))
    matrix.setflags(write=False)
    return Rendered(out, findings, matrix, look)
