"""Defects drawn physically, so that the kind is told by geometry, not by brightness:

* **bent**: the shaft leans from its socket to a tip displaced by ``geo.bend_offset`` toward the
  direction; the pin keeps its length, so its tip sits lower, and it casts its own leaning shadow;
* **missing**: the socket is empty, its floor (with the press-fit hole) and inner wall are seen;
* **short**: the terminal is pushed into its socket, its face sunk to :func:`short_height` below
  the housing top: seen through the opening (smaller: only the flat of its tip catches light at
  the bottom of the socket, and the lip hides an edge of it under tilt), ringed by the shadow of the
  socket walls, and shifted by parallax against the opening when the camera is tilted.

The scene (:mod:`dataset_tools.looks.scene`) asks these functions where things are.
"""

from __future__ import annotations

import math

import numpy as np

from dataset_tools.looks.pins import Pins
from qeu_space.geometry import ConnectorGeometry
from qeu_space.vocabulary import DefectKind, Finding

SHORT_FACE = 0.78
"""A short pin's lit face against a good pin's (its chamfered tip, deep in the socket)."""
SHORT_LIGHT = 0.75
"""Share of the lamp reaching a face deep in a socket (the walls shade it)."""


def pin_height(geo: ConnectorGeometry, pins: Pins) -> float:
    """Height of a good pin's top above the housing top, canonical pixels."""
    return pins.height * geo.pin_size


def socket_depth(geo: ConnectorGeometry, pins: Pins) -> float:
    """Depth of a socket's floor below the housing top, canonical pixels."""
    return pins.depth * geo.pin_size


def short_height(geo: ConnectorGeometry, pins: Pins) -> float:
    """Height (negative: below the housing top) of a short pin's face."""
    return -0.45 * socket_depth(geo, pins)


def bent_tip(geo: ConnectorGeometry, pins: Pins, finding: Finding) -> tuple[float, float, float]:
    """``(x, y, z)`` of a bent pin's tip: displaced by the bend, lower by the lean (same length)."""
    cx, cy = geo.pin_center(finding.position)
    dx, dy = geo.bend_offset(finding.direction)
    reach = math.hypot(dx, dy)
    length = max(pin_height(geo, pins), 1.25 * reach)
    return cx + dx, cy + dy, math.sqrt(length**2 - reach**2)


def defect_box(geo, pins: Pins, finding: Finding, projector, pad: float) -> tuple[float, ...]:
    """The image region the defect changes (socket, lean and tip as projected), padded."""
    cx, cy = geo.pin_center(finding.position)
    half = geo.socket_size / 2
    corners = np.array(
        [
            [cx - half, cy - half],
            [cx + half, cy - half],
            [cx - half, cy + half],
            [cx + half, cy + half],
        ]
    )
    pts = [projector.project(corners, z) for z in (-socket_depth(geo, pins), 0.0)]
    if finding.kind is not DefectKind.SHORT:  # a good pin's top is what a missing pin lacks
        pts.append(projector.project(corners, pin_height(geo, pins)))
    if finding.kind is DefectKind.BENT:
        tx, ty, tz = bent_tip(geo, pins, finding)
        h = geo.pin_size * pins.size / 2 + 1
        tip = np.array([[tx - h, ty - h], [tx + h, ty - h], [tx - h, ty + h], [tx + h, ty + h]])
        pts.append(projector.project(tip, tz))
    p = np.concatenate(pts)
    w, hh = geo.width, geo.height
    return (
        float(np.clip(p[:, 0].min() - pad, 0, w)),
        float(np.clip(p[:, 1].min() - pad, 0, hh)),
        float(np.clip(p[:, 0].max() + pad, 0, w)),
        float(np.clip(p[:, 1].max() + pad, 0, hh)),
    )
