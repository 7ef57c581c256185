"""Valid and malformed input messages for the fuzz part of `tinygpt-ros soak`.

Each generator returns `FuzzCase`s: a message plus what the node should make of it: "valid"
(processed, or a mailbox drop), "bad" (an ERROR diagnostic counted by kind) or "either" (a
payload a decoder may legitimately salvage, such as a truncated jpeg that libjpeg fills in).
The malformed cases cover every way a field of each input type can be wrong: encodings,
dimensions, step, data length, corrupt and truncated payloads, PointCloud2 fields, datatypes,
offsets, point_step, NaN/inf, events outside the sensor.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from sensor_msgs.msg import CompressedImage, Image, PointCloud2, PointField
from std_msgs.msg import Header

from tinygpt_ros.ros.conversions import events_to_pointcloud2, rgb_to_compressed, rgb_to_image
from tinygpt_ros.spec.config import EVENT_SENSOR
from tinygpt_ros.spec.types import EVENT_DTYPE

CAMERA_SHAPE = (480, 640)  # camera-sized frames, as a robot's driver publishes them
WINDOW_US = 50_000  # one event window at 20 Hz


@dataclass
class FuzzCase:
    name: str  # what was done to the message, e.g. "image/step_short"
    expect: str  # valid | bad | either
    msg: Any


def camera_frame(i: int, shape: tuple[int, int] = CAMERA_SHAPE) -> np.ndarray:
    """A 640x480 RGB frame with a square moving across a gradient (cheap, changes every frame)."""
    h, w = shape
    frame = np.empty((h, w, 3), np.uint8)
    frame[..., 0] = np.linspace(0, 255, w, dtype=np.uint8)[None, :]
    frame[..., 1] = np.linspace(0, 255, h, dtype=np.uint8)[:, None]
    frame[..., 2] = 80
    x = (i * 16) % (w - 96)
    frame[h // 3: h // 3 + 96, x: x + 96] = (250, 40, 40)
    return frame


def event_window(rng: np.random.Generator, header: Header, n: int = 3000) -> np.ndarray:
    """`n` events inside the sensor, spread over one window after the header stamp."""
    ev = np.empty(n, EVENT_DTYPE)
    cx, cy = rng.integers(20, EVENT_SENSOR - 20, 2)
    ev["x"] = np.clip(rng.normal(cx, 12, n), 0, EVENT_SENSOR - 1).astype(np.uint16)
    ev["y"] = np.clip(rng.normal(cy, 12, n), 0, EVENT_SENSOR - 1).astype(np.uint16)
    base = header.stamp.sec * 1_000_000 + header.stamp.nanosec // 1000
    ev["t"] = base + np.sort(rng.integers(0, WINDOW_US, n))
    ev["p"] = rng.integers(0, 2, n)
    return ev


# ------------------------------------------------------------------------------------ images


def _image_cases(rng: np.random.Generator, header: Header, i: int) -> list[FuzzCase]:
    good = rgb_to_image(camera_frame(i), header)

    def variant(**changes: Any) -> Image:
        msg = Image(header=header, height=good.height, width=good.width,
                    encoding=good.encoding, is_bigendian=good.is_bigendian, step=good.step,
                    data=good.data)
        for k, v in changes.items():
            setattr(msg, k, v)
        return msg

    data = bytes(good.data)
    junk = "".join(chr(c) for c in rng.integers(33, 127, int(rng.integers(1, 12))))
    return [
        FuzzCase("image/unknown_encoding", "bad", variant(encoding=junk)),
        FuzzCase("image/depth_encoding", "bad", variant(encoding="32FC1")),
        FuzzCase("image/yuv422_odd_width", "bad",
                 variant(encoding="yuv422", width=good.width - 1, step=good.width * 2,
                         data=data[: good.height * good.width * 2])),
        FuzzCase("image/empty_encoding", "bad", variant(encoding="")),
        FuzzCase("image/zero_height", "bad", variant(height=0)),
        FuzzCase("image/zero_width", "bad", variant(width=0, step=0)),
        FuzzCase("image/huge_dims", "bad", variant(height=2**31 - 1, width=2**31 - 1,
                                                   step=2**32 - 1)),
        FuzzCase("image/huge_height", "bad", variant(height=1_000_000)),
        FuzzCase("image/step_short", "bad", variant(step=good.step - 1)),
        FuzzCase("image/step_long", "bad", variant(step=good.step + 7)),
        FuzzCase("image/step_zero", "bad", variant(step=0)),
        FuzzCase("image/data_truncated", "bad",
                 variant(data=data[: int(rng.integers(0, len(data)))])),
        FuzzCase("image/data_empty", "bad", variant(data=b"")),
        FuzzCase("image/data_long", "bad", variant(data=data + b"\0" * 13)),
        FuzzCase("image/mono16_odd_bytes", "bad",
                 variant(encoding="mono16", step=good.width * 2, data=data[: good.width * 2 * 10
                                                                           + 1])),
        FuzzCase("image/rgba8_as_rgb8_size", "bad", variant(encoding="rgba8")),
    ]


def _compressed_cases(rng: np.random.Generator, header: Header, i: int) -> list[FuzzCase]:
    frame = camera_frame(i)
    jpeg = bytes(rgb_to_compressed(frame, header, "jpeg").data)
    png = bytes(rgb_to_compressed(frame, header, "png").data)
    flipped = bytearray(jpeg)
    for pos in rng.integers(2, len(flipped), 64):
        flipped[pos] ^= 0xFF

    def comp(fmt: str, data: bytes) -> CompressedImage:
        return CompressedImage(header=header, format=fmt, data=data)

    return [
        FuzzCase("compressed/random_bytes", "bad",
                 comp("jpeg", rng.integers(0, 256, 4096, dtype=np.uint8).tobytes())),
        FuzzCase("compressed/jpeg_header_only", "bad", comp("jpeg", jpeg[:20])),
        FuzzCase("compressed/jpeg_truncated", "either", comp("jpeg", jpeg[: len(jpeg) // 2])),
        FuzzCase("compressed/jpeg_bitflips", "either", comp("jpeg", bytes(flipped))),
        FuzzCase("compressed/png_truncated", "bad", comp("png", png[: len(png) // 2])),
        FuzzCase("compressed/png_bad_crc", "either",
                 comp("png", png[:40] + b"\0\0\0\0" + png[44:])),
        FuzzCase("compressed/empty", "bad", comp("jpeg", b"")),
        FuzzCase("compressed/unknown_format", "bad", comp("webp", jpeg)),
        FuzzCase("compressed/depth_format", "bad", comp("16UC1; compressedDepth png", png)),
    ]


# ------------------------------------------------------------------------------------ events


def _cloud(header: Header, fields: list[tuple[str, int, int]], point_step: int, points: bytes,
           width: int, row_step: int | None = None) -> PointCloud2:
    return PointCloud2(
        header=header, height=1, width=width,
        fields=[PointField(name=n, offset=o, datatype=d, count=1) for n, o, d in fields],
        is_bigendian=False, point_step=point_step,
        row_step=point_step * width if row_step is None else row_step, data=points,
        is_dense=True,
    )


def _float_cloud(header: Header, x: np.ndarray, y: np.ndarray) -> PointCloud2:
    """x, y float32, t uint32, p uint8: the layout NaN/inf and negative coordinates need."""
    n = len(x)
    layout = np.dtype([("x", "<f4"), ("y", "<f4"), ("t", "<u4"), ("p", "u1")])
    pts = np.zeros(n, layout)
    pts["x"], pts["y"], pts["t"] = x, y, np.arange(n)
    fields = [("x", 0, PointField.FLOAT32), ("y", 4, PointField.FLOAT32),
              ("t", 8, PointField.UINT32), ("p", 12, PointField.UINT8)]
    return _cloud(header, fields, layout.itemsize, pts.tobytes(), n)


def _pointcloud_cases(rng: np.random.Generator, header: Header) -> list[FuzzCase]:
    ev = event_window(rng, header, 500)
    good = events_to_pointcloud2(ev, header)
    n = good.width
    std = [(f.name, f.offset, f.datatype) for f in good.fields]
    data = bytes(good.data)
    step = good.point_step

    def with_fields(fields: list[tuple[str, int, int]], point_step: int = step) -> PointCloud2:
        return _cloud(header, fields, point_step, data, n, row_step=step * n)

    xs = rng.uniform(0, EVENT_SENSOR - 1, 50).astype(np.float32)
    ys = rng.uniform(0, EVENT_SENSOR - 1, 50).astype(np.float32)
    nan_x, inf_y, neg_x = xs.copy(), ys.copy(), xs.copy()
    nan_x[7], inf_y[3], neg_x[5] = np.nan, np.inf, -40.0
    outside = ev.copy()
    outside["x"][::10] = EVENT_SENSOR + 200
    return [
        FuzzCase("pointcloud2/missing_p", "bad", with_fields(std[:3])),
        FuzzCase("pointcloud2/missing_all", "bad", with_fields([])),
        FuzzCase("pointcloud2/renamed_t", "bad",
                 with_fields([std[0], std[1], ("time", std[2][1], std[2][2]), std[3]])),
        FuzzCase("pointcloud2/unknown_datatype", "bad",
                 with_fields([std[0], (std[1][0], std[1][1], 42), std[2], std[3]])),
        FuzzCase("pointcloud2/datatype_zero", "bad",
                 with_fields([(std[0][0], std[0][1], 0), *std[1:]])),
        FuzzCase("pointcloud2/offset_past_point", "bad",
                 with_fields([std[0], std[1], (std[2][0], step + 4, std[2][2]), std[3]])),
        FuzzCase("pointcloud2/point_step_small", "bad", with_fields(std, point_step=4)),
        FuzzCase("pointcloud2/point_step_zero", "bad", with_fields(std, point_step=0)),
        FuzzCase("pointcloud2/row_step_small", "bad",
                 _cloud(header, std, step, data, n, row_step=step * n - 1)),
        FuzzCase("pointcloud2/data_truncated", "bad",
                 _cloud(header, std, step, data[: len(data) - 3], n)),
        FuzzCase("pointcloud2/width_lies", "bad", _cloud(header, std, step, data, n * 4)),
        FuzzCase("pointcloud2/data_without_points", "bad", _cloud(header, std, step, data, 0)),
        FuzzCase("pointcloud2/nan_x", "bad", _float_cloud(header, nan_x, ys)),
        FuzzCase("pointcloud2/inf_y", "bad", _float_cloud(header, xs, inf_y)),
        FuzzCase("pointcloud2/negative_x", "bad", _float_cloud(header, neg_x, ys)),
        FuzzCase("pointcloud2/outside_sensor", "bad", events_to_pointcloud2(outside, header)),
        FuzzCase("pointcloud2/huge_width", "bad",
                 _cloud(header, std, step, data, 2**31 - 1)),
        # Silence is valid input: a window without events (the gesture is "none").
        FuzzCase("pointcloud2/zero_points", "valid",
                 events_to_pointcloud2(np.zeros(0, EVENT_DTYPE), header)),
    ]


def mono_payload(ev: np.ndarray, header: Header) -> bytes:
    """Events as 'mono' EventPacket words, times relative to the header stamp (time_base 0)."""
    dt = (ev["t"] - (header.stamp.sec * 1_000_000 + header.stamp.nanosec // 1000)) * 1000
    words = (ev["p"].astype(np.uint64) << np.uint64(63)) | (
        ev["y"].astype(np.uint64) << np.uint64(48)) | (ev["x"].astype(np.uint64) << np.uint64(32)
                                                       ) | dt.astype(np.uint64)
    return words.astype("<u8").tobytes()


def event_packet(packet_type: Any, header: Header, encoding: str, events: bytes) -> Any:
    """An event_camera_msgs/EventPacket on the model's 128x128 sensor."""
    msg = packet_type()
    msg.header, msg.encoding, msg.width, msg.height = header, encoding, EVENT_SENSOR, EVENT_SENSOR
    msg.seq, msg.time_base, msg.is_bigendian = 0, 0, False
    msg.events = events
    return msg


