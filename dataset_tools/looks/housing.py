"""The housing: moulded plastic of one colour, matte to glossy, with grain, a bevelled rim, a
thickness (its side wall shows under tilt) and a drop shadow on the bench.

Its top face is drawn in the plane frame (:mod:`dataset_tools.looks.frame`) without sockets; the
sockets (:mod:`dataset_tools.looks.pins`) and the pins' cast shadows are put on it by the scene.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from dataset_tools.looks.frame import PlaneFrame
from dataset_tools.looks.light import Light

COLOURS: dict[str, tuple[float, float, float]] = {
    "black": (30.0, 30.0, 33.0),
    "dark grey": (72.0, 74.0, 78.0),
    "grey": (148.0, 150.0, 154.0),
    "white": (226.0, 226.0, 220.0),
    "beige": (208.0, 196.0, 166.0),
    "natural": (224.0, 214.0, 186.0),
    "blue": (58.0, 92.0, 158.0),
    "green": (62.0, 128.0, 82.0),
}
"""Housing plastics (sRGB grey levels of the lit top face)."""


@dataclass(frozen=True)
class Housing:
    """The plastic body.

    Attributes:
        colour: a name of :data:`COLOURS`.
        gloss: 0 matte .. 1 glossy (mirror highlight of the lamp, sharper rim).
        grain: moulding texture amplitude, grey levels.
        rim: bevel width, canonical pixels.
        thickness: height of the side wall, as a share of the housing's height.
        shadow: darkness of the drop shadow on the bench (0..1).
        tint: small colour variation of the batch (multiplies the colour, per channel).
    """

    colour: str = "grey"
    gloss: float = 0.3
    grain: float = 3.0
    rim: float = 4.0
    thickness: float = 0.25
    shadow: float = 0.5
    tint: tuple[float, float, float] = (1.0, 1.0, 1.0)

    def __post_init__(self) -> None:
        if self.colour not in COLOURS:
            raise ValueError(f"unknown housing colour {self.colour!r}; choose from {list(COLOURS)}")

    @property
    def rgb(self) -> np.ndarray:
        return np.array(COLOURS[self.colour], np.float32) * np.array(self.tint, np.float32)


def sample(rng: np.random.Generator, colours: tuple[str, ...] = tuple(COLOURS)) -> Housing:
    """A housing of one of ``colours`` with drawn finish and size."""
    colour = str(colours[int(rng.integers(len(colours)))])
    return Housing(
        colour=colour,
        gloss=float(rng.uniform(0.0, 1.0)),
        grain=float(rng.uniform(0.5, 6.0)),
        rim=float(rng.uniform(2.0, 7.0)),
        thickness=float(rng.uniform(0.12, 0.4)),
        shadow=float(rng.uniform(0.3, 0.8)),
        tint=tuple(float(v) for v in rng.uniform(0.95, 1.05, 3)),
    )


def outline(box: tuple[float, float, float, float], radius: float, n: int = 6) -> np.ndarray:
    """Corners of the rounded rectangle ``box`` (canonical), ``(4 n, 2)``, clockwise on screen."""
    x1, y1, x2, y2 = box
    pts = []
    for cx, cy, a0 in (
        (x2 - radius, y1 + radius, -90),
        (x2 - radius, y2 - radius, 0),
        (x1 + radius, y2 - radius, 90),
        (x1 + radius, y1 + radius, 180),
    ):
        for t in np.linspace(0, 90, n):
            a = np.radians(a0 + t)
            pts.append((cx + radius * np.cos(a), cy + radius * np.sin(a)))
    return np.array(pts)


def corner_radius(geo) -> float:
    return 0.06 * geo.height


@lru_cache(maxsize=4)
def _grain_bank(height: int, width: int) -> np.ndarray:
    """Moulding grain of unit amplitude: fine speckle plus a soft mottle (fixed, read-only)."""
    import cv2

    rng = np.random.default_rng(1801)
    fine = rng.standard_normal((height, width)).astype(np.float32)
    fine = cv2.GaussianBlur(fine, (0, 0), 0.7)
    mottle = cv2.GaussianBlur(rng.standard_normal((height, width)).astype(np.float32), (0, 0), 6)
    out = fine / (fine.std() + 1e-6) + 0.8 * mottle / (mottle.std() + 1e-6)
    out = (out / out.std()).astype(np.float32)
    out.setflags(write=False)
    return out


def top_layer(housing: Housing, light: Light, frame: PlaneFrame) -> tuple[np.ndarray, np.ndarray]:
    """The lit top face without sockets: ``(rgb (h, w, 3), coverage (h, w))``, float32."""
    geo = frame.geo
    xs, ys = frame.grid
    x1, y1, x2, y2 = geo.housing_box
    cx, cy, hw, hh = (x1 + x2) / 2, (y1 + y2) / 2, (x2 - x1) / 2, (y2 - y1) / 2
    r = corner_radius(geo)
    qx = np.abs(xs - cx) - (hw - r)
    qy = np.abs(ys - cy) - (hh - r)
    sd = np.hypot(np.maximum(qx, 0), np.maximum(qy, 0)) + np.minimum(np.maximum(qx, qy), 0) - r
    cover = np.clip(0.5 - sd * frame.scale, 0.0, 1.0)
    # the bevel: the outer ``rim`` pixels slope down and outward; their normal leans outward
    t = np.clip(1.0 + sd / housing.rim, 0.0, 1.0)  # 0 inside the flat top, 1 at the edge
    ox = np.where(qx > qy, np.sign(xs - cx), 0.0) * (qx > -r)
    oy = np.where(qy >= qx, np.sign(ys - cy), 0.0) * (qy > -r)
    lean = 0.8 * t
    nz = np.sqrt(1 - lean**2)
    diffuse, spec = light.shade(
        ox * lean, oy * lean, nz, shininess=8 + 60 * housing.gloss, gloss=housing.gloss
    )
    # a glossy plate mirrors the lamp as a broad hot spot where the lamp's reflection falls
    k = light.key
    hot = 0.0
    if light.kind in ("specular", "directional") and housing.gloss > 0.2:
        sx, sy = cx - 0.45 * k[0] * 2 * hw, cy - 0.45 * k[1] * 2 * hh
        spread = (0.25 + 0.5 * (1 - housing.gloss)) * hw
        hot = np.exp(-(((xs - sx) ** 2 + (ys - sy) ** 2) / (2 * spread**2)))
        hot = hot * housing.gloss * (0.6 if light.kind == "specular" else 0.2)
    base = housing.rgb
    bank = _grain_bank(frame.height, frame.width)
    grain = bank * np.float32(housing.grain)
    rgb = base * diffuse[..., None] + grain[..., None] + (255.0 * (spec + hot))[..., None]
    edge = np.clip(1.0 + sd / 1.2, 0.0, 1.0) * 0.25  # a dark parting line at the very edge
    rgb *= (1.0 - edge)[..., None]
    return rgb.astype(np.float32), cover.astype(np.float32)


def wall_shade(housing: Housing, light: Light, normal: np.ndarray) -> np.ndarray:
    """Colour of a side wall facing the in-plane direction ``normal`` (its normal is level)."""
    diffuse, spec = light.shade(normal[0], normal[1], 0.0, 12 + 40 * housing.gloss, housing.gloss)
    return housing.rgb * float(diffuse) * 0.8 + 255.0 * float(spec) * 0.5
