"""Numba kernels of SOART3 and SOARTC: pure array functions, parallel over windows.

Every kernel here has a plain-numpy twin of the same name and signature in :mod:`._reference`;
the tests compare the two, and ``soartc(..., backend="numpy")`` runs the twin. Inputs are
validated and converted in :mod:`.core` (C-contiguous float64, sizes checked), so nothing here
checks its arguments.

Why the loops look the way they do: the innermost loop always runs over neighbouring windows (the
``gj`` axis), not over the pixels of one window, so it reads contiguous memory and LLVM vectorises
it; four window rows are folded into one pass to halve the loads and stores of the accumulators;
and ``cache=True`` keeps a new process from compiling again.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit, prange

EPS = 1e-4
"""The seeds' regulariser in ``beta = (x.y + EPS) / (x.x + EPS)``."""
BETA_FLOOR = 1e-6
"""``log beta`` is ``log(max(beta, BETA_FLOOR))``: about -13.8 for ``beta <= 0``, never an error."""
LOG_BETA_FLOOR = math.log(BETA_FLOOR)
N_SELFSIM = 10
"""Entries of the self-similarity descriptor: upper triangle of a 4 x 4 Gram matrix."""
MAX_SAMPLES = 2048
"""The unit space is estimated from a regular subsample of at most this many windows."""
SCALE_FLOOR = 1e-3
"""Smallest robust spread of a metric (log units): identical images give a flat map, not 0/0."""
CHI2_975_3 = 9.348403604496148
"""``scipy.stats.chi2.ppf(0.975, 3)``: windows beyond it are left out of the unit space."""
TRIM_CONSISTENCY = 1.078478718355326
"""``0.975 / chi2.cdf(CHI2_975_3, 5)``: rescales a covariance of trimmed normal data."""
MAD_TO_SD = 1.482602218505602
"""``1 / Phi^-1(3/4)``: median absolute deviation -> standard deviation for normal data."""
C_STEPS = 2
"""Reweighting steps of the robust unit-space estimate."""
SHIFT_ITERATIONS = 6
"""Gauss-Newton steps that refine the sub-pixel shift of a profile."""


@njit(cache=True, inline="always")
def _log_beta(beta):
    return math.log(beta) if beta > BETA_FLOOR else LOG_BETA_FLOOR


# --------------------------------------------------------------------------- SOART3


@njit(cache=True, parallel=True, nogil=True)
def soart3_rows(x, y):  # pragma: no cover - compiled
    """SOART3 of each row pair ``(x[i], y[i])``: ``(n, d), (n, d) -> (n, 3)``."""
    n, d = x.shape
    out = np.empty((n, 3))
    for i in prange(n):
        xx = 0.0
        xy = 0.0
        for k in range(d):
            xx += x[i, k] * x[i, k]
            xy += x[i, k] * y[i, k]
        beta = (xy + EPS) / (xx + EPS)
        eta = 0.0
        v = 0.0
        for k in range(d):
            r = abs(y[i, k] - beta * x[i, k])
            eta += r
            v = max(v, r)
        log_eta = math.log(eta + 1.0)
        out[i, 0] = _log_beta(beta)
        out[i, 1] = log_eta
        out[i, 2] = math.log(v + 1.0) - log_eta
    return out


@njit(cache=True, inline="always")
def _residual1(r0, t0, beta, eta, v, n):  # pragma: no cover - compiled
    for j in range(n):
        a0 = abs(t0[j] - beta[j] * r0[j])
        eta[j] += a0
        v[j] = max(v[j], a0)


@njit(cache=True, inline="always")
def _residual4(r0, r1, r2, r3, t0, t1, t2, t3, beta, eta, v, n):  # pragma: no cover - compiled
    for j in range(n):
        bt = beta[j]
        a0 = abs(t0[j] - bt * r0[j])
        a1 = abs(t1[j] - bt * r1[j])
        a2 = abs(t2[j] - bt * r2[j])
        a3 = abs(t3[j] - bt * r3[j])
        eta[j] += (a0 + a1) + (a2 + a3)
        v[j] = max(max(max(v[j], a0), max(a1, a2)), a3)


