"""Registration step 4a, alignment: every site measured against the product's typical site.

The region centroid of :func:`~qeu_space.views.sites.refine_sites` is the site's centre to a
fraction of a pixel when the site is symmetric; under a lamp that casts long shadows, or a tilt
that shows each pin's shaft, the region takes in shadow and shaft, and by different amounts along
the connector, so the centroids scatter by a pixel or two and the fit refuses or bends. Every pin
of one product is the same part under nearly the same light, so each site is instead located by
where its patch best matches the median patch of all sites (``cv2.matchTemplate``, normalised
correlation, sub-pixel by a parabola through the peak), sampled through the lattice so tilt and
scale are taken out, then once more from where each site was found (a parabola's vertex is
unbiased near its peak). The relative places are then as precise as the pins are alike; the
absolute place is the (trimmed) mean of the region centroids (what the sites step measures), so
the two steps agree on where a site's centre is.
"""

from __future__ import annotations

import cv2
import numpy as np

from qeu_space.views.lattice import Lattice
from qeu_space.views.likeness import LIKE

__all__ = ["align_sites"]

_PATCH_SIDE = 31  # samples across a patch (1 pitch)
_PATCH_HALF = 0.5  # patch half side, pitches
_CORE = 11  # template half side, samples (0.35 pitch); the search reaches 0.15 pitch each way
_MATCH = 0.5  # least normalised correlation for a site to be measured


def _sampling(lattice: Lattice, uv: np.ndarray) -> np.ndarray:
    """``(n * side, side, 2)`` image index coordinates of a pitch-square patch at each node."""
    t = np.linspace(-_PATCH_HALF, _PATCH_HALF, _PATCH_SIDE)
    du, dv = np.meshgrid(t, t)
    grid = np.stack([uv[:, 0, None, None] + du, uv[:, 1, None, None] + dv], -1)
    src = grid.reshape(1, -1, 2).astype(np.float32)
    xy = cv2.perspectiveTransform(src, lattice.homography.astype(np.float32))[0] - 0.5
    return xy.reshape(len(uv) * _PATCH_SIDE, _PATCH_SIDE, 2)


def _patches(gray: np.ndarray, maps: np.ndarray) -> np.ndarray:
    out = cv2.remap(gray, maps[..., 0], maps[..., 1], cv2.INTER_LINEAR,
                    borderMode=cv2.BORDER_REPLICATE)  # fmt: skip
    return out.reshape(-1, _PATCH_SIDE, _PATCH_SIDE)


def _offsets(patches: np.ndarray, typical: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Lattice-unit offsets of each patch's site from the patch centre, and the match score.

    The patches are laid side by side in one strip, so one ``cv2.matchTemplate`` call scores
    every site (the positions that straddle two patches are not read); each peak is refined to
    a fraction of a sample by a parabola through its neighbours along each axis."""
    c = _PATCH_SIDE // 2
    core = np.ascontiguousarray(typical[c - _CORE : c + _CORE, c - _CORE : c + _CORE])
    n = len(patches)
    strip = np.ascontiguousarray(patches.transpose(1, 0, 2).reshape(_PATCH_SIDE, n * _PATCH_SIDE))
    score = cv2.matchTemplate(strip, core, cv2.TM_CCOEFF_NORMED)
    span = _PATCH_SIDE - 2 * _CORE + 1
    full = np.full((span, n * _PATCH_SIDE), -np.inf, np.float32)
    full[:, : score.shape[1]] = score
    blocks = full.reshape(span, n, _PATCH_SIDE)[:, :, :span].transpose(1, 0, 2)  # (n, span, span)
    flat = blocks.reshape(n, -1).argmax(1)
    y, x = np.divmod(flat, span)
    rows = np.arange(n)
    value = blocks[rows, y, x].astype(np.float64)

    def vertex(a: np.ndarray, b: np.ndarray, c: np.ndarray) -> np.ndarray:
        curve = a - 2 * b + c
        with np.errstate(divide="ignore", invalid="ignore"):
            d = np.where(curve < 0, 0.5 * (a - c) / curve, 0.0)
        return np.clip(np.nan_to_num(d), -0.5, 0.5)

    inner_x = (x > 0) & (x < span - 1)
    inner_y = (y > 0) & (y < span - 1)
    xl, xr = np.clip(x - 1, 0, span - 1), np.clip(x + 1, 0, span - 1)
    yu, yd = np.clip(y - 1, 0, span - 1), np.clip(y + 1, 0, span - 1)
    dx = np.where(inner_x, vertex(blocks[rows, y, xl], value, blocks[rows, y, xr]), 0.0)
    dy = np.where(inner_y, vertex(blocks[rows, yu, x], value, blocks[rows, yd, x]), 0.0)
    step = 2 * _PATCH_HALF / (_PATCH_SIDE - 1)
    centre = c - _CORE  # the score map's index of no offset
    out = np.stack([(x + dx - centre) * step, (y + dy - centre) * step], 1)
    return out, value


def align_sites(
    gray: np.ndarray,
    lattice: Lattice,
    uv: np.ndarray,
    anchors: np.ndarray,
    anchored: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """Image points of the sites at lattice nodes ``uv`` located against their typical patch.

    Args:
        gray: the image (float32) the lattice was found in.
        lattice: the lattice (its homography rectifies each patch).
        uv: ``(n, 2)`` nodes to measure.
        anchors: ``(n, 2)`` the same sites' region centroids; ``anchored`` which of them were
            measured. Their mean difference from the aligned points (the quarter farthest from
            the median left out: a bent pin's centroid) fixes the absolute place.

    Returns:
        ``(points, ok)``: ``(n, 2)`` image points and which sites matched the typical patch.
    """
    uv = np.asarray(uv, np.float64)
    gray = np.asarray(gray, np.float32)
    at = uv.copy()
    like = np.ones(len(uv), bool)
    if lattice.likeness is not None and len(lattice.likeness) == len(lattice.nodes):
        index = {(int(a), int(b)): k for k, (a, b) in enumerate(lattice.nodes)}
        rows = [index.get((int(round(a)), int(round(b)))) for a, b in uv]
        like = np.array([r is None or lattice.likeness[r] >= LIKE for r in rows])
    members = like if like.sum() >= 6 else np.ones(len(uv), bool)
    maps = _sampling(lattice, at)
    for _ in range(2):  # again from where each site was found: a parabola is unbiased at 0
        patches = _patches(gray, maps)
        typical = patches[members].mean(0)  # a few defective pins blur it little
        offsets, value = _offsets(patches, typical)
        # the patches move with their sites (a small shift: the local map is a translation)
        moved = lattice.to_image(at + offsets) - lattice.to_image(at)
        maps = maps + np.repeat(moved, _PATCH_SIDE, axis=0)[:, None, :].astype(np.float32)
        at = at + offsets
    ok = value >= _MATCH
    points = lattice.to_image(at)
    both = ok & anchored
    if both.sum() >= 6:
        d = anchors[both] - points[both]
        far = np.linalg.norm(d - np.median(d, 0), axis=1)
        points = points + d[far <= max(np.percentile(far, 75), 1e-6)].mean(0)  # trimmed mean
    return points, ok