def _event_packet_cases(packet_type: Any, rng: np.random.Generator,
                        header: Header) -> list[FuzzCase]:
    good = mono_payload(event_window(rng, header, 400), header)

    def pkt(encoding: str, events: bytes) -> Any:
        return event_packet(packet_type, header, encoding, events)

    return [
        FuzzCase("event_packet/valid", "valid", pkt("mono", good)),
        # 'mono' words read as EVT 3.0 words: undefined word types, refused as corrupt
        FuzzCase("event_packet/evt3_garbage", "bad", pkt("evt3", good)),
        FuzzCase("event_packet/unknown_encoding", "bad", pkt("trimmed_evt9", good)),
        FuzzCase("event_packet/empty_encoding", "bad", pkt("", good)),
        FuzzCase("event_packet/length_not_8", "bad", pkt("mono", good[:-3])),
        FuzzCase("event_packet/outside_sensor", "bad",
                 pkt("mono", struct.pack("<Q", (1000 << 32) | 5) * 20)),
    ]


# ---------------------------------------------------------------------------------- the mix


def valid_case(kind: str, rng: np.random.Generator, header: Header, i: int,
               packet_type: Any = None) -> FuzzCase:
    """One valid message of input `kind` (image | compressed | pointcloud2 | event_packet,
    which needs the EventPacket `packet_type`)."""
    if kind == "image":
        return FuzzCase("image/valid", "valid", rgb_to_image(camera_frame(i), header))
    if kind == "compressed":
        fmt = "jpeg" if i % 2 else "png"
        return FuzzCase(f"compressed/valid_{fmt}", "valid",
                        rgb_to_compressed(camera_frame(i), header, fmt))
    if kind == "event_packet":
        payload = mono_payload(event_window(rng, header), header)
        return FuzzCase("event_packet/valid", "valid",
                        event_packet(packet_type, header, "mono", payload))
    return FuzzCase("pointcloud2/valid", "valid",
                    events_to_pointcloud2(event_window(rng, header), header))


def malformed_cases(kind: str, rng: np.random.Generator, header: Header, i: int,
                    packet_type: Any = None) -> list[FuzzCase]:
    """Every malformed variant of input `kind` (plus edge cases that are valid)."""
    makers: dict[str, Callable[[], list[FuzzCase]]] = {
        "image": lambda: _image_cases(rng, header, i),
        "compressed": lambda: _compressed_cases(rng, header, i),
        "pointcloud2": lambda: _pointcloud_cases(rng, header),
        "event_packet": lambda: _event_packet_cases(packet_type, rng, header),
    }
    return makers[kind]()
