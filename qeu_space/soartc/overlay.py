"""Pictures of a SOARTC heatmap: a colour blend (NSOART variant) and an overlay with a colour bar.

Both use one fixed colour scale by default (0 to ``DEFAULT_VMAX`` robust standard deviations), not
each image's own maximum, so a passed product stays cool and a defect glows the same way in every
image; a model trained on NSOART composites sees one meaning per colour.
"""

from __future__ import annotations

import io

import matplotlib
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import Normalize
from matplotlib.figure import Figure
from PIL import Image

from qeu_space.soartc.core import ImageLike, SoartcResult

DEFAULT_VMAX = 40.0
"""Top of the colour scale: passed pairs on the quality benchmark stay below it, defects above."""
DEFAULT_CMAP = "inferno"


def colorize(
    heatmap: np.ndarray, *, vmax: float = DEFAULT_VMAX, cmap: str = DEFAULT_CMAP
) -> np.ndarray:
    """``heatmap`` (H x W) as uint8 RGB through ``cmap``, 0 to ``vmax`` (values above clip)."""
    heat = _heat(heatmap)
    if not vmax > 0:
        raise ValueError(f"vmax must be > 0, got {vmax}")
    rgba = matplotlib.colormaps[cmap](Normalize(0.0, vmax, clip=True)(heat))
    return (rgba[..., :3] * 255.0 + 0.5).astype(np.uint8)


def blend_heatmap(
    image: ImageLike,
    heatmap: np.ndarray | SoartcResult,
    *,
    alpha: float = 0.45,
    vmax: float = DEFAULT_VMAX,
    cmap: str = DEFAULT_CMAP,
) -> Image.Image:
    """``image`` with the coloured heatmap blended over it (same size, RGB).

    ``alpha`` is the heatmap's weight, 0 (image only) to 1 (heatmap only).
    """
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be between 0 and 1, got {alpha}")
    heat = _heat(heatmap)
    base = _rgb(image)
    if base.shape[:2] != heat.shape:
        raise ValueError(
            f"image is {base.shape[1]} x {base.shape[0]} but the heatmap is "
            f"{heat.shape[1]} x {heat.shape[0]}"
        )
    colour = colorize(heat, vmax=vmax, cmap=cmap).astype(np.float32)
    mixed = (1.0 - alpha) * base.astype(np.float32) + alpha * colour
    return Image.fromarray(np.clip(mixed + 0.5, 0, 255).astype(np.uint8), "RGB")


def heatmap_overlay(
    image: ImageLike,
    result: SoartcResult | np.ndarray,
    *,
    alpha: float = 0.5,
    vmax: float | None = DEFAULT_VMAX,
    cmap: str = DEFAULT_CMAP,
    title: str | None = None,
    dpi: int = 100,
) -> Image.Image:
    """A figure of ``image`` with the heatmap over it and a labelled colour bar, as a PIL image.

    ``vmax=None`` scales to this heatmap's maximum. The title defaults to the image score.
    Save it with ``.save("heat.png")``.
    """
    heat = _heat(result)
    base = _rgb(image)
    if base.shape[:2] != heat.shape:
        raise ValueError(
            f"image is {base.shape[1]} x {base.shape[0]} but the heatmap is "
            f"{heat.shape[1]} x {heat.shape[0]}"
        )
    top = float(heat.max()) if vmax is None else float(vmax)
    top = top if top > 0 else 1.0
    h, w = heat.shape
    fig = Figure(figsize=(6.0 * w / max(h, w) + 1.5, 6.0 * h / max(h, w) + 0.6))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    ax.imshow(base, interpolation="nearest")
    shown = ax.imshow(heat, cmap=cmap, vmin=0.0, vmax=top, alpha=alpha, interpolation="bilinear")
    ax.set_axis_off()
    if title is None:
        score = result.image_score if isinstance(result, SoartcResult) else float(heat.max())
        title = f"SOARTC image score {score:.1f}"
    ax.set_title(title)
    bar = fig.colorbar(shown, ax=ax, fraction=0.046, pad=0.04, extend="max")
    bar.solids.set_alpha(1.0)
    bar.set_label("anomaly (Mahalanobis distance)")
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight", pad_inches=0.1)
    buf.seek(0)
    with Image.open(buf) as png:
        return png.convert("RGB")


def _heat(heatmap: np.ndarray | SoartcResult) -> np.ndarray:
    heat = heatmap.heatmap if isinstance(heatmap, SoartcResult) else np.asarray(heatmap)
    if heat.ndim != 2:
        raise ValueError(f"heatmap must be 2-D, got shape {heat.shape}")
    if not np.isfinite(heat).all():
        raise ValueError("heatmap contains NaN or inf")
    return heat


def _rgb(image: ImageLike) -> np.ndarray:
    """uint8 RGB pixels of a PIL image or array (gray, RGB, RGBA; uint8, uint16 or float 0-1)."""
    if isinstance(image, Image.Image):
        return np.asarray(image.convert("RGB"))
    arr = np.asarray(image)
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[..., 0]
    if arr.ndim == 3 and arr.shape[2] in (3, 4):
        arr = arr[..., :3]
    elif arr.ndim != 2:
        raise ValueError(f"image has shape {arr.shape}: expected H x W or H x W x 3/4")
    if arr.dtype == np.uint16:
        arr = (arr.astype(np.float64) / 257.0 + 0.5).astype(np.uint8)
    elif np.issubdtype(arr.dtype, np.floating):
        arr = (np.clip(arr, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
    elif arr.dtype != np.uint8:
        raise TypeError(f"image has dtype {arr.dtype}: pass uint8, uint16 or float pixels")
    return np.stack([arr] * 3, axis=-1) if arr.ndim == 2 else arr
