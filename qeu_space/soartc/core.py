"""SOART3 and SOARTC: validation and conversion at the edge, kernels inside.

SOART3 compares a reference vector ``x`` with a signal vector ``y`` exactly as the seeds did::

    beta = (x.y + 1e-4) / (x.x + 1e-4)     eta = sum |y - beta x|     v = max |y - beta x|
    metrics = (log beta, log(eta + 1), log(v + 1) - log(eta + 1))

``beta <= 0`` (which crashed the seeds' ``math.log``) gives ``log beta = log(1e-6)`` (about
-13.8): the metric is ``log(max(beta, 1e-6))``, defined for every input and never an exception.

SOARTC draws where a test image departs from a good reference, in two stages:

1. *Convolution stage*: a ``window x window`` window slides with ``stride`` over both images
   (grayscale float); SOART3 of each (reference window, test window) pair gives three maps on the
   window grid. The descriptor of a window is its pixels (``"pixels"``, the default) or the
   self-similarity matrix of four filter responses inside it (``"selfsim"``).
2. *Anomaly stage*: each window's three metrics are measured against the unit space, the normal
   variation, as a Mahalanobis distance. Without ``references`` the unit space is estimated
   robustly from the bulk of this pair's windows (so a global gain change, which ``beta``
   absorbs into one constant, is not an anomaly); with good ``references`` each window is first
   taken relative to the good images' metrics at the same window and the spread comes from how
   the good images vary. Each pixel of the heatmap is the mean distance of the windows that
   contain it; the heatmap's maximum is the image score.

Before stage 1 (``align=True``) the rigid motion between the two images (a sub-pixel shift of up
to ``MAX_SHIFT`` pixels and a rotation of up to ``MAX_ROTATION`` degrees) is estimated from the row
and column profiles of a grid of blocks and split between them, so a product that sits a pixel
off or turned a little does not light up every edge; the heatmap is returned in the test image's
frame. For connector images, ``register=True`` first finds each product's pin lattice
(:mod:`qeu_space.views.registration`: shift, rotation and scale of any size a rig gives) and
compares both in the canonical frame; the heatmap is mapped back onto the test image and
``canonical_heatmap`` keeps it in the canonical frame, where pin cells are where the geometry
says (:func:`~qeu_space.soartc.positions.top_positions` reads it). There, three things keep one
threshold valid whatever camera took the test: the test is put into the reference's photometry
(:mod:`~qeu_space.soartc.photometric`: gain and offset fields and a tone curve learnt on the
housing), only the pin cells both cameras saw are scored (a bench, clutter or the housing's
outline is no defect), and the unit space
is learnt from the pin cells' windows (how much pins differ between two shots, not how little a
flat housing does).

Example:
    >>> import numpy as np
    >>> ref = np.full((40, 60), 0.2); ref[10:20, 10:20] = 0.9
    >>> test = ref * 1.3; test[10:20, 40:50] = 0.9 * 1.3
    >>> result = soartc(ref, test, window=8)
    >>> x, y = result.argmax
    >>> bool(38 <= x <= 52 and 8 <= y <= 22)
    True
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from types import ModuleType
from typing import Literal, NamedTuple

import numba
import numpy as np
from PIL import Image

from qeu_space.geometry import ConnectorGeometry
from qeu_space.soartc import _kernels, _reference
from qeu_space.soartc._kernels import BETA_FLOOR, EPS, LOG_BETA_FLOOR
from qeu_space.soartc.photometric import DEFAULT_NORMALISATION, NORMALISATIONS, normalise
from qeu_space.views.registration import Registration
from qeu_space.views.registration import register as find_connector
from qeu_space.vocabulary import ALL_POSITIONS

__all__ = [
    "BETA_FLOOR",
    "DEFAULT_DESCRIPTOR",
    "DESCRIPTORS",
    "EPS",
    "LOG_BETA_FLOOR",
    "MAX_ROTATION",
    "MAX_SHIFT",
    "METRIC_NAMES",
    "ImageLike",
    "Soart3",
    "SoartcResult",
    "UnitSpace",
    "soart3",
    "soart3_batch",
    "soartc",
    "soartc_many",
    "to_gray",
]

Descriptor = Literal["pixels", "selfsim"]
Backend = Literal["numba", "numpy"]
ImageLike = Image.Image | np.ndarray

DESCRIPTORS: tuple[str, ...] = ("pixels", "selfsim")
DEFAULT_DESCRIPTOR: Descriptor = "pixels"
"""Measured better than ``selfsim`` on the quality benchmark (``benchmarks/RESULTS_soartc.md``)."""
BACKENDS: dict[str, ModuleType] = {"numba": _kernels, "numpy": _reference}
MAX_SHIFT = 4
"""Largest global translation (pixels, per axis) that ``align=True`` looks for."""
MAX_ROTATION = 2.5
"""Largest rotation (degrees) that ``align=True`` looks for."""
_MIN_BLOCK = 48  # images shorter than two such blocks get a shift only
_NEGLIGIBLE_PX = 0.02  # a rotation that moves no pixel further than this is left out
METRIC_NAMES: tuple[str, str, str] = ("log beta", "log(eta + 1)", "log(v + 1) - log(eta + 1)")
_LUMA = np.array([0.299, 0.587, 0.114])  # ITU-R 601, as PIL's "L" mode


class Soart3(NamedTuple):
    """The three SOART3 metrics of one (reference, signal) pair."""

    log_beta: float
    log_eta: float
    log_gamma: float


@dataclass(frozen=True)
class UnitSpace:
    """The normal variation the anomaly stage measures against.

    Attributes:
        location: centre of the three metrics, shape ``(3,)``.
        covariance: their robust covariance, shape ``(3, 3)``.
        n_references: good images the spread came from (0: the pair's own windows).
    """

    location: np.ndarray
    covariance: np.ndarray
    n_references: int = 0

    def __post_init__(self) -> None:
        if self.location.shape != (3,) or self.covariance.shape != (3, 3):
            raise ValueError(
                f"unit space needs location (3,) and covariance (3, 3), got "
                f"{self.location.shape} and {self.covariance.shape}"
            )
        _freeze(self.location, self.covariance)


@dataclass(frozen=True)
class SoartcResult:
    """What SOARTC found for one (reference, test) pair; arrays are read-only.

    Attributes:
        heatmap: float32, the test image's height x width; larger = more anomalous.
        image_score: the heatmap's maximum.
        metrics: the three SOART3 maps on the window grid, ``(3, gh, gw)`` (see ``METRIC_NAMES``).
        anomaly: Mahalanobis distance of each window to the unit space, ``(gh, gw)``.
        unit_space: the centre and covariance used.
        shift: ``(dy, dx)`` translation of the test against the reference that alignment
            removed, in pixels (``(0.0, 0.0)`` with ``align=False``).
        rotation: the rotation it removed, in degrees (counter-clockwise on screen).
        window, stride, descriptor, backend: the parameters used.
        canonical_heatmap: the heatmap in the canonical frame of the test product (the same
            array as ``heatmap`` without registration).
        registration: ``(reference, test)`` registrations, or ``None`` (``register=False``).
    """

    heatmap: np.ndarray
    image_score: float
    metrics: np.ndarray
    anomaly: np.ndarray
    unit_space: UnitSpace
    shift: tuple[float, float]
    rotation: float
    window: int
    stride: int
    descriptor: str
    backend: str
    canonical_heatmap: np.ndarray | None = None
    registration: tuple[Registration, Registration] | None = None

    def __post_init__(self) -> None:
        if self.canonical_heatmap is None:
            object.__setattr__(self, "canonical_heatmap", self.heatmap)
        _freeze(self.canonical_heatmap)
        if self.heatmap.ndim != 2 or self.heatmap.dtype != np.float32:
            raise ValueError(f"heatmap must be 2-D float32, got {self.heatmap.dtype} "
                             f"{self.heatmap.shape}")  # fmt: skip
        if self.metrics.shape != (3, *self.anomaly.shape):
            raise ValueError(
                f"metrics {self.metrics.shape} do not match the window grid {self.anomaly.shape}"
            )
        _freeze(self.heatmap, self.metrics, self.anomaly)

    @property
    def argmax(self) -> tuple[int, int]:
        """``(x, y)`` pixel of the heatmap's maximum."""
        y, x = np.unravel_index(int(np.argmax(self.heatmap)), self.heatmap.shape)
        return int(x), int(y)


def _freeze(*arrays: np.ndarray) -> None:
    for a in arrays:
        a.setflags(write=False)


# --------------------------------------------------------------------------- input conversion


def to_gray(image: ImageLike, name: str = "image") -> np.ndarray:
    """A PIL image or array as a C-contiguous float64 grayscale array.

    uint8 is scaled by 1/255 and uint16 by 1/65535; float is kept as it is. RGB becomes ITU-R 601
    luma (PIL's ``L``); an alpha channel is ignored. Raises ``ValueError``/``TypeError`` with a
    one-line reason for anything else (other dtypes, wrong ndim, NaN or inf, empty).
    """
    if isinstance(image, Image.Image):
        arr = _pil_array(image, name)
    elif isinstance(image, np.ndarray):
        arr = image
    else:
        raise TypeError(f"{name} must be a PIL image or a numpy array, got {type(image).__name__}")
    if arr.ndim == 3 and arr.shape[2] in (1, 2, 3, 4):
        arr = arr[..., 0] if arr.shape[2] <= 2 else arr[..., :3]
    elif arr.ndim != 2:
        raise ValueError(
            f"{name} has shape {arr.shape}: expected H x W or H x W x C with C = 1-4 "
            "(channels last)"
        )
    if arr.size == 0:
        raise ValueError(f"{name} is empty (shape {arr.shape})")
    if arr.dtype == np.uint8:
        gray = arr.astype(np.float64) / 255.0
    elif arr.dtype == np.uint16:
        gray = arr.astype(np.float64) / 65535.0
    elif np.issubdtype(arr.dtype, np.floating):
        gray = np.asarray(arr, dtype=np.float64)  # no copy for float64: kernels only read
        if not np.isfinite(gray).all():
            raise ValueError(f"{name} contains NaN or inf: replace them before comparing")
    else:
        raise TypeError(f"{name} has dtype {arr.dtype}: pass uint8, uint16 or float pixels")
    if gray.ndim == 3:
        gray = gray @ _LUMA
    return np.ascontiguousarray(gray)


def _pil_array(image: Image.Image, name: str) -> np.ndarray:
    mode = image.mode
    if mode in ("L", "F") or mode.startswith("I;16"):
        arr = np.asarray(image)
        return arr.astype(np.uint16) if mode.startswith("I;16") else arr
    if mode == "I":
        arr = np.asarray(image)
        if arr.size and (arr.min() < 0 or arr.max() > 65535):
            raise ValueError(f"{name} is a 32-bit integer image outside 0..65535: save it as "
                             "8- or 16-bit")  # fmt: skip
        return arr.astype(np.uint16)
    if mode == "LA":
        return np.asarray(image)[..., 0]
    return np.asarray(image.convert("RGB"))


# --------------------------------------------------------------------------- SOART3


def soart3(x: np.ndarray | Sequence[float], y: np.ndarray | Sequence[float]) -> Soart3:
    """SOART3 of reference vector ``x`` and signal vector ``y`` (the seeds' formula).

    Example:
        >>> soart3([1.0, 2.0, 3.0], [2.0, 4.0, 6.0]).log_beta  # y = 2x
        0.6931...
    """
    xv = _vector(x, "x")
    yv = _vector(y, "y")
    if xv.shape != yv.shape:
        raise ValueError(f"x and y must have the same length, got {xv.size} and {yv.size}")
    out = _kernels.soart3_rows(xv[None, :], yv[None, :])[0]
    return Soart3(float(out[0]), float(out[1]), float(out[2]))


def soart3_batch(x: np.ndarray, y: np.ndarray, *, backend: Backend = "numba") -> np.ndarray:
    """SOART3 of each row pair of ``x`` and ``y`` (both ``(n, d)``): ``(n, 3)`` float64."""
    ops = _backend(backend)
    xa = _matrix(x, "x")
    ya = _matrix(y, "y")
    if xa.shape != ya.shape:
        raise ValueError(f"x and y must have the same shape, got {xa.shape} and {ya.shape}")
    return ops.soart3_rows(xa, ya)


def _vector(v: np.ndarray | Sequence[float], name: str) -> np.ndarray:
    a = np.asarray(v, dtype=np.float64)
    if a.ndim != 1 or a.size == 0:
        raise ValueError(f"{name} must be a non-empty 1-D vector, got shape {a.shape}")
    if not np.isfinite(a).all():
        raise ValueError(f"{name} contains NaN or inf")
    return np.ascontiguousarray(a)


def _matrix(v: np.ndarray, name: str) -> np.ndarray:
    a = np.asarray(v, dtype=np.float64)
    if a.ndim != 2 or 0 in a.shape:
        raise ValueError(f"{name} must be a non-empty (n, d) array, got shape {a.shape}")
    if not np.isfinite(a).all():
        raise ValueError(f"{name} contains NaN or inf")
    return np.ascontiguousarray(a)


def _backend(backend: str) -> ModuleType:
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {tuple(BACKENDS)}, got {backend!r}")
    return BACKENDS[backend]


# --------------------------------------------------------------------------- SOARTC


def soartc(
    reference: ImageLike,
    test: ImageLike,
    *,
    window: int = 8,
    stride: int = 1,
    references: Sequence[ImageLike] | None = None,
    descriptor: Descriptor = DEFAULT_DESCRIPTOR,
    align: bool = True,
    backend: Backend = "numba",
    register: bool = False,
    normalisation: str | None = None,
    region: np.ndarray | None = None,
    registrations: Sequence[Registration] | None = None,
    unit_region: np.ndarray | None = None,
) -> SoartcResult:
    """SOARTC heatmap of ``test`` against the good ``reference`` (see the module docstring).

    Args:
        reference: the good product (PIL image or array; uint8, uint16 or float; gray/RGB/RGBA).
        test: the product under inspection, the same size as ``reference``.
        window: side of the sliding window, in pixels (at least 2).
        stride: step of the window, in pixels (at least 1).
        references: other good images of the same size; when given, the unit space is their
            variation around ``reference`` instead of the bulk of this pair.
        descriptor: ``"pixels"`` or ``"selfsim"``.
        align: remove a global shift (up to ``MAX_SHIFT`` px) and rotation (up to
            ``MAX_ROTATION`` degrees) first.
        backend: ``"numba"`` (parallel kernels) or ``"numpy"`` (the plain twin, same numbers).
        register: the images are connectors: put each (and each of ``references``) into the
            canonical frame first (any shift, rotation and scale a rig gives; raises
            ``NoConnectorError`` where none is found).
        normalisation: how the test (and each of ``references``) is put into the reference's
            photometry first (:mod:`qeu_space.soartc.photometric`). ``None``: ``"joint"``
            (gain and offset fields and a tone curve, learnt on the housing) with ``register``,
            ``"none"`` without (whole images of unknown content: nothing tells product from
            bench, and a field fitted to both bends at the corners).
        region: ``H x W`` booleans, the pixels of the product (without registration; with it,
            the pin cells both cameras saw): a window reaching outside scores 0 and is
            left out of the unit space, so a textured bench or a cut-off edge is no defect.
        registrations: with ``register``, the registrations already found for the reference,
            the test and each of ``references`` (in that order; anything with the
            :class:`~qeu_space.views.registration.Registration` ``matrix``, ``geometry``,
            ``warp`` and ``seen``): an inspection that registered its panels once hands them
            over instead of SOARTC registering again.
        unit_region: ``H x W`` booleans: only windows wholly inside it (and ``region``) teach
            the unit space (``None``: every scored window). With ``register``, the pin cells.
    """
    if normalisation is None:
        normalisation = DEFAULT_NORMALISATION if register else "none"
    if normalisation not in NORMALISATIONS:
        raise ValueError(f"normalisation must be one of {NORMALISATIONS}, got {normalisation!r}")
    if registrations is not None and not register:
        raise ValueError("registrations are used with register=True only")
    if register:
        return _registered(reference, test, references, window=window, stride=stride,
                           descriptor=descriptor, align=align, backend=backend,
                           normalisation=normalisation, registrations=registrations)  # fmt: skip
    ops = _backend(backend)
    if descriptor not in DESCRIPTORS:
        raise ValueError(f"descriptor must be one of {DESCRIPTORS}, got {descriptor!r}")
    for name, value, low in (("window", window, 2), ("stride", stride, 1)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
            raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
    w, s = int(window), int(stride)
    ref = to_gray(reference, "reference")
    tst = to_gray(test, "test")
    if tst.shape != ref.shape:
        raise ValueError(
            f"reference is {ref.shape[1]} x {ref.shape[0]} but test is {tst.shape[1]} x "
            f"{tst.shape[0]}: compare images of the same size"
        )
    h, wd = ref.shape
    if h < w or wd < w:
        raise ValueError(
            f"images are {wd} x {h} pixels, smaller than the {w} x {w} window: "
            "use a smaller window or larger images"
        )
    goods = []
    for i, good in enumerate(references or ()):
        g = to_gray(good, f"references[{i}]")
        if g.shape != ref.shape:
            raise ValueError(
                f"references[{i}] is {g.shape[1]} x {g.shape[0]}, reference is {wd} x {h}: "
                "every good image must have the reference's size"
            )
        goods.append(g)
    if normalisation != "none":
        tst = normalise(ref, tst, normalisation)
        goods = [normalise(ref, g, normalisation) for g in goods]

    metrics, motion = _pair_metrics(ops, ref, tst, w, s, descriptor, align)
    inside = None if region is None else _windows_inside(region, ref.shape, w, s, metrics.shape)
    teach = inside
    if unit_region is not None:
        mine = _windows_inside(unit_region, ref.shape, w, s, metrics.shape)
        mine = mine if inside is None else mine & inside
        teach = mine if mine.sum() >= _MIN_UNIT_WINDOWS else inside
    if goods:
        good_metrics = [_pair_metrics(ops, ref, g, w, s, descriptor, align)[0] for g in goods]
        unit = _unit_from_references(ops, metrics, good_metrics, teach)
        centred = metrics - np.mean(good_metrics, axis=0)
    else:
        samples = metrics.reshape(3, -1) if teach is None else metrics[:, teach]
        loc, cov = ops.robust_unit_space(np.ascontiguousarray(samples))
        unit = UnitSpace(loc, cov)
        centred = metrics
    anomaly = ops.mahalanobis_grid(
        np.ascontiguousarray(centred), unit.location, np.linalg.inv(unit.covariance)
    )
    if inside is not None:
        anomaly[~inside] = 0.0
    heat = ops.cover_mean(anomaly, h, wd, w, s)
    if motion != (0.0, 0.0, 0.0):  # from the halfway frame back to the test image's frame
        heat = ops.warp_image(heat, motion[0] / 2, motion[1] / 2, motion[2] / 2)
    heatmap = heat.astype(np.float32)
    return SoartcResult(
        heatmap=heatmap,
        image_score=float(heatmap.max()),
        metrics=metrics,
        anomaly=anomaly,
        unit_space=unit,
        shift=(motion[0], motion[1]),
        rotation=math.degrees(motion[2]),
        window=w,
        stride=s,
        descriptor=descriptor,
        backend=backend,
    )


def _registered(
    reference: ImageLike,
    test: ImageLike,
    references: Sequence[ImageLike] | None,
    normalisation: str,
    registrations: Sequence[Registration] | None,
    **kwargs,
) -> SoartcResult:
    """:func:`soartc` of the canonical views of connector images, heatmap mapped back."""
    size = _as_pil(reference, "reference").size
    for name, image in (("test", test), *((f"references[{i}]", g) for i, g in enumerate(
        references or ()
    ))):  # fmt: skip
        other = _as_pil(image, name).size
        if other != size:
            raise ValueError(
                f"reference is {size[0]} x {size[1]} but {name} is {other[0]} x {other[1]}: "
                "compare images of the same size"
            )
    images = [("reference", reference), ("test", test)]
    images += [(f"references[{i}]", g) for i, g in enumerate(references or ())]
    if registrations is not None and len(registrations) != len(images):
        raise ValueError(
            f"registrations has {len(registrations)} entries for {len(images)} images: give one "
            "per image (reference, test, then each of references)"
        )
    views, seen, regs, names = [], [], [], []
    for k, (name, image) in enumerate(images):
        names.append(name)
        pil = _as_pil(image, name)
        reg = find_connector(pil) if registrations is None else registrations[k]
        regs.append(reg)
        views.append(np.asarray(reg.warp(pil)).copy())
        seen.append(reg.seen(pil.size))
    # What a camera did not see (a product partly out of its view) is no change: each image
    # takes the reference's pixels there, and the reference the test's where it saw less.
    for i in range(1, len(views)):
        views[i][~seen[i]] = views[0][~seen[i]]
    for i in range(1, len(views)):
        views[0][~seen[0]] = views[i][~seen[0]]
    # The product is the housing both cameras saw: the bench around it and what a camera did not
    # see (lit there only by a lighting step) are no change, and teach the normalisation nothing.
    both = np.logical_and.reduce(seen)
    housing = _housing_mask(regs[0].geometry) & both
    # Matched in luma, as compared: per colour channel measured no better (a cast moves gold pins
    # and grey plastic differently, but the fit's tone terms follow it) at three times the cost.
    scaled = [to_gray(v, name) for v, name in zip(views, names, strict=True)]
    for i in range(1, len(views)):
        scaled[i] = normalise(scaled[0], scaled[i], normalisation, housing)
    # Scored: the pin cells (the defects are pins); the housing's outline, a latch or a notch
    # against a vignetted bench is no defect either.
    region = housing & _box_mask(regs[0].geometry, regs[0].geometry.grid_box())
    # The normal variation is learnt from the pin cells' windows: a flat (or saturated) housing
    # varies far less than pins do between two shots (a specular highlight that moves with the
    # camera), and a spread learnt from it turns every pin into an anomaly; one defective pin
    # is one cell of 27, which the robust estimate leaves out.
    unit_region = _pin_mask(regs[0].geometry)
    result = soartc(scaled[0], scaled[1], references=scaled[2:] or None, normalisation="none",
                    region=region, unit_region=unit_region, **kwargs)  # fmt: skip
    canonical = result.heatmap
    inverse = np.asarray(regs[1].matrix, np.float64)
    inverse = np.linalg.inv(inverse / inverse[2, 2])  # image pixel -> canonical point
    inverse = inverse / inverse[2, 2]
    back = Image.fromarray(canonical, mode="F").transform(
        size, Image.PERSPECTIVE, tuple(inverse.ravel()[:8]), resample=Image.BILINEAR,
        fillcolor=0.0,
    )  # fmt: skip
    heatmap = np.asarray(back, np.float32).copy()
    return dataclasses.replace(
        result,
        heatmap=heatmap,
        image_score=float(canonical.max()),
        canonical_heatmap=canonical,
        registration=(regs[0], regs[1]),
    )


_MIN_UNIT_WINDOWS = 64  # fewer than this (a product mostly out of view): the whole region teaches


def _pin_mask(geometry: ConnectorGeometry) -> np.ndarray:
    """Canonical pixels of the pin cells: a square of 0.9 pitch around each pin centre."""
    mask = np.zeros((geometry.height, geometry.width), bool)
    half = 0.45 * min(geometry.pitch)
    for position in ALL_POSITIONS:
        x, y = geometry.pin_center(position)
        mask[
            max(round(y - half), 0) : round(y + half), max(round(x - half), 0) : round(x + half)
        ] = True
    return mask


def _housing_mask(geometry: ConnectorGeometry) -> np.ndarray:
    """Canonical pixels inside the housing, one pixel in from its outline."""
    return _box_mask(geometry, geometry.housing_box, inset=1)


def _box_mask(geometry: ConnectorGeometry, box: tuple[float, ...], inset: int = 0) -> np.ndarray:
    """Canonical pixels inside ``box`` (x1, y1, x2, y2), ``inset`` pixels in from its edges."""
    x1, y1, x2, y2 = box
    mask = np.zeros((geometry.height, geometry.width), bool)
    top, left = max(math.floor(y1) + inset, 0), max(math.floor(x1) + inset, 0)
    mask[top : math.ceil(y2) - inset, left : math.ceil(x2) - inset] = True
    return mask


def _windows_inside(
    region: np.ndarray, shape: tuple[int, int], w: int, s: int, grid: tuple[int, ...]
) -> np.ndarray:
    """``(gh, gw)`` booleans: the windows that lie wholly inside ``region``."""
    region = np.asarray(region, bool)
    if region.shape != shape:
        raise ValueError(f"region is {region.shape}, images are {shape}: give one mask pixel per "
                         "image pixel")  # fmt: skip
    outside = np.pad(np.cumsum(np.cumsum(~region, 0), 1), ((1, 0), (1, 0)))
    gh, gw = grid[-2:]
    ys = np.arange(gh) * s
    xs = np.arange(gw) * s
    count = (outside[ys[:, None] + w, xs + w] - outside[ys[:, None], xs + w]
             - outside[ys[:, None] + w, xs] + outside[ys[:, None], xs])  # fmt: skip
    inside = count == 0
    if not inside.any():
        raise ValueError(f"no {w} x {w} window fits inside the region: give a larger region")
    return inside


def _as_pil(image: ImageLike, name: str) -> Image.Image:
    if isinstance(image, Image.Image):
        return image.convert("RGB")
    arr = np.asarray(image)
    if arr.dtype != np.uint8:
        gray = to_gray(arr, name)
        arr = np.clip(np.rint(gray * 255), 0, 255).astype(np.uint8)
    if arr.ndim == 3 and arr.shape[2] == 4:
        arr = arr[..., :3]
    return Image.fromarray(arr).convert("RGB")


def soartc_many(
    pairs: Iterable[tuple[ImageLike, ImageLike]],
    *,
    workers: int | None = None,
    progress: bool = False,
    **kwargs,
) -> list[SoartcResult]:
    """:func:`soartc` of many ``(reference, test)`` pairs, in order, one pair per core at a time.

    Each of ``workers`` threads (default: the cores this process may use) runs the kernels on one
    numba thread; the kernels release the GIL, so the cores work on different pairs at once. On a
    busy machine this beats one parallel call per pair, whose threads meet after every stage.
    ``progress`` shows a bar (pairs done of all, with an ETA) on stderr. ``kwargs`` go to
    :func:`soartc`.
    """
    items = list(pairs)
    n = _cores() if workers is None else workers
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"workers must be a positive integer, got {workers!r}")

    def bar(results: Iterable[SoartcResult]) -> list[SoartcResult]:
        if not progress:
            return list(results)
        from tqdm.auto import tqdm

        return list(tqdm(results, total=len(items), desc="SOARTC", unit="pair"))

    if n == 1 or len(items) < 2:
        return bar(soartc(ref, test, **kwargs) for ref, test in items)

    def one(pair: tuple[ImageLike, ImageLike]) -> SoartcResult:
        numba.set_num_threads(1)  # per thread: this worker's kernels run on its own core
        return soartc(pair[0], pair[1], **kwargs)

    with ThreadPoolExecutor(min(n, len(items))) as pool:
        return bar(pool.map(one, items))


def _cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def _pair_metrics(
    ops: ModuleType,
    ref: np.ndarray,
    test: np.ndarray,
    w: int,
    s: int,
    descriptor: str,
    align: bool,
) -> tuple[np.ndarray, tuple[float, float, float]]:
    """Stage 1 for one pair, after splitting their motion ``(dy, dx, theta)`` between them."""
    motion = (0.0, 0.0, 0.0)
    if align:
        dy, dx, theta = _estimate_motion(ops, ref, test)
        if max(abs(dy), abs(dx)) >= 1e-3 or theta != 0.0:
            motion = (dy, dx, theta)
            ref = ops.warp_image(ref, dy / 2, dx / 2, theta / 2)
            test = ops.warp_image(test, -dy / 2, -dx / 2, -theta / 2)
    if descriptor == "pixels":
        return ops.pixel_metrics(ref, test, w, s), motion
    x = ops.selfsim_descriptors(ref, w, s)
    y = ops.selfsim_descriptors(test, w, s)
    return ops.descriptor_metrics(x, y), motion


def _estimate_motion(ops: ModuleType, ref: np.ndarray, test: np.ndarray) -> tuple[float, ...]:
    """Rigid motion ``(dy, dx, theta)`` of ``test`` against ``ref`` from block shifts.

    Each block of a grid (about square blocks, 2 to 6 per side) gives a shift; a least-squares
    fit of ``dy = ty + theta * cx``, ``dx = tx - theta * cy`` over the block centres gives the
    shift and the small rotation (clamped to ``MAX_ROTATION``). Small images get a shift only.
    """
    h, wd = ref.shape
    short = min(h, wd)
    if short < 2 * _MIN_BLOCK:
        dy, dx = ops.block_shifts(ref, test, 1, 1, MAX_SHIFT)[0, 2:]
        return float(dy), float(dx), 0.0
    nby = min(max(round(2 * h / short), 2), 6)
    nbx = min(max(round(2 * wd / short), 2), 6)
    limit = math.radians(MAX_ROTATION)
    reach = math.ceil(math.tan(limit) * max(h, wd) / 2)
    blocks = ops.block_shifts(ref, test, nby, nbx, MAX_SHIFT + reach)
    cy, cx, dy, dx = blocks.T
    one, zero = np.ones_like(cy), np.zeros_like(cy)
    a = np.concatenate([np.stack([one, zero, cx], 1), np.stack([zero, one, -cy], 1)])
    (ty, tx, theta), *_ = np.linalg.lstsq(a, np.concatenate([dy, dx]), rcond=None)
    if abs(theta) * max(h, wd) / 2 < _NEGLIGIBLE_PX:
        theta = 0.0  # moves no pixel noticeably: a shift alone is cheaper to apply
    return float(ty), float(tx), float(np.clip(theta, -limit, limit))


def _unit_from_references(
    ops: ModuleType,
    metrics: np.ndarray,
    good_metrics: list[np.ndarray],
    inside: np.ndarray | None = None,
) -> UnitSpace:
    """Unit space from good images: centre from the test's deviations, spread from the goods'.

    Each window's metrics are taken relative to the good images' mean at that window. The centre
    is the robust centre of the test's deviations (its global gain and noise level are not
    anomalies); with two or more good images the covariance is the pooled robust covariance of
    their own deviations, scaled by ``(k + 1) / (k - 1)`` for the mean they were taken from and
    the test's deviation from it; with one, it is estimated from the test's deviations.
    """
    k = len(good_metrics)
    pattern = np.mean(good_metrics, axis=0)

    def flat(a: np.ndarray) -> np.ndarray:
        return a.reshape(3, -1) if inside is None else a[:, inside]

    loc, cov = ops.robust_unit_space(np.ascontiguousarray(flat(metrics - pattern)))
    if k >= 2:
        devs = []
        for g in good_metrics:
            d = flat(g - pattern)
            devs.append(d - np.median(d, axis=1, keepdims=True))
        _, pooled = ops.robust_unit_space(np.ascontiguousarray(np.concatenate(devs, axis=1)))
        cov = pooled * ((k + 1) / (k - 1))
    return UnitSpace(loc, cov, n_references=k)
