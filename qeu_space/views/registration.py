"""Registration: find a connector's 3 x 9 pin lattice in an image and map it to the canonical frame.

A camera rig never puts a product at the same pixel twice, and a model that reads pixels where the
renderer put them learns "pin off-centre in its cell" as "bent". Every model and SOARTC therefore
reads the **canonical frame**: the product warped so that its pin sites fall exactly where
:class:`~qeu_space.geometry.ConnectorGeometry` puts them (the housing's top plane).

Registration is a sequence of small steps, each a module that returns a value a test can hold
against the truth:

1. *Sites* (:mod:`.sites`): centres of compact structures of a site's size, whatever their
   polarity (dark sockets in light plastic, bright pins in black plastic, dark domed pins).
2. *Lattice* (:mod:`.lattice`): the periodic grid most sites lie on, as a homography from integer
   lattice coordinates to the image (a tilted camera's keystone included).
   *Likeness* (:mod:`.likeness`): how much each node looks like the product's typical site; a
   node next to the grid that looks like a pin joins it, grain lined up with it does not count.
3. *Window* (:mod:`.window`): which 3 x 9 block of that grid is the connector; another lattice
   (3 x 8, 4 x 9) is refused, and so is a close call between two windows.
4. *Alignment* (:mod:`.align`) and *projective fit* (:mod:`.homography`): each site located
   against the typical site, then RANSAC and least squares from the canonical pin centres to
   those sites; a bent pin's site does not pull it.
5. *Checks* (here): enough sites fit, the residual is small, scale, rotation and tilt are in the
   range a rig gives.

An image where this fails (flat, black, noise, something else) raises :class:`NoConnectorError`,
whose message starts with ``"no connector found ("`` and says why: callers show it, never an answer.

Example:
    >>> import numpy as np
    >>> register(np.zeros((204, 423, 3), np.uint8))
    Traceback (most recent call last):
    ...
    qeu_space.views.no_connector.NoConnectorError: no connector found (the image is flat: ...)
"""

from __future__ import annotations

import hashlib
import math
import threading
from collections import OrderedDict
from dataclasses import dataclass, field

import cv2
import numpy as np
from PIL import Image
from scipy import ndimage as ndi

from qeu_space.geometry import CompositeLayout, ConnectorGeometry
from qeu_space.views.align import align_sites
from qeu_space.views.homography import fit_homography, project
from qeu_space.views.lattice import complete_lattice, fit_lattice
from qeu_space.views.likeness import complete_by_likeness
from qeu_space.views.no_connector import NoConnectorError
from qeu_space.views.sites import find_sites, refine_sites
from qeu_space.views.window import ROWS_COLS, choose_window, window_matrix
from qeu_space.vocabulary import ALL_POSITIONS, Box, Position

__all__ = [
    "MAX_ROTATION",
    "MAX_TILT",
    "MIN_INLIERS",
    "SCALE_RANGE",
    "NoConnectorError",
    "Registration",
    "canonical_composite",
    "canonical_connector",
    "lattice_error",
    "register",
    "register_composite",
]

MIN_INLIERS = 15
"""Pin sites that must fit the lattice (of 27): more than half, so bent pins and a column out of
view are tolerated but a few stray blobs are not."""
SCALE_RANGE = (0.7, 1.4)
"""Lattice scale (against the canonical framing) accepted; outside it the connector does not fill
the image the way the datasets frame it."""
MAX_ROTATION = 20.0
"""Largest rotation (degrees) accepted."""
MAX_TILT = 0.3
"""Largest keystone accepted: relative change of scale across the connector (a 10 degree tilt
under a wide lens gives about 0.15)."""
MIN_WIDTH = 200
"""Narrowest connector image (px) registration reads: sockets of about 10 px. Composites of at
least 224 px hold one; smaller ones are refused rather than registered wrong."""
WORK_PITCH = 46.0
"""Images whose pitch is larger are searched at a size where it is this (px): the same accuracy
in pitches, a bounded time per connector."""
ALIGN = True
"""Locate each site against the product's typical site (:mod:`.align`) before the fit."""
_MAX_RESIDUAL = 0.035  # accepted RMS residual of the inliers, in pitches (and at least 1 px)
_LUMA = np.array([0.299, 0.587, 0.114], np.float32)


