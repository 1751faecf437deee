"""The bench the product lies on: plain, a gradient, or a texture (ESD mat, wood, brushed metal),
optionally with clutter (screws, a wire, chips) at the edges of the view.

The bench belongs to the rig: it stays where it is when the product is moved, and is seen by the
same tilted camera (its texture keystones like the product). Textures come from a fixed bank drawn
once per process; a bench picks its colours, grain direction and where its patch starts.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import cv2
import numpy as np

KINDS: tuple[str, ...] = ("plain", "gradient", "esd", "wood", "metal")
_BANK = (640, 1024)  # texture bank (height, width), bench pixels


@dataclass(frozen=True)
class Bench:
    """The surface around the product.

    Attributes:
        kind: ``plain``, ``gradient``, ``esd`` (dissipative mat), ``wood`` or ``metal`` (brushed).
        colour / colour2: the texture's two ends (dark and light grain, or gradient ends), RGB.
        angle: direction of the grain or gradient, degrees.
        offset: where the bench's patch starts in the bank, ``(x, y)`` bench pixels.
        clutter: number of small objects at the edges of the view (0: none).
        seed: places the clutter.
    """

    kind: str = "plain"
    colour: tuple[float, float, float] = (38.0, 41.0, 47.0)
    colour2: tuple[float, float, float] = (52.0, 55.0, 60.0)
    angle: float = 0.0
    offset: tuple[int, int] = (0, 0)
    clutter: int = 0
    seed: int = 0

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"unknown bench {self.kind!r}; choose from {', '.join(KINDS)}")


_PALETTES = {
    "plain": [
        ((38, 41, 47), (38, 41, 47)),
        ((90, 92, 96), (90, 92, 96)),
        ((18, 18, 20), (18, 18, 20)),
        ((170, 172, 170), (170, 172, 170)),
    ],
    "gradient": [
        ((20, 22, 26), (90, 94, 100)),
        ((120, 124, 130), (200, 202, 204)),
        ((40, 48, 70), (90, 110, 150)),
    ],
    "esd": [
        ((40, 70, 110), (70, 100, 140)),
        ((50, 90, 70), (80, 120, 96)),
        ((60, 62, 66), (96, 98, 104)),
    ],
    "wood": [
        ((96, 60, 32), (160, 112, 64)),
        ((130, 92, 56), (200, 160, 110)),
        ((70, 44, 26), (120, 80, 46)),
    ],
    "metal": [((110, 112, 116), (180, 182, 186)), ((70, 72, 76), (140, 142, 146))],
}


def sample(rng: np.random.Generator, kinds: tuple[str, ...] = KINDS, clutter: bool = True) -> Bench:
    kind = str(kinds[int(rng.integers(len(kinds)))])
    palette = _PALETTES[kind]
    lo, hi = palette[int(rng.integers(len(palette)))]
    jitter = rng.uniform(0.85, 1.15)
    return Bench(
        kind=kind,
        colour=tuple(float(v) * jitter for v in lo),
        colour2=tuple(float(v) * jitter for v in hi),
        angle=float(rng.uniform(0, 180)),
        offset=(int(rng.integers(0, _BANK[1] // 2)), int(rng.integers(0, _BANK[0] // 2))),
        clutter=int(rng.integers(0, 4)) if clutter else 0,
        seed=int(rng.integers(2**31)),
    )


@lru_cache(maxsize=8)
def _bank(kind: str) -> np.ndarray:
    """A texture of ``kind`` in [0, 1] (float32, read-only), drawn once per process."""
    rng = np.random.default_rng([18, KINDS.index(kind)])
    h, w = _BANK
    if kind in ("plain", "gradient"):
        tex = np.zeros((h, w), np.float32)
    elif kind == "esd":  # a fine dissipative speckle with faint fibres
        tex = cv2.GaussianBlur(rng.random((h, w), np.float32), (0, 0), 0.8)
        fib = cv2.GaussianBlur(rng.random((h, w), np.float32), (0, 0), 4.0)
        tex = 0.6 * tex + 0.4 * fib
    elif kind == "wood":  # growth rings bent by a slow warp, plus fine pores
        ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
        warp = cv2.GaussianBlur(rng.standard_normal((h, w)).astype(np.float32), (0, 0), 40) * 300
        rings = 0.5 + 0.5 * np.sin((ys + warp) * 0.22 + 3 * np.sin(xs * 0.004))
        pores = cv2.GaussianBlur(rng.random((h, w), np.float32), (9, 1), 0)
        tex = 0.75 * rings**1.5 + 0.25 * pores
    else:  # brushed metal: streaks along x
        noise = rng.random((h, w), np.float32)
        tex = cv2.blur(noise, (61, 1))
        tex = (tex - tex.min()) / (np.ptp(tex) + 1e-6) * 0.7 + 0.3 * cv2.blur(noise, (5, 1))
    tex = (tex - tex.min()) / max(float(np.ptp(tex)), 1e-6)
    tex = tex.astype(np.float32)
    tex.setflags(write=False)
    return tex


@lru_cache(maxsize=16)
def _patch(bench: Bench, width: int, height: int) -> np.ndarray:
    """The bench's texture value (0..1) in bench coordinates: an image-sized patch plus a margin
    on every side (the camera's tilt and jitter look a little around it), float32, read-only."""
    pad = width // 4
    h, w = height + 2 * pad, width + 2 * pad
    if bench.kind == "plain":
        tex = np.zeros((h, w), np.float32)
    elif bench.kind == "gradient":
        a = np.radians(bench.angle)
        ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
        t = ((xs - w / 2) * np.cos(a) + (ys - h / 2) * np.sin(a)) / max(w, h) + 0.5
        tex = np.clip(t, 0, 1).astype(np.float32)
    else:
        bank = _bank(bench.kind)
        m = cv2.getRotationMatrix2D((w / 2, h / 2), bench.angle, 1.0)
        m[:, 2] += bench.offset
        tex = cv2.warpAffine(
            bank,
            m,
            (w, h),
            flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
            borderMode=cv2.BORDER_REFLECT,
        )
    if bench.clutter:
        tex = tex.copy()
        _clutter(tex, bench, pad, width, height)
    tex.setflags(write=False)
    return tex


def _clutter(tex: np.ndarray, bench: Bench, pad: int, width: int, height: int) -> None:
    """Small objects near the edges of the view: screws, a wire, a chip (texture values < 0 are
    dark, > 1 bright)."""
    rng = np.random.default_rng(bench.seed)
    h, w = tex.shape
    for _ in range(bench.clutter):
        side = int(rng.integers(4))
        along = float(rng.uniform(0.05, 0.95))
        depth = float(rng.uniform(-0.02, 0.05))
        if side in (0, 1):  # top / bottom edge
            x = pad + along * width
            y = pad + (depth * height if side == 0 else height - depth * height)
        else:
            y = pad + along * height
            x = pad + (depth * width if side == 2 else width - depth * width)
        what = int(rng.integers(3))
        centre = (int(x * 16), int(y * 16))
        if what == 0:  # a screw head with a slot
            r = int(rng.uniform(6, 11) * 16)
            cv2.circle(tex, centre, r, 1.6, -1, cv2.LINE_AA, 4)
            cv2.circle(tex, centre, int(r * 0.8), 1.1, -1, cv2.LINE_AA, 4)
            a = rng.uniform(0, np.pi)
            d = (int(np.cos(a) * r * 0.7), int(np.sin(a) * r * 0.7))
            cv2.line(
                tex,
                (centre[0] - d[0], centre[1] - d[1]),
                (centre[0] + d[0], centre[1] + d[1]),
                -0.6,
                3,
                cv2.LINE_AA,
                4,
            )
        elif what == 1:  # a wire running off the edge
            a = rng.uniform(0, 2 * np.pi)
            end = (int(centre[0] + np.cos(a) * 900), int(centre[1] + np.sin(a) * 900))
            cv2.line(tex, centre, end, -0.8, int(rng.uniform(4, 8)), cv2.LINE_AA, 4)
        else:  # a dark chip with legs
            sw, sh = rng.uniform(14, 30), rng.uniform(8, 16)
            box = cv2.boxPoints(((x, y), (sw, sh), float(rng.uniform(0, 180))))
            cv2.fillConvexPoly(tex, np.round(box * 16).astype(np.int32), -0.9, cv2.LINE_AA, 4)


def draw(bench: Bench, homography: np.ndarray, width: int, height: int) -> np.ndarray:
    """The bench as the camera sees it: float32 RGB ``(height, width, 3)``.

    ``homography`` maps bench coordinates (canonical pixels of an untilted, unplaced view, i.e. the
    rig's frame) to image pixels (continuous).
    """
    from dataset_tools.looks.camera import cv_matrix

    pad = width // 4
    tex = _patch(bench, width, height)
    to_bench = np.array([[1, 0, pad], [0, 1, pad], [0, 0, 1.0]])  # bench coords to patch pixels
    m = cv_matrix(homography @ np.linalg.inv(to_bench))
    t = cv2.warpPerspective(
        tex, m, (width, height), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT
    )
    lo = np.array(bench.colour, np.float32)
    hi = np.array(bench.colour2, np.float32)
    if bench.kind == "plain":
        lo = hi = np.array(bench.colour, np.float32)
    base = lo + (hi - lo) * np.clip(t, 0, 1)[..., None]
    # clutter: values above 1 are bright metal, below 0 dark plastic
    bright = np.clip(t - 1, 0, 1)[..., None]
    dark = np.clip(-t, 0, 1)[..., None]
    return (base * (1 - bright - dark) + 190 * bright + 15 * dark).astype(np.float32)
