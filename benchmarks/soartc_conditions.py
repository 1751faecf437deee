"""Imaging conditions of a test shot unlike its reference: SOARTC must not call them defects.

Each condition is a named, seeded change of the test panel's photometry, what another camera,
lamp or bench gives a good product: gain, offset, gamma, a white-balance cast, vignetting, a
lighting gradient, a textured bench, a fixed gamma of 0.6 or 1.6, defocus, or several at once.
:data:`TRAIN_CONDITIONS` are the ones a threshold may be calibrated on; :data:`HELD_OUT_CONDITIONS`
(stronger gamma, vignetting, a textured bench, everything combined) are only ever measured, as
are the fixed gammas and defocus (the look zoo's ``--conditions``).

Example:
    >>> rng = np.random.default_rng(0)
    >>> out = apply_condition("gamma-strong", np.full((20, 30, 3), 128, np.uint8), rng)
    >>> out.shape, out.dtype
    ((20, 30, 3), dtype('uint8'))
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from scipy import ndimage as ndi

Condition = Callable[[np.ndarray, np.random.Generator], np.ndarray]


def _gain(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    return img * rng.uniform(0.6, 1.4)


def _offset(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    return img + rng.choice([-1.0, 1.0]) * rng.uniform(10, 30)


def _gamma_mild(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    g = rng.uniform(0.7, 0.85) if rng.random() < 0.5 else rng.uniform(1.2, 1.4)
    return 255.0 * (np.clip(img, 0, None) / 255.0) ** g


def _gamma_strong(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    g = rng.uniform(0.55, 0.65) if rng.random() < 0.5 else rng.uniform(1.5, 1.7)
    return 255.0 * (np.clip(img, 0, None) / 255.0) ** g


def _white_balance(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    warm = rng.uniform(0.12, 0.3) * rng.choice([-1.0, 1.0])  # red up and blue down, or reverse
    tint = rng.uniform(-0.1, 0.1)
    return img * np.array([1 + warm, 1 + tint, 1 - warm])


def _grid(img: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    h, w = img.shape[:2]
    y, x = np.mgrid[0:h, 0:w].astype(np.float64)
    return (x - w / 2) / (w / 2), (y - h / 2) / (w / 2)


def _gradient(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    u, v = _grid(img)
    angle = rng.uniform(0, 2 * np.pi)
    amp = rng.uniform(0.15, 0.35)
    return img * (1 + amp * (np.cos(angle) * u + np.sin(angle) * v))[..., None]


def _vignetting(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    u, v = _grid(img)
    cx, cy = rng.uniform(-0.2, 0.2, 2)
    return img * (1 - rng.uniform(0.25, 0.5) * ((u - cx) ** 2 + (v - cy) ** 2))[..., None]


def _bench_mask(img: np.ndarray) -> np.ndarray:
    """The bench: pixels joined to the border whose colour is the border's."""
    smooth = ndi.gaussian_filter(img.astype(np.float64), (1.5, 1.5, 0))
    border = np.concatenate([smooth[0], smooth[-1], smooth[:, 0], smooth[:, -1]])
    close = np.linalg.norm(smooth - np.median(border, axis=0), axis=-1) < 14
    labels, _ = ndi.label(close)
    edge = np.unique(np.concatenate([labels[0], labels[-1], labels[:, 0], labels[:, -1]]))
    return np.isin(labels, edge[edge > 0])


def _textured_bench(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """An ESD mat or wood grain where the plain bench was (different in every shot)."""
    h, w = img.shape[:2]
    mask = _bench_mask(img)
    fine = ndi.gaussian_filter(rng.normal(0, 1, (h, w)), 1.0)
    coarse = ndi.gaussian_filter(rng.normal(0, 1, (h, w)), (1.0, 6.0) if rng.random() < 0.5
                                 else 4.0)  # fmt: skip
    texture = 0.5 * fine / fine.std() + coarse / coarse.std()
    base = np.median(img[mask], axis=0) if mask.any() else np.array([40.0, 42.0, 48.0])
    tint = base + rng.uniform(-12, 30, 3)
    bench = tint + rng.uniform(8, 20) * texture[..., None]
    out = img.astype(np.float64).copy()
    soft = ndi.gaussian_filter(mask.astype(np.float64), 0.7)[..., None]
    return out * (1 - soft) + bench * soft


def _gamma_fixed(g: float) -> Condition:
    """A fixed gamma (the issue's 0.6 and 1.6: a test shot much brighter or darker in the mids)."""
    return lambda img, rng: 255.0 * (np.clip(img, 0, None) / 255.0) ** g


def _defocus(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """The test shot out of focus: a Gaussian blur of 1.2-2 px (depth of field missed)."""
    sigma = rng.uniform(1.2, 2.0)
    return ndi.gaussian_filter(img, (sigma, sigma, 0))


def _combined(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    out = img
    for name in ("textured-bench", "vignetting", "white-balance", "gradient", "gamma-strong"):
        if rng.random() < 0.6:
            out = CONDITIONS[name](out, rng)
    return out


CONDITIONS: dict[str, Condition] = {
    "plain": lambda img, rng: img,
    "gain": _gain,
    "offset": _offset,
    "gamma-mild": _gamma_mild,
    "white-balance": _white_balance,
    "gradient": _gradient,
    "gamma-strong": _gamma_strong,
    "vignetting": _vignetting,
    "textured-bench": _textured_bench,
    "combined": _combined,
    # measured only (the look zoo's robustness conditions; no calibration uses them)
    "gamma-0.6": _gamma_fixed(0.6),
    "gamma-1.6": _gamma_fixed(1.6),
    "defocus": _defocus,
}
TRAIN_CONDITIONS: tuple[str, ...] = (
    "plain", "gain", "offset", "gamma-mild", "white-balance", "gradient",
)  # fmt: skip
HELD_OUT_CONDITIONS: tuple[str, ...] = ("gamma-strong", "vignetting", "textured-bench", "combined")


def apply_condition(name: str, image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """``image`` (H x W x 3 uint8) as the condition ``name`` shows it, drawn from ``rng``."""
    if name not in CONDITIONS:
        raise ValueError(f"unknown condition {name!r}; choose from {tuple(CONDITIONS)}")
    out = CONDITIONS[name](np.asarray(image, np.float64), rng)
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)
