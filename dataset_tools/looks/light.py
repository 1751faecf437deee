"""The lamp of a rig: diffuse, directional (pins cast shadows), ring, or one strong specular.

A light is shared by the reference and the test shot (it belongs to the rig, not to the image).
Directions are in the product's frame: ``x`` right, ``y`` down the image, ``z`` up toward the
camera; :meth:`Light.directions` gives unit vectors pointing *toward* the lamp.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

KINDS: tuple[str, ...] = ("diffuse", "directional", "ring", "specular")


@dataclass(frozen=True)
class Light:
    """One lamp setup.

    Attributes:
        kind: ``diffuse`` (overcast, soft, no cast shadow), ``directional`` (a low lamp: shaded
            sides and shadows cast by the pins), ``ring`` (a ring light around the lens: even,
            ring-shaped highlights on domed tops) or ``specular`` (a directional lamp whose mirror
            reflection hits the housing: a hot spot, bright pin highlights).
        azimuth: where the key lamp stands, degrees (0 = right, 90 = bottom of the image).
        elevation: its height above the housing plane, degrees (90 = overhead).
        ambient: share of the light that comes from everywhere (fills the shadows).
    """

    kind: str = "diffuse"
    azimuth: float = 225.0
    elevation: float = 60.0
    ambient: float = 0.55

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"unknown light {self.kind!r}; choose from {', '.join(KINDS)}")

    def directions(self) -> list[tuple[np.ndarray, float]]:
        """``(unit vector toward a lamp, weight)`` for each lamp (a ring light is eight)."""
        if self.kind == "ring":
            el = math.radians(self.elevation)
            out = []
            for k in range(8):
                az = 2 * math.pi * k / 8
                v = np.array(
                    [math.cos(el) * math.cos(az), math.cos(el) * math.sin(az), math.sin(el)]
                )
                out.append((v, 1 / 8))
            return out
        return [(self.key, 1.0)]

    @property
    def key(self) -> np.ndarray:
        """Unit vector toward the key lamp."""
        az, el = math.radians(self.azimuth), math.radians(self.elevation)
        return np.array([math.cos(el) * math.cos(az), math.cos(el) * math.sin(az), math.sin(el)])

    @property
    def shadow_strength(self) -> float:
        """How dark a cast shadow is (0: none): only a single lamp casts a crisp one."""
        if self.kind in ("directional", "specular"):
            return 1.0 - self.ambient
        return 0.0

    @property
    def shadow_shift(self) -> tuple[float, float]:
        """Where the shadow of a point one unit above a plane lands on it (in-plane offset)."""
        k = self.key
        return (-k[0] / max(k[2], 0.2), -k[1] / max(k[2], 0.2))

    @property
    def specular(self) -> float:
        """Strength of mirror highlights (0..1)."""
        return {"diffuse": 0.25, "directional": 0.6, "ring": 0.7, "specular": 1.0}[self.kind]

    def shade(self, nx, ny, nz, shininess: float = 30.0, gloss: float = 1.0):
        """Diffuse and specular terms for unit normals ``(nx, ny, nz)`` (arrays), viewed from above.

        Returns ``(diffuse, specular)``: diffuse includes the ambient share (1.0 = a surface
        facing the lamp); specular is the Blinn-Phong highlight times :attr:`specular`.
        """
        diffuse = 0.0
        spec = 0.0
        for v, w in self.directions():
            d = nx * v[0] + ny * v[1] + nz * v[2]
            diffuse = diffuse + w * np.maximum(d, 0.0)
            hx, hy, hz = v[0], v[1], v[2] + 1.0  # half vector with the view (0, 0, 1)
            n = math.sqrt(hx * hx + hy * hy + hz * hz)
            c = (nx * hx + ny * hy + nz * hz) / n
            spec = spec + w * np.maximum(c, 0.0) ** shininess
        diffuse = self.ambient + (1 - self.ambient) * diffuse
        return diffuse, spec * self.specular * gloss


def sample(
    rng: np.random.Generator,
    kinds: tuple[str, ...] = KINDS,
    elevation: tuple[float, float] = (35.0, 75.0),
) -> Light:
    """A light of one of ``kinds``: lamp position, ambient share."""
    kind = str(kinds[int(rng.integers(len(kinds)))])
    azimuth = float(rng.uniform(0, 360))
    el = float(rng.uniform(*elevation))
    if kind == "diffuse":
        return Light(kind, azimuth, float(rng.uniform(60, 85)), float(rng.uniform(0.6, 0.8)))
    if kind == "ring":
        return Light(kind, azimuth, float(rng.uniform(50, 70)), float(rng.uniform(0.35, 0.55)))
    return Light(kind, azimuth, el, float(rng.uniform(0.3, 0.5)))
