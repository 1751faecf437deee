"""The dataset PNG encoder: exact pixels, the same bytes every time, a shared top that is reused
only for the same content."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from dataset_tools import png
from dataset_tools.png import encode_png


def _decode(data: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(data)) as img:
        return np.asarray(img)


@pytest.mark.parametrize("shape", [(1, 1, 3), (4, 5, 3), (448, 448, 3), (204, 423, 3), (7, 3)])
@pytest.mark.parametrize("share", [0.0, 0.5, 1.0])
@pytest.mark.parametrize("level", [1, 0])
def test_pixels_read_back_exactly_and_bytes_repeat(shape, share, level):
    image = np.random.default_rng(shape[0]).integers(0, 256, shape, dtype=np.uint8)
    shared = int(shape[0] * share)
    data = encode_png(image, shared_rows=shared, level=level)
    assert np.array_equal(_decode(data), image)
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
        assert len(data) < 0.8 * len(encode_png(image, shared_rows=shared, level=0))


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