@njit(cache=True, inline="always")
def _pixel_row(ref, test, i0, w, s, gw, span, beta, eta, v):  # pragma: no cover - compiled
    """``beta``, ``eta`` and ``v`` of the windows of one grid row (slices contiguous if s == 1)."""
    wd = ref.shape[1]
    # x.x and x.y: column sums over the window's rows, then sums over its columns
    cxx = np.zeros(wd)
    cxy = np.zeros(wd)
    for a in range(w):
        rr = ref[i0 + a]
        tr = test[i0 + a]
        for x in range(wd):
            cxx[x] += rr[x] * rr[x]
            cxy[x] += rr[x] * tr[x]
    xx = np.zeros(gw)
    xy = np.zeros(gw)
    for b in range(w):
        if s == 1:
            sx = cxx[b : b + gw]
            sy = cxy[b : b + gw]
            for j in range(gw):
                xx[j] += sx[j]
                xy[j] += sy[j]
        else:
            for j in range(gw):
                xx[j] += cxx[j * s + b]
                xy[j] += cxy[j * s + b]
    for j in range(gw):
        beta[j] = (xy[j] + EPS) / (xx[j] + EPS)
    # eta = sum |y - beta x| and v = max |y - beta x|, four window rows per pass
    eta[:] = 0.0
    v[:] = 0.0
    a = 0
    while a + 4 <= w:
        r0, r1, r2, r3 = ref[i0 + a], ref[i0 + a + 1], ref[i0 + a + 2], ref[i0 + a + 3]
        t0, t1, t2, t3 = test[i0 + a], test[i0 + a + 1], test[i0 + a + 2], test[i0 + a + 3]
        for b in range(w):
            e = b + span
            if s == 1:
                _residual4(
                    r0[b:e], r1[b:e], r2[b:e], r3[b:e], t0[b:e], t1[b:e], t2[b:e], t3[b:e],
                    beta, eta, v, gw,
                )  # fmt: skip
            else:
                _residual4(
                    r0[b:e:s], r1[b:e:s], r2[b:e:s], r3[b:e:s],
                    t0[b:e:s], t1[b:e:s], t2[b:e:s], t3[b:e:s],
                    beta, eta, v, gw,
                )  # fmt: skip
        a += 4
    while a < w:
        for b in range(w):
            e = b + span
            if s == 1:
                _residual1(ref[i0 + a, b:e], test[i0 + a, b:e], beta, eta, v, gw)
            else:
                _residual1(ref[i0 + a, b:e:s], test[i0 + a, b:e:s], beta, eta, v, gw)
        a += 1


@njit(cache=True, parallel=True, nogil=True)
def pixel_metrics(ref, test, w, s):  # pragma: no cover - compiled
    """SOART3 of every ``w x w`` window pair at stride ``s``, descriptor = the window's pixels.

    Returns ``(3, gh, gw)``: ``log beta``, ``log(eta + 1)``, ``log(v + 1) - log(eta + 1)``.
    """
    h, wd = ref.shape
    gh = (h - w) // s + 1
    gw = (wd - w) // s + 1
    span = (gw - 1) * s + 1
    out = np.empty((3, gh, gw))
    for gi in prange(gh):
        beta = np.empty(gw)
        eta = np.empty(gw)
        v = np.empty(gw)
        _pixel_row(ref, test, gi * s, w, s, gw, span, beta, eta, v)
        for j in range(gw):
            log_eta = math.log(eta[j] + 1.0)
            out[0, gi, j] = _log_beta(beta[j])
            out[1, gi, j] = log_eta
            out[2, gi, j] = math.log(v[j] + 1.0) - log_eta
    return out


# --------------------------------------------------------------------------- self-similarity