@dataclass(frozen=True)
class Registration:
    """Where the canonical connector lies in one image.

    Attributes:
        matrix: 3 x 3 homography from canonical to image coordinates (continuous pixel
            coordinates: pixel ``i`` covers ``[i, i + 1)``; ``matrix[2, 2] == 1``).
        geometry: the canonical frame (the image's own size: the renderer's framing).
        residual: RMS distance (px) between the fitted and found centres of the inlier sites.
        inliers: the sites that fit the lattice (a bent pin's site may be left out).
        candidates: candidate sites found in the image.
        found: ``(rows, columns)`` of the block of pin sites seen (3 x 9 unless part of the
            product lies out of view).
        windows: lattice windows that could hold that block (1: the sites alone settle it).
    """

    matrix: np.ndarray
    geometry: ConnectorGeometry
    residual: float
    inliers: tuple[Position, ...] = field(default=())
    candidates: int = 0
    found: tuple[int, int] = ROWS_COLS
    windows: int = 1

    def __post_init__(self) -> None:
        if self.matrix.shape != (3, 3):
            raise ValueError(f"registration matrix must be 3 x 3, got {self.matrix.shape}")
        self.matrix.setflags(write=False)

    @classmethod
    def identity(cls, geometry: ConnectorGeometry) -> Registration:
        """The canonical frame itself (an image that is already registered)."""
        return cls(np.eye(3), geometry, 0.0, ALL_POSITIONS, len(ALL_POSITIONS))

    def jacobian(self, point: tuple[float, float] | None = None) -> np.ndarray:
        """2 x 2 local linear map of the homography at canonical ``point`` (default: centre)."""
        return _jacobian(self.matrix, point or (self.geometry.width / 2, self.geometry.height / 2))

    @property
    def scale(self) -> float:
        """Size against the canonical framing at the product's centre (a similarity's scale)."""
        return float(math.sqrt(abs(np.linalg.det(self.jacobian()))))

    @property
    def rotation(self) -> float:
        """Degrees, clockwise on screen (y points down), as the renderer's rotation."""
        j = self.jacobian()
        return float(math.degrees(math.atan2(j[1, 0], j[0, 0])))

    @property
    def tilt(self) -> float:
        """Keystone: the relative change of scale between opposite ends of the connector."""
        geo = self.geometry
        x1, y1, x2, y2 = geo.grid_box()
        scales = [math.sqrt(abs(np.linalg.det(self.jacobian(p))))
                  for p in ((x1, (y1 + y2) / 2), (x2, (y1 + y2) / 2),
                            ((x1 + x2) / 2, y1), ((x1 + x2) / 2, y2))]  # fmt: skip
        return float(max(abs(scales[0] - scales[1]), abs(scales[2] - scales[3])) / self.scale)

    @property
    def shift(self) -> tuple[float, float]:
        """``(dx, dy)`` px: where the canonical image centre moved to, relative to itself."""
        cx, cy = self.geometry.width / 2, self.geometry.height / 2
        x, y = self.to_image(np.array([[cx, cy]]))[0]
        return float(x - cx), float(y - cy)

    def to_image(self, points: np.ndarray) -> np.ndarray:
        """Canonical ``(n, 2)`` x, y points in this image's pixels."""
        return transform_points(self.matrix, points)

    def to_canonical(self, points: np.ndarray) -> np.ndarray:
        """Image ``(n, 2)`` x, y points in canonical pixels."""
        return transform_points(np.linalg.inv(self.matrix), points)

    def box_to_image(self, box: Box) -> Box:
        """The image-axis bounds of a canonical box (a box turns with the product)."""
        return transform_box(self.matrix, box)

    def box_to_canonical(self, box: Box) -> Box:
        """The canonical box whose turned bounds are ``box`` (:meth:`box_to_image`'s inverse).

        A truth box in the image bounds a canonical, axis-aligned box mapped by the homography,
        locally the linear map ``J`` at its centre; its width and height are recovered from
        ``W = |J00| w + |J01| h``, ``H = |J10| w + |J11| h``, so a training target does not grow
        each time it is mapped.
        """
        x1, y1, x2, y2 = box
        ((cx, cy),) = self.to_canonical(np.array([[(x1 + x2) / 2, (y1 + y2) / 2]]))
        a = np.abs(self.jacobian((float(cx), float(cy))))
        big = np.array([x2 - x1, y2 - y1], np.float64)
        try:
            w, h = np.linalg.solve(a, big)
        except np.linalg.LinAlgError:
            w, h = big / max(self.scale, 1e-9)
        w, h = max(float(w), 0.0), max(float(h), 0.0)
        return (float(cx - w / 2), float(cy - h / 2), float(cx + w / 2), float(cy + h / 2))

    def seen(self, source_size: tuple[int, int]) -> np.ndarray:
        """Canonical-frame mask: ``True`` where the camera saw the product (a pixel's source lies
        inside the ``source_size`` image, one pixel in from its border); the rest of a warp is
        fill, which a comparison must not read as a change."""
        ones = Image.new("L", source_size, 255)
        size = (self.geometry.width, self.geometry.height)
        mask = ones.transform(size, Image.PERSPECTIVE, _coefficients(self.matrix),
                              resample=Image.NEAREST)  # fmt: skip
        return ndi.binary_erosion(np.asarray(mask) > 0, iterations=2, border_value=1)

    def warp(self, image: Image.Image, fill: tuple[int, ...] | None = None) -> Image.Image:
        """``image`` (this registration's image) resampled into the canonical frame."""
        return warp_into(image, self.matrix, (self.geometry.width, self.geometry.height), fill)


