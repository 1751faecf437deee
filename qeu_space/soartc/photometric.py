"""Photometric normalisation: the test image put into the reference's exposure before SOARTC.

SOART3's ``beta`` absorbs one gain per window, but not an offset, a gamma, a white-balance cast
(which moves gold pins and grey plastic differently) or a lighting gradient across a window. Two
shots of one good product differ by exactly those, so they are undone before the windows are
compared. The images are registered, so pixel pairs say how the test's tones map onto the
reference's:

``"joint"`` (the default)
    one robust fit of ``reference ~ a(x, y) test + b(x, y) + c2 test^2 + c3 test^3``: a smooth
    gain ``a`` and offset ``b`` (second-degree surfaces: vignetting, a lighting gradient, an
    exposure) and a global tone curve (a gamma), by Huber-weighted least squares on a regular
    subsample of the housing; a defective pin's pixels get small weights, and a pin is too
    small to bend a second-degree surface. One numba pass applies it.
``"field"``
    the same without the tone terms.
``"histogram"``
    a monotone curve matching the test's quantiles to the reference's (histogram matching at
    48 quantiles): a gamma, but not a gradient, which it turns into a wrong curve.
``"none"``
    the images as they are (the seeds' way).

Which works was measured (good-pair and defective-pair scores per imaging condition, and the
cost): ``benchmarks/RESULTS_soartc.md``, section *Photometric normalisation*.

Example:
    >>> ref = np.linspace(0.1, 0.9, 4000).reshape(40, 100)
    >>> test = 0.8 * ref ** 1.6 + 0.05                     # another exposure and gamma
    >>> bool(np.abs(normalise(ref, test) - ref).max() < 0.02)
    True
"""

from __future__ import annotations

from typing import Literal

import numpy as np
from numba import njit

__all__ = ["NORMALISATIONS", "DEFAULT_NORMALISATION", "Normalisation", "normalise"]

Normalisation = Literal["none", "histogram", "field", "joint"]
NORMALISATIONS: tuple[str, ...] = ("none", "histogram", "field", "joint")
DEFAULT_NORMALISATION: Normalisation = "joint"
_FIELD_STEP = 4  # subsample of the field fit (pixels per step along each axis)
_HUBER = 1.345  # Huber's tuning constant, in robust standard deviations
_FIELD_ITERATIONS = 4
_QUANTILES = np.linspace(0.5, 99.5, 48)


def normalise(
    reference: np.ndarray,
    test: np.ndarray,
    method: str = DEFAULT_NORMALISATION,
    mask: np.ndarray | None = None,
) -> np.ndarray:
    """``test`` with the reference's photometry (same shape and dtype kind as float64).

    Args:
        reference, test: ``H x W`` or ``H x W x C`` float arrays of the same shape (any scale).
        method: one of :data:`NORMALISATIONS`.
        mask: ``H x W`` booleans, the pixels to learn the mapping from (both saw the product);
            the mapping is applied everywhere. ``None``: every pixel.
    """
    if method not in NORMALISATIONS:
        raise ValueError(f"normalisation must be one of {NORMALISATIONS}, got {method!r}")
    ref = np.asarray(reference, np.float64)
    tst = np.asarray(test, np.float64)
    if ref.shape != tst.shape or ref.ndim not in (2, 3):
        raise ValueError(f"reference {ref.shape} and test {tst.shape} must be equal H x W (x C)")
    if method == "none" or np.array_equal(ref, tst):
        return tst  # nothing to match: no round-off either
    if mask is None:
        mask = np.ones(ref.shape[:2], bool)
    elif mask.shape != ref.shape[:2]:
        raise ValueError(f"mask is {mask.shape}, images are {ref.shape[:2]}")
    if mask.sum() < 64:
        return tst  # too little was seen by both to learn anything from
    planes = [tst] if tst.ndim == 2 else [tst[..., c] for c in range(tst.shape[2])]
    refs = [ref] if ref.ndim == 2 else [ref[..., c] for c in range(ref.shape[2])]
    step = _STEPS[method]
    out = [step(r, t, mask) for r, t in zip(refs, planes, strict=True)]
    return out[0] if tst.ndim == 2 else np.stack(out, axis=-1)


