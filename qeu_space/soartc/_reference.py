"""Plain-numpy twin of :mod:`._kernels`: the same numbers, written for reading, not for speed.

``soartc(..., backend="numpy")`` runs these, and the tests check that the numba kernels agree with
them to a tight tolerance. Names and signatures match the kernels one for one.
"""

from __future__ import annotations

import math

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view
from scipy import ndimage

from qeu_space.soartc._kernels import (
    BETA_FLOOR,
    C_STEPS,
    CHI2_975_3,
    EPS,
    LOG_BETA_FLOOR,
    MAD_TO_SD,
    MAX_SAMPLES,
    SCALE_FLOOR,
    SHIFT_ITERATIONS,
    TRIM_CONSISTENCY,
)


def soart3_rows(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """SOART3 of each row pair: ``(n, d), (n, d) -> (n, 3)``."""
    xx = np.einsum("ij,ij->i", x, x)
    xy = np.einsum("ij,ij->i", x, y)
    beta = (xy + EPS) / (xx + EPS)
    resid = np.abs(y - beta[:, None] * x)
    log_eta = np.log(resid.sum(axis=1) + 1.0)
    log_beta = np.full_like(beta, LOG_BETA_FLOOR)
    ok = beta > BETA_FLOOR
    log_beta[ok] = np.log(beta[ok])
    return np.stack([log_beta, log_eta, np.log(resid.max(axis=1) + 1.0) - log_eta], axis=1)


def _windows(img: np.ndarray, w: int, s: int) -> np.ndarray:
    """Every ``w x w`` window of ``img`` at stride ``s``: a ``(gh, gw, w, w)`` view."""
    return sliding_window_view(img, (w, w))[::s, ::s]


def pixel_metrics(ref: np.ndarray, test: np.ndarray, w: int, s: int) -> np.ndarray:
    """SOART3 of every window pair, descriptor = the window's pixels: ``(3, gh, gw)``."""
    wr, wt = _windows(ref, w, s), _windows(test, w, s)
    gh, gw = wr.shape[:2]
    m = soart3_rows(wr.reshape(gh * gw, w * w), wt.reshape(gh * gw, w * w))
    return np.ascontiguousarray(m.T.reshape(3, gh, gw))


def selfsim_descriptors(img: np.ndarray, w: int, s: int) -> np.ndarray:
    """Upper triangle of the windowed Gram matrix of four 3 x 3 responses: ``(10, gh, gw)``."""
    p = np.pad(img, 1, mode="edge")
    c = p[1:-1, 1:-1]
    resp = [
        c,
        0.5 * (p[1:-1, 2:] - p[1:-1, :-2]),
        0.5 * (p[2:, 1:-1] - p[:-2, 1:-1]),
        p[1:-1, :-2] + p[1:-1, 2:] + p[:-2, 1:-1] + p[2:, 1:-1] - 4.0 * c,
    ]
    products = [resp[i] * resp[j] for i in range(4) for j in range(i, 4)]
    return np.stack([_windows(q, w, s).sum(axis=(-2, -1)) for q in products])


def descriptor_metrics(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """SOART3 of descriptor pairs laid out ``(d, gh, gw)``: ``(3, gh, gw)``."""
    d, gh, gw = x.shape
    m = soart3_rows(x.reshape(d, -1).T, y.reshape(d, -1).T)
    return np.ascontiguousarray(m.T.reshape(3, gh, gw))


def profile_shift(p: np.ndarray, q: np.ndarray, max_shift: int) -> float:
    """Sub-pixel ``d`` with ``q(x + d) ~ g * p(x) + c`` (see the kernel for the method)."""
    n = p.shape[0]
    best, d = 0.0, 0.0
    for idx in range(2 * max_shift + 1):
        k = (idx + 1) // 2 if idx % 2 else -(idx // 2)
        lo, hi = max(0, -k), min(n, n - k)
        if hi - lo < 3:
            continue
        a = p[lo:hi] - p[lo:hi].mean()
        b = q[lo + k : hi + k] - q[lo + k : hi + k].mean()
        cpp, cqq = float(a @ a), float(b @ b)
        r = float(a @ b) / math.sqrt(cpp * cqq) if cpp > 0 and cqq > 0 else 0.0
        if r > best:
            best, d = r, float(k)
    limit = max_shift + 1.0
    xs = np.arange(n, dtype=np.float64)
    for _ in range(SHIFT_ITERATIONS):
        lo = max(0, math.ceil(-d) + 1)
        hi = min(n, math.floor(n - 1 - d) - 1)
        if hi - lo < 3:
            break
        m = hi - lo
        t = xs[lo:hi] + d
        pi = p[lo:hi]
        qi = np.interp(t, xs, q)
        sp, sq, spp, spq = pi.sum(), qi.sum(), float(pi @ pi), float(pi @ qi)
        den = m * spp - sp * sp
        if den <= 1e-12 * m * spp:
            break
        g = (m * spq - sp * sq) / den
        c = (sq - g * sp) / m
        e = qi - g * pi - c
        dq = 0.5 * (np.interp(t + 1.0, xs, q) - np.interp(t - 1.0, xs, q))
        gg = float(dq @ dq)
        if gg <= 1e-12 * m:
            break
        step = -float(e @ dq) / gg
        d = min(max(d + step, -limit), limit)
        if abs(step) < 1e-4:
            break
    return d


def block_shifts(
    ref: np.ndarray, test: np.ndarray, nby: int, nbx: int, max_shift: int
) -> np.ndarray:
    """Translation of ``test`` against ``ref`` in each block: rows ``(cy, cx, dy, dx)``."""
    h, wd = ref.shape
    rows = []
    for by in range(nby):
        y0, y1 = by * h // nby, (by + 1) * h // nby
        for bx in range(nbx):
            x0, x1 = bx * wd // nbx, (bx + 1) * wd // nbx
            r, t = ref[y0:y1, x0:x1], test[y0:y1, x0:x1]
            rows.append(
                (
                    (y0 + y1 - 1) / 2.0 - (h - 1) / 2.0,
                    (x0 + x1 - 1) / 2.0 - (wd - 1) / 2.0,
                    profile_shift(r.mean(axis=1), t.mean(axis=1), max_shift),
                    profile_shift(r.mean(axis=0), t.mean(axis=0), max_shift),
                )
            )
    return np.array(rows)


def warp_image(img: np.ndarray, dy: float, dx: float, theta: float) -> np.ndarray:
    """Rotate ``img``'s content by ``theta`` about the centre, then shift by ``(dy, dx)``."""
    c = (np.array(img.shape, dtype=np.float64) - 1.0) / 2.0
    co, si = math.cos(theta), math.sin(theta)
    inverse = np.array([[co, -si], [si, co]])  # M^T
    offset = c - inverse @ (c + np.array([dy, dx]))
    return ndimage.affine_transform(img, inverse, offset=offset, order=1, mode="nearest")


def robust_unit_space(samples: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Robust centre and covariance of metric vectors laid out ``(3, n)`` (see the kernel)."""
    n = samples.shape[1]
    sub = samples[:, :: max(1, -(-n // MAX_SAMPLES))].T
    loc = np.median(sub, axis=0)
    sd = np.maximum(np.median(np.abs(sub - loc), axis=0) * MAD_TO_SD, SCALE_FLOOR)
    cov = np.diag(sd**2)
    for _ in range(C_STEPS):
        diff = sub - loc
        keep = np.einsum("ni,ij,nj->n", diff, np.linalg.inv(cov), diff) <= CHI2_975_3
        if keep.sum() < 4:
            break
        kept = sub[keep]
        loc = kept.mean(axis=0)
        centred = kept - loc
        cov = centred.T @ centred * (TRIM_CONSISTENCY / len(kept))
        cov += np.eye(3) * SCALE_FLOOR**2
    return loc, cov


def mahalanobis_grid(metrics: np.ndarray, loc: np.ndarray, precision: np.ndarray) -> np.ndarray:
    """Mahalanobis distance of each window's metrics to ``loc``: ``(gh, gw)``."""
    diff = metrics - loc[:, None, None]
    return np.sqrt(np.maximum(np.einsum("ihw,ij,jhw->hw", diff, precision, diff), 0.0))


def _cover_ranges(n: int, w: int, s: int, g: int) -> tuple[np.ndarray, np.ndarray]:
    p = np.arange(n)
    a, b = -(-(p - w + 1) // s), p // s
    lo, hi = np.minimum(a, b), np.maximum(a, b)
    return np.clip(lo, 0, g - 1), np.clip(hi, 0, g - 1)


def cover_mean(grid: np.ndarray, h: int, wd: int, w: int, s: int) -> np.ndarray:
    """Each pixel's mean over the windows that contain it: ``(gh, gw) -> (h, wd)``."""
    gh, gw = grid.shape
    acc = np.zeros((gh + 1, gw + 1))
    acc[1:, 1:] = np.cumsum(np.cumsum(grid, axis=1), axis=0)
    ylo, yhi = _cover_ranges(h, w, s, gh)
    xlo, xhi = _cover_ranges(wd, w, s, gw)
    band = acc[yhi + 1] - acc[ylo]
    total = band[:, xhi + 1] - band[:, xlo]
    return total * (1.0 / (yhi + 1 - ylo))[:, None] * (1.0 / (xhi + 1 - xlo))[None, :]
