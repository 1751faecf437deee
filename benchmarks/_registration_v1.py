"""The first registration (similarity fit, dark sockets in a light housing), frozen as the
registration benchmark's baseline; the library's is :mod:`qeu_space.views.registration`.

Unchanged from the version the issue "any connector, any camera" measured (commit 59789cc), so
the benchmark prints the new figures beside the old ones measured in the same run.
"""

# ruff: noqa
from __future__ import annotations

import hashlib
import math
import threading
from collections import OrderedDict
from dataclasses import dataclass, field

import numpy as np
from PIL import Image
from scipy import ndimage as ndi
from skimage import filters, measure, segmentation, transform

from qeu_space.geometry import CompositeLayout, ConnectorGeometry
from qeu_space.vocabulary import ALL_POSITIONS, COLUMNS, ROWS, Box, Position

__all__ = [
    "MAX_ROTATION",
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
view are tolerated but a few stray dark blobs are not."""
SCALE_RANGE = (0.7, 1.4)
"""Lattice scale (against the canonical framing) accepted; outside it the connector does not fill
the image the way the datasets frame it."""
MAX_ROTATION = 20.0
"""Largest rotation (degrees) accepted."""
MIN_WIDTH = 200
"""Narrowest connector image (px) registration reads: sockets of about 10 px. Composites of at
least 224 px hold one; smaller ones are refused rather than registered wrong."""
_SMOOTH = 0.023  # Gaussian sigma before thresholding, in pitches (1 px at 448): noise and JPEG
_AREA = (0.5 * SCALE_RANGE[0] ** 2, 1.6 * SCALE_RANGE[1] ** 2)  # site area / socket area
_RESIDUAL = 0.05  # RANSAC inlier threshold, in pitches (about 2 px at the 448 composite scale)
_MAX_RESIDUAL = 0.025  # accepted RMS residual of the inliers, in pitches (and at least 1 px)
_LUMA = np.array([0.299, 0.587, 0.114], np.float32)


class NoConnectorError(ValueError):
    """No 3 x 9 connector could be found; the message says why and what to do."""

    def __init__(self, reason: str) -> None:
        super().__init__(f"no connector found ({reason})")
        self.reason = reason


@dataclass(frozen=True)
class Registration:
    """Where the canonical connector lies in one image.

    Attributes:
        matrix: 3 x 3 homogeneous similarity from canonical to image coordinates (continuous
            pixel coordinates: pixel ``i`` covers ``[i, i + 1)``).
        geometry: the canonical frame (the image's own size: the renderer's framing).
        residual: RMS distance (px) between the fitted and found centres of the inlier sites.
        inliers: the sites that fit the lattice (a bent pin's site may be left out).
        candidates: dark regions of a socket's size found in the image.
    """

    matrix: np.ndarray
    geometry: ConnectorGeometry
    residual: float
    inliers: tuple[Position, ...] = field(default=())
    candidates: int = 0

    def __post_init__(self) -> None:
        if self.matrix.shape != (3, 3):
            raise ValueError(f"registration matrix must be 3 x 3, got {self.matrix.shape}")
        self.matrix.setflags(write=False)

    @classmethod
    def identity(cls, geometry: ConnectorGeometry) -> Registration:
        """The canonical frame itself (an image that is already registered)."""
        return cls(np.eye(3), geometry, 0.0, ALL_POSITIONS, len(ALL_POSITIONS))

    @property
    def scale(self) -> float:
        return float(math.hypot(self.matrix[0, 0], self.matrix[1, 0]))

    @property
    def rotation(self) -> float:
        """Degrees, clockwise on screen (y points down), as the renderer's rotation."""
        return float(math.degrees(math.atan2(self.matrix[1, 0], self.matrix[0, 0])))

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

        A truth box in the image bounds a canonical, axis-aligned box turned by the product's
        rotation; its width and height are recovered exactly (``W = s (w cos + h sin)``,
        ``H = s (w sin + h cos)``), so a training target does not grow each time it is mapped.
        """
        x1, y1, x2, y2 = box
        ((cx, cy),) = self.to_canonical(np.array([[(x1 + x2) / 2, (y1 + y2) / 2]]))
        a = math.radians(abs(self.rotation))
        c, s = math.cos(a), math.sin(a)
        big_w, big_h = (x2 - x1) / self.scale, (y2 - y1) / self.scale
        det = c * c - s * s
        w = max((c * big_w - s * big_h) / det, 0.0)
        h = max((c * big_h - s * big_w) / det, 0.0)
        return (float(cx - w / 2), float(cy - h / 2), float(cx + w / 2), float(cy + h / 2))

    def seen(self, source_size: tuple[int, int]) -> np.ndarray:
        """Canonical-frame mask: ``True`` where the camera saw the product (a pixel's source lies
        inside the ``source_size`` image, one pixel in from its border); the rest of a warp is
        fill, which a comparison must not read as a change."""
        ones = Image.new("L", source_size, 255)
        a, b, c = self.matrix[0]
        d, e, f = self.matrix[1]
        size = (self.geometry.width, self.geometry.height)
        mask = ones.transform(size, Image.AFFINE, (a, b, c, d, e, f), resample=Image.NEAREST)
        return ndi.binary_erosion(np.asarray(mask) > 0, iterations=2, border_value=1)

    def warp(self, image: Image.Image, fill: tuple[int, ...] | None = None) -> Image.Image:
        """``image`` (this registration's image) resampled into the canonical frame."""
        return warp_into(image, self.matrix, (self.geometry.width, self.geometry.height), fill)


def transform_points(matrix: np.ndarray, points: np.ndarray) -> np.ndarray:
    """``(n, 2)`` x, y points through a 3 x 3 (or 2 x 3) affine ``matrix``."""
    pts = np.asarray(points, np.float64).reshape(-1, 2)
    return pts @ matrix[:2, :2].T + matrix[:2, 2]


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
    a, b, c = matrix[0]
    d, e, f = matrix[1]
    return rgb.transform(
        size, Image.AFFINE, (a, b, c, d, e, f), resample=Image.BILINEAR, fillcolor=fill
    )


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


def _site_candidates(gray: np.ndarray, geo: ConnectorGeometry) -> tuple[np.ndarray, np.ndarray]:
    """Centres (x, y) of socket-sized dark regions inside bright pixels, and the bright mask."""
    smooth = ndi.gaussian_filter(gray, max(_SMOOTH * geo.pitch[0], 0.5))
    if float(smooth.max() - smooth.min()) < 8.0:
        raise NoConnectorError("the image is flat: no contrast between housing and sockets")
    threshold = filters.threshold_otsu(smooth)
    bright = smooth > threshold
    dark = ndi.binary_fill_holes(segmentation.clear_border(~bright))
    labels, n = ndi.label(dark)
    if n == 0:
        return np.zeros((0, 2)), bright
    area = np.bincount(labels.ravel(), minlength=n + 1)[1:]
    ys, xs = np.indices(labels.shape, dtype=np.float64)
    sx = np.bincount(labels.ravel(), weights=xs.ravel(), minlength=n + 1)[1:]
    sy = np.bincount(labels.ravel(), weights=ys.ravel(), minlength=n + 1)[1:]
    socket = geo.socket_size**2
    keep = (area >= _AREA[0] * socket) & (area <= _AREA[1] * socket)
    centres = np.stack([sx[keep] / area[keep], sy[keep] / area[keep]], 1) + 0.5
    return centres, bright


def _rotation_and_scale(points: np.ndarray, geo: ConnectorGeometry) -> tuple[float, float]:
    """Lattice rotation (radians) and scale from nearest-neighbour vectors (mostly along a row)."""
    d = np.linalg.norm(points[:, None] - points[None], axis=2)
    np.fill_diagonal(d, np.inf)
    vec = points[d.argmin(1)] - points
    angle = np.arctan2(vec[:, 1], vec[:, 0])
    folded = (angle + np.pi / 4) % (np.pi / 2) - np.pi / 4  # the lattice axis nearest each vector
    theta = float(np.median(folded))
    along = np.abs(np.cos(angle - theta)) > np.cos(np.radians(20))  # along a row: the x pitch
    spacing = np.linalg.norm(vec, axis=1)[along] if along.any() else np.linalg.norm(vec, axis=1)
    return theta, float(np.median(spacing) / geo.pitch[0])


@dataclass(frozen=True)
class _Probes:
    """Canonical points whose brightness tells a right lattice placement from a wrong one."""

    ring: np.ndarray  # inside each socket, around the pin: dark
    housing: np.ndarray  # half a pitch from each site: housing, bright
    inside: np.ndarray  # just inside the housing outline: bright
    outside: np.ndarray  # just outside it: background, dark

    @classmethod
    def of(cls, geo: ConnectorGeometry) -> _Probes:
        px, py = geo.pitch
        r = 0.36 * geo.socket_size
        x1, y1, x2, y2 = geo.housing_box
        t = np.linspace(0.0, 1.0, 24)

        def outline(d: float) -> np.ndarray:
            a, b, c, e = x1 + d, y1 + d, x2 - d, y2 - d
            return np.concatenate([
                np.stack([a + (c - a) * t, np.full_like(t, b)], 1),
                np.stack([a + (c - a) * t, np.full_like(t, e)], 1),
                np.stack([np.full_like(t, a), b + (e - b) * t], 1),
                np.stack([np.full_like(t, c), b + (e - b) * t], 1),
            ])  # fmt: skip

        return cls(
            ring=np.array([[r, 0], [-r, 0], [0, r], [0, -r]]),
            housing=np.array([[px / 2, 0], [-px / 2, 0], [0, py / 2], [0, -py / 2]]),
            inside=outline(0.02 * geo.height),
            outside=outline(-0.03 * geo.height),
        )


def _sample(mask: np.ndarray, points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(in_view, value)`` of ``mask`` at continuous ``points`` (..., 2)."""
    h, w = mask.shape
    x, y = points[..., 0], points[..., 1]
    ok = (x >= 0) & (x < w) & (y >= 0) & (y < h)
    value = np.zeros(x.shape, bool)
    value[ok] = mask[y[ok].astype(int), x[ok].astype(int)]
    return ok, value


def _assign(
    points: np.ndarray, geo: ConnectorGeometry, bright: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """``(site index 0..26 or -1 per candidate, canonical centres)``: which candidate is which site.

    The candidates are put in lattice units with the estimated rotation and scale; their common
    sub-pitch offset is the circular mean of the fractional parts. Every integer placement of the
    9 x 3 window is then scored by what the image shows where it puts sites and housing.
    """
    theta, scale = _rotation_and_scale(points, geo)
    if not SCALE_RANGE[0] <= scale <= SCALE_RANGE[1]:
        raise NoConnectorError(
            f"pin spacing is {scale:.2f} x the expected one (accepted {SCALE_RANGE[0]}-"
            f"{SCALE_RANGE[1]}): crop or resize the image so the connector fills it"
        )
    px, py = geo.pitch
    c, s = math.cos(theta), math.sin(theta)
    rot = np.array([[c, -s], [s, c]])  # lattice units -> image
    lattice_xy = points @ rot / scale  # row vectors: p @ rot = R^T p
    u, v = lattice_xy[:, 0] / px, lattice_xy[:, 1] / py
    fu = float(np.angle(np.exp(2j * np.pi * u).mean()) / (2 * np.pi))
    fv = float(np.angle(np.exp(2j * np.pi * v).mean()) / (2 * np.pi))
    iu, iv = np.rint(u - fu).astype(int), np.rint(v - fv).astype(int)
    sites = np.array([geo.pin_center(p) for p in ALL_POSITIONS])
    probes = _Probes.of(geo)
    cols, rows = len(COLUMNS), len(ROWS)
    best: tuple[tuple[int, int, int], int, int] | None = None
    for du in range(iu.min() - cols + 1, iu.max() + 1):
        for dv in range(iv.min() - rows + 1, iv.max() + 1):
            inside = (iu - du >= 0) & (iu - du < cols) & (iv - dv >= 0) & (iv - dv < rows)
            count = int(inside.sum())
            if best is not None and count < best[0][2] - 3:
                continue  # far fewer candidates on sites than the best placement so far
            origin = np.array([(du + fu) * px, (dv + fv) * py]) - sites[0]

            def to_image(canonical: np.ndarray, origin=origin) -> np.ndarray:
                return (canonical + origin) * scale @ rot.T

            centre_ok, _ = _sample(bright, to_image(sites))
            ring_ok, ring_bright = _sample(bright, to_image(sites[:, None] + probes.ring))
            house_ok, house_bright = _sample(bright, to_image(sites[:, None] + probes.housing))
            socket_like = (ring_ok & ~ring_bright).sum(1) >= np.maximum(1, ring_ok.sum(1) - 1)
            on_housing = ((house_ok & house_bright).sum(1) == house_ok.sum(1)) & (
                house_ok.sum(1) >= 2
            )
            evidence = int((centre_ok & socket_like & on_housing).sum())
            in_ok, in_bright = _sample(bright, to_image(probes.inside))
            out_ok, out_bright = _sample(bright, to_image(probes.outside))
            outline = int(
                (in_ok & in_bright).sum() - (in_ok & ~in_bright).sum()
                + (out_ok & ~out_bright).sum() - (out_ok & out_bright).sum()
            )  # fmt: skip
            key = (evidence, outline, count)
            if best is None or key > best[0]:
                best = (key, du, dv)
    assert best is not None
    _, du, dv = best
    col, row = iu - du, iv - dv
    on_site = (col >= 0) & (col < cols) & (row >= 0) & (row < rows)
    index = np.where(on_site, row * cols + col, -1)
    return index, sites


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
    points, bright = _site_candidates(gray, geo)
    if len(points) < MIN_INLIERS:
        raise NoConnectorError(
            f"no pin sites: {len(points)} socket-like regions, at least {MIN_INLIERS} of the 27 "
            "needed; is this one connector, framed like the dataset images?"
        )
    index, sites = _assign(points, geo, bright)
    # one candidate per site: the one nearest the window's lattice point wins duplicates
    matched = index >= 0
    if np.unique(index[matched]).size < MIN_INLIERS:
        raise NoConnectorError(
            f"the dark regions do not form a 3 x 9 pin lattice ({np.unique(index[matched]).size}"
            f" sites matched, {MIN_INLIERS} needed)"
        )
    src, dst = sites[index[matched]], points[matched]
    pitch = min(geo.pitch)
    model, inl = measure.ransac(
        (src, dst),
        transform.SimilarityTransform,
        min_samples=3,
        residual_threshold=max(_RESIDUAL * pitch, 1.5),
        max_trials=100,
        rng=0,
    )
    if model is None or inl is None or int(inl.sum()) < MIN_INLIERS:
        fitted = 0 if inl is None else int(inl.sum())
        raise NoConnectorError(
            f"only {fitted} pin sites fit one lattice ({MIN_INLIERS} of 27 needed)"
        )
    fit_sites = index[matched][inl]
    if np.unique(fit_sites).size < MIN_INLIERS:
        raise NoConnectorError(
            f"only {np.unique(fit_sites).size} distinct pin sites fit one lattice "
            f"({MIN_INLIERS} of 27 needed)"
        )
    residual = float(np.sqrt(np.mean(np.sum((model(src[inl]) - dst[inl]) ** 2, axis=1))))
    reg = Registration(
        matrix=np.asarray(model.params, np.float64),
        geometry=geo,
        residual=residual,
        inliers=tuple(ALL_POSITIONS[i] for i in sorted(set(fit_sites.tolist()))),
        candidates=len(points),
    )
    accepted = max(_MAX_RESIDUAL * pitch, 1.0)
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
    return CompositeRegistration(layout, regs["reference"], regs["test"])


def canonical_composite(composite: Image.Image) -> tuple[Image.Image, CompositeRegistration]:
    """The composite with both products warped into their canonical frames (labels kept)."""
    reg = register_composite(composite)
    return reg.warp(composite), reg


def lattice_error(registration: Registration, true_matrix: np.ndarray) -> float:
    """RMS distance (px) between the 27 pin centres placed by ``registration`` and by the truth
    (a 2 x 3 or 3 x 3 canonical-to-image matrix): the registration benchmark's error."""
    sites = np.array([registration.geometry.pin_center(p) for p in ALL_POSITIONS])
    m = np.asarray(true_matrix, np.float64)
    truth = sites @ m[:2, :2].T + m[:2, 2]
    return float(np.sqrt(np.mean(np.sum((registration.to_image(sites) - truth) ** 2, axis=1))))