def _jacobian(matrix: np.ndarray, point: tuple[float, float]) -> np.ndarray:
    x, y = point
    m = np.asarray(matrix, np.float64)
    w = m[2, 0] * x + m[2, 1] * y + m[2, 2]
    u = m[0, 0] * x + m[0, 1] * y + m[0, 2]
    v = m[1, 0] * x + m[1, 1] * y + m[1, 2]
    return np.array([
        [(m[0, 0] * w - u * m[2, 0]) / w**2, (m[0, 1] * w - u * m[2, 1]) / w**2],
        [(m[1, 0] * w - v * m[2, 0]) / w**2, (m[1, 1] * w - v * m[2, 1]) / w**2],
    ])  # fmt: skip


def _coefficients(matrix: np.ndarray) -> tuple[float, ...]:
    """PIL's ``PERSPECTIVE`` data for output pixel -> source pixel ``matrix`` (normalised)."""
    m = np.asarray(matrix, np.float64)
    m = m / m[2, 2]
    return tuple(float(v) for v in m.ravel()[:8])


def transform_points(matrix: np.ndarray, points: np.ndarray) -> np.ndarray:
    """``(n, 2)`` x, y points through a 3 x 3 homography (or a 2 x 3 affine) ``matrix``."""
    m = np.asarray(matrix, np.float64)
    if m.shape == (2, 3):
        m = np.vstack([m, [0.0, 0.0, 1.0]])
    return project(m, points)


def transform_box(matrix: np.ndarray, box: Box) -> Box:
    """The axis-aligned bounds of ``box`` after ``matrix`` (a turned box grows a little)."""
    x1, y1, x2, y2 = box
    corners = np.array([[x1, y1], [x2, y1], [x1, y2], [x2, y2]], np.float64)
    moved = transform_points(matrix, corners)
    (a, b), (c, d) = moved.min(0), moved.max(0)
    return (float(a), float(b), float(c), float(d))


def warp_into(
    image: Image.Image,
    matrix: np.ndarray,
    size: tuple[int, int],
    fill: tuple[int, ...] | None = None,
) -> Image.Image:
    """Resample ``image`` so output pixel ``p`` shows image point ``matrix @ p`` (bilinear).

    ``fill`` colours what lies outside the image (default: the median colour of its border, the
    background around the product).
    """
    rgb = image if image.mode == "RGB" else image.convert("RGB")
    if fill is None:
        fill = _border_colour(np.asarray(rgb))
    # PIL maps output pixel centres (x + 0.5) through the coefficients with no half-pixel
    # correction, i.e. in the same continuous coordinates as ``matrix``.
    return rgb.transform(size, Image.PERSPECTIVE, _coefficients(matrix), resample=Image.BILINEAR,
                         fillcolor=fill)  # fmt: skip


