"""Width and height of a JPEG or PNG from its header, without decoding it.

Why: `cv2.imdecode` allocates the full decoded image before anything can look at its size, so a
40 KB JPEG whose header claims 16000x16000 pixels costs gigabytes (a decompression bomb). The
node reads the size here first and refuses an oversized image before any pixel buffer exists.
OpenCV has no cheap header-only read, and Pillow is not a dependency of this package, so this is
a small parser of the two formats the node accepts: it walks the JPEG marker segments up to the
frame header (SOFn) and reads the PNG IHDR chunk. It reads only the bytes it needs, from a
memoryview (no copy of the payload).

`cv2.imdecode` recognises formats by content, not by `CompressedImage.format`, so anything that
is neither a JPEG nor a PNG (BMP, TIFF, WebP, ... which could be bombs of their own) is refused
here too.
"""

from __future__ import annotations

from dataclasses import dataclass

JPEG_SIGNATURE = b"\xff\xd8\xff"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"

# Frame headers: SOF0-SOF15 except DHT (C4), JPG (C8) and DAC (CC); DHP (DE, hierarchical
# frames) has the same layout. Their payload starts: precision (1), height (2), width (2).
_JPEG_FRAME_MARKERS = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC} | {0xDE}
# Markers without a length field: TEM (01) and RST0-RST7 (D0-D7). SOI (D8) never repeats.
_JPEG_STANDALONE = frozenset(range(0xD0, 0xD8)) | {0x01}
_JPEG_SOS, _JPEG_EOI = 0xDA, 0xD9


class ImageHeaderError(ValueError):
    """The data is not a JPEG or PNG, or its header is truncated or malformed."""


@dataclass(frozen=True)
class ImageSize:
    format: str  # "jpeg" or "png"
    width: int
    height: int

    @property
    def pixels(self) -> int:
        return self.width * self.height


def image_size(data: bytes | bytearray | memoryview) -> ImageSize:
    """Size of the JPEG or PNG in `data` from its header only. Raises ImageHeaderError."""
    view = memoryview(data).cast("B")
    if bytes(view[:8]) == PNG_SIGNATURE:
        return _png_size(view)
    if bytes(view[:3]) == JPEG_SIGNATURE:
        return _jpeg_size(view)
    head = bytes(view[:8]).hex(" ")
    raise ImageHeaderError(f"neither a JPEG nor a PNG signature (first bytes: {head or 'none'})")


def _png_size(view: memoryview) -> ImageSize:
    # Signature (8), then the first chunk must be IHDR: length (4) = 13, type (4), width (4),
    # height (4), ... all big-endian.
    if len(view) < 24:
        raise ImageHeaderError(f"PNG truncated before its IHDR chunk ({len(view)} bytes)")
    length = int.from_bytes(view[8:12], "big")
    if bytes(view[12:16]) != b"IHDR" or length != 13:
        raise ImageHeaderError("PNG does not start with an IHDR chunk")
    width = int.from_bytes(view[16:20], "big")
    height = int.from_bytes(view[20:24], "big")
    if width == 0 or height == 0:
        raise ImageHeaderError(f"PNG header says {width}x{height} (empty)")
    return ImageSize("png", width, height)


def _jpeg_size(view: memoryview) -> ImageSize:
    n = len(view)
    pos = 2  # after SOI
    while pos < n:
        if view[pos] != 0xFF:
            raise ImageHeaderError(f"JPEG marker expected at byte {pos}, found {view[pos]:#04x}")
        while pos < n and view[pos] == 0xFF:  # fill bytes
            pos += 1
        if pos >= n:
            break
        marker = view[pos]
        pos += 1
        if marker in _JPEG_STANDALONE:
            continue
        if marker in (_JPEG_SOS, _JPEG_EOI):
            raise ImageHeaderError("JPEG has no frame header (SOF) before its scan data")
        if pos + 2 > n:
            break
        length = int.from_bytes(view[pos:pos + 2], "big")
        if length < 2:
            raise ImageHeaderError(f"JPEG segment {marker:#04x} at byte {pos} has length {length}")
        if marker in _JPEG_FRAME_MARKERS:
            if length < 7 or pos + 7 > n:
                break
            height = int.from_bytes(view[pos + 3:pos + 5], "big")
            width = int.from_bytes(view[pos + 5:pos + 7], "big")
            if width == 0 or height == 0:
                # height 0 means "defined later by a DNL marker": the size is not known up front.
                raise ImageHeaderError(f"JPEG frame header says {width}x{height}")
            return ImageSize("jpeg", width, height)
        pos += length
    raise ImageHeaderError(f"JPEG truncated before its frame header (SOF), {n} bytes")
