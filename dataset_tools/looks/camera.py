"""A true 3-D pinhole camera over the product, and the sensor behind it.

The product lies in its canonical frame (:class:`~qeu_space.geometry.ConnectorGeometry` pixels)
with the housing top at height ``z = 0``; pin tops stand at ``z > 0``, socket floors and the
bench lie below. The camera looks down from a distance ``f / scale`` with focal length ``f``,
tilted up to 10 degrees about any axis in the plane: each height has its own homography
(:meth:`Projector.homography`), so pin tops move against the housing (parallax) and the housing's
side wall comes into view. The product is placed on the bench by a shift, an in-plane turn and a
scale; the bench itself stays where the rig is.

The sensor (:func:`develop`) adds defocus with depth of field (sharper at the focus line, softer
away from it under tilt), vignetting, white balance, gain, Poisson-Gaussian noise and JPEG.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from functools import lru_cache

import cv2
import numpy as np

from qeu_space.geometry import ConnectorGeometry
from qeu_space.vocabulary import ALL_POSITIONS

REFERENCE_WIDTH = 423


@dataclass(frozen=True)
class Camera:
    """The rig's camera (focal length, tilt) and one shot's settings.

    Attributes:
        focal: focal length in image widths (2 = a wide macro lens close by, 8 = nearly
            telecentric).
        tilt: angle between the optical axis and the housing's normal, degrees (0..10).
        tilt_axis: direction of the axis the camera is tilted about, degrees in the image plane.
        dx, dy: where the product's centre lands, pixels from the image centre (at 423 px wide).
        roll: in-plane turn of the product, degrees (clockwise on screen).
        scale: the product's size against the canonical framing.
        defocus: blur sigma at the focus line, pixels; ``dof``: extra sigma at the far ends of a
            tilted view (depth of field).
        vignetting: darkening at the corners (0..0.5).
        white_balance: per-channel gains (R, G, B).
        gain: exposure.
        shot_noise: Poisson part of the noise (variance per grey level).
        read_noise: Gaussian part (sigma, grey levels).
        jpeg: JPEG quality, or None for a lossless image.
    """

    focal: float = 4.0
    tilt: float = 0.0
    tilt_axis: float = 0.0
    dx: float = 0.0
    dy: float = 0.0
    roll: float = 0.0
    scale: float = 1.0
    defocus: float = 0.4
    dof: float = 0.0
    vignetting: float = 0.0
    white_balance: tuple[float, float, float] = (1.0, 1.0, 1.0)
    gain: float = 1.0
    shot_noise: float = 0.2
    read_noise: float = 1.5
    jpeg: int | None = None

    def __post_init__(self) -> None:
        if not 0 <= self.tilt <= 12:
            raise ValueError(f"camera tilt must be in [0, 12] degrees, got {self.tilt}")
        if self.focal < 0.8:
            raise ValueError(f"focal length must be at least 0.8 image widths, got {self.focal}")
        if self.jpeg is not None and not 1 <= self.jpeg <= 100:
            raise ValueError(f"jpeg quality must be in [1, 100], got {self.jpeg}")


@dataclass(frozen=True)
class CameraRange:
    """What a look family's rig may be: ranges the rig and each shot are drawn from."""

    tilt: tuple[float, float] = (0.0, 4.0)
    focal: tuple[float, float] = (2.5, 8.0)
    shift: float = 24.0
    roll: float = 6.0
    scale: tuple[float, float] = (0.85, 1.12)
    defocus: tuple[float, float] = (0.0, 1.0)
    dof: tuple[float, float] = (0.0, 1.2)
    vignetting: tuple[float, float] = (0.0, 0.35)
    white_balance: float = 0.08
    gain: tuple[float, float] = (0.75, 1.25)
    shot_noise: tuple[float, float] = (0.05, 0.6)
    read_noise: tuple[float, float] = (0.5, 3.0)
    jpeg: tuple[int, int] = (40, 95)
    jpeg_probability: float = 0.6


