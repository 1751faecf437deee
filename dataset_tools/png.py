"""Fast lossless PNG bytes for dataset rows: half of a composite is compressed once, not per row.

A build spends as long encoding PNGs as rendering them. Two things make that cheaper here, with
files any PNG reader opens (the pixels are exactly the array's):

* no per-row filter search: every scanline uses filter ``None``. PIL tries the five PNG filters
  on every row (about half its encoding time at level 1); on these images, with sensor noise in
  every pixel, the search buys under 2 % in size.
* ISA-L's deflate (``isal``) for each image's own rows: a standard zlib stream, 5-6x faster than
  zlib's level 1 on these noisy rows (about 1 ms against 6 for a composite's lower half).
* a shared top: a composite's rows above the product under inspection show only the canvas, the
  labels and one of a few good references, so they repeat across rows. They are compressed once,
  ending on a full flush (a byte boundary after which nothing refers back), and that prefix is
  reused; only the rows below are compressed per image. The Adler-32 of the whole stream is
  continued from the prefix's. A prefix is found by its bytes, never by where it came from.
  Being made once, it is compressed by zlib at level 3, which makes it smaller than ISA-L or
  zlib's level 1 do: a composite's PNG ends up no larger than with zlib's level 1 throughout.

Example:
    >>> import numpy as np, io
    >>> from PIL import Image
    >>> a = np.zeros((4, 5, 3), np.uint8)
    >>> np.array_equal(np.asarray(Image.open(io.BytesIO(encode_png(a, shared_rows=2)))), a)
    True
"""

from __future__ import annotations

import struct
import threading
import zlib

import numpy as np
from isal import isal_zlib

LEVEL = 2
"""ISA-L level (0 stores instead): 2 is the fastest whose PNGs are no larger than zlib level 1's
(its level 1 is 0.3-0.5 ms a composite faster, 1 KiB larger; benchmarks/RESULTS_dataset.md)."""
TOP_LEVEL = 3
"""zlib level of a shared top (compressed once per content): 6 % smaller than level 1."""
MEM_LEVEL = 9
"""zlib's largest hash tables: about the same size, a few percent faster than its default 8."""
_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_PREFIXES = 128
"""Shared tops kept per thread (a build has 4 references x 9 housings/pins x 2 label settings)."""
_LOCAL = threading.local()


def _chunk(kind: bytes, data: bytes) -> bytes:
    return (
        struct.pack(">I", len(data))
        + kind
        + data
        + struct.pack(">I", isal_zlib.crc32(data, isal_zlib.crc32(kind)))
    )


_IEND = _chunk(b"IEND", b"")


def _prefix(top: np.ndarray, level: int = TOP_LEVEL) -> tuple[bytes, int]:
    """The zlib stream of ``top`` (flat uint8) at zlib ``level`` up to a full flush, and its
    Adler-32.

    Made once per content: a cheap key (every 97th byte) finds candidates, and the bytes
    themselves decide (a 300 kB comparison costs ~20 us; recompressing, ~2 ms).
    """
    cache: dict[tuple[int, int, bytes], list[tuple[np.ndarray, bytes, int]]] | None = getattr(
        _LOCAL, "cache", None
    )
    if cache is None:
        cache = _LOCAL.cache = {}
    key = (level, len(top), top[::97].tobytes())
    for known, stream, adler in cache.get(key, ()):
        if np.array_equal(known, top):
            return stream, adler
    compressor = zlib.compressobj(level, zlib.DEFLATED, 15, MEM_LEVEL)
    stream = compressor.compress(top) + compressor.flush(zlib.Z_FULL_FLUSH)
    adler = isal_zlib.adler32(top)
    if len(cache) >= _PREFIXES:
        cache.pop(next(iter(cache)))
    cache.setdefault(key, []).append((top.copy(), stream, adler))
    return stream, adler


