"""Pins and their sockets: square or round terminals of gold, tin or nickel with flat or domed
tops, standing ``height`` above the housing; sockets with a chamfered lip, an inner wall and a
floor ``depth`` below the housing top.

Everything here is a function of canonical offsets from a site centre, so the scene can draw a
face once as a sprite (all 27 sites share it) or at any sub-pixel place (a bent pin's tip).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from dataset_tools.looks.light import Light

SHAPES: tuple[str, ...] = ("square", "round")
METALS: dict[str, tuple[float, float, float]] = {
    "gold": (232.0, 190.0, 96.0),
    "tin": (200.0, 198.0, 188.0),
    "nickel": (176.0, 178.0, 184.0),
}
TOPS: tuple[str, ...] = ("flat", "domed")


@dataclass(frozen=True)
class Pins:
    """The terminals and the sockets they stand in.

    Attributes:
        shape: ``square`` or ``round`` (cross-section of the shaft and face).
        metal: a name of :data:`METALS`.
        top: ``flat`` (a bevelled flat face) or ``domed`` (a rounded tip).
        height: how far a pin's top stands above the housing top, in pin sizes.
        depth: socket depth below the housing top, in pin sizes.
        chamfer: width of the socket's chamfered lip, as a share of the socket's half side.
        size: face size against the geometry's pin size (0.9 .. 1.1).
    """

    shape: str = "square"
    metal: str = "gold"
    top: str = "flat"
    height: float = 1.2
    depth: float = 1.0
    chamfer: float = 0.25
    size: float = 1.0

    def __post_init__(self) -> None:
        if self.shape not in SHAPES:
            raise ValueError(f"unknown pin shape {self.shape!r}; choose from {SHAPES}")
        if self.metal not in METALS:
            raise ValueError(f"unknown metal {self.metal!r}; choose from {list(METALS)}")
        if self.top not in TOPS:
            raise ValueError(f"unknown pin top {self.top!r}; choose from {TOPS}")

    @property
    def rgb(self) -> np.ndarray:
        return np.array(METALS[self.metal], np.float32)


def sample(
    rng: np.random.Generator,
    shapes: tuple[str, ...] = SHAPES,
    metals: tuple[str, ...] = tuple(METALS),
    tops: tuple[str, ...] = TOPS,
) -> Pins:
    return Pins(
        shape=str(shapes[int(rng.integers(len(shapes)))]),
        metal=str(metals[int(rng.integers(len(metals)))]),
        top=str(tops[int(rng.integers(len(tops)))]),
        height=float(rng.uniform(0.8, 1.6)),
        depth=float(rng.uniform(0.8, 1.6)),
        chamfer=float(rng.uniform(0.12, 0.3)),
        size=float(rng.uniform(0.92, 1.08)),
    )


def shape_sd(shape: str, dx, dy, half: float):
    """Signed distance (canonical px, negative inside) to a face of half side ``half``, and the
    outward in-plane normal ``(ox, oy)`` of its nearest edge."""
    if shape == "round":
        r = np.hypot(dx, dy)
        inv = 1.0 / np.maximum(r, 1e-3)
        return r - half, dx * inv, dy * inv
    radius = 0.15 * half
    qx = np.abs(dx) - (half - radius)
    qy = np.abs(dy) - (half - radius)
    sd = np.hypot(np.maximum(qx, 0), np.maximum(qy, 0)) + np.minimum(np.maximum(qx, qy), 0)
    ox = np.where(qx >= qy, np.sign(dx), 0.0)
    oy = np.where(qy > qx, np.sign(dy), 0.0)
    return sd - radius, ox, oy


def outline(shape: str, cx: float, cy: float, half: float) -> np.ndarray:
    """Polygon ``(n, 2)`` of a face's edge centred at ``(cx, cy)`` (canonical), for shafts and
    shadows."""
    if shape == "round":
        a = np.linspace(0, 2 * np.pi, 16, endpoint=False)
        return np.stack([cx + half * np.cos(a), cy + half * np.sin(a)], axis=1)
    h = half
    return np.array([[cx - h, cy - h], [cx + h, cy - h], [cx + h, cy + h], [cx - h, cy + h]])


def face(pins: Pins, light: Light, dx, dy, half: float, scale: float, dim: float = 1.0):
    """A pin's top face seen from above: premultiplied RGBA ``(..., 4)`` float32.

    ``dx``, ``dy``: canonical offsets from the face centre (broadcastable arrays); ``half``: half
    side; ``scale``: pixels per canonical pixel (for anti-aliasing); ``dim``: share of the lamp
    reaching it (a face deep in a socket gets less).
    """
    sd, ox, oy = shape_sd(pins.shape, dx, dy, half)
    cover = np.clip(0.5 - sd * scale, 0.0, 1.0)
    if pins.top == "domed":  # a rounded tip: the normal leans with the distance from the centre
        if pins.shape == "round":
            rx, ry = dx / half, dy / half
        else:
            rx, ry = np.clip(dx / half, -1, 1) ** 3, np.clip(dy / half, -1, 1) ** 3
        lean_x, lean_y = 0.85 * rx, 0.85 * ry
    else:  # flat, with a narrow bevel all round
        t = np.clip(1.0 + sd / (0.22 * half), 0.0, 1.0)
        lean_x, lean_y = 0.7 * t * ox, 0.7 * t * oy
    nz = np.sqrt(np.clip(1.0 - lean_x**2 - lean_y**2, 0.05, 1.0))
    diffuse, spec = light.shade(lean_x, lean_y, nz, shininess=40.0)
    metal = pins.rgb
    rgb = metal * (diffuse * dim)[..., None] * 0.95 + (255.0 * spec * dim)[..., None]
    rgb = np.clip(rgb, 0, 255)
    return np.concatenate([rgb * cover[..., None], cover[..., None]], axis=-1).astype(np.float32)


def shaft_colour(pins: Pins, light: Light, normal: tuple[float, float]) -> np.ndarray:
    """Colour of a shaft side facing in-plane direction ``normal``: darker than the face."""
    diffuse, spec = light.shade(normal[0], normal[1], 0.0, 20.0)
    return np.clip(pins.rgb * (0.25 + 0.6 * float(diffuse)) + 120.0 * float(spec), 0, 255)


def socket_lip(pins: Pins, light: Light, dx, dy, socket_half: float, scale: float, shape: str):
    """The socket opening on the housing top: ``(shade, hole)``.

    ``shade`` multiplies the housing colour (the chamfer, ``chamfer`` socket half-sides wide
    around the opening, slopes down into the hole: lit on the side away from the lamp, dark on
    the side toward it); ``hole`` is the coverage of the opening (the geometry's socket: where the
    top face is cut away and one looks into the socket).
    """
    outer = socket_half * (1 + pins.chamfer)
    sd, ox, oy = shape_sd(shape, dx, dy, outer)
    hole = np.clip(0.5 - (sd + (outer - socket_half)) * scale, 0.0, 1.0)
    lip = np.clip(0.5 - sd * scale, 0.0, 1.0) - hole
    # the chamfer's normal leans inward (toward the centre): -outward
    diffuse, _ = light.shade(-0.7 * ox, -0.7 * oy, 0.71, 10.0)
    flat, _ = light.shade(np.zeros(1), np.zeros(1), np.ones(1), 10.0)
    shade = 1.0 + lip * (0.8 * diffuse / flat - 1.0)
    return shade.astype(np.float32), hole.astype(np.float32)


def socket_floor(
    floor_rgb: np.ndarray,
    wall_rgb: np.ndarray,
    dx,
    dy,
    socket_half: float,
    pins: Pins,
    scale: float,
    shape: str,
    pin_half: float,
) -> np.ndarray:
    """The socket seen at its floor's depth: the floor inside the hole's outline (darker near
    the walls), the inner wall outside it, a press-fit hole in the middle. RGB (..., 3)."""
    inner = socket_half
    sd, _, _ = shape_sd(shape, dx, dy, inner)
    inside = np.clip(0.5 - sd * scale, 0.0, 1.0)
    occlusion = 0.55 + 0.45 * np.clip(-sd / (0.5 * inner), 0.0, 1.0)  # corners get less light
    sd_hole, _, _ = shape_sd(pins.shape, dx, dy, pin_half * 0.55)
    hole = np.clip(0.5 - sd_hole * scale, 0.0, 1.0) * 0.6
    floor = floor_rgb * (occlusion * (1 - hole))[..., None]
    return (wall_rgb * (1 - inside)[..., None] + floor * inside[..., None]).astype(np.float32)