def sample_rig(rng: np.random.Generator, r: CameraRange) -> Camera:
    """The rig's camera: focal length, tilt, sensor character (a first shot is drawn by
    :func:`shot`)."""
    return Camera(
        focal=float(rng.uniform(*r.focal)),
        tilt=float(rng.uniform(*r.tilt)),
        tilt_axis=float(rng.uniform(0, 360)),
        defocus=float(rng.uniform(*r.defocus)),
        dof=float(rng.uniform(*r.dof)),
        vignetting=float(rng.uniform(*r.vignetting)),
        white_balance=tuple(
            float(v) for v in 1 + rng.uniform(-r.white_balance, r.white_balance, 3)
        ),
        shot_noise=float(rng.uniform(*r.shot_noise)),
        read_noise=float(rng.uniform(*r.read_noise)),
    )


def shot(
    camera: Camera, rng: np.random.Generator, r: CameraRange, geo: ConnectorGeometry
) -> Camera:
    """One shot on the rig: a fresh placement of the product (kept in view), a small camera
    jitter, exposure, white balance drift, focus, and the JPEG quality. Focal length, tilt
    range and the sensor's noise character stay the rig's."""
    tilt = float(np.clip(camera.tilt + rng.uniform(-0.3, 0.3), r.tilt[0], r.tilt[1]))
    base = replace(
        camera,
        tilt=tilt,
        tilt_axis=float(camera.tilt_axis + rng.uniform(-4, 4)),
        focal=float(camera.focal * rng.uniform(0.99, 1.01)),
        defocus=float(np.clip(camera.defocus + rng.uniform(-0.2, 0.2), 0, None)),
        white_balance=tuple(
            float(v) * float(w)
            for v, w in zip(camera.white_balance, rng.uniform(0.97, 1.03, 3), strict=True)
        ),
        gain=float(rng.uniform(*r.gain)),
        jpeg=int(rng.integers(r.jpeg[0], r.jpeg[1] + 1))
        if rng.random() < r.jpeg_probability
        else None,
    )
    reach = r.shift * geo.width / REFERENCE_WIDTH
    placed = base
    for _ in range(32):
        dx, dy = (float(v) for v in rng.uniform(-reach, reach, 2))
        placed = replace(
            base,
            dx=dx,
            dy=dy,
            roll=float(rng.uniform(-r.roll, r.roll)),
            scale=float(rng.uniform(*r.scale)),
        )
        if in_view(placed, geo):
            return placed
    for shrink in (0.75, 0.5, 0.25, 0.0):
        smaller = replace(
            placed,
            dx=placed.dx * shrink,
            dy=placed.dy * shrink,
            roll=placed.roll * shrink,
            scale=1 + (placed.scale - 1) * shrink,
        )
        if in_view(smaller, geo):
            return smaller
    return replace(placed, dx=0.0, dy=0.0, roll=0.0, scale=min(placed.scale, 0.9))


def _rotation(axis_deg: float, angle_deg: float) -> np.ndarray:
    a = math.radians(axis_deg)
    vec = np.array([math.cos(a), math.sin(a), 0.0]) * math.radians(angle_deg)
    return cv2.Rodrigues(vec)[0]


class Projector:
    """The camera of one shot over one geometry: canonical points at a height to image pixels.

    Coordinates are continuous (pixel ``i`` covers ``[i, i + 1)``), as everywhere in the project.
    """

    def __init__(self, camera: Camera, geo: ConnectorGeometry, *, placed: bool = True):
        w, h = geo.width, geo.height
        self.geo = geo
        self.camera = camera
        f = camera.focal * w
        self.k = np.array([[f, 0, w / 2], [0, f, h / 2], [0, 0, 1.0]])
        tilt = _rotation(camera.tilt_axis, camera.tilt)
        distance = f / camera.scale
        if placed:
            a = math.radians(camera.roll)
            roll = np.array(
                [[math.cos(a), -math.sin(a), 0], [math.sin(a), math.cos(a), 0], [0, 0, 1]]
            )
            shift = np.array([camera.dx / camera.scale, camera.dy / camera.scale, 0.0])
        else:
            roll, shift = np.eye(3), np.zeros(3)
        self.r = tilt @ roll
        self.t = tilt @ shift + np.array([0.0, 0.0, distance])
        self.centre = np.array([[1, 0, -w / 2], [0, 1, -h / 2], [0, 0, 1.0]])

    def homography(self, z: float = 0.0) -> np.ndarray:
        """3 x 3 map of the plane at height ``z`` (canonical x, y) to image pixels."""
        m = np.column_stack([self.r[:, 0], self.r[:, 1], self.r[:, 2] * (-z) + self.t])
        out = self.k @ m @ self.centre
        return out / out[2, 2]

    def project(self, pts: np.ndarray, z) -> np.ndarray:
        """Canonical points ``(n, 2)`` at heights ``z`` (scalar or ``(n,)``) to pixels."""
        pts = np.asarray(pts, np.float64)
        w, h = self.geo.width, self.geo.height
        world = np.column_stack(
            [
                pts[:, 0] - w / 2,
                pts[:, 1] - h / 2,
                -np.broadcast_to(np.asarray(z, np.float64), len(pts)),
            ]
        )
        cam = world @ self.r.T + self.t
        img = cam @ self.k.T
        return img[:, :2] / img[:, 2:3]

    def direction_to_camera(self, pts: np.ndarray) -> np.ndarray:
        """In-plane component of the unit vector from canonical points (z = 0) to the camera."""
        w, h = self.geo.width, self.geo.height
        eye = -self.r.T @ self.t  # camera centre in world coordinates (z down = -height)
        world = np.column_stack([pts[:, 0] - w / 2, pts[:, 1] - h / 2, np.zeros(len(pts))])
        d = eye[None, :] - world
        return d[:, :2] / np.linalg.norm(d, axis=1, keepdims=True)


