"""The dataset PNG encoder: exact pixels, the same bytes every time, a shared top that is reused
only for the same content."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from dataset_tools import png
from dataset_tools.png import encode_png


def _idat(data: bytes) -> bytes:
    """The IDAT chunks' data of a PNG (checking every chunk's CRC on the way)."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat = 8, b""
    while pos < len(data):
        (size,) = struct.unpack(">I", data[pos : pos + 4])
        kind, body = data[pos + 4 : pos + 8], data[pos + 8 : pos + 8 + size]
        assert struct.unpack(">I", data[pos + 8 + size : pos + 12 + size])[0] == zlib.crc32(
            body, zlib.crc32(kind)
        )
        idat += body if kind == b"IDAT" else b""
        pos += 12 + size
    return idat


def _decode(data: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(data)) as img:
        return np.asarray(img)


@pytest.mark.parametrize("shape", [(1, 1, 3), (4, 5, 3), (448, 448, 3), (204, 423, 3), (7, 3)])
@pytest.mark.parametrize("share", [0.0, 0.5, 1.0])
@pytest.mark.parametrize("level", [0, 1, 2, 3])
def test_pixels_read_back_exactly_and_bytes_repeat(shape, share, level):
    image = np.random.default_rng(shape[0]).integers(0, 256, shape, dtype=np.uint8)
    shared = int(shape[0] * share)
    data = encode_png(image, shared_rows=shared, level=level)
    assert np.array_equal(_decode(data), image)
    # a standard zlib stream in the IDAT: Python's zlib (not ISA-L) inflates it to the scanlines
    raw, view = png.scanlines(*image.shape[:2], 1 if image.ndim == 2 else 3)
    view[...] = image
    assert zlib.decompress(_idat(data)) == raw.tobytes()
    # a cached top gives the same stream, and only for its own level
    assert encode_png(image, shared_rows=shared, level=level) == data


@pytest.mark.parametrize("shape", [(448, 448, 3), (9, 5, 3), (6, 4)])
def test_a_stored_tail_after_a_compressed_top_reads_back(shape):
    """The builders' ``--png-level 0``: the shared top compressed once, the rest stored."""
    rng = np.random.default_rng(1)
    image = np.clip(rng.normal(30, 2, shape), 0, 255).astype(np.uint8)
    image[shape[0] // 2 :] = rng.integers(0, 256, (shape[0] - shape[0] // 2, *shape[1:]))
    shared = shape[0] // 2
    data = encode_png(image, shared_rows=shared, level=0, top_level=1)
    assert np.array_equal(_decode(data), image)
    assert encode_png(image, shared_rows=shared, level=0, top_level=1) == data
    if shape[0] > 100:
        assert len(data) < 0.8 * len(encode_png(image, shared_rows=shared, level=0, top_level=0))


def test_composing_into_the_scanlines_encodes_what_encode_png_does():
    """The builders compose a composite straight into :func:`png.scanlines`: same bytes."""
    image = np.random.default_rng(2).integers(0, 256, (12, 7, 3), dtype=np.uint8)
    raw, view = png.scanlines(12, 7)
    view[:] = image
    assert raw[:, 0].tolist() == [0] * 12  # filter None
    assert png.encode_scanlines(raw, shared_rows=5) == encode_png(image, shared_rows=5)
    with pytest.raises(ValueError, match="scanline buffer"):
        png.encode_scanlines(raw[:, 1:].copy())


def test_a_shared_top_is_reused_only_for_the_same_bytes(monkeypatch):
    calls = []
    compressobj = png.zlib.compressobj

    def counting(*args):
        calls.append(args[2])  # wbits 15: a prefix (or a whole image); -15: a tail
        return compressobj(*args)

    monkeypatch.setattr(png.zlib, "compressobj", counting)
    monkeypatch.setattr(png, "_LOCAL", png.threading.local())
    rng = np.random.default_rng(0)
    top = rng.integers(0, 256, (40, 30, 3), dtype=np.uint8)
    images = [
        np.concatenate([top, rng.integers(0, 256, (20, 30, 3), dtype=np.uint8)]) for _ in "ab"
    ]
    other = images[0].copy()
    other[3, 1, 1] ^= 1  # one byte off the sampled key: the same key, other content
    for image in (*images, other):
        assert np.array_equal(_decode(encode_png(image, shared_rows=40)), image)
    assert calls.count(15) == 2  # the top of images[0] and [1] once, the changed one again


@pytest.mark.parametrize(
    "image, shared",
    [(np.zeros((4, 4, 4), np.uint8), 0), (np.zeros((4, 4, 3), np.float32), 0),
     (np.zeros((4, 4, 3), np.uint8), 5)],
)  # fmt: skip
def test_refuses_what_it_cannot_write(image, shared):
    with pytest.raises(ValueError):
        encode_png(image, shared_rows=shared)


@pytest.mark.parametrize("level, deflater", [(1, "isal"), (2, "isal"), (3, "isal"), (0, "zlib")])
def test_own_rows_go_through_isal_and_stored_rows_through_zlib(monkeypatch, level, deflater):
    """ISA-L deflates each image's rows (5-6x faster than zlib's level 1); level 0 stores them
    through zlib; a shared top is always zlib's (once per content, at :data:`png.TOP_LEVEL`)."""
    used = []
    for name, module in (("isal", png.isal_zlib), ("zlib", png.zlib)):
        original = module.compressobj

        def counting(*args, _name=name, _original=original):
            used.append((_name, args[0], args[2]))
            return _original(*args)

        monkeypatch.setattr(module, "compressobj", counting)
    monkeypatch.setattr(png, "_LOCAL", png.threading.local())
    image = np.random.default_rng(5).integers(0, 256, (30, 20, 3), dtype=np.uint8)
    assert np.array_equal(_decode(encode_png(image, shared_rows=10, level=level)), image)
    assert used == [("zlib", png.TOP_LEVEL, 15), (deflater, level, -15)]
    used.clear()
    assert np.array_equal(_decode(encode_png(image, level=level)), image)
    assert used == [(deflater, level, 15)]


def test_a_composite_is_no_larger_than_with_zlib_level_1_and_its_bytes_repeat():
    """The default (top at zlib 3 once, the rest ISA-L 2) against zlib's level 1 throughout, on a
    real composite; and the same bytes from a fresh encoder (no cache) as from a warm one."""
    from dataset_tools.compose import make_sample
    from dataset_tools.sampling import draw_spec, row_rng

    rng = row_rng(0, "train", 3)
    sample = make_sample(draw_spec("qa", "train", 3, rng), rng)
    image = np.asarray(sample.image)
    top = sample.layout.origin("test")[1]
    raw, view = png.scanlines(*image.shape[:2])
    view[...] = image
    zlib_1 = zlib.compress(raw.tobytes(), 1)
    data = encode_png(image, shared_rows=top)
    assert np.array_equal(_decode(data), image)
    assert len(_idat(data)) <= len(zlib_1)
    png._LOCAL = png.threading.local()  # a new process's encoder
    assert encode_png(image, shared_rows=top) == data
