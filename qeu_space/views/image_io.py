"""Read an uploaded image safely: size and pixel limits, one clear error per bad file.

A public Space receives whatever people upload. Everything an upload can be (a file too large, not
an image, a truncated PNG, a header promising 30000 x 30000 pixels to exhaust memory, a 1 x 1
image, 16-bit grey, a palette with transparency, a pair of different sizes) becomes either an RGB
``PIL.Image`` or an :class:`UploadError` whose one-line message says what is wrong and what to do.

Decompression bombs are stopped by PIL's own guard: :func:`configure_pil` sets
``Image.MAX_IMAGE_PIXELS`` to the cap, so ``Image.open`` raises ``DecompressionBombError`` for a
header above twice the cap before any pixel is decoded; the band between the cap and twice the cap
(where PIL only warns) is refused here from the header size, still before decoding.

Example:
    >>> limits = UploadLimits(max_bytes=10_000_000, max_pixels=4096 * 4096)
    >>> image = read_image("composite.png", limits, min_size=(96, 96))
    >>> image.mode
    'RGB'
"""

from __future__ import annotations

import io
import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

#: Formats an upload may be in (``Image.open(formats=...)``: nothing else is even tried).
FORMATS: tuple[str, ...] = ("PNG", "JPEG", "WEBP", "BMP")
#: Default caps: 10 MB per file, 4096 x 4096 pixels.
DEFAULT_MAX_BYTES = 10 * 1024 * 1024
DEFAULT_MAX_PIXELS = 4096 * 4096


class UploadError(ValueError):
    """An upload cannot be used; the message is one line meant for the person who uploaded it."""


@dataclass(frozen=True)
class UploadLimits:
    """What an upload may be.

    Attributes:
        max_bytes: largest file accepted, in bytes.
        max_pixels: largest ``width * height`` accepted (decompression-bomb cap).
    """

    max_bytes: int = DEFAULT_MAX_BYTES
    max_pixels: int = DEFAULT_MAX_PIXELS

    def __post_init__(self) -> None:
        if self.max_bytes < 1024:
            raise ValueError(f"max_bytes must be at least 1024, got {self.max_bytes}")
        if self.max_pixels < 96 * 96:
            raise ValueError(f"max_pixels must be at least 96 * 96, got {self.max_pixels}")


def configure_pil(max_pixels: int) -> None:
    """Make PIL's own decompression-bomb guard use ``max_pixels`` (process-wide, set once).

    PIL's ``DecompressionBombWarning`` (between the cap and twice the cap) is silenced: such an
    image is refused by :func:`read_image` anyway, so the warning would only fill the log.
    """
    Image.MAX_IMAGE_PIXELS = int(max_pixels)
    warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)


def _mb(n: int) -> str:
    """Megabytes of 1,048,576 bytes: the unit Gradio's upload toast uses, so both agree."""
    return f"{n / 2**20:.1f} MB"


def read_image(
    source: str | os.PathLike[str] | bytes,
    limits: UploadLimits = UploadLimits(),  # noqa: B008 - frozen dataclass, safe default
    *,
    min_size: tuple[int, int] = (16, 16),
    what: str = "image",
) -> Image.Image:
    """Open, check and decode an uploaded image into RGB.

    Args:
        source: a file path or the file's bytes.
        limits: byte and pixel caps.
        min_size: smallest ``(width, height)`` the caller can use.
        what: how the message names the upload (``"reference image"``).

    Raises:
        UploadError: with a one-line message for any file that cannot be used.
    """
    data = _read_bytes(source, limits, what)
    try:
        image = Image.open(io.BytesIO(data), formats=list(FORMATS))
    except Image.DecompressionBombError:
        raise UploadError(_too_many_pixels(what, None, limits)) from None
    except UnidentifiedImageError:
        raise UploadError(
            f"the {what} is not an image PIL can read as {', '.join(FORMATS)}; "
            "upload a PNG or JPEG file"
        ) from None
    width, height = image.size
    if width * height > limits.max_pixels:
        raise UploadError(_too_many_pixels(what, (width, height), limits))
    if width < min_size[0] or height < min_size[1]:
        raise UploadError(
            f"the {what} is {width} x {height} pixels; at least {min_size[0]} x {min_size[1]} "
            "is needed"
        )
    try:
        image.load()
    except (OSError, SyntaxError, ValueError) as err:
        raise UploadError(
            f"the {what} is truncated or corrupt ({str(err).strip() or type(err).__name__}); "
            "upload the complete file"
        ) from None
    return to_rgb(ImageOps.exif_transpose(image))


