"""Registration step 2, the lattice: which candidate sites lie on one periodic grid, and where.

The nearest neighbours of each candidate (``scipy.spatial.cKDTree``) along the two lattice axes
give the two pitch vectors (medians, so clutter and defective pins do not pull them); with them
every candidate gets integer lattice coordinates ``(u, v)`` relative to a common origin. A
homography from ``(u, v)`` to the image (``cv2.findHomography`` with RANSAC, then least squares on
the inliers, twice, each time re-reading every candidate's coordinates through it) follows the
keystone of a tilted camera, which a single pair of pitch vectors cannot. The result says which
lattice node each site is, not yet which node is pin ``U1``: that is the window step's question.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property

import cv2
import numpy as np
from scipy.spatial import cKDTree

__all__ = ["Lattice", "complete_lattice", "fit_lattice", "pitch_vectors"]

ASSIGN = 0.2
"""A candidate belongs to a node when it lies within this many pitches of it."""
ASPECT = 0.15
"""Largest relative change of the row / column pitch ratio from the canonical one (tilt)."""
_CONE = np.radians(35.0)  # a neighbour vector within this of an axis counts for that axis


@dataclass(frozen=True)
class Lattice:
    """A periodic grid of sites found in an image.

    Attributes:
        homography: 3 x 3 from lattice coordinates ``(u, v)`` (one unit per pitch) to image
            pixels.
        nodes: ``(m, 2)`` integer ``(u, v)`` of each site on the grid.
        points: ``(m, 2)`` image x, y of those sites (as found).
        strength: ``(m,)`` their site energy.
        likeness: ``(m,)`` how much each node looks like the other sites
            (:func:`~qeu_space.views.likeness.node_likeness`), ``None`` until measured.
    """

    homography: np.ndarray
    nodes: np.ndarray
    points: np.ndarray
    strength: np.ndarray
    likeness: np.ndarray | None = None

    def to_image(self, uv: np.ndarray) -> np.ndarray:
        """Image x, y of lattice coordinates ``(..., 2)``."""
        return _project(self.homography, uv)

    @cached_property
    def pitch(self) -> float:
        """Mean pitch (px) along a row at the grid's centre (computed once: asked 4 times a
        panel)."""
        c = np.median(self.nodes, 0)
        a, b = self.to_image(np.array([c, c + (1.0, 0.0)]))
        return float(np.linalg.norm(b - a))


def _project(h: np.ndarray, pts: np.ndarray) -> np.ndarray:
    p = np.asarray(pts, np.float64)
    q = p @ h[:2, :2].T + h[:2, 2]
    w = p @ h[2, :2] + h[2, 2]
    return q / w[..., None]


def _modes(vectors: np.ndarray, tol: float, k: int = 3) -> list[np.ndarray]:
    """Up to ``k`` distinct common vectors among ``vectors`` (the median of each cluster)."""
    out: list[np.ndarray] = []
    left = vectors
    while len(left) and len(out) < k:
        near = np.linalg.norm(left[:, None] - left[None], axis=2) <= tol
        centre = int(near.sum(1).argmax())
        members = near[centre]
        out.append(np.median(left[members], 0))
        left = left[~members]
    return out


def _pitch_candidates(points: np.ndarray, pitch: tuple[float, float],
                      scale_range: tuple[float, float]) -> list[list[np.ndarray]]:  # fmt: skip
    """Candidate row and column pitch vectors: the common neighbour vectors along each axis."""
    tree = cKDTree(points)
    k = min(7, len(points))
    dist, idx = tree.query(points, k=k)
    vec = (points[idx[:, 1:]] - points[:, None]).reshape(-1, 2)
    length = dist[:, 1:].ravel()
    low = 0.8 * scale_range[0] * min(pitch)
    high = 1.2 * scale_range[1] * max(pitch)
    ok = (length >= low) & (length <= high)
    angle = np.arctan2(vec[:, 1], vec[:, 0])
    folded = (angle + np.pi / 2) % np.pi - np.pi / 2  # a vector and its opposite: one axis
    out = []
    for axis in (0.0, np.pi / 2):
        off = np.abs((folded - axis + np.pi / 2) % np.pi - np.pi / 2)
        v = vec[ok & (off < _CONE)]
        sign = np.sign(v[:, 0] if axis == 0.0 else v[:, 1])
        v = v * np.where(sign == 0, 1, sign)[:, None]
        out.append(_modes(v, 0.12 * min(pitch)) if len(v) else [])
    return out


def _support(points: np.ndarray, weight: np.ndarray, a: np.ndarray, b: np.ndarray) -> float:
    """Weight of the points within :data:`ASSIGN` of the lattice spanned by ``a``, ``b``."""
    basis = np.stack([a, b], 1)
    if abs(np.linalg.det(basis)) < 1e-6:
        return 0.0
    uv = np.linalg.solve(basis, (points - points[0]).T).T
    frac = np.angle((weight[:, None] * np.exp(2j * np.pi * uv)).sum(0)) / (2 * np.pi)
    off = uv - frac
    err = np.linalg.norm((off - np.rint(off)) @ basis.T, axis=1)
    return float(weight[err <= ASSIGN * min(np.linalg.norm(a), np.linalg.norm(b))].sum())


def pitch_vectors(
    points: np.ndarray,
    pitch: tuple[float, float],
    scale_range: tuple[float, float],
    weight: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray] | None:
    """The row and column pitch vectors (image px) of the grid ``points`` mostly lie on.

    The candidates are the common neighbour vectors along each axis; the pair that puts the most
    (strength-weighted) points on lattice nodes wins (a housing edge's maxima, a pitch short of
    the outer rows, are common neighbours too, but put the inner rows off the nodes), and of
    pairs that do equally well the coarsest (half a pitch holds every node too).
    """
    if len(points) < 4:
        return None
    weight = np.ones(len(points)) if weight is None else np.asarray(weight, np.float64)
    rows, cols = _pitch_candidates(points, pitch, scale_range)
    if not rows and not cols:
        return None
    if not rows:
        rows = [np.array([b[1], -b[0]]) * pitch[0] / pitch[1] for b in cols]
    if not cols:
        cols = [np.array([-a[1], a[0]]) * pitch[1] / pitch[0] for a in rows]
    # the two pitches keep the canonical ratio up to a tilt's foreshortening: a housing edge a
    # fraction of a pitch past the outer rows does not make a finer grid with them
    ratio = pitch[1] / pitch[0]
    pairs = [
        (a, b)
        for a in rows
        for b in cols
        if abs(np.linalg.norm(b) / max(np.linalg.norm(a), 1e-9) / ratio - 1) <= ASPECT
    ]
    if not pairs:
        return None
    support = [_support(points, weight, a, b) for a, b in pairs]
    # a lattice of half the pitch holds every point of the true one: among the pairs that hold
    # (nearly) the most, the coarsest (largest cell) is the lattice
    top = max(support)
    held = [ab for ab, sup in zip(pairs, support, strict=True) if sup >= 0.95 * top]
    return max(held, key=lambda ab: abs(float(np.linalg.det(np.stack(ab, 1)))))


def _assign(h: np.ndarray, points: np.ndarray, strength: np.ndarray, tol: float
            ) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    """``(indices of points, their nodes)``: one point per node, within ``tol`` px of it."""
    inv = np.linalg.inv(h)
    uv = _project(inv, points)
    nodes = np.rint(uv)
    err = np.linalg.norm(_project(h, nodes) - points, axis=1)
    keep = np.nonzero(err <= tol)[0]
    # one point per node: the strongest wins (np.unique keeps each node's first, strongest;
    # a node as one int64 key: kept nodes lie within tol of a point, so far inside 2**31)
    order = keep[np.argsort(-strength[keep], kind="stable")]
    uv = nodes[order].astype(np.int64)
    _, first = np.unique((uv[:, 0] << 32) ^ (uv[:, 1] & 0xFFFFFFFF), return_index=True)
    chosen = np.sort(order[first]).astype(int)
    return chosen, nodes[chosen].astype(int)


def fit_lattice(
    points: np.ndarray,
    strength: np.ndarray,
    pitch: tuple[float, float],
    scale_range: tuple[float, float],
) -> Lattice | None:
    """The grid most ``points`` lie on (``None``: they do not form one)."""
    vectors = pitch_vectors(points, pitch, scale_range, strength)
    if vectors is None:
        return None
    a, b = vectors
    basis = np.stack([a, b], 1)  # columns: lattice unit vectors in the image
    if abs(np.linalg.det(basis)) < 1e-6:
        return None
    uv = np.linalg.solve(basis, (points - points[0]).T).T
    w = strength / strength.sum()
    frac = np.angle((w[:, None] * np.exp(2j * np.pi * uv)).sum(0)) / (2 * np.pi)
    affine = np.eye(3)
    affine[:2, :2] = basis
    affine[:2, 2] = points[0] + basis @ frac
    tol = ASSIGN * float(np.linalg.norm(a))
    h = affine
    previous = -1
    for _ in range(8):  # each round reaches about one more pitch out (keystone grows outward)
        idx, nodes = _assign(h, points, strength, tol)
        if len(idx) < 6:
            return None
        if len(idx) == previous:
            break
        previous = len(idx)
        src, dst = nodes.astype(np.float64), points[idx]
        found, mask = cv2.findHomography(src, dst, cv2.RANSAC, 0.5 * tol)
        if found is None:
            return None
        inl = mask.ravel().astype(bool)
        if inl.sum() >= 6:  # least squares on the inliers: a bent pin does not bend the grid
            again, _ = cv2.findHomography(src[inl], dst[inl], 0)
            found = again if again is not None else found
        h = found
    idx, nodes = _assign(h, points, strength, tol)
    lattice = Lattice(h, nodes, points[idx], strength[idx])
    c = np.median(nodes, 0)
    o, x, y = lattice.to_image(np.array([c, c + (1.0, 0.0), c + (0.0, 1.0)]))
    aspect = np.linalg.norm(y - o) / max(np.linalg.norm(x - o), 1e-9) / (pitch[1] / pitch[0])
    if abs(aspect - 1) > ASPECT:
        return None  # the grid grew into something else (a housing edge taken as a row)
    return lattice


def complete_lattice(
    lattice: Lattice,
    refine: Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]],
    energy_at: Callable[[np.ndarray], np.ndarray],
    size: tuple[int, int],
) -> Lattice:
    """``lattice`` with the nodes next to it that hold a site the maxima missed.

    A site's maximum of the blurred energy can be pulled off its node by a strong edge beside
    it (the housing's end half a pitch away) or merged with a neighbour; the node is then empty
    though a site is there. Every empty node within one row or column of the grid, in view, is
    measured where the grid predicts it (``refine``: the site step's region centroid) and joins
    when the site found there lies within :data:`ASSIGN` of it.
    """
    nodes = lattice.nodes
    (u0, v0), (u1, v1) = nodes.min(0) - 1, nodes.max(0) + 1
    have = {(int(u), int(v)) for u, v in nodes}
    empty = np.array([(u, v) for u in range(u0, u1 + 1) for v in range(v0, v1 + 1)
                      if (u, v) not in have], float)  # fmt: skip
    if not len(empty):
        return lattice
    guess = lattice.to_image(empty)
    w, h = size
    inside = (guess[:, 0] > 0) & (guess[:, 0] < w) & (guess[:, 1] > 0) & (guess[:, 1] < h)
    empty, guess = empty[inside], guess[inside]
    if not len(empty):
        return lattice
    found, ok = refine(guess)
    tol = ASSIGN * lattice.pitch
    ok &= np.linalg.norm(found - guess, axis=1) <= tol
    strength = energy_at(found)
    ok &= strength >= 0.5 * float(np.median(lattice.strength))
    if not ok.any():
        return lattice
    return Lattice(
        lattice.homography,
        np.vstack([nodes, empty[ok].astype(int)]),
        np.vstack([lattice.points, found[ok]]),
        np.concatenate([lattice.strength, strength[ok]]),
    )
