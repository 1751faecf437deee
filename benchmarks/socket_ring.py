"""An experiment on the frame's plane (issue 18's 0.5 px goal; registration is not changed).

Registration's frame lies between the housing plane and the pin tops' plane: each site's region
(socket opening, shaft and pin face together) has its centre between them, so the frame is off
the housing plane by a similarity, mostly a scale (``benchmarks/RESULTS_pin_error.md``). The
socket openings lie in the housing plane. This measures them without the pin: each pin's patch
is sampled through the registration (half-pixel steps, canonical units), and only a ring around
its centre, outside the pin face and inside the housing around the opening, is compared:

1. each pin's ring against the typical ring (the median patch), by zero-mean normalised
   correlation over shifts of up to ``search`` px, sub-pixel by a parabola: where each socket
   lies relative to the others (the scale and rotation of the sockets' lattice);
2. the typical ring's centre of point symmetry (its correlation with its own 180-degree
   rotation about each candidate centre): where the typical socket lies (the shift);
3. the best similarity from the registered pin centres to those socket centres: a frame on
   the housing plane.

What it leaves is measured by ``python -m benchmarks.bench_pin_error --socket-ring``.
"""

from __future__ import annotations

import cv2
import numpy as np

from qeu_space.vocabulary import ALL_POSITIONS

STEP = 0.5
"""Sample spacing of the patches, canonical px."""
RING = (10.0, 17.0)
"""Inner and outer radius of the compared ring, canonical px at the 448 px composite (pitch 47,
pin face 15, socket opening 22 across): outside the pin face, across the opening's edge."""


def _patches(gray: np.ndarray, reg, centres: np.ndarray, half: float) -> np.ndarray:
    t = np.arange(-half, half + 1e-9, STEP)
    du, dv = np.meshgrid(t, t)
    grid = (centres[:, None, None, :] + np.stack([du, dv], -1)[None]).reshape(-1, 2)
    xy = (reg.to_image(grid) - 0.5).astype(np.float32).reshape(len(centres) * len(t), len(t), 2)
    out = cv2.remap(gray, xy[..., 0], xy[..., 1], cv2.INTER_LINEAR,
                    borderMode=cv2.BORDER_REPLICATE)  # fmt: skip
    return out.reshape(len(centres), len(t), len(t))


def _ring(side: int, ring: tuple[float, float]) -> np.ndarray:
    c = (side - 1) / 2
    yy, xx = np.mgrid[0:side, 0:side]
    r = np.hypot(yy - c, xx - c) * STEP
    return (r >= ring[0]) & (r <= ring[1])


def _normalised(values: np.ndarray) -> np.ndarray:
    v = values - values.mean(-1, keepdims=True)
    return v / (np.linalg.norm(v, axis=-1, keepdims=True) + 1e-9)


def _peak(score: np.ndarray) -> np.ndarray:
    """``(x, y)`` of the maximum, sub-pixel by a parabola through its neighbours per axis."""
    y, x = np.unravel_index(int(np.argmax(score)), score.shape)

    def vertex(a: float, b: float, c: float) -> float:
        k = a - 2 * b + c
        return 0.0 if k >= 0 else float(np.clip(0.5 * (a - c) / k, -0.5, 0.5))

    dx = vertex(*score[y, x - 1 : x + 2]) if 0 < x < score.shape[1] - 1 else 0.0
    dy = vertex(*score[y - 1 : y + 2, x]) if 0 < y < score.shape[0] - 1 else 0.0
    return np.array([x + dx, y + dy])


def socket_offsets(
    image: np.ndarray, reg, ring: tuple[float, float] = RING, search: float = 3.0
) -> tuple[np.ndarray, np.ndarray]:
    """The registered canonical pin centres and where the socket ring puts each (canonical px,
    both ``(27, 2)``), for one connector image and its registration."""
    gray = np.asarray(image, np.float32)
    if gray.ndim == 3:
        gray = cv2.cvtColor(gray[..., :3], cv2.COLOR_RGB2GRAY)
    centres = np.array([reg.geometry.pin_center(p) for p in ALL_POSITIONS], np.float64)
    patches = _patches(gray, reg, centres, ring[1] + search)
    typical = np.median(patches, 0)
    k = int(round(search / STEP))
    side = patches.shape[1] - 2 * k
    mask = _ring(side, ring)
    template = _normalised(typical[k : k + side, k : k + side][mask])
    windows = np.lib.stride_tricks.sliding_window_view(patches, (side, side), axis=(1, 2))
    scores = _normalised(windows[..., mask]) @ template  # (27, 2k + 1, 2k + 1)
    offsets = np.array([(_peak(s) - k) * STEP for s in scores])
    symmetry = np.full((2 * k + 1, 2 * k + 1), -2.0)
    full = typical.shape[0]
    for iy in range(2 * k + 1):  # candidate centres half a sample apart
        for ix in range(2 * k + 1):
            sy, sx = iy - k, ix - k
            crop = typical[max(0, sy) : full + min(0, sy), max(0, sx) : full + min(0, sx)]
            yy, xx = np.mgrid[0 : crop.shape[0], 0 : crop.shape[1]]
            r = np.hypot(yy - (crop.shape[0] - 1) / 2, xx - (crop.shape[1] - 1) / 2) * STEP
            inside = (r >= ring[0]) & (r <= ring[1])
            a, b = _normalised(crop[inside]), _normalised(crop[::-1, ::-1][inside])
            symmetry[iy, ix] = float(a @ b)
    centre = (_peak(symmetry) - k) * STEP / 2
    return centres, centres + offsets + centre


def housing_frame(image: np.ndarray, reg) -> np.ndarray:
    """The 27 canonical pin centres moved onto the sockets' lattice (the best similarity from
    the registered centres to the socket centres; a few poorly matched sockets are outvoted)."""
    centres, sockets = socket_offsets(image, reg)
    matrix, _ = cv2.estimateAffinePartial2D(centres, sockets, method=cv2.LMEDS)
    return centres @ matrix[:, :2].T + matrix[:, 2]
