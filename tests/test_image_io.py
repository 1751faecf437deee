"""Safe upload reading: every bad file gives one readable line, good files come back RGB."""

from __future__ import annotations

import io
import struct
import time
import warnings
import zlib

import numpy as np
import pytest
from PIL import Image

from qeu_space.views.image_io import (
    UploadError,
    UploadLimits,
    check_pair,
    configure_pil,
    read_image,
    to_rgb,
)

LIMITS = UploadLimits(max_bytes=200_000, max_pixels=1000 * 1000)


def png(image: Image.Image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


def png_header(width: int, height: int) -> bytes:
    """A PNG whose header promises ``width x height`` RGB pixels, with one tiny IDAT chunk."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 16)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


@pytest.fixture(autouse=True)
def _pil_cap():
    """PIL's guard set to the test cap, restored after (it is process-wide)."""
    before = Image.MAX_IMAGE_PIXELS
    configure_pil(LIMITS.max_pixels)
    yield
    Image.MAX_IMAGE_PIXELS = before


GOOD = png(Image.new("RGB", (120, 100), (10, 20, 30)))


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (b"this is not an image at all", "is not an image PIL can read"),
        (b"", "is an empty file"),
        (GOOD[: len(GOOD) // 2], "truncated or corrupt"),
        (png(Image.new("RGB", (1, 1))), "is 1 x 1 pixels; at least 16 x 16"),
        (png_header(30000, 30000), "the limit is 1,000,000 pixels"),  # PIL's own bomb error
        (png_header(1200, 1200), "is 1200 x 1200 pixels; the limit is 1,000,000"),  # warn band
        (b"\x00" * 300_000, "the limit is 0.2 MB"),
        (b"GIF89a" + GOOD[6:], "is not an image PIL can read"),
    ],
    ids=["text", "empty", "truncated", "1x1", "bomb", "over-cap", "too-big", "wrong-magic"],
)
def test_bad_uploads_give_one_readable_line(data: bytes, expected: str) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # refused all the same
        with pytest.raises(UploadError) as err:
            read_image(data, LIMITS, what="image")
    message = str(err.value)
    assert expected in message
    assert "\n" not in message
    assert message.startswith("the image ")


def test_bomb_header_is_refused_before_decoding() -> None:
    start = time.perf_counter()
    with pytest.raises(UploadError):
        read_image(png_header(30000, 30000), LIMITS)
    assert time.perf_counter() - start < 1.0  # 2.7 GB of pixels were never allocated


def test_gif_is_not_an_accepted_format() -> None:
    buf = io.BytesIO()
    Image.new("RGB", (40, 40)).save(buf, format="GIF")
    with pytest.raises(UploadError, match="PNG, JPEG, WEBP, BMP"):
        read_image(buf.getvalue(), LIMITS)


def test_files_are_read_from_disk_with_the_byte_cap(tmp_path) -> None:
    path = tmp_path / "big.png"
    path.write_bytes(b"\x89PNG" + b"\x00" * 300_000)
    with pytest.raises(UploadError, match="is 0.3 MB; the limit is 0.2 MB"):
        read_image(path, LIMITS, what="test image")
    with pytest.raises(UploadError, match="the composite was not received"):
        read_image(tmp_path / "missing.png", LIMITS, what="composite")
    good = tmp_path / "good.png"
    good.write_bytes(GOOD)
    assert read_image(good, LIMITS).size == (120, 100)


def test_min_size_is_the_callers() -> None:
    with pytest.raises(UploadError, match="is 120 x 100 pixels; at least 128 x 128 is needed"):
        read_image(GOOD, LIMITS, min_size=(128, 128), what="composite")


def _rgba() -> Image.Image:
    arr = np.zeros((20, 30, 4), np.uint8)
    arr[..., 0] = 200
    arr[:, :15, 3] = 255  # left half opaque red, right half transparent
    return Image.fromarray(arr, "RGBA")


def _palette_with_transparency() -> Image.Image:
    image = Image.new("P", (30, 20), 0)
    image.putpalette([255, 0, 0, 0, 255, 0] + [0] * 762)
    image.paste(1, (15, 0, 30, 20))
    image.info["transparency"] = 1
    return image


@pytest.mark.parametrize(
    ("image", "left", "right"),
    [
        (_rgba(), (200, 0, 0), (0, 0, 0)),  # transparency over black, not dropped
        (_palette_with_transparency(), (255, 0, 0), (0, 0, 0)),
        (Image.new("L", (30, 20), 77), (77, 77, 77), (77, 77, 77)),
        (Image.new("CMYK", (30, 20), (0, 0, 0, 0)), (255, 255, 255), (255, 255, 255)),
        (
            Image.fromarray(np.tile(np.array([0, 65535], np.uint16).repeat(15), (20, 1))),
            (0, 0, 0),
            (255, 255, 255),  # 16-bit grey scaled to 8 bits, not clipped
        ),
    ],
    ids=["rgba", "palette-transparency", "grey", "cmyk", "grey16"],
)
def test_modes_become_rgb(image: Image.Image, left: tuple, right: tuple) -> None:
    fmt = "PNG" if image.mode != "CMYK" else "JPEG"
    buf = io.BytesIO()
    image.save(buf, format=fmt)
    out = read_image(buf.getvalue(), LIMITS)
    assert out.mode == "RGB"
    arr = np.asarray(out).astype(int)
    assert np.abs(arr[10, 2] - left).max() <= 2
    assert np.abs(arr[10, 27] - right).max() <= 2


def test_float_grey_and_flat_images_scale_without_dividing_by_zero() -> None:
    flat = to_rgb(Image.fromarray(np.full((4, 4), 3.5, np.float32), "F"))
    assert np.asarray(flat).max() == 0 and flat.mode == "RGB"


def test_exif_orientation_is_applied() -> None:
    image = Image.new("RGB", (60, 30), (0, 0, 0))
    exif = Image.Exif()
    exif[274] = 6  # rotate 90 degrees clockwise to display
    buf = io.BytesIO()
    image.save(buf, format="JPEG", exif=exif)
    assert read_image(buf.getvalue(), LIMITS).size == (30, 60)


def test_mismatched_pair_is_named_with_both_sizes() -> None:
    with pytest.raises(UploadError) as err:
        check_pair(Image.new("RGB", (400, 200)), Image.new("RGB", (380, 200)))
    assert str(err.value) == (
        "the reference image is 400 x 200 and the test image is 380 x 200; "
        "upload two images of the same size"
    )
    check_pair(Image.new("RGB", (40, 20)), Image.new("RGB", (40, 20)))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [({"max_bytes": 10}, "max_bytes"), ({"max_pixels": 100}, "max_pixels")],
)
def test_limits_are_validated(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        UploadLimits(**kwargs)