@njit(cache=True, parallel=True, nogil=True)
def selfsim_descriptors(img, w, s):  # pragma: no cover - compiled
    """Self-similarity descriptor of every window: ``(10, gh, gw)``.

    Four 3 x 3 filter responses per pixel (intensity, d/dx, d/dy, Laplacian; edges replicated);
    a window's descriptor is the upper triangle of their Gram matrix summed over the window (how
    alike its responses are), which moves little when the content shifts inside the window.
    """
    h, wd = img.shape
    gh = (h - w) // s + 1
    gw = (wd - w) // s + 1
    span = (gw - 1) * s + 1
    prod = np.empty((N_SELFSIM, h, wd))
    for y in prange(h):
        ym = max(y - 1, 0)
        yp = min(y + 1, h - 1)
        for x in range(wd):
            xm = max(x - 1, 0)
            xp = min(x + 1, wd - 1)
            r0 = img[y, x]
            r1 = 0.5 * (img[y, xp] - img[y, xm])
            r2 = 0.5 * (img[yp, x] - img[ym, x])
            r3 = img[y, xm] + img[y, xp] + img[ym, x] + img[yp, x] - 4.0 * r0
            resp = (r0, r1, r2, r3)
            k = 0
            for i in range(4):
                for j in range(i, 4):
                    prod[k, y, x] = resp[i] * resp[j]
                    k += 1
    out = np.zeros((N_SELFSIM, gh, gw))
    for gi in prange(gh):
        i0 = gi * s
        col = np.empty(wd)
        for c in range(N_SELFSIM):
            col[:] = 0.0
            for a in range(w):
                pr = prod[c, i0 + a]
                for x in range(wd):
                    col[x] += pr[x]
            oc = out[c, gi]
            for b in range(w):
                sc = col[b : b + span : s]
                for j in range(gw):
                    oc[j] += sc[j]
    return out


@njit(cache=True, parallel=True, nogil=True)
def descriptor_metrics(x, y):  # pragma: no cover - compiled
    """SOART3 of descriptor pairs laid out ``(d, gh, gw)``: ``(3, gh, gw)``."""
    d, gh, gw = x.shape
    out = np.empty((3, gh, gw))
    for gi in prange(gh):
        xx = np.zeros(gw)
        xy = np.zeros(gw)
        for k in range(d):
            xr = x[k, gi]
            yr = y[k, gi]
            for j in range(gw):
                xx[j] += xr[j] * xr[j]
                xy[j] += xr[j] * yr[j]
        beta = np.empty(gw)
        for j in range(gw):
            beta[j] = (xy[j] + EPS) / (xx[j] + EPS)
        eta = np.zeros(gw)
        v = np.zeros(gw)
        for k in range(d):
            _residual1(x[k, gi], y[k, gi], beta, eta, v, gw)
        for j in range(gw):
            log_eta = math.log(eta[j] + 1.0)
            out[0, gi, j] = _log_beta(beta[j])
            out[1, gi, j] = log_eta
            out[2, gi, j] = math.log(v[j] + 1.0) - log_eta
    return out


# --------------------------------------------------------------------------- alignment


@njit(cache=True, nogil=True)
def _interp(p, t):  # pragma: no cover - compiled
    """Linear interpolation of profile ``p`` at fractional index ``t`` (edges clamped)."""
    n = p.shape[0]
    if t <= 0.0:
        return p[0]
    if t >= n - 1:
        return p[n - 1]
    i = int(t)
    f = t - i
    return p[i] * (1.0 - f) + p[i + 1] * f