def _match_histogram(ref: np.ndarray, test: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """``test`` through the monotone curve that maps its masked quantiles onto ``ref``'s.

    Matched at 48 quantiles and interpolated between them: a smooth curve, where matching every
    grey level would turn the steps of 8-bit levels in a dark socket into noise.
    """
    xs = np.percentile(test[mask], _QUANTILES)
    ys = np.percentile(ref[mask], _QUANTILES)
    return _apply_curve(test, xs, ys)


def _apply_curve(test: np.ndarray, xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
    """Piecewise-linear ``xs -> ys``, continued linearly past both ends (no clipping)."""
    xs, keep = np.unique(xs, return_index=True)
    ys = ys[keep]
    if xs.size < 2:
        return test + float(ys[0] - xs[0])
    out = np.interp(test, xs, ys)
    lo, hi = test < xs[0], test > xs[-1]
    out[lo] = ys[0] + (test[lo] - xs[0]) * (ys[1] - ys[0]) / (xs[1] - xs[0])
    out[hi] = ys[-1] + (test[hi] - xs[-1]) * (ys[-1] - ys[-2]) / (xs[-1] - xs[-2])
    return out


def _basis(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """``(n, 6)``: the monomials of a second-degree surface at points ``u, v`` (each in -1..1)."""
    return np.stack([np.ones_like(u), u, v, u * u, u * v, v * v], axis=1)


@njit(cache=True, nogil=True)
def _apply_field(test, coef):  # pragma: no cover - compiled
    """``a(x, y) test + b(x, y) + (c2 + c3 test) test^2`` per pixel, in one pass (numba).

    ``coef`` holds the six monomials of ``a``, the six of ``b`` (see :func:`_basis`), then
    ``c2, c3``; pixel ``(i, j)`` sits at ``u = 2 j / (W - 1) - 1``, ``v = 2 i / (H - 1) - 1``.
    """
    h, w = test.shape
    out = np.empty((h, w))
    du = 2.0 / max(w - 1, 1)
    dv = 2.0 / max(h - 1, 1)
    for i in range(h):
        v = i * dv - 1.0
        ga = coef[0] + coef[2] * v + coef[5] * v * v
        gb = coef[6] + coef[8] * v + coef[11] * v * v
        ha = coef[1] + coef[4] * v
        hb = coef[7] + coef[10] * v
        for j in range(w):
            u = j * du - 1.0
            t = test[i, j]
            a = ga + (ha + coef[3] * u) * u
            b = gb + (hb + coef[9] * u) * u
            out[i, j] = a * t + b + (coef[12] + coef[13] * t) * t * t
    return out


def _joint(ref: np.ndarray, test: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """``a(x, y) test + b(x, y) + c2 test^2 + c3 test^3``: field and tone curve in one fit."""
    return _gain_offset_field(ref, test, mask, tone=True)


def _gain_offset_field(
    ref: np.ndarray, test: np.ndarray, mask: np.ndarray, tone: bool = False
) -> np.ndarray:
    """``a(x, y) test + b(x, y)`` closest to ``ref`` (second-degree a and b, Huber weights).

    With ``tone``, a global ``c2 test^2 + c3 test^3`` joins the same fit (a gamma, which the
    spatial gain cannot follow). Fitted on a regular subsample of ``mask`` by iteratively
    reweighted least squares: a defective pin's pixels get small weights.
    """
    h, w = ref.shape
    k = _FIELD_STEP
    sub = mask[k // 2 :: k, k // 2 :: k]
    ys, xs = np.nonzero(sub)
    if ys.size < 24:
        return test
    ys, xs = ys * k + k // 2, xs * k + k // 2
    u = xs / max(w - 1, 1) * 2 - 1
    v = ys / max(h - 1, 1) * 2 - 1
    basis = _basis(u, v)
    t = test[ys, xs]
    cols = [basis * t[:, None], basis]
    if tone:
        cols.append(np.stack([t * t, t * t * t], axis=1))
    a = np.concatenate(cols, axis=1)
    b = ref[ys, xs]
    weight = np.ones_like(b)
    ridge = 1e-9 * np.eye(a.shape[1])
    for _ in range(_FIELD_ITERATIONS):
        aw = a * weight[:, None]
        coef = np.linalg.solve(aw.T @ a + ridge, aw.T @ b)
        resid = b - a @ coef
        scale = 1.4826 * np.median(np.abs(resid - np.median(resid))) + 1e-9
        r = np.abs(resid) / (_HUBER * scale)
        weight = np.minimum(1.0, 1.0 / np.maximum(r, 1e-12))
    full = np.zeros(14)
    full[: coef.size] = coef
    return _apply_field(np.ascontiguousarray(test), full)


_STEPS = {"histogram": _match_histogram, "field": _gain_offset_field, "joint": _joint}
