"""The plane frame: the pixel grid every flat scene part (housing top, socket floors, pin tops) is
drawn on before the camera warps it into the image.

It is the canonical :class:`~qeu_space.geometry.ConnectorGeometry` frame, scaled per axis so that
the pin pitch is a whole number of pixels and every pin centre falls on a pixel centre: one sprite
drawn once (a pin face, a socket) is pasted at all 27 sites with no resampling, so every socket is
centred exactly where ``geo.pin_center`` says. :meth:`PlaneFrame.to_canonical` is the (exact)
affine map to canonical coordinates; the camera's homographies compose with it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property, lru_cache

import numpy as np

from qeu_space.geometry import ConnectorGeometry
from qeu_space.vocabulary import ALL_POSITIONS, Position

_MARGIN = 4.0  # canonical pixels around the connector image (anti-aliased edges, shadows)


@dataclass(frozen=True)
class PlaneFrame:
    """Plane pixels ``(u, v)`` (continuous, pixel ``i`` covers ``[i, i + 1)``) of a geometry."""

    geo: ConnectorGeometry
    sx: float
    sy: float
    u1: float  # plane u of pin U1's centre (an integer + 0.5)
    v1: float
    width: int
    height: int
    step_u: int  # the pitch in plane pixels
    step_v: int

    @cached_property
    def to_canonical(self) -> np.ndarray:
        """3 x 3 affine: plane (continuous) to canonical (continuous) coordinates."""
        x1, y1 = self.geo.pin_center(ALL_POSITIONS[0])
        return np.array(
            [
                [1 / self.sx, 0.0, x1 - self.u1 / self.sx],
                [0.0, 1 / self.sy, y1 - self.v1 / self.sy],
                [0.0, 0.0, 1.0],
            ]
        )

    @cached_property
    def grid(self) -> tuple[np.ndarray, np.ndarray]:
        """Canonical ``(xs (1, w), ys (h, 1))`` of every plane pixel centre (float32, read-only)."""
        a = self.to_canonical
        xs = (a[0, 0] * (np.arange(self.width) + 0.5) + a[0, 2]).astype(np.float32)[None, :]
        ys = (a[1, 1] * (np.arange(self.height) + 0.5) + a[1, 2]).astype(np.float32)[:, None]
        xs.setflags(write=False)
        ys.setflags(write=False)
        return xs, ys

    @property
    def scale(self) -> float:
        """Plane pixels per canonical pixel (mean of the two axes)."""
        return (self.sx + self.sy) / 2

    def to_plane(self, pts: np.ndarray) -> np.ndarray:
        """Canonical points ``(n, 2)`` to plane coordinates."""
        a = self.to_canonical
        return np.stack([(pts[:, 0] - a[0, 2]) * self.sx, (pts[:, 1] - a[1, 2]) * self.sy], axis=1)

    def site_index(self, position: Position) -> tuple[int, int]:
        """Plane pixel (column, row) whose centre is ``position``'s pin centre."""
        return (
            int(self.u1 - 0.5) + (position.column - 1) * self.step_u,
            int(self.v1 - 0.5) + position.row_index * self.step_v,
        )


@lru_cache(maxsize=32)
def plane_frame(geo: ConnectorGeometry) -> PlaneFrame:
    """The plane frame of ``geo`` (about one plane pixel per canonical pixel)."""
    px, py = geo.pitch
    step_u, step_v = max(round(px), 2), max(round(py), 2)
    sx, sy = step_u / px, step_v / py
    x1, y1 = geo.pin_center(ALL_POSITIONS[0])
    u1 = math.floor((x1 + _MARGIN) * sx) + 0.5
    v1 = math.floor((y1 + _MARGIN) * sy) + 0.5
    width = math.ceil(u1 + (geo.width + _MARGIN - x1) * sx)
    height = math.ceil(v1 + (geo.height + _MARGIN - y1) * sy)
    return PlaneFrame(geo, sx, sy, u1, v1, width, height, step_u, step_v)


def paste(layer: np.ndarray, sprite: np.ndarray, col: int, row: int, op: str = "over") -> None:
    """Put ``sprite`` (odd-sized, its centre pixel at plane pixel ``(col, row)``) on ``layer``.

    ``op``: ``over`` (premultiplied RGBA over RGBA), ``mul`` (multiply), ``set`` (replace).
    """
    k = sprite.shape[0] // 2
    y0, x0 = row - k, col - k
    y1, x1 = y0 + sprite.shape[0], x0 + sprite.shape[1]
    cy0, cx0 = max(y0, 0), max(x0, 0)
    cy1, cx1 = min(y1, layer.shape[0]), min(x1, layer.shape[1])
    if cy0 >= cy1 or cx0 >= cx1:
        return
    dst = layer[cy0:cy1, cx0:cx1]
    src = sprite[cy0 - y0 : cy1 - y0, cx0 - x0 : cx1 - x0]
    if op == "over":
        dst *= 1.0 - src[..., -1:]
        dst += src
    elif op == "mul":
        dst *= src
    else:
        dst[...] = src


def sprite_grid(frame: PlaneFrame, radius: float) -> tuple[np.ndarray, np.ndarray]:
    """Canonical offsets ``(dx (1, n), dy (n, 1))`` from a site centre of an odd sprite that
    reaches ``radius`` canonical pixels from it."""
    k = math.ceil(radius * max(frame.sx, frame.sy)) + 1
    i = np.arange(-k, k + 1, dtype=np.float32)
    return (i / np.float32(frame.sx))[None, :], (i / np.float32(frame.sy))[:, None]