@njit(cache=True, nogil=True)
def profile_shift(p, q, max_shift):  # pragma: no cover - compiled
    """Sub-pixel ``d`` with ``q(x + d) ~ g * p(x) + c``: how far ``q`` is moved against ``p``.

    Integer lag by the best Pearson correlation within ``+-max_shift``, then Gauss-Newton steps
    on the shift with the gain ``g`` and offset ``c`` refitted each step (so a lighting change
    does not bias the estimate). The result is clamped to ``+-(max_shift + 1)``.
    """
    n = p.shape[0]
    best = 0.0
    d = 0.0
    for idx in range(2 * max_shift + 1):
        k = (idx + 1) // 2 if idx % 2 else -(idx // 2)  # 0, 1, -1, 2, -2, ...: ties go to small
        lo = max(0, -k)
        hi = min(n, n - k)
        m = hi - lo
        if m < 3:
            continue
        sp = 0.0
        sq = 0.0
        for i in range(lo, hi):
            sp += p[i]
            sq += q[i + k]
        mp = sp / m
        mq = sq / m
        cpq = 0.0
        cpp = 0.0
        cqq = 0.0
        for i in range(lo, hi):
            a = p[i] - mp
            b = q[i + k] - mq
            cpq += a * b
            cpp += a * a
            cqq += b * b
        r = cpq / math.sqrt(cpp * cqq) if cpp > 0.0 and cqq > 0.0 else 0.0
        if r > best:
            best = r
            d = float(k)
    limit = max_shift + 1.0
    for _ in range(SHIFT_ITERATIONS):
        lo = max(0, int(math.ceil(-d)) + 1)
        hi = min(n, int(math.floor(n - 1 - d)) - 1)
        m = hi - lo
        if m < 3:
            break
        # least-squares gain and offset of the resampled q against p
        sp = 0.0
        sq = 0.0
        spp = 0.0
        spq = 0.0
        for i in range(lo, hi):
            qi = _interp(q, i + d)
            sp += p[i]
            sq += qi
            spp += p[i] * p[i]
            spq += p[i] * qi
        den = m * spp - sp * sp
        if den <= 1e-12 * m * spp:  # a flat profile: nothing to align on
            break
        g = (m * spq - sp * sq) / den
        c = (sq - g * sp) / m
        num = 0.0
        gg = 0.0
        for i in range(lo, hi):
            t = i + d
            e = _interp(q, t) - g * p[i] - c
            dq = 0.5 * (_interp(q, t + 1.0) - _interp(q, t - 1.0))
            num += e * dq
            gg += dq * dq
        if gg <= 1e-12 * m:
            break
        step = -num / gg
        d = min(max(d + step, -limit), limit)
        if abs(step) < 1e-4:
            break
    return d


@njit(cache=True, parallel=True, nogil=True)
def profiles(img):  # pragma: no cover - compiled
    """Row means and column means of ``img``."""
    h, wd = img.shape
    rows = np.empty(h)
    cols = np.zeros(wd)
    for y in prange(h):
        acc = 0.0
        for x in range(wd):
            acc += img[y, x]
        rows[y] = acc / wd
    for y in range(h):
        for x in range(wd):
            cols[x] += img[y, x]
    for x in range(wd):
        cols[x] /= h
    return rows, cols


@njit(cache=True, nogil=True)
def block_shifts(ref, test, nby, nbx, max_shift):  # pragma: no cover - compiled
    """Translation of ``test`` against ``ref`` in each block of an ``nby x nbx`` grid.

    Returns ``(nby * nbx, 4)`` rows ``(cy, cx, dy, dx)``: the block's centre relative to the
    image centre and its shift (``test(p) ~ ref(p - d)``), from the block's row and column means.
    """
    h, wd = ref.shape
    out = np.empty((nby * nbx, 4))
    for by in range(nby):
        y0 = by * h // nby
        y1 = (by + 1) * h // nby
        for bx in range(nbx):
            x0 = bx * wd // nbx
            x1 = (bx + 1) * wd // nbx
            rr, rc = profiles(ref[y0:y1, x0:x1])
            tr, tc = profiles(test[y0:y1, x0:x1])
            k = by * nbx + bx
            out[k, 0] = (y0 + y1 - 1) / 2.0 - (h - 1) / 2.0
            out[k, 1] = (x0 + x1 - 1) / 2.0 - (wd - 1) / 2.0
            out[k, 2] = profile_shift(rr, tr, max_shift)
            out[k, 3] = profile_shift(rc, tc, max_shift)
    return out