def _read_bytes(source: str | os.PathLike[str] | bytes, limits: UploadLimits, what: str) -> bytes:
    if isinstance(source, bytes | bytearray):
        data = bytes(source)
    else:
        path = Path(source)
        if not path.is_file():
            raise UploadError(f"the {what} was not received (no file at {path.name}); upload again")
        size = path.stat().st_size
        if size > limits.max_bytes:
            raise UploadError(
                f"the {what} is {_mb(size)}; the limit is {_mb(limits.max_bytes)}: "
                "upload a smaller file"
            )
        data = path.read_bytes()
    if len(data) > limits.max_bytes:
        raise UploadError(
            f"the {what} is {_mb(len(data))}; the limit is {_mb(limits.max_bytes)}: "
            "upload a smaller file"
        )
    if not data:
        raise UploadError(f"the {what} is an empty file; upload a PNG or JPEG image")
    return data


def _too_many_pixels(what: str, size: tuple[int, int] | None, limits: UploadLimits) -> str:
    shown = f"{size[0]} x {size[1]} pixels" if size else "more pixels than allowed"
    return (
        f"the {what} is {shown}; the limit is {limits.max_pixels:,} pixels "
        "(a guard against decompression bombs): upload a smaller image"
    )


def to_rgb(image: Image.Image) -> Image.Image:
    """Three 8-bit channels, whatever the mode: 16-bit grey is scaled by its bit depth
    (65535 -> 255, so a 16-bit copy reads as its 8-bit original, contrast unchanged), other
    integer and float grey stretched to 0..255; transparency is laid over black (the renders'
    dark background) instead of dropped."""
    if image.mode == "RGB":
        return image
    if image.mode in ("I", "I;16", "I;16B", "I;16L", "I;16N", "F"):
        arr = np.asarray(image, dtype=np.float64)
        lo, hi = float(arr.min()), float(arr.max())
        if image.mode != "F" and lo >= 0 and hi <= 255 and image.mode == "I":
            scaled = arr  # 8-bit values held in 32 bits
        elif image.mode != "F" and lo >= 0 and hi <= 65535:
            scaled = arr / 257.0  # 16 bits to 8, as the 8-bit original had them
        else:
            scaled = np.zeros_like(arr) if hi <= lo else (arr - lo) * (255.0 / (hi - lo))
        return Image.fromarray(scaled.round().astype(np.uint8)).convert("RGB")
    if image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA", "PA", "La", "RGBa"):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (0, 0, 0, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")


def check_pair(reference: Image.Image, test: Image.Image) -> None:
    """A reference and a test image must be the same size to be compared pixel window by window.

    Raises:
        UploadError: when the sizes differ.
    """
    if reference.size != test.size:
        raise UploadError(
            f"the reference image is {reference.width} x {reference.height} and the test image "
            f"is {test.width} x {test.height}; upload two images of the same size"
        )


def letterbox(image: Image.Image, size: tuple[int, int]) -> tuple[Image.Image, np.ndarray]:
    """``image`` scaled to fit inside ``size`` with its aspect kept, centred on its border colour.

    A pair uploaded as two images is composed into panels of one fixed size; stretching them to
    it would change the connector's aspect (its pitch ratio) and no rigid lattice would fit. The
    bars are the median colour of the image's border (the bench around the product), so they
    read as more bench, not as an edge.

    Returns the image and the 3 x 3 matrix from the original's pixels to the letterboxed ones
    (continuous coordinates), so a point found in the panel maps back to the upload.
    """
    rgb = to_rgb(image)
    width, height = size
    scale = min(width / rgb.width, height / rgb.height)
    inner = (max(1, round(rgb.width * scale)), max(1, round(rgb.height * scale)))
    arr = np.asarray(rgb)
    edge = np.concatenate([arr[0], arr[-1], arr[:, 0], arr[:, -1]])
    fill = tuple(int(v) for v in np.median(edge, axis=0))
    canvas = Image.new("RGB", size, fill)
    ox, oy = (width - inner[0]) // 2, (height - inner[1]) // 2
    canvas.paste(rgb.resize(inner, Image.Resampling.LANCZOS), (ox, oy))
    sx, sy = inner[0] / rgb.width, inner[1] / rgb.height
    return canvas, np.array([[sx, 0.0, ox], [0.0, sy, oy], [0.0, 0.0, 1.0]])