def in_view(camera: Camera, geo: ConnectorGeometry, margin: float = 1.0) -> bool:
    """Whether every socket (and the pin tops above it) lands inside the image."""
    proj = Projector(camera, geo)
    half = geo.socket_size / 2
    centres = np.array([geo.pin_center(p) for p in ALL_POSITIONS])
    corners = (
        centres[:, None, :] + np.array([[-half, -half], [half, -half], [-half, half], [half, half]])
    ).reshape(-1, 2)
    pts = np.concatenate([proj.project(corners, 0.0), proj.project(corners, 2.0 * geo.pin_size)])
    return bool(
        (pts[:, 0] >= margin).all()
        and (pts[:, 0] <= geo.width - margin).all()
        and (pts[:, 1] >= margin).all()
        and (pts[:, 1] <= geo.height - margin).all()
    )


def cv_matrix(m: np.ndarray) -> np.ndarray:
    """A continuous-coordinate map as OpenCV's (pixel centres at integer coordinates)."""
    shift = np.array([[1, 0, 0.5], [0, 1, 0.5], [0, 0, 1.0]])
    unshift = np.array([[1, 0, -0.5], [0, 1, -0.5], [0, 0, 1.0]])
    return unshift @ m @ shift


@lru_cache(maxsize=8)
def _radius2(w: int, h: int) -> np.ndarray:
    xs = (np.arange(w, dtype=np.float32) + 0.5 - w / 2) / (w / 2)
    ys = (np.arange(h, dtype=np.float32) + 0.5 - h / 2) / (w / 2)
    r2 = xs[None, :] ** 2 + ys[:, None] ** 2
    r2.setflags(write=False)
    return r2


def develop(
    img: np.ndarray, camera: Camera, noise: np.ndarray, focus_weight: np.ndarray | None
) -> np.ndarray:
    """The sensor: defocus (``focus_weight``: 0 at the focus line .. 1 at the far ends), vignetting,
    white balance and gain, Poisson-Gaussian noise (``noise``: standard normals of the image's
    shape), rounding and JPEG. Float RGB in [0, 255] to uint8 RGB."""
    h, w = img.shape[:2]
    if camera.defocus > 0.25:
        img = cv2.GaussianBlur(img, (0, 0), camera.defocus)
    if focus_weight is not None and camera.dof > 0.25:
        far = cv2.GaussianBlur(img, (0, 0), camera.dof)
        img = img + (far - img) * focus_weight[..., None]
    factor = np.float32(camera.gain) * np.array(camera.white_balance, np.float32)
    if camera.vignetting > 0:
        light = 1.0 - np.float32(camera.vignetting) * _radius2(w, h)
        img = img * (light[..., None] * factor)
    else:
        img = img * factor
    sigma = np.sqrt(
        np.maximum(img, 0.0) * np.float32(camera.shot_noise) + np.float32(camera.read_noise**2)
    )
    img += sigma * noise
    out = np.clip(img + 0.5, 0, 255).astype(np.uint8)
    if camera.jpeg is not None:
        ok, buf = cv2.imencode(".jpg", out[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, camera.jpeg])
        out = np.ascontiguousarray(cv2.imdecode(buf, cv2.IMREAD_COLOR)[..., ::-1])
    return out