@njit(cache=True, parallel=True, nogil=True)
def warp_image(img, dy, dx, theta):  # pragma: no cover - compiled
    """Move ``img``'s content rigidly: rotate by ``theta`` (radians) about the centre, then
    shift by ``(dy, dx)``; bilinear, edges replicated.

    A point ``p`` goes to ``c + M (p - c) + d`` with ``M = [[cos, sin], [-sin, cos]]`` on
    ``(y, x)``. Same numbers as ``scipy.ndimage.affine_transform(..., order=1, mode="nearest")``.
    ``theta == 0`` takes a faster path (constant interpolation weights, contiguous rows).
    """
    h, wd = img.shape
    out = np.empty((h, wd))
    cy = (h - 1) / 2.0
    cx = (wd - 1) / 2.0
    co = math.cos(theta)
    si = math.sin(theta)
    # inverse map: q = M^T p + offset, offset = c - M^T (c + d)
    oy = cy - (co * (cy + dy) - si * (cx + dx))
    ox = cx - (si * (cy + dy) + co * (cx + dx))
    if theta == 0.0:
        fx = math.floor(ox)
        wx = ox - fx
        ix = int(fx)
        lo = min(max(-ix, 0), wd)  # interior: 0 <= x + ix and x + ix + 1 <= wd - 1
        hi = max(min(wd - 1 - ix - 1, wd - 1), lo - 1) + 1
        for y in prange(h):
            qy = y + oy
            fy = math.floor(qy)
            wy = qy - fy
            y0 = min(max(int(fy), 0), h - 1)
            y1 = min(max(int(fy) + 1, 0), h - 1)
            r0 = img[y0]
            r1 = img[y1]
            o = out[y]
            for x in range(lo, hi):
                top = r0[x + ix] * (1.0 - wx) + r0[x + ix + 1] * wx
                bottom = r1[x + ix] * (1.0 - wx) + r1[x + ix + 1] * wx
                o[x] = top * (1.0 - wy) + bottom * wy
            for x in range(wd):
                if lo <= x < hi:
                    continue
                x0 = min(max(x + ix, 0), wd - 1)
                x1 = min(max(x + ix + 1, 0), wd - 1)
                top = r0[x0] * (1.0 - wx) + r0[x1] * wx
                bottom = r1[x0] * (1.0 - wx) + r1[x1] * wx
                o[x] = top * (1.0 - wy) + bottom * wy
        return out
    for y in prange(h):
        for x in range(wd):
            qy = co * y - si * x + oy
            qx = si * y + co * x + ox
            fy = math.floor(qy)
            fx = math.floor(qx)
            wy = qy - fy
            wx = qx - fx
            y0 = min(max(int(fy), 0), h - 1)
            y1 = min(max(int(fy) + 1, 0), h - 1)
            x0 = min(max(int(fx), 0), wd - 1)
            x1 = min(max(int(fx) + 1, 0), wd - 1)
            top = img[y0, x0] * (1.0 - wx) + img[y0, x1] * wx
            bottom = img[y1, x0] * (1.0 - wx) + img[y1, x1] * wx
            out[y, x] = top * (1.0 - wy) + bottom * wy
    return out


# --------------------------------------------------------------------------- anomaly stage


