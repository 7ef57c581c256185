"""Decompression bombs for the input-limit tests: small, well-formed JPEG and PNG files whose
headers claim a huge size. Decoding either with cv2.imdecode fills width*height*3 bytes
(768 MB for 16000x16000) however small the file is."""

from __future__ import annotations

import struct
import zlib

import cv2
import numpy as np


def _small_image(side: int = 64) -> np.ndarray:
    rng = np.random.default_rng(side)
    return rng.integers(0, 256, size=(side, side, 3), dtype=np.uint8)


def bomb_jpeg(width: int = 16000, height: int = 16000, progressive: bool = False) -> bytes:
    """A real JPEG (64x64 of noise, with its JFIF header) whose frame header (SOF) is rewritten
    to claim width x height. libjpeg decodes it to the claimed size, filling what the scan does
    not cover."""
    params = [cv2.IMWRITE_JPEG_QUALITY, 90]
    if progressive:
        params += [cv2.IMWRITE_JPEG_PROGRESSIVE, 1]
    ok, enc = cv2.imencode(".jpg", _small_image(), params)
    assert ok
    data = bytearray(enc.tobytes())
    sof = next(i for i in range(2, len(data) - 1)
               if data[i] == 0xFF and data[i + 1] in (0xC0, 0xC1, 0xC2))
    struct.pack_into(">HH", data, sof + 5, height, width)  # FFCx, length(2), precision(1)
    return bytes(data)


def _zeros_zlib(total: int, chunk: int = 1 << 20) -> bytes:
    """A zlib stream that inflates to `total` zero bytes, built in a fraction of a second: once
    the window is all zeros, every further 1 MiB of zeros compresses to the same bytes, so that
    block is repeated instead of compressed again."""
    c = zlib.compressobj(9, zlib.DEFLATED, -15)
    first = c.compress(bytes(chunk)) + c.flush(zlib.Z_SYNC_FLUSH)
    steady = c.compress(bytes(chunk)) + c.flush(zlib.Z_SYNC_FLUSH)
    n_full, rest = divmod(total, chunk)
    tail = c.compress(bytes(rest)) + c.flush()
    adler = ((total % 65521) << 16) | 1  # adler32 of `total` zeros
    return b"\x78\xda" + first + steady * (n_full - 1) + tail + struct.pack(">I", adler)


def bomb_png(width: int = 16000, height: int = 16000) -> bytes:
    """A complete, valid PNG of width x height black pixels (8-bit RGB) in under 1 MB: deflate
    compresses zeros about 1000:1, so decoding it really does fill width*height*3 bytes."""

    def chunk(kind: bytes, payload: bytes) -> bytes:
        crc = zlib.crc32(kind + payload) & 0xFFFFFFFF
        return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", crc)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    rows = _zeros_zlib(height * (1 + 3 * width))  # filter byte 0 + RGB per row
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", rows) + chunk(b"IEND", b"")