def scanlines(height: int, width: int, channels: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """This thread's reused PNG scanline buffer for a ``height`` x ``width`` image, and the image's
    view of it: compose straight into the view, then :func:`encode_scanlines` the buffer.

    The buffer is ``(height, width * channels + 1)`` uint8 with the filter byte (0, None) in
    column 0. Reused because a fresh 600 kB array is new memory with a page fault per 4 kB, and
    composing into it directly saves the copy of the image into scanlines. Its contents stay
    valid until this thread asks for a buffer of that size again.
    """
    if channels not in (1, 3) or height < 1 or width < 1:
        raise ValueError(f"PNG scanlines need a positive size and 1 or 3 channels, got "
                         f"{height} x {width} x {channels}")  # fmt: skip
    buffers: dict[tuple[int, int], np.ndarray] | None = getattr(_LOCAL, "scanlines", None)
    if buffers is None:
        buffers = _LOCAL.scanlines = {}
    stride = width * channels + 1
    raw = buffers.get((height, stride))
    if raw is None:
        if len(buffers) >= 8:  # many sizes in one thread: start over
            buffers.clear()
        raw = buffers[height, stride] = np.zeros((height, stride), np.uint8)
    shape = (height, width, channels) if channels == 3 else (height, width)
    return raw, raw[:, 1:].reshape(shape)


def encode_scanlines(
    raw: np.ndarray,
    channels: int = 3,
    *,
    shared_rows: int = 0,
    level: int = LEVEL,
    top_level: int | None = None,
) -> bytes:
    """PNG bytes of a scanline buffer (:func:`scanlines`: each row a filter byte, then pixels).

    Args:
        raw: ``(height, width * channels + 1)`` C-contiguous uint8, column 0 the filter bytes.
        channels: 3 (RGB) or 1 (grey).
        shared_rows, level, top_level: see :func:`encode_png`.
    """
    h, stride = raw.shape
    if (stride - 1) % channels or not raw.flags.c_contiguous or raw.dtype != np.uint8:
        raise ValueError(f"not a scanline buffer of {channels} channels: {raw.shape} {raw.dtype}")
    if not 0 <= shared_rows <= h:
        raise ValueError(f"shared_rows must be in [0, {h}], got {shared_rows}")
    if level not in range(4):
        raise ValueError(f"level must be 0 (stored) or an ISA-L level 1 to 3, got {level}")
    w = (stride - 1) // channels
    flat = raw.reshape(-1)
    cut = shared_rows * stride
    if level:  # ISA-L, levels 1-3
        compressobj, mem_level = isal_zlib.compressobj, isal_zlib.DEF_MEM_LEVEL
    else:  # zlib's stored blocks: memory speed
        compressobj, mem_level = zlib.compressobj, MEM_LEVEL
    if cut:
        head, adler = _prefix(flat[:cut], TOP_LEVEL if top_level is None else top_level)
        tail = compressobj(level, zlib.DEFLATED, -15, mem_level)  # raw: continues the stream
    else:
        head, adler = b"", 1
        tail = compressobj(level, zlib.DEFLATED, 15, mem_level)
    body = tail.compress(flat[cut:]) + tail.flush()
    trailer = struct.pack(">I", isal_zlib.adler32(flat[cut:], adler)) if cut else b""
    header = struct.pack(">IIBBBBB", w, h, 8, 2 if channels == 3 else 0, 0, 0, 0)
    # the IDAT chunk assembled once (its CRC continued over the parts, not over a joined copy)
    crc = isal_zlib.crc32(b"IDAT")
    for part in (head, body, trailer):
        crc = isal_zlib.crc32(part, crc)
    size = len(head) + len(body) + len(trailer)
    return b"".join(
        (_SIGNATURE, _chunk(b"IHDR", header), struct.pack(">I", size), b"IDAT", head, body,
         trailer, struct.pack(">I", crc), _IEND)
    )  # fmt: skip


def encode_png(
    image: np.ndarray, *, shared_rows: int = 0, level: int = LEVEL, top_level: int | None = None
) -> bytes:
    """PNG bytes of an 8-bit RGB (or grey) array, exactly its pixels.

    Args:
        image: ``(height, width, 3)`` or ``(height, width)`` uint8.
        shared_rows: the first rows that repeat across images (a composite's top): compressed
            once per content and reused. 0 compresses every row each time.
        level: ISA-L level (1 to 3) of the rows below the shared top, or 0 to store them
            (zlib's stored blocks: no compression, memory speed, PNGs about 1.5 x larger).
        top_level: zlib level (0 to 9) of the shared top (default :data:`TOP_LEVEL`);
            compressed once, so it may well be compressed when the rest is stored.
    """
    if (
        image.dtype != np.uint8
        or image.ndim not in (2, 3)
        or (image.ndim == 3 and image.shape[2] != 3)
    ):
        raise ValueError(
            f"encode_png takes uint8 RGB or grey arrays, got {image.shape} {image.dtype}"
        )
    h, w = image.shape[:2]
    if not 0 <= shared_rows <= h:
        raise ValueError(f"shared_rows must be in [0, {h}], got {shared_rows}")
    channels = 1 if image.ndim == 2 else 3
    raw, view = scanlines(h, w, channels)
    np.copyto(view, image)
    return encode_scanlines(
        raw, channels, shared_rows=shared_rows, level=level, top_level=top_level
    )
