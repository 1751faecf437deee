"""Fused per-pixel passes of the scene (numba): each replaces several image-sized numpy
temporaries, whose page faults and memory traffic cost more than the arithmetic."""

from __future__ import annotations

import numba
import numpy as np


@numba.njit(cache=True, fastmath=True)
def over_u8(img, canvas, y0, x0):  # pragma: no cover - compiled
    """``img[y0:, x0:]`` under ``canvas`` (uint8 premultiplied RGBA)."""
    h, w = canvas.shape[:2]
    s = np.float32(1.0 / 255.0)
    for y in range(h):
        for x in range(w):
            m = canvas[y, x, 3]
            if m == 0:
                continue
            a = np.float32(1.0) - m * s
            for c in range(3):
                img[y0 + y, x0 + x, c] = img[y0 + y, x0 + x, c] * a + canvas[y, x, c]


@numba.njit(cache=True, fastmath=True)
def bench_colour(t, lo, hi, shadow, strength, out):  # pragma: no cover - compiled
    """The bench in colour from its texture value ``t`` (0 .. 1 between ``lo`` and ``hi``; above 1
    bright metal clutter, below 0 dark plastic clutter), darkened by the housing's drop shadow
    (``shadow``: uint8 coverage, ``strength``: its darkness), into ``out`` (float32 RGB)."""
    h, w = t.shape
    s = np.float32(strength / 255.0)
    one = np.float32(1.0)
    zero = np.float32(0.0)
    for y in range(h):
        for x in range(w):
            v = t[y, x]
            f = one - shadow[y, x] * s
            u = min(max(v, zero), one)
            bright = min(max(v - one, zero), one)
            dark = min(max(-v, zero), one)
            keep = one - bright - dark
            for c in range(3):
                base = lo[c] + (hi[c] - lo[c]) * u
                out[y, x, c] = (
                    base * keep + np.float32(190.0) * bright + np.float32(15.0) * dark
                ) * f


@numba.njit(cache=True, fastmath=True)
def housing_over(img, top, interior, below, by, bx):  # pragma: no cover - compiled
    """The housing top (premultiplied RGBA) over ``img``, and the socket view ``below`` (a window
    from image pixel ``(bx, by)``) through its openings: inside the housing's outline
    (``interior`` != 0) what the top does not cover."""
    h, w = interior.shape
    bh, bw = below.shape[:2]
    one = np.float32(1.0)
    zero = np.float32(0.0)
    for y in range(h):
        for x in range(w):
            a = top[y, x, 3]
            inside = interior[y, x] and 0 <= y - by < bh and 0 <= x - bx < bw
            o = one - a if inside else zero
            if a == 0 and o == 0:
                continue
            k = one - a - o
            for c in range(3):
                v = img[y, x, c] * k + top[y, x, c]
                if o > 0:
                    v += below[y - by, x - bx, c] * o
                img[y, x, c] = v


@numba.njit(cache=True, fastmath=True)
def layer_over(img, layer, y0, x0):  # pragma: no cover - compiled
    """Premultiplied RGBA ``layer`` over ``img`` from pixel ``(x0, y0)`` on."""
    h, w = layer.shape[:2]
    one = np.float32(1.0)
    for y in range(h):
        for x in range(w):
            a = layer[y, x, 3]
            if a == 0:
                continue
            for c in range(3):
                img[y0 + y, x0 + x, c] = img[y0 + y, x0 + x, c] * (one - a) + layer[y, x, c]


@numba.njit(cache=True, fastmath=True)
def sensor(  # pragma: no cover - compiled
    img, blurred, focus, gain, vignetting, shot, read, noise, out
):
    """The sensor in one pass, into ``out`` (uint8 RGB).

    Defocus: ``img`` mixed toward ``blurred`` by ``focus[0] + focus[1] * d`` where ``d`` (0 .. 1)
    is the distance from the focus line (direction ``focus[2:4]`` per half width, times
    ``focus[4]``); exposure and white balance (``gain`` per channel); vignetting (darker by
    ``vignetting`` at the corners' radius); Poisson-Gaussian noise (variance ``shot * value +
    read**2``; ``noise``: standard normals); rounding.
    """
    h, w = img.shape[:2]
    cx, cy = w / 2.0, h / 2.0
    r = np.float32(1.0 / (cx * cx))
    read2 = np.float32(read * read)
    zero = np.float32(0.0)
    one = np.float32(1.0)
    for y in range(h):
        dy = y + 0.5 - cy
        for x in range(w):
            dx = x + 0.5 - cx
            d = min(abs(dx * focus[2] + dy * focus[3]) * focus[4], one)
            mix = focus[0] + focus[1] * d
            v = one - np.float32(vignetting) * np.float32(dx * dx + dy * dy) * r
            for c in range(3):
                value = img[y, x, c]
                value = (value + (blurred[y, x, c] - value) * mix) * gain[c] * v
                var = max(value, zero) * np.float32(shot) + read2
                value += np.sqrt(var) * noise[y, x, c] + np.float32(0.5)
                out[y, x, c] = 0 if value < 0 else (255 if value > 255 else np.uint8(value))
    return out


@numba.njit(cache=True, fastmath=True)
def housing_top(  # pragma: no cover - compiled
    xs, ys, box, scale, rim, grain, amp, base, flat, lut_d, lut_s, hot, rgb, cover
):
    """The housing's lit top face (:func:`dataset_tools.looks.housing.top_layer`) per pixel.

    ``box``: centre x, y, half sides less the corner radius, the radius; ``flat``: diffuse and
    specular of the flat top; ``lut_d`` / ``lut_s``: the bevel's diffuse and specular by outward
    direction (+x, -x, +y, -y, none) and lean (0 .. 1 in ``lut_d.shape[1]`` steps); ``hot``: the
    lamp's mirror hot spot (x, y, -1 / (2 spread^2), strength).
    """
    cx, cy, hwr, hhr, r = box[0], box[1], box[2], box[3], box[4]
    n = lut_d.shape[1] - 1
    zero = np.float32(0.0)
    one = np.float32(1.0)
    for y in range(ys.shape[0]):
        yy = ys[y]
        qy = abs(yy - cy) - hhr
        hy = np.exp((yy - hot[1]) ** 2 * hot[2]) * hot[3]
        for x in range(xs.shape[0]):
            xx = xs[x]
            qx = abs(xx - cx) - hwr
            ox, oy = max(qx, zero), max(qy, zero)
            sd = np.sqrt(ox * ox + oy * oy) + min(max(qx, qy), zero) - r
            cover[y, x] = min(max(np.float32(0.5) - sd * scale, zero), one)
            extra = grain[y, x] * amp + np.exp((xx - hot[0]) ** 2 * hot[2]) * hy
            if sd > -rim:
                t = min(max(one + sd / rim, zero), one)
                if qx > qy:
                    k = (0 if xx > cx else 1) if qx > -r else 4
                else:
                    k = (2 if yy > cy else 3) if qy > -r else 4
                i = int(t * n + np.float32(0.5))
                d = lut_d[k, i]
                spec = lut_s[k, i]
                edge = one - min(max(one + sd / np.float32(1.2), zero), one) * np.float32(0.25)
            else:
                d = flat[0]
                spec = flat[1]
                edge = one
            for c in range(3):
                rgb[y, x, c] = (base[c] * d + extra + np.float32(255.0) * spec) * edge
