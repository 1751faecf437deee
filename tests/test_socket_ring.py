"""The socket-ring experiment (benchmarks/socket_ring.py): the sockets' lattice, not the pins'."""

from __future__ import annotations

import cv2
import numpy as np

from benchmarks.socket_ring import housing_frame
from qeu_space.geometry import ConnectorGeometry
from qeu_space.views.registration import Registration
from qeu_space.vocabulary import ALL_POSITIONS

GEO = ConnectorGeometry(448, 204)


def _connector(sockets: np.ndarray, faces: np.ndarray, up: int = 4) -> np.ndarray:
    """A grey housing with a dark square socket opening at each of ``sockets`` and a bright round
    pin face at each of ``faces`` (canonical px), anti-aliased by drawing ``up`` times larger."""
    h, w = GEO.height * up, GEO.width * up
    yy, xx = (np.mgrid[0:h, 0:w].astype(np.float32) + 0.5) / up  # pixel centres
    img = np.full((h, w), 150.0, np.float32)
    half, radius = GEO.socket_size / 2, GEO.pin_size / 2
    for (sx, sy), (fx, fy) in zip(sockets, faces, strict=True):
        box = (np.abs(xx - sx) <= half) & (np.abs(yy - sy) <= half)
        img[box] = 40.0
        img[np.hypot(xx - fx, yy - fy) <= radius] = 230.0
    small = cv2.resize(img, (GEO.width, GEO.height), interpolation=cv2.INTER_AREA)
    return np.repeat(small[..., None], 3, axis=2).clip(0, 255).astype(np.uint8)


def test_the_frame_goes_onto_the_sockets_whatever_the_pins_do():
    centres = np.array([GEO.pin_center(p) for p in ALL_POSITIONS], np.float64)
    vanishing = np.array([150.0, 60.0])
    sockets = vanishing + 0.995 * (centres - vanishing) + (0.6, -0.4)  # the housing plane
    faces = vanishing + 1.003 * (centres - vanishing)  # the pin tops: another scale
    image = _connector(sockets, faces)
    reg = Registration(np.eye(3), GEO, 0.0)  # the frame on the pins' plane, as registered
    before = np.sqrt(((centres - sockets) ** 2).sum(1).mean())
    after = np.sqrt(((housing_frame(image, reg) - sockets) ** 2).sum(1).mean())
    assert before > 0.8  # the registered frame is off the sockets ...
    assert after < 0.1, after  # ... the ring's frame is on them
