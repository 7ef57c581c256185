"""ROS message <-> numpy conversion, without cv_bridge.

Every decoder raises `ConversionError` (a ValueError) whose `kind` says what class of defect the
message had, so the node can count errors per kind in its diagnostics, and whose message names the
offending field. Decoders never trust header fields: sizes are checked against the data length
before any reshape.

Event time convention (documented for publishers): the core wants absolute microseconds
(`types.EVENT_DTYPE`). With `time_reference="relative"` (the default) a PointCloud2 `t` field is
microseconds since `header.stamp` and an EventPacket `dt` is nanoseconds since `header.stamp`;
with `"absolute"` a PointCloud2 `t` is already microseconds on the header's clock and an
EventPacket's events keep their sensor clock (see `event_packet_to_events` for each encoding).
EventPacket payloads are decoded by `ops.event_codecs` (mono, evt3, libcaer, libcaer_cmp) and
mapped from the sensor's size onto the model's event grid by `ops.event_geometry`.

Input limits (`InputLimits`, node parameters max_message_bytes, max_image_pixels,
max_events_per_message) are checked from header fields and payload lengths only, before any
buffer is allocated: a compressed image's size comes from its JPEG/PNG header
(`image_header.image_size`) before `cv2.imdecode` runs, so a decompression bomb costs nothing.
A message over a limit raises `ConversionError` of kind "limit" whose `details` name the limit,
its value and the message's value.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np
from sensor_msgs.msg import CompressedImage, Image, PointCloud2, PointField
from std_msgs.msg import Header

from tinygpt_ros.ops.event_codecs import EventCodecError, Evt3Decoder, decode_packet
from tinygpt_ros.ops.event_geometry import map_to_grid
from tinygpt_ros.ros.image_header import ImageHeaderError, image_size
from tinygpt_ros.spec.config import EVENT_SENSOR, IMAGE_SIZE
from tinygpt_ros.spec.types import EVENT_DTYPE

TIME_REFERENCES = ("relative", "absolute")

# encoding -> (numpy dtype, channels, channel order to RGB or None for mono)
_IMAGE_ENCODINGS: dict[str, tuple[str, int, tuple[int, ...] | None]] = {
    "rgb8": ("u1", 3, (0, 1, 2)),
    "bgr8": ("u1", 3, (2, 1, 0)),
    "rgba8": ("u1", 4, (0, 1, 2)),
    "bgra8": ("u1", 4, (2, 1, 0)),
    "mono8": ("u1", 1, None),
    "mono16": ("u2", 1, None),
    "rgb16": ("u2", 3, (0, 1, 2)),
    "bgr16": ("u2", 3, (2, 1, 0)),
    "rgba16": ("u2", 4, (0, 1, 2)),
    "bgra16": ("u2", 4, (2, 1, 0)),
}
# What cameras send undecoded: packed YUV 4:2:2 (USB cameras through v4l2_camera / usb_cam) and
# Bayer mosaics (machine-vision cameras). encoding -> (numpy dtype, channels, OpenCV code to RGB).
# OpenCV names a Bayer pattern by the 2x2 block one pixel down and right of the image's first
# (ROS rggb is OpenCV's BG): test_conversions demosaics a mosaic built from a known colour.
# The old names, not the RGGB-style aliases, exist in every OpenCV a distro ships.
_CV_ENCODINGS: dict[str, tuple[str, int, int]] = {
    "yuv422": ("u1", 2, cv2.COLOR_YUV2RGB_UYVY),  # U Y0 V Y1
    "uyvy": ("u1", 2, cv2.COLOR_YUV2RGB_UYVY),
    "yuv422_yuy2": ("u1", 2, cv2.COLOR_YUV2RGB_YUYV),  # Y0 U Y1 V
    "yuyv": ("u1", 2, cv2.COLOR_YUV2RGB_YUYV),
    **{f"bayer_{pattern}{bits}": ("u1" if bits == 8 else "u2", 1, code)
       for pattern, code in (("rggb", cv2.COLOR_BayerBG2RGB), ("bggr", cv2.COLOR_BayerRG2RGB),
                             ("gbrg", cv2.COLOR_BayerGR2RGB), ("grbg", cv2.COLOR_BayerGB2RGB))
       for bits in (8, 16)},
}
IMAGE_ENCODINGS = (*_IMAGE_ENCODINGS, *_CV_ENCODINGS)

# sensor_msgs/PointField datatype -> numpy type code
_POINT_FIELD_TYPES: dict[int, str] = {
    PointField.INT8: "i1",
    PointField.UINT8: "u1",
    PointField.INT16: "i2",
    PointField.UINT16: "u2",
    PointField.INT32: "i4",
    PointField.UINT32: "u4",
    PointField.FLOAT32: "f4",
    PointField.FLOAT64: "f8",
}
EVENT_FIELDS = ("x", "y", "t", "p")


# Defaults of the input limits (node parameters of the same names). A 4K camera frame is 8.3 M
# pixels and 33 MB as rgba8; a fast event camera gives about 2 M events in a 50 ms window.
DEFAULT_MAX_IMAGE_PIXELS = 3840 * 2160
DEFAULT_MAX_MESSAGE_BYTES = 64 * 1024 * 1024
DEFAULT_MAX_EVENTS = 2_000_000


class ConversionError(ValueError):
    """A message that cannot be turned into model input. `kind` groups errors for diagnostics:
    encoding (unsupported format), size (dimensions/data length), decode (corrupt payload),
    fields (PointCloud2 layout), values (NaN/inf or out-of-range numbers), limit (over one of
    the `InputLimits`). `details` are extra (key, value) pairs for the diagnostic."""

    def __init__(
        self, kind: str, message: str, details: tuple[tuple[str, object], ...] = ()
    ) -> None:
        super().__init__(message)
        self.kind = kind
        self.details = details


@dataclass(frozen=True)
class InputLimits:
    """Largest input the converters accept; each is checked before anything is allocated."""

    max_image_pixels: int = DEFAULT_MAX_IMAGE_PIXELS  # raw and compressed images
    max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES  # payload (data / events) of any message
    max_events_per_message: int = DEFAULT_MAX_EVENTS  # one PointCloud2 / EventPacket

    def check(self, name: str, value: int, what: str) -> None:
        """Raise ConversionError(kind="limit") when `value` exceeds the limit `name` (a field
        of this class and the node parameter of the same name)."""
        limit = int(getattr(self, name))
        if value > limit:
            raise ConversionError(
                "limit", f"{what} is {value}, over the limit {name}={limit}",
                (("limit", name), ("limit_value", limit), ("value", value)),
            )


LIMIT_NAMES = ("max_image_pixels", "max_message_bytes", "max_events_per_message")
NO_LIMITS_GIVEN = InputLimits()


def stamp_to_us(stamp: Any) -> int:
    """builtin_interfaces/Time -> integer microseconds."""
    return int(stamp.sec) * 1_000_000 + int(stamp.nanosec) // 1000


def stamp_to_ns(stamp: Any) -> int:
    return int(stamp.sec) * 1_000_000_000 + int(stamp.nanosec)


def _buffer(data: Any) -> np.ndarray:
    return np.frombuffer(memoryview(data).cast("B"), dtype=np.uint8)


# ----------------------------------------------------------------------------------- images


def image_to_rgb(msg: Image, limits: InputLimits = NO_LIMITS_GIVEN) -> np.ndarray:
    """sensor_msgs/Image -> HxWx3 uint8 RGB. 16-bit encodings keep their 8 most significant bits;
    YUV 4:2:2 is converted and Bayer mosaics demosaiced by OpenCV (bilinear).

    rgb8 rows without padding come back as a read-only view of the message's own buffer, not a
    copy: rclpy builds a fresh message for every callback, so the buffer is nobody else's, and
    the view keeps it alive. Why: in the node at 640x480 and 30 Hz, copying the 921 KB frame
    took 0.2 ms of CPU (cold cache after the engine ran), half the node's ROS overhead on an
    STTF frame; every consumer (the engine, the overlay) only reads the frame. Every other
    encoding is converted into a new array."""
    limits.check("max_message_bytes", len(msg.data), "Image.data size in bytes")
    cv_code = None
    if msg.encoding in _CV_ENCODINGS:
        code, channels, cv_code = _CV_ENCODINGS[msg.encoding]
        order = None
    elif msg.encoding in _IMAGE_ENCODINGS:
        code, channels, order = _IMAGE_ENCODINGS[msg.encoding]
    else:
        raise ConversionError(
            "encoding",
            f"Image.encoding {msg.encoding!r} is not supported; use one of {IMAGE_ENCODINGS}",
        )
    height, width, step = int(msg.height), int(msg.width), int(msg.step)
    if height == 0 or width == 0:
        raise ConversionError("size", f"Image.height x Image.width is {height}x{width} (empty)")
    if channels == 2 and width % 2:  # YUV 4:2:2: two pixels share one U and one V
        raise ConversionError("size", f"Image.width {width} is odd; {msg.encoding} needs pairs")
    limits.check("max_image_pixels", height * width, f"Image {width}x{height}: pixel count")
    dtype = np.dtype(code).newbyteorder(">" if msg.is_bigendian else "<")
    row_bytes = width * channels * dtype.itemsize
    if step < row_bytes:
        raise ConversionError(
            "size", f"Image.step {step} < width*channels*bytes = {row_bytes} for {msg.encoding}"
        )
    buf = _buffer(msg.data)
    if buf.size != height * step:
        raise ConversionError(
            "size",
            f"Image.data has {buf.size} bytes, expected height*step = {height}*{step} = "
            f"{height * step}",
        )
    rows = buf.reshape(height, step)[:, :row_bytes]
    pixels = np.ascontiguousarray(rows).view(dtype).reshape(height, width, channels)
    if dtype.itemsize == 2:
        pixels = (pixels >> 8).astype(np.uint8)
    if cv_code is not None:
        return cv2.cvtColor(pixels[..., 0] if channels == 1 else pixels, cv_code)
    if order is None:
        return np.repeat(pixels, 3, axis=2)
    if channels == 3 and order == (0, 1, 2):
        pixels.flags.writeable = False  # whoever writes into a frame gets an error, not a race
        return pixels
    # OpenCV, not a fancy index over the channels: at 640x480 that took 2-3 ms of a 5% budget.
    code = {(3, True): cv2.COLOR_BGR2RGB, (4, True): cv2.COLOR_BGRA2RGB,
            (4, False): cv2.COLOR_RGBA2RGB}[(channels, order == (2, 1, 0))]
    return cv2.cvtColor(np.ascontiguousarray(pixels), code)


# libjpeg decodes at 1/2, 1/4 or 1/8 of the size in its inverse DCT (OpenCV's REDUCED flags)
_JPEG_REDUCED = ((8, cv2.IMREAD_REDUCED_COLOR_8), (4, cv2.IMREAD_REDUCED_COLOR_4),
                 (2, cv2.IMREAD_REDUCED_COLOR_2))


def compressed_to_rgb(msg: CompressedImage, limits: InputLimits = NO_LIMITS_GIVEN) -> np.ndarray:
    """sensor_msgs/CompressedImage (jpeg or png, as image_transport `compressed` writes) -> RGB at
    full size. The size comes from the JPEG/PNG header and is checked against `limits` first."""
    return decode_compressed(msg, limits)[0]


def decode_compressed(msg: CompressedImage, limits: InputLimits = NO_LIMITS_GIVEN,
                      min_side: int = 0) -> tuple[np.ndarray, int]:
    """CompressedImage -> (RGB, scale): a jpeg at least 2 x `min_side` on both sides is decoded
    at 1/scale of its size (scale 2, 4 or 8, the largest that keeps both sides >= `min_side`);
    otherwise, and for png, scale is 1.

    Why: the engine shrinks every frame to its 224 px input anyway, and libjpeg skips most of
    the work when it scales in the inverse DCT. Measured on this 2-core machine, a textured
    jpeg (`rgb_to_compressed`), decode alone, full size -> reduced: 640x480 2.7 -> 0.9 ms,
    1280x720 8.2 -> 3.5 ms, 1920x1080 15.9 -> 5.8 ms (and the engine's resize of the 1080p
    frame 2.9 -> 0.8 ms). The model input differs from a full decode by resampling only (mean
    2 of 255 levels at 640x480)."""
    fmt = msg.format.lower()
    if "compresseddepth" in fmt or (fmt and not any(k in fmt for k in ("jpeg", "jpg", "png"))):
        raise ConversionError(
            "encoding", f"CompressedImage.format {msg.format!r} is not supported (jpeg or png)"
        )
    limits.check("max_message_bytes", len(msg.data), "CompressedImage.data size in bytes")
    buf = _buffer(msg.data)
    if buf.size == 0:
        raise ConversionError("size", "CompressedImage.data is empty")
    try:
        size = image_size(buf)
    except ImageHeaderError as exc:
        raise ConversionError(
            "decode", f"CompressedImage.data ({buf.size} bytes, format {msg.format!r}) is "
            f"corrupt: {exc}"
        ) from None
    limits.check(
        "max_image_pixels", size.pixels,
        f"CompressedImage ({size.format} header: {size.width}x{size.height}) pixel count",
    )
    scale, flag = 1, cv2.IMREAD_COLOR
    if size.format == "jpeg" and min_side > 0:
        for k, reduced in _JPEG_REDUCED:
            if min(size.width, size.height) // k >= min_side:
                scale, flag = k, reduced
                break
    bgr = cv2.imdecode(buf, flag)
    if bgr is None or bgr.size == 0:
        raise ConversionError(
            "decode", f"CompressedImage.data ({buf.size} bytes, format {msg.format!r}) is corrupt"
        )
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), scale


def camera_frame(msg: Image | CompressedImage,
                 limits: InputLimits = NO_LIMITS_GIVEN) -> tuple[np.ndarray, int]:
    """A camera message as the engine takes it: (RGB, pixel_scale), a large jpeg decoded at a
    fraction of its size for the model's input (`decode_compressed`). The node, bag replay and
    `tinygpt-ros overlay` all convert frames here, so they feed the engine the same pixels."""
    if isinstance(msg, CompressedImage):
        return decode_compressed(msg, limits, IMAGE_SIZE)
    return image_to_rgb(msg, limits), 1


def rgb_to_image(rgb: np.ndarray, header: Header | None = None, encoding: str = "rgb8") -> Image:
    """HxWx3 uint8 RGB (or HxW uint8 for mono8) -> sensor_msgs/Image (tests, bags, debug)."""
    arr = np.asarray(rgb)
    if encoding == "mono8":
        if arr.ndim != 2 or arr.dtype != np.uint8:
            raise ValueError(f"mono8 needs an HxW uint8 array, got {arr.shape} {arr.dtype}")
        channels = 1
    else:
        if arr.ndim != 3 or arr.shape[2] != 3 or arr.dtype != np.uint8:
            raise ValueError(f"rgb needs an HxWx3 uint8 array, got {arr.shape} {arr.dtype}")
        if encoding == "bgr8":
            arr = arr[:, :, ::-1]
        elif encoding != "rgb8":
            raise ValueError(f"encoding {encoding!r}: only rgb8, bgr8, mono8 are written")
        channels = 3
    msg = Image()
    if header is not None:
        msg.header = header
    msg.height, msg.width = int(arr.shape[0]), int(arr.shape[1])
    msg.encoding = encoding
    msg.is_bigendian = 0
    msg.step = msg.width * channels
    msg.data = np.ascontiguousarray(arr).tobytes()
    return msg


def rgb_to_compressed(
    rgb: np.ndarray, header: Header | None = None, fmt: str = "jpeg", quality: int = 90
) -> CompressedImage:
    """HxWx3 uint8 RGB -> sensor_msgs/CompressedImage (jpeg or png)."""
    ext = {"jpeg": ".jpg", "jpg": ".jpg", "png": ".png"}.get(fmt)
    if ext is None:
        raise ValueError(f"fmt {fmt!r}: use jpeg or png")
    params = [cv2.IMWRITE_JPEG_QUALITY, int(quality)] if ext == ".jpg" else []
    ok, enc = cv2.imencode(ext, cv2.cvtColor(np.asarray(rgb), cv2.COLOR_RGB2BGR), params)
    if not ok:
        raise ValueError("rgb could not be encoded")
    msg = CompressedImage()
    if header is not None:
        msg.header = header
    msg.format = "jpeg" if ext == ".jpg" else "png"
    msg.data = enc.tobytes()
    return msg


def token_mask_to_image(mask: np.ndarray, header: Header | None = None, cell: int = 16) -> Image:
    """(14, 14) bool recomputed-token mask -> mono8 Image, 255 = recomputed, upscaled by `cell`."""
    m = np.asarray(mask, dtype=bool)
    if m.ndim != 2:
        raise ValueError(f"token mask must be 2-D, got shape {m.shape}")
    big = np.repeat(np.repeat(m, cell, axis=0), cell, axis=1).astype(np.uint8) * 255
    return rgb_to_image(big, header, encoding="mono8")


# ----------------------------------------------------------------------------------- events


def _check_time_reference(time_reference: str) -> None:
    if time_reference not in TIME_REFERENCES:
        raise ValueError(f"time_reference {time_reference!r} must be one of {TIME_REFERENCES}")


def _finish_events(x: np.ndarray, y: np.ndarray, t: np.ndarray, p: np.ndarray) -> np.ndarray:
    events = np.empty(t.shape[0], dtype=EVENT_DTYPE)
    events["x"], events["y"], events["t"], events["p"] = x, y, t, p
    if events.size > 1 and np.any(np.diff(events["t"]) < 0):
        events = events[np.argsort(events["t"], kind="stable")]
    return events


def _coords(name: str, values: np.ndarray) -> np.ndarray:
    if values.dtype.kind == "f":
        values = np.rint(values)
    if values.size and (values.min() < 0 or values.max() > 0xFFFF):
        raise ConversionError(
            "values", f"PointCloud2 field {name!r} has values outside [0, 65535]"
        )
    return values.astype(np.uint16)


def pointcloud2_to_events(
    msg: PointCloud2, time_reference: str = "relative", limits: InputLimits = NO_LIMITS_GIVEN
) -> np.ndarray:
    """PointCloud2 with fields x, y, t, p (any numeric PointField types) -> EVENT_DTYPE array,
    sorted by t, with t in absolute microseconds (see the module docstring for `t`)."""
    _check_time_reference(time_reference)
    limits.check("max_message_bytes", len(msg.data), "PointCloud2.data size in bytes")
    limits.check("max_events_per_message", int(msg.height) * int(msg.width),
                 "PointCloud2 event count (width*height)")
    fields = {f.name: f for f in msg.fields}
    missing = [name for name in EVENT_FIELDS if name not in fields]
    if missing:
        raise ConversionError(
            "fields", f"PointCloud2 lacks field(s) {missing}; it has {sorted(fields)}"
        )
    height, width = int(msg.height), int(msg.width)
    point_step, row_step = int(msg.point_step), int(msg.row_step)
    order = ">" if msg.is_bigendian else "<"
    names, formats, offsets = [], [], []
    for name in EVENT_FIELDS:
        f = fields[name]
        code = _POINT_FIELD_TYPES.get(int(f.datatype))
        if code is None:
            raise ConversionError(
                "fields", f"PointCloud2 field {name!r} has unknown datatype {f.datatype}"
            )
        size = np.dtype(code).itemsize
        if int(f.offset) + size > point_step:
            raise ConversionError(
                "fields",
                f"PointCloud2 field {name!r} (offset {f.offset}, {size} bytes) does not fit in "
                f"point_step {point_step}",
            )
        names.append(name)
        formats.append(order + code)
        offsets.append(int(f.offset))
    buf = _buffer(msg.data)
    n = height * width
    if n == 0:
        if buf.size:
            raise ConversionError("size", "PointCloud2 has data but width*height is 0")
        return np.empty(0, dtype=EVENT_DTYPE)
    if row_step < width * point_step:
        raise ConversionError(
            "size", f"PointCloud2.row_step {row_step} < width*point_step = {width * point_step}"
        )
    if buf.size != height * row_step:
        raise ConversionError(
            "size",
            f"PointCloud2.data has {buf.size} bytes, expected height*row_step = "
            f"{height * row_step}",
        )
    layout = np.dtype(
        {"names": names, "formats": formats, "offsets": offsets, "itemsize": point_step}
    )
    rows = np.ascontiguousarray(buf.reshape(height, row_step)[:, : width * point_step])
    points = rows.view(layout).reshape(-1)
    columns = {}
    for name in EVENT_FIELDS:
        col = points[name]
        if col.dtype.kind == "f":
            bad = ~np.isfinite(col)
            if bad.any():
                raise ConversionError(
                    "values", f"PointCloud2 field {name!r} has {int(bad.sum())} NaN/inf value(s)"
                )
        columns[name] = col
    x = _coords("x", columns["x"])
    y = _coords("y", columns["y"])
    t_col = columns["t"]
    t = np.rint(t_col).astype(np.int64) if t_col.dtype.kind == "f" else t_col.astype(np.int64)
    if time_reference == "relative":
        t = t + stamp_to_us(msg.header.stamp)
    p = (columns["p"] > 0).astype(np.uint8)
    return _finish_events(x, y, t, p)


@dataclass(frozen=True)
class EventGeometry:
    """Node parameters event_sensor_width/height (0 = from the EventPacket, or the model's grid
    for PointCloud2) and event_sensor_mapping."""

    width: int = 0
    height: int = 0
    mapping: str = "scale"


@dataclass(frozen=True)
class EventBatch:
    """Events on the model's grid plus what the diagnostics report: events in the message
    (decoded, including those the payload marks unusable) and events used (on the grid)."""

    events: np.ndarray
    events_in: int
    events_used: int
    sensor: tuple[int, int]


def event_packet_to_events(
    msg: Any, time_reference: str = "relative", limits: InputLimits = NO_LIMITS_GIVEN,
    evt3: Evt3Decoder | None = None, decoded_out: list | None = None,
) -> np.ndarray:
    """event_camera_msgs/EventPacket -> EVENT_DTYPE array in sensor pixels (t in us, sorted).

    Encodings: mono, evt3, libcaer, libcaer_cmp (`ops.event_codecs`). 'relative' puts events on
    the header's clock: t = header.stamp + (sensor time - the sensor time the stamp stands for:
    time_base for mono and libcaer_cmp, the packet's first event for evt3 and libcaer).
    'absolute': t = the sensor clock (libcaer/libcaer_cmp: time_base carries host time; evt3:
    the camera's own clock). `evt3` keeps an EVT 3.0 stream's state between packets of one
    topic. Typed loosely: any class with EventPacket's fields works."""
    _check_time_reference(time_reference)
    encoding = str(msg.encoding)
    limits.check("max_message_bytes", len(msg.events), "EventPacket.events size in bytes")
    try:
        decoded = decode_packet(
            encoding, msg.events, time_base=int(msg.time_base), big_endian=bool(msg.is_bigendian),
            width=int(msg.width), height=int(msg.height), evt3=evt3,
            max_events=limits.max_events_per_message)
    except EventCodecError as exc:
        if exc.kind == "limit":
            raise ConversionError(
                "limit", f"EventPacket event count: {exc}",
                (("limit", "max_events_per_message"),
                 ("limit_value", limits.max_events_per_message)),
            ) from exc
        raise ConversionError(exc.kind, f"EventPacket: {exc}") from exc
    if decoded_out is not None:
        decoded_out.append(decoded)
    t_ns = decoded.t_ns
    if time_reference == "relative":
        t_ns = t_ns - decoded.anchor_ns + stamp_to_ns(msg.header.stamp)
    return _finish_events(decoded.x, decoded.y, t_ns // 1000, decoded.p)


def _sensor_size(geometry: EventGeometry, msg: Any, packet: bool) -> tuple[int, int]:
    if geometry.width > 0 and geometry.height > 0:
        return geometry.width, geometry.height
    if packet and int(msg.width) > 0 and int(msg.height) > 0:
        return (geometry.width or int(msg.width)), (geometry.height or int(msg.height))
    return EVENT_SENSOR, EVENT_SENSOR


def events_on_grid(
    msg: Any, packet: bool, time_reference: str, limits: InputLimits, geometry: EventGeometry,
    evt3: Evt3Decoder | None = None,
) -> EventBatch:
    """An event message (EventPacket when `packet`, else PointCloud2) -> events on the model's
    event grid, mapped from the sensor size (parameters, else the packet's) by `geometry`."""
    decoded: list = []
    if packet:
        events = event_packet_to_events(msg, time_reference, limits, evt3, decoded)
    else:
        events = pointcloud2_to_events(msg, time_reference, limits)
    width, height = _sensor_size(geometry, msg, packet)
    if events.size and (int(events["x"].max()) >= width or int(events["y"].max()) >= height):
        bad = (events["x"] >= width) | (events["y"] >= height)
        raise ConversionError(
            "values", f"{int(bad.sum())} event(s) outside the {width}x{height} event sensor "
            "(event_sensor_width/height, or the EventPacket's width/height)",
            (("sensor", f"{width}x{height}"),))
    mapped = map_to_grid(events, width, height, EVENT_SENSOR, geometry.mapping)
    events_in = int(events.size) + (int(decoded[0].dropped) if decoded else 0)
    return EventBatch(mapped, events_in, int(mapped.size), (width, height))


def events_to_pointcloud2(
    events: np.ndarray, header: Header | None = None, relative: bool = True
) -> PointCloud2:
    """EVENT_DTYPE array -> PointCloud2 in the sample bag's layout: x, y UINT16, p UINT8, and t
    UINT32 microseconds since header.stamp (`relative`) or FLOAT64 absolute microseconds
    (PointField has no 64-bit integer type)."""
    ev = np.asarray(events)
    if ev.dtype != EVENT_DTYPE:
        raise ValueError(f"events must have EVENT_DTYPE, got {ev.dtype}")
    msg = PointCloud2()
    if header is not None:
        msg.header = header
    t = ev["t"].astype(np.int64)
    if relative:
        t = t - stamp_to_us(msg.header.stamp)
        if t.size and (t.min() < 0 or t.max() > 0xFFFFFFFF):
            raise ValueError("events: t - header.stamp must fit in uint32 microseconds")
        t_code, t_type = "<u4", PointField.UINT32
    else:
        t_code, t_type = "<f8", PointField.FLOAT64
    layout = np.dtype([("x", "<u2"), ("y", "<u2"), ("t", t_code), ("p", "u1")])
    packed = np.empty(ev.size, dtype=layout)
    packed["x"], packed["y"], packed["t"], packed["p"] = ev["x"], ev["y"], t, ev["p"]
    offsets = [0, 2, 4, 4 + np.dtype(t_code).itemsize]
    types = [PointField.UINT16, PointField.UINT16, t_type, PointField.UINT8]
    msg.fields = [
        PointField(name=n, offset=o, datatype=d, count=1)
        for n, o, d in zip(EVENT_FIELDS, offsets, types, strict=True)
    ]
    msg.height, msg.width = 1, int(ev.size)
    msg.is_bigendian = False
    msg.point_step = layout.itemsize
    msg.row_step = layout.itemsize * int(ev.size)
    msg.is_dense = True
    msg.data = packed.tobytes()
    return msg