def warp_map(values: np.ndarray, matrix: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """A float map resampled: output pixel ``p`` reads ``values`` at ``matrix @ p`` (0 outside)."""
    canvas = Image.fromarray(np.asarray(values, np.float32), mode="F")
    out = canvas.transform(size, Image.PERSPECTIVE, _coefficients(matrix),
                           resample=Image.BILINEAR, fillcolor=0.0)  # fmt: skip
    return np.asarray(out, np.float32)


def _border_colour(arr: np.ndarray) -> tuple[int, int, int]:
    edge = np.concatenate([arr[0], arr[-1], arr[:, 0], arr[:, -1]])
    return tuple(int(v) for v in np.median(edge, axis=0))


# --------------------------------------------------------------------------- finding the lattice


def _gray(image: Image.Image | np.ndarray) -> np.ndarray:
    if isinstance(image, Image.Image):
        image = np.asarray(image.convert("RGB"))
    arr = np.asarray(image)
    if arr.ndim == 2:
        return arr.astype(np.float32)
    if arr.ndim != 3 or arr.shape[2] not in (3, 4):
        raise ValueError(f"expected an H x W gray or RGB(A) image, got shape {arr.shape}")
    return arr[..., :3].astype(np.float32) @ _LUMA


_CACHE: OrderedDict[tuple, Registration] = OrderedDict()
_CACHE_SIZE = 64
_CACHE_LOCK = threading.Lock()


def remember_at_least(n: int) -> int:
    """Remember at least the last ``n`` registrations (about 1 kB each); returns the new size.

    Training reads every row once per epoch: with room for all of them, only the first epoch
    searches (``python -m qeu_space.train`` sets this from the dataset's size).
    """
    global _CACHE_SIZE
    with _CACHE_LOCK:
        _CACHE_SIZE = max(_CACHE_SIZE, int(n))
        return _CACHE_SIZE


def register(
    image: Image.Image | np.ndarray, geometry: ConnectorGeometry | None = None
) -> Registration:
    """Find the connector in ``image`` (one connector, framed as the renderer frames it).

    The last few results are remembered by pixel digest: the Space frames one upload for several
    models, and each finds the same registration without searching again.

    Args:
        image: a PIL image or an H x W (x 3/4) array of one connector.
        geometry: the canonical frame (default: ``ConnectorGeometry`` of the image's own size).

    Raises:
        NoConnectorError: no 3 x 9 pin lattice was found; the message says why.
    """
    if isinstance(image, Image.Image):
        image = np.asarray(image if image.mode in ("RGB", "L") else image.convert("RGB"))
    arr = np.ascontiguousarray(image)
    geometry = geometry or ConnectorGeometry(arr.shape[1], arr.shape[0])  # one key per frame
    key = (arr.shape, arr.dtype.str, geometry, hashlib.blake2b(arr.data, digest_size=16).digest())
    with _CACHE_LOCK:
        if key in _CACHE:
            _CACHE.move_to_end(key)
            return _CACHE[key]
    reg = _register(arr, geometry)
    with _CACHE_LOCK:
        _CACHE[key] = reg
        while len(_CACHE) > _CACHE_SIZE:
            _CACHE.popitem(last=False)
    return reg


def _register(image: np.ndarray, geometry: ConnectorGeometry | None) -> Registration:
    gray = _gray(image)
    h, w = gray.shape
    geo = geometry or ConnectorGeometry(w, h)
    if geo.width < MIN_WIDTH:
        raise NoConnectorError(
            f"the connector image is {geo.width} x {geo.height} px, too small to find its pins: "
            f"registration needs at least {MIN_WIDTH} px across (composites of 224 px or more)"
        )
    if float(np.percentile(gray[::4, ::4], 99) - np.percentile(gray[::4, ::4], 1)) < 8.0:
        raise NoConnectorError("the image is flat: no contrast between housing and pins")
    # search at a size where the pitch is at most WORK_PITCH (a large upload costs no more)
    pitch = min(geo.pitch) * w / geo.width
    factor = min(1.0, WORK_PITCH / pitch)
    if factor < 1.0:
        size = (max(int(round(w * factor)), 8), max(int(round(h * factor)), 8))
        work = cv2.resize(gray, size, interpolation=cv2.INTER_AREA)
    else:
        work = gray
    wh, ww = work.shape
    sx, sy = ww / w, wh / h
    pitch_xy = (geo.pitch[0] * ww / geo.width, geo.pitch[1] * wh / geo.height)
    sites = find_sites(work, min(pitch_xy))
    lattice = fit_lattice(sites.points, sites.strength, pitch_xy, SCALE_RANGE)
    if lattice is None or len(lattice.nodes) < MIN_INLIERS:
        seen = 0 if lattice is None else len(lattice.nodes)
        raise NoConnectorError(
            f"no pin sites: {seen} candidate sites on one lattice, at least {MIN_INLIERS} of the "
            "27 needed; is this one connector, framed like the dataset images?"
        )
    lattice = complete_lattice(
        lattice,
        lambda guess: refine_sites(work, guess, lattice.pitch),
        sites.energy_at,
        (ww, wh),
    )
    lattice = complete_by_likeness(work, lattice, sites.energy_at, (ww, wh))
    scale = lattice.pitch / pitch_xy[0]
    if not SCALE_RANGE[0] <= scale <= SCALE_RANGE[1]:
        raise NoConnectorError(
            f"pin spacing is {scale:.2f} x the expected one (accepted {SCALE_RANGE[0]}-"
            f"{SCALE_RANGE[1]}): crop or resize the image so the connector fills it"
        )
    win = choose_window(lattice, sites, geo, (ww, wh), work)
    rows, cols = ROWS_COLS
    col = lattice.nodes[:, 0] - win.column
    row = lattice.nodes[:, 1] - win.row
    on = (col >= 0) & (col < cols) & (row >= 0) & (row < rows)
    if int(on.sum()) < MIN_INLIERS:
        raise NoConnectorError(
            f"the sites do not form a 3 x 9 pin lattice ({int(on.sum())} sites matched, "
            f"{MIN_INLIERS} needed)"
        )
    index = (row * cols + col)[on]
    src = np.array([geo.pin_center(ALL_POSITIONS[i]) for i in index])
    start = window_matrix(lattice, geo, win.column, win.row)
    dst, refined = refine_sites(work, lattice.points[on], min(pitch_xy) * scale)
    refined &= np.linalg.norm(dst - project(start, src), axis=1) <= 0.3 * min(pitch_xy) * scale
    if ALIGN:
        aligned, matched = align_sites(work, lattice, lattice.nodes[on], dst, refined)
        matched &= (
            np.linalg.norm(aligned - project(start, src), axis=1) <= 0.3 * min(pitch_xy) * scale
        )
        dst = np.where(matched[:, None], aligned, dst)
        refined |= matched
    if int(refined.sum()) >= MIN_INLIERS:  # a site cut by the border is not measured: left out
        src, dst, index = src[refined], dst[refined], index[refined]
    else:
        dst = np.where(refined[:, None], dst, lattice.points[on])
    fit = fit_homography(src, dst, min(pitch_xy) * scale)
    if fit is None or int(fit.inliers.sum()) < MIN_INLIERS:
        fitted = 0 if fit is None else int(fit.inliers.sum())
        raise NoConnectorError(
            f"only {fitted} pin sites fit one lattice ({MIN_INLIERS} of 27 needed)"
        )
    back = np.diag([1 / sx, 1 / sy, 1.0])
    matrix = back @ fit.matrix
    matrix = matrix / matrix[2, 2]
    residual = fit.residual / math.sqrt(sx * sy)
    reg = Registration(
        matrix=matrix,
        geometry=geo,
        residual=residual,
        inliers=tuple(ALL_POSITIONS[i] for i in sorted(set(index[fit.inliers].tolist()))),
        candidates=len(sites.points),
        found=win.found,
        windows=win.candidates,
    )
    accepted = max(_MAX_RESIDUAL * min(geo.pitch) * reg.scale, 1.0)
    if residual > accepted:
        raise NoConnectorError(
            f"the pin lattice fits poorly (residual {residual:.1f} px, at most {accepted:.1f} px "
            "accepted)"
        )
    if not SCALE_RANGE[0] <= reg.scale <= SCALE_RANGE[1]:
        raise NoConnectorError(
            f"the connector is {reg.scale:.2f} x its expected size (accepted {SCALE_RANGE[0]}-"
            f"{SCALE_RANGE[1]}): crop or resize the image so the connector fills it"
        )
    if abs(reg.rotation) > MAX_ROTATION:
        raise NoConnectorError(
            f"the connector is turned {reg.rotation:.0f} degrees (at most {MAX_ROTATION:.0f} "
            "accepted): turn the image upright"
        )
    if reg.tilt > MAX_TILT:
        raise NoConnectorError(
            f"the connector is seen at a steep angle (scale changes by {100 * reg.tilt:.0f} % "
            f"across it, at most {100 * MAX_TILT:.0f} % accepted): photograph it from above"
        )
    return reg


def canonical_connector(
    image: Image.Image, geometry: ConnectorGeometry | None = None
) -> tuple[Image.Image, Registration]:
    """``image`` of one connector warped into its canonical frame, and the registration."""
    reg = register(image, geometry)
    return reg.warp(image), reg


# --------------------------------------------------------------------------- composites


@dataclass(frozen=True)
class CompositeRegistration:
    """Both products of a composite: where each lies in its panel."""

    layout: CompositeLayout
    reference: Registration
    test: Registration

    def box_to_composite(self, box: Box, panel: str = "test") -> Box:
        """A box in the canonical composite, in the original composite's pixels."""
        reg = self.test if panel == "test" else self.reference
        ox, oy = self.layout.origin(panel)  # type: ignore[arg-type]
        inner = (box[0] - ox, box[1] - oy, box[2] - ox, box[3] - oy)
        x1, y1, x2, y2 = reg.box_to_image(inner)
        return (x1 + ox, y1 + oy, x2 + ox, y2 + oy)

    def box_to_canonical(self, box: Box, panel: str = "test") -> Box:
        reg = self.test if panel == "test" else self.reference
        ox, oy = self.layout.origin(panel)  # type: ignore[arg-type]
        inner = (box[0] - ox, box[1] - oy, box[2] - ox, box[3] - oy)
        x1, y1, x2, y2 = reg.box_to_canonical(inner)
        return (x1 + ox, y1 + oy, x2 + ox, y2 + oy)

    def warp(self, composite: Image.Image) -> Image.Image:
        """``composite`` with both products in their canonical frames (labels and margins kept)."""
        rgb = composite if composite.mode == "RGB" else composite.convert("RGB")
        out = rgb.copy()
        for panel, reg in (("reference", self.reference), ("test", self.test)):
            box = self.layout.crop_box(panel)  # type: ignore[arg-type]
            out.paste(reg.warp(rgb.crop(box)), box[:2])
        return out


def register_composite(composite: Image.Image) -> CompositeRegistration:
    """Register both panels of a square composite (reference on top, test below).

    Raises:
        NoConnectorError: naming the panel where no connector was found.
    """
    width, height = composite.size
    if width != height:
        raise ValueError(f"a composite is square, got {width} x {height}")
    layout = CompositeLayout(width)
    regs = {}
    for panel in ("reference", "test"):
        crop = composite.crop(layout.crop_box(panel))
        try:
            regs[panel] = register(crop, layout.connector)
        except NoConnectorError as err:
            raise NoConnectorError(f"{panel} product: {err.reason}") from None
    if regs["reference"].windows > 1 or regs["test"].windows > 1:
        # a panel whose window was chosen on the ends alone must agree with the other one
        check_windows_agree(composite, layout, regs["reference"], regs["test"])
    return CompositeRegistration(layout, regs["reference"], regs["test"])


AGREEMENT_MARGIN = 0.05
"""How much better the panels must match moved by one pitch than as registered to be refused."""


def _canonical_edges(panel: Image.Image, reg: Registration) -> tuple[np.ndarray, np.ndarray]:
    """Gradient magnitude of ``panel`` in its canonical frame, and where the camera saw it."""
    gray = _gray(panel)
    half = np.array([[1.0, 0.0, 0.5], [0.0, 1.0, 0.5], [0.0, 0.0, 1.0]])
    to_index = np.linalg.inv(half) @ reg.matrix @ half  # OpenCV: pixel centres at integers
    size = (reg.geometry.width, reg.geometry.height)
    flags = cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP
    canon = cv2.warpPerspective(gray, to_index, size, flags=flags)
    seen = cv2.warpPerspective(np.ones_like(gray), to_index, size, flags=flags) > 0.99
    canon = cv2.GaussianBlur(canon, (0, 0), 1.5)
    seen = cv2.erode(seen.astype(np.uint8), np.ones((7, 7), np.uint8)) > 0
    return canon, seen


def _match(a: np.ndarray, b: np.ndarray, m: np.ndarray, dx: int, dy: int) -> float:
    """Correlation of ``a`` with ``b`` moved by ``(dx, dy)`` px, over ``a``'s pixels ``m``."""
    h, w = a.shape
    ya, yb = slice(max(dy, 0), h + min(dy, 0)), slice(max(-dy, 0), h - max(dy, 0))
    xa, xb = slice(max(dx, 0), w + min(dx, 0)), slice(max(-dx, 0), w - max(dx, 0))
    x, y = a[ya, xa][m[ya, xa]], b[yb, xb][m[ya, xa]]
    x, y = x - x.mean(), y - y.mean()
    return float((x * y).sum() / math.sqrt(float((x * x).sum() * (y * y).sum()) + 1e-9))


def _moved(mask: np.ndarray, dx: int, dy: int) -> np.ndarray:
    """``mask`` moved by ``(dx, dy)`` px (``False`` where it comes from outside)."""
    out = np.zeros_like(mask)
    h, w = mask.shape
    out[max(dy, 0) : h + min(dy, 0), max(dx, 0) : w + min(dx, 0)] = mask[
        max(-dy, 0) : h - max(dy, 0), max(-dx, 0) : w - max(dx, 0)
    ]
    return out


def check_windows_agree(
    composite: Image.Image, layout: CompositeLayout, reference: Registration, test: Registration
) -> dict[tuple[int, int], tuple[float, float]]:
    """Refuse a composite whose two panels were registered on different lattice windows.

    Both panels show one product: in their canonical frames their edges must match best as
    registered, not moved by a pitch (which is what a test panel registered one column off
    looks like against its reference). Only the ends of the rows and columns are compared (the
    periodic inside matches at every shift). Returns ``{(dx, dy): (match as registered, match
    moved)}`` for each shift that could be told.

    Raises:
        NoConnectorError: a shift of one pitch matches clearly better than none.
    """
    a, sa = _canonical_edges(composite.crop(layout.crop_box("reference")), reference)
    b, sb = _canonical_edges(composite.crop(layout.crop_box("test")), test)
    geo = layout.connector
    px, py = (int(round(v)) for v in geo.pitch)
    (x1, y1), (x9, y3) = geo.pin_center(ALL_POSITIONS[0]), geo.pin_center(ALL_POSITIONS[-1])
    # only the ends tell windows apart (the periodic inside matches at every shift): the
    # reference's pixels past the outer pins, where the test is seen both as registered and moved
    xs, ys = np.arange(geo.width) + 0.5, np.arange(geo.height) + 0.5
    across = ((xs < x1 - 0.5 * px) | (xs > x9 + 0.5 * px))[None]
    down = ((ys < y1 - 0.5 * py) | (ys > y3 + 0.5 * py))[:, None]
    scores: dict[tuple[int, int], tuple[float, float]] = {}
    for dx, dy in ((px, 0), (-px, 0), (0, py), (0, -py)):
        m = sa & (across if dx else down) & sb & _moved(sb, dx, dy)
        if m.sum() < 200:
            continue  # too little seen by both to tell
        here, moved = _match(a, b, m, 0, 0), _match(a, b, m, dx, dy)
        scores[(dx, dy)] = (here, moved)
        if moved > here + AGREEMENT_MARGIN:
            what = "column" if dx else "row"
            raise NoConnectorError(
                f"the reference and test products disagree on the lattice window: the test "
                f"matches the reference better one {what} off than as registered (match "
                f"{moved:.3f} vs {here:.3f}); frame both products alike"
            )
    return scores


def canonical_composite(composite: Image.Image) -> tuple[Image.Image, CompositeRegistration]:
    """The composite with both products warped into their canonical frames (labels kept)."""
    reg = register_composite(composite)
    return reg.warp(composite), reg


def lattice_error(registration: Registration, true_matrix: np.ndarray) -> float:
    """RMS distance (px) between the 27 pin centres placed by ``registration`` and by the truth
    (a 2 x 3 or 3 x 3 canonical-to-image matrix): the registration benchmark's error."""
    sites = np.array([registration.geometry.pin_center(p) for p in ALL_POSITIONS])
    truth = transform_points(np.asarray(true_matrix, np.float64), sites)
    return float(np.sqrt(np.mean(np.sum((registration.to_image(sites) - truth) ** 2, axis=1))))
