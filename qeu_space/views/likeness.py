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

import cv2
import numpy as np

from qeu_space.views.lattice import Lattice

__all__ = ["LIKE", "node_likeness"]

LIKE = 0.6
"""Least correlation with the median site patch for a node to count as one of the product's."""
_SIDE = 16  # samples across a patch
_HALF = 0.45  # patch half side, pitches


def node_likeness(gray: np.ndarray, lattice: Lattice) -> np.ndarray:
    """``(m,)`` normalised correlation of each node's patch with the median patch (-1..1)."""
    nodes = np.asarray(lattice.nodes, np.float64)
    if not len(nodes):
        return np.zeros(0)
    t = np.linspace(-_HALF, _HALF, _SIDE)
    du, dv = np.meshgrid(t, t)  # (side, side): x along u, y along v
    uv = np.stack([nodes[:, 0, None, None] + du, nodes[:, 1, None, None] + dv], -1)
    xy = lattice.to_image(uv.reshape(-1, 2)).astype(np.float32) - 0.5  # continuous -> index
    maps = xy.reshape(len(nodes) * _SIDE, _SIDE, 2)
    patches = cv2.remap(np.asarray(gray, np.float32), maps[..., 0], maps[..., 1],
                        cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)  # fmt: skip
    p = patches.reshape(len(nodes), -1).astype(np.float64)
    p -= p.mean(1, keepdims=True)
    p /= np.linalg.norm(p, axis=1, keepdims=True) + 1e-9
    typical = np.median(p, 0)
    typical /= np.linalg.norm(typical) + 1e-9
    return p @ typical
