"""Registration step 2b, likeness: does each lattice node look like the connector's other sites?

A lattice is periodic and so is a wooden bench's grain or a row of clutter along a housing's edge:
their energy maxima can line up with the pin grid one pitch beyond the connector and read as a
fourth row or a tenth column. What sets a product's sites apart is that they look alike: every
pin (or socket) of one product is the same part under nearly the same light. Each node's patch
(one pitch square, sampled through the lattice so tilt and scale are taken out) is compared with
the median patch of all nodes by normalised correlation; pins score about 0.9-1.0, grain and
clutter below 0.4. The window step uses the score only at the block's ends (a row or column
beyond 3 x 9, sites past an end): a defective pin inside the block is never dropped for looking
different, which is what a defect does.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

import cv2
import numpy as np

from qeu_space.views.lattice import Lattice

__all__ = ["ADD", "LIKE", "complete_by_likeness", "node_likeness", "visible_likeness"]

LIKE = 0.6
"""Least correlation with the median site patch for a node to count as one of the product's."""
ADD = 0.8
"""Least correlation for an empty node next to the lattice to join it as a site the sites step
missed (stricter than :data:`LIKE`: it adds a site rather than keeps one)."""
_SIDE = 16  # samples across a patch
_HALF = 0.45  # patch half side, pitches


def _vectors(gray: np.ndarray, lattice: Lattice, nodes: np.ndarray) -> np.ndarray:
    """``(m, side * side)`` zero-mean, unit-norm patches at lattice ``nodes``."""
    p, _ = _samples(gray, lattice, nodes)
    p -= p.mean(1, keepdims=True)
    p /= np.linalg.norm(p, axis=1, keepdims=True) + 1e-9
    return p


def _samples(
    gray: np.ndarray, lattice: Lattice, nodes: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """``(m, side * side)`` raw patches at ``nodes`` (one pitch square, sampled through the
    lattice) and which samples fall inside the image."""
    t = np.linspace(-_HALF, _HALF, _SIDE)
    du, dv = np.meshgrid(t, t)  # (side, side): x along u, y along v
    uv = np.stack([nodes[:, 0, None, None] + du, nodes[:, 1, None, None] + dv], -1)
    xy = lattice.to_image(uv.reshape(-1, 2)).astype(np.float32)
    h, w = gray.shape[:2]
    inside = (xy[:, 0] >= 0) & (xy[:, 0] < w) & (xy[:, 1] >= 0) & (xy[:, 1] < h)
    maps = (xy - 0.5).reshape(len(nodes) * _SIDE, _SIDE, 2)
    patches = cv2.remap(np.asarray(gray, np.float32), maps[..., 0], maps[..., 1],
                        cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)  # fmt: skip
    return patches.reshape(len(nodes), -1).astype(np.float64), inside.reshape(len(nodes), -1)


def visible_likeness(
    gray: np.ndarray, lattice: Lattice, nodes: np.ndarray, least: float = 0.3
) -> np.ndarray:
    """``(k,)`` likeness of nodes the image border cuts: the in-image part of each node's patch
    against the same part of the lattice's median patch (NaN where less than ``least`` of the
    patch is in the image).

    A pin of a longer connector cut by the border still looks like the part of a pin it shows;
    the tip of a pin's shadow, or grain, cut the same way does not, although its blob energy
    may be a pin's.
    """
    nodes = np.asarray(nodes, np.float64).reshape(-1, 2)
    out = np.full(len(nodes), np.nan)
    if not len(nodes) or not len(lattice.nodes):
        return out
    typical = np.median(_vectors(gray, lattice, np.asarray(lattice.nodes, np.float64)), 0)
    raw, inside = _samples(gray, lattice, nodes)
    for i in range(len(nodes)):
        m = inside[i]
        if m.mean() < least:
            continue
        a = raw[i][m] - raw[i][m].mean()
        b = typical[m] - typical[m].mean()
        out[i] = float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b) + 1e-9))
    return out


def node_likeness(
    gray: np.ndarray, lattice: Lattice, others: np.ndarray | None = None
) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
    """``(m,)`` normalised correlation of each node's patch with the median patch (-1..1).

    With ``others`` (``(k, 2)`` nodes not on the lattice), also theirs against the same median
    patch: ``(lattice nodes', others')``.
    """
    nodes = np.asarray(lattice.nodes, np.float64)
    if not len(nodes):
        return np.zeros(0) if others is None else (np.zeros(0), np.zeros(len(others)))
    extra = np.zeros((0, 2)) if others is None else np.asarray(others, np.float64).reshape(-1, 2)
    both = _vectors(gray, lattice, np.vstack([nodes, extra]))  # one remap for both
    p, q = both[: len(nodes)], both[len(nodes) :]
    typical = np.median(p, 0)
    typical /= np.linalg.norm(typical) + 1e-9
    if others is None:
        return p @ typical
    return p @ typical, q @ typical


def complete_by_likeness(
    gray: np.ndarray,
    lattice: Lattice,
    energy_at: Callable[[np.ndarray], np.ndarray],
    size: tuple[int, int],
) -> Lattice:
    """``lattice`` with its likeness measured, and with the empty nodes next to it whose patch
    looks like the product's sites (:data:`ADD`) added where the grid puts them.

    A pin beside the housing's end can be missed by the sites step (its maximum merges with the
    edge's, its region with the edge); it still looks like every other pin. Such a node joins,
    and the alignment step measures it like the rest; an empty socket does not look like a pin
    and stays out.
    """
    nodes = lattice.nodes
    (u0, v0), (u1, v1) = nodes.min(0) - 1, nodes.max(0) + 1
    have = {(int(u), int(v)) for u, v in nodes}
    empty = np.array([(u, v) for u in range(u0, u1 + 1) for v in range(v0, v1 + 1)
                      if (u, v) not in have], float).reshape(-1, 2)  # fmt: skip
    if len(empty):
        corners = empty[:, None] + np.array([[-0.3, -0.3], [0.3, -0.3], [-0.3, 0.3], [0.3, 0.3]])
        xy = lattice.to_image(corners)
        w, h = size
        inside = ((xy[..., 0] >= 0) & (xy[..., 0] <= w) & (xy[..., 1] >= 0)
                  & (xy[..., 1] <= h)).all(1)  # fmt: skip
        empty = empty[inside]
    like, other = node_likeness(gray, lattice, empty)
    if not len(empty):
        return replace(lattice, likeness=like)
    points = lattice.to_image(empty)
    strength = energy_at(points)
    add = (other >= ADD) & (strength >= 0.5 * float(np.median(lattice.strength)))
    if not add.any():
        return replace(lattice, likeness=like)
    return Lattice(
        lattice.homography,
        np.vstack([nodes, empty[add].astype(int)]),
        np.vstack([lattice.points, points[add]]),
        np.concatenate([lattice.strength, strength[add]]),
        np.concatenate([like, other[add]]),
    )