@njit(cache=True, nogil=True)
def robust_unit_space(samples):  # pragma: no cover - compiled
    """Robust centre and covariance of metric vectors laid out ``(3, n)`` (MCD-like).

    A regular subsample of at most ``MAX_SAMPLES`` columns; start from the median and the scaled
    median absolute deviation, then ``C_STEPS`` times keep the vectors inside the 97.5 %
    chi-square ellipse and take their mean and (consistency-corrected) covariance. Every spread
    is at least ``SCALE_FLOOR``. Deterministic: no random subsets.
    """
    n = samples.shape[1]
    step = max(1, -(-n // MAX_SAMPLES))
    m = -(-n // step)
    sub = np.empty((3, m))
    for c in range(3):
        for i in range(m):
            sub[c, i] = samples[c, i * step]
    loc = np.empty(3)
    cov = np.zeros((3, 3))
    for c in range(3):
        med = np.median(sub[c])
        loc[c] = med
        mad = np.median(np.abs(sub[c] - med)) * MAD_TO_SD
        sd = max(mad, SCALE_FLOOR)
        cov[c, c] = sd * sd
    keep = np.empty(m, np.bool_)
    for _ in range(C_STEPS):
        prec = np.linalg.inv(cov)
        count = 0
        for i in range(m):
            d0 = sub[0, i] - loc[0]
            d1 = sub[1, i] - loc[1]
            d2 = sub[2, i] - loc[2]
            q = prec[0, 0] * d0 * d0 + prec[1, 1] * d1 * d1 + prec[2, 2] * d2 * d2
            q += 2.0 * (prec[0, 1] * d0 * d1 + prec[0, 2] * d0 * d2) + 2.0 * prec[1, 2] * d1 * d2
            keep[i] = q <= CHI2_975_3
            count += keep[i]
        if count < 4:
            break
        new_loc = np.zeros(3)
        for i in range(m):
            if keep[i]:
                for c in range(3):
                    new_loc[c] += sub[c, i]
        new_loc /= count
        new_cov = np.zeros((3, 3))
        for i in range(m):
            if keep[i]:
                for a in range(3):
                    for b in range(3):
                        new_cov[a, b] += (sub[a, i] - new_loc[a]) * (sub[b, i] - new_loc[b])
        new_cov *= TRIM_CONSISTENCY / count
        for c in range(3):
            new_cov[c, c] += SCALE_FLOOR * SCALE_FLOOR
        loc = new_loc
        cov = new_cov
    return loc, cov


@njit(cache=True, parallel=True, nogil=True)
def mahalanobis_grid(metrics, loc, precision):  # pragma: no cover - compiled
    """``sqrt((m - loc)^T P (m - loc))`` for each window's metrics ``m``: ``(gh, gw)``."""
    _, gh, gw = metrics.shape
    out = np.empty((gh, gw))
    p00, p11, p22 = precision[0, 0], precision[1, 1], precision[2, 2]
    p01, p02, p12 = precision[0, 1], precision[0, 2], precision[1, 2]
    for gi in prange(gh):
        for j in range(gw):
            d0 = metrics[0, gi, j] - loc[0]
            d1 = metrics[1, gi, j] - loc[1]
            d2 = metrics[2, gi, j] - loc[2]
            q = p00 * d0 * d0 + p11 * d1 * d1 + p22 * d2 * d2
            q += 2.0 * (p01 * d0 * d1 + p02 * d0 * d2) + 2.0 * p12 * d1 * d2
            out[gi, j] = math.sqrt(max(q, 0.0))
    return out


@njit(cache=True, nogil=True)
def _cover_ranges(n, w, s, g):  # pragma: no cover - compiled
    """For each pixel index, the first and last window (of ``g``) that contains it.

    A pixel no window covers (past the last window, or in a gap when ``s > w``) takes the
    windows on either side of it.
    """
    lo = np.empty(n, np.int64)
    hi = np.empty(n, np.int64)
    for p in range(n):
        a = -(-(p - w + 1) // s)
        b = p // s
        if a > b:
            a, b = b, a
        lo[p] = min(max(a, 0), g - 1)
        hi[p] = min(max(b, 0), g - 1)
    return lo, hi


@njit(cache=True, parallel=True, nogil=True)
def cover_mean(grid, h, wd, w, s):  # pragma: no cover - compiled
    """Each pixel's mean over the windows that contain it: ``(gh, gw) -> (h, wd)``.

    From an integral image of the grid: one difference of two rows per pixel row, then one
    difference per pixel, times the reciprocal window counts.
    """
    gh, gw = grid.shape
    acc = np.zeros((gh + 1, gw + 1))
    for i in range(gh):
        run = 0.0
        for j in range(gw):
            run += grid[i, j]
            acc[i + 1, j + 1] = acc[i, j + 1] + run
    ylo, yhi = _cover_ranges(h, w, s, gh)
    xlo, xhi = _cover_ranges(wd, w, s, gw)
    inv_x = np.empty(wd)
    for x in range(wd):
        inv_x[x] = 1.0 / (xhi[x] + 1 - xlo[x])
    out = np.empty((h, wd))
    for y in prange(h):
        band = acc[yhi[y] + 1] - acc[ylo[y]]
        inv_y = 1.0 / (yhi[y] + 1 - ylo[y])
        for x in range(wd):
            out[y, x] = (band[xhi[x] + 1] - band[xlo[x]]) * inv_y * inv_x[x]
    return out
