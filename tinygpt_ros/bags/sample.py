"""Write the shipped sample bag (mcap) and its references file, bit-for-bit reproducibly.

Why: the demo, the evaluation and the tests need a small real rosbag2 bag with camera and event
topics and known ground truth, and no recording can be downloaded. Everything here comes from
the seeded generators, stamps start at a fixed epoch, and rosbags' writer embeds nothing
time-dependent, so the same seed always gives the same bytes.

Bag layout (`<bag>/<bag>.mcap`, `<bag>/metadata.yaml`, `<bag>/refs.json`):
- `/camera/image_raw` sensor_msgs/msg/Image rgb8 128x128, frame_id "camera": a still, a slow and
  a busy clip, 22 frames each at 5 fps (13.2 s).
- `/camera/image_raw/compressed` sensor_msgs/msg/CompressedImage "jpeg", same frames and stamps.
- `/events` sensor_msgs/msg/PointCloud2, frame_id "event_camera", one message per 50 ms window,
  header.stamp = window start, height 1, width N, is_dense, point_step 9 (packed, no padding):
  x UINT16 @0, y UINT16 @2, t UINT32 @4 (microseconds since header.stamp), p UINT8 @8 (1 = ON).
  All 11 gesture classes, 1.2 s each, one after another over the camera's time range.
  With `event_encoding` (make-sample --event-encoding) `/events` is instead
  event_camera_msgs/msg/EventPacket as a driver publishes it (bags/driver_packets.py): evt3 at
  1280x720 (metavision_driver), libcaer / libcaer_cmp at 640x480 (libcaer_driver), or mono.
- Every message's bag timestamp equals its header stamp.
- mcap chunks are zstd-compressed (rosbag2's mcap plugin and rosbags read them natively).
- `refs.json` inside the bag directory: caption spans and gesture spans with their stamps.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from rosbags.rosbag2 import CompressionFormat, CompressionMode, StoragePlugin, Writer
from rosbags.typesys import Stores, get_typestore

from tinygpt_ros.bags.driver_packets import (
    DRIVER_SENSORS,
    DRIVERS,
    EVENT_PACKET_TYPE,
    driver_packet,
    register_event_packet,
)
from tinygpt_ros.data.gestures import GESTURE_CLASSES, make_gesture_clip
from tinygpt_ros.data.scenes import render_clip, split_seeds
from tinygpt_ros.spec.types import EVENT_DTYPE

IMAGE_TOPIC = "/camera/image_raw"
COMPRESSED_TOPIC = "/camera/image_raw/compressed"
EVENTS_TOPIC = "/events"
CAMERA_FRAME = "camera"
EVENT_FRAME = "event_camera"
REFS_NAME = "refs.json"

START_NS = 1_700_000_000_000_000_000  # fixed epoch (2023-11-14) so the bytes never change
CAMERA_FPS = 5.0
FRAMES_PER_CLIP = 22
CLIP_MOTIONS = ("still", "slow", "busy")
IMAGE_SIZE = 128
JPEG_QUALITY = 90
EVENT_WINDOW_NS = 50_000_000
GESTURE_FPS = 60.0
# Seeds come from the test split, far from what training and evaluation draw.
_SEED_BASE = 9_000_000

# Packed event point layout of the PointCloud2 messages (point_step 9).
EVENT_POINT_DTYPE = np.dtype({"names": ["x", "y", "t", "p"],
                              "formats": ["<u2", "<u2", "<u4", "u1"],
                              "offsets": [0, 2, 4, 8], "itemsize": 9})


def _stamp(ts: Any, ns: int) -> Any:
    Time = ts.types["builtin_interfaces/msg/Time"]
    return Time(sec=ns // 1_000_000_000, nanosec=ns % 1_000_000_000)


def _header(ts: Any, ns: int, frame_id: str) -> Any:
    return ts.types["std_msgs/msg/Header"](stamp=_stamp(ts, ns), frame_id=frame_id)


def _camera(seed: int) -> tuple[list[tuple[int, np.ndarray]], list[dict], list[dict]]:
    """[(stamp_ns, frame)], caption spans, clip records."""
    period_ns = round(1e9 / CAMERA_FPS)
    frames: list[tuple[int, np.ndarray]] = []
    spans: list[dict] = []
    clips: list[dict] = []
    seeds = split_seeds("test", len(CLIP_MOTIONS), _SEED_BASE + len(CLIP_MOTIONS) * seed)
    for ci, (motion, clip_seed) in enumerate(zip(CLIP_MOTIONS, seeds, strict=True)):
        clip = render_clip(clip_seed, motion, FRAMES_PER_CLIP, (IMAGE_SIZE, IMAGE_SIZE),
                           CAMERA_FPS)
        first = ci * FRAMES_PER_CLIP
        clip_start = START_NS + first * period_ns
        clips.append({"seed": clip_seed, "motion": motion, "start_ns": clip_start,
                      "end_ns": clip_start + FRAMES_PER_CLIP * period_ns,
                      "background": clip.background})
        for i, frame in enumerate(clip.frames):
            frames.append((START_NS + (first + i) * period_ns, frame))
        for si, seg in enumerate(clip.segments):
            spans.append({
                "start_ns": START_NS + (first + seg.start) * period_ns,
                "end_ns": START_NS + (first + seg.end) * period_ns,
                "captions": list(seg.captions),
                "kind": seg.kind,
                "motion": motion,
                "clip_seed": clip_seed,
                "segment": si,
                "actor": None if seg.actor is None else vars(seg.actor),
                "direction": seg.direction,
            })
    return frames, spans, clips


def _events(seed: int, duration_ns: int) -> tuple[np.ndarray, list[dict]]:
    """All gesture events (t in ns since START_NS, sorted) and the gesture spans."""
    n = len(GESTURE_CLASSES)
    span_ns = duration_ns // n
    span_us = span_ns // 1000
    order = np.random.default_rng([seed, 7]).permutation(n)
    seeds = split_seeds("test", n, _SEED_BASE + n * seed)
    num_frames = round(span_us * 1e-6 * GESTURE_FPS) + 1
    parts, spans = [], []
    for k, (ci, gseed) in enumerate(zip(order, seeds, strict=True)):
        label = GESTURE_CLASSES[int(ci)]
        clip = make_gesture_clip(label, gseed, num_frames=num_frames, fps=GESTURE_FPS)
        ev = clip.events[clip.events["t"] < span_us]  # the last stamp belongs to the next span
        start = START_NS + k * span_ns
        shifted = np.empty(len(ev), [("x", "<u2"), ("y", "<u2"), ("t", "<i8"), ("p", "u1")])
        shifted["x"], shifted["y"], shifted["p"] = ev["x"], ev["y"], ev["p"]
        shifted["t"] = ev["t"].astype(np.int64) * 1000 + (start - START_NS)
        parts.append(shifted)
        spans.append({"start_ns": start, "end_ns": start + span_ns, "label": label,
                      "label_index": int(ci), "seed": gseed})
    return np.concatenate(parts), spans


def _pointcloud(ts: Any, stamp_ns: int, ev: np.ndarray) -> Any:
    PointField = ts.types["sensor_msgs/msg/PointField"]
    pts = np.empty(len(ev), EVENT_POINT_DTYPE)
    pts["x"], pts["y"], pts["p"] = ev["x"], ev["y"], ev["p"]
    pts["t"] = (ev["t"] - (stamp_ns - START_NS)) // 1000
    fields = [PointField(name="x", offset=0, datatype=PointField.UINT16, count=1),
              PointField(name="y", offset=2, datatype=PointField.UINT16, count=1),
              PointField(name="t", offset=4, datatype=PointField.UINT32, count=1),
              PointField(name="p", offset=8, datatype=PointField.UINT8, count=1)]
    return ts.types["sensor_msgs/msg/PointCloud2"](
        header=_header(ts, stamp_ns, EVENT_FRAME), height=1, width=len(ev), fields=fields,
        is_bigendian=False, point_step=EVENT_POINT_DTYPE.itemsize,
        row_step=EVENT_POINT_DTYPE.itemsize * len(ev),
        data=np.frombuffer(pts.tobytes(), np.uint8), is_dense=True)


def _event_packet(ts: Any, window_start_ns: int, ev: np.ndarray, encoding: str, seq: int
                  ) -> tuple[int, Any]:
    grid = np.empty(len(ev), EVENT_DTYPE)
    grid["x"], grid["y"], grid["p"] = ev["x"], ev["y"], ev["p"]
    grid["t"] = (ev["t"] + START_NS) // 1000
    f = driver_packet(encoding, grid, window_start_ns, START_NS)
    return f.stamp_ns, ts.types[EVENT_PACKET_TYPE](
        header=_header(ts, f.stamp_ns, EVENT_FRAME), height=f.height, width=f.width, seq=seq,
        time_base=f.time_base, encoding=f.encoding, is_bigendian=False,
        events=np.frombuffer(f.events, np.uint8))


def _typestore() -> Any:
    ts = get_typestore(Stores.ROS2_KILTED)
    register_event_packet(ts)
    return ts


def build_sample(seed: int = 0, event_encoding: str = "pointcloud2"
                 ) -> tuple[list[tuple[int, str, str, Any]], dict]:
    """The messages [(stamp_ns, topic, msgtype, msg)] in write order, and the references.
    `event_encoding`: 'pointcloud2' (the shipped bag) or an EventPacket encoding written the
    way its driver publishes it (bags/driver_packets.py)."""
    if event_encoding != "pointcloud2" and event_encoding not in DRIVER_SENSORS:
        raise ValueError(f"event_encoding {event_encoding!r} must be pointcloud2 or one of "
                         f"{sorted(DRIVER_SENSORS)}")
    ts = _typestore()
    frames, caption_spans, clips = _camera(seed)
    duration_ns = len(frames) * round(1e9 / CAMERA_FPS)
    events, gesture_spans = _events(seed, duration_ns)
    msgs: list[tuple[int, str, str, Any]] = []
    Image = ts.types["sensor_msgs/msg/Image"]
    Compressed = ts.types["sensor_msgs/msg/CompressedImage"]
    for stamp, frame in frames:
        msgs.append((stamp, IMAGE_TOPIC, Image.__msgtype__, Image(
            header=_header(ts, stamp, CAMERA_FRAME), height=IMAGE_SIZE, width=IMAGE_SIZE,
            encoding="rgb8", is_bigendian=0, step=IMAGE_SIZE * 3, data=frame.reshape(-1))))
        ok, jpeg = cv2.imencode(".jpg", cv2.cvtColor(frame, cv2.COLOR_RGB2BGR),
                                [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
        assert ok
        msgs.append((stamp, COMPRESSED_TOPIC, Compressed.__msgtype__, Compressed(
            header=_header(ts, stamp, CAMERA_FRAME), format="jpeg",
            data=np.asarray(jpeg, np.uint8).reshape(-1))))
    windows = duration_ns // EVENT_WINDOW_NS
    bounds = np.searchsorted(events["t"], np.arange(windows + 1) * EVENT_WINDOW_NS)
    for w in range(windows):
        stamp = START_NS + w * EVENT_WINDOW_NS
        window = events[bounds[w]:bounds[w + 1]]
        if event_encoding == "pointcloud2":
            msgs.append((stamp, EVENTS_TOPIC, "sensor_msgs/msg/PointCloud2",
                         _pointcloud(ts, stamp, window)))
        else:
            packet_stamp, packet = _event_packet(ts, stamp, window, event_encoding, w)
            msgs.append((packet_stamp, EVENTS_TOPIC, EVENT_PACKET_TYPE, packet))
    topic_rank = {IMAGE_TOPIC: 0, COMPRESSED_TOPIC: 1, EVENTS_TOPIC: 2}
    msgs.sort(key=lambda m: (m[0], topic_rank[m[1]]))
    refs = {
        "format": "tinygpt_ros sample references v1",
        "seed": seed,
        "start_ns": START_NS,
        "end_ns": START_NS + duration_ns,
        "topics": {"image": IMAGE_TOPIC, "compressed": COMPRESSED_TOPIC, "events": EVENTS_TOPIC},
        "camera": {"fps": CAMERA_FPS, "width": IMAGE_SIZE, "height": IMAGE_SIZE,
                   "frame_id": CAMERA_FRAME, "clips": clips},
        "events": {"window_ns": EVENT_WINDOW_NS, "sensor": 128, "frame_id": EVENT_FRAME,
                   "point_step": EVENT_POINT_DTYPE.itemsize, "count": len(events)},
        **({} if event_encoding == "pointcloud2" else {"event_packet": {
            "encoding": event_encoding, "driver": DRIVERS[event_encoding],
            "sensor": list(DRIVER_SENSORS[event_encoding])}}),
        "captions": caption_spans,
        "gestures": gesture_spans,
    }
    return msgs, refs


def _write(path: Path, seed: int, event_encoding: str = "pointcloud2") -> None:
    ts = _typestore()
    msgs, refs = build_sample(seed, event_encoding)
    events_type = ("sensor_msgs/msg/PointCloud2" if event_encoding == "pointcloud2"
                   else EVENT_PACKET_TYPE)
    writer = Writer(path, version=9, storage_plugin=StoragePlugin.MCAP)
    writer.set_compression(CompressionMode.STORAGE, CompressionFormat.ZSTD)
    with writer:
        conns = {}
        for topic, msgtype in ((IMAGE_TOPIC, "sensor_msgs/msg/Image"),
                               (COMPRESSED_TOPIC, "sensor_msgs/msg/CompressedImage"),
                               (EVENTS_TOPIC, events_type)):
            conns[topic] = writer.add_connection(topic, msgtype, typestore=ts)
        for stamp, topic, msgtype, msg in msgs:
            writer.write(conns[topic], stamp, ts.serialize_cdr(msg, msgtype))
    (path / REFS_NAME).write_text(json.dumps(refs, indent=1, sort_keys=True) + "\n", "utf8")


def write_sample_bag(path: str | Path, seed: int = 0, overwrite: bool = False,
                     event_encoding: str = "pointcloud2") -> Path:
    """Write the sample bag directory `path` (+ `path/refs.json`); returns `path`.

    An existing `path` is left untouched (FileExistsError) unless `overwrite`; the new bag is
    written next to it first and swapped in only when complete."""
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed must be a non-negative int, got {seed!r}")
    path = Path(path)
    if path.exists() and not overwrite:
        raise FileExistsError(f"path {str(path)!r} exists; pass overwrite=True to replace it")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    try:
        new = tmp / path.name  # same name: rosbags names the .mcap after its directory
        _write(new, seed, event_encoding)
        if path.exists():
            old = tmp / "old"
            path.rename(old)
            try:
                new.rename(path)
            except BaseException:
                old.rename(path)  # put the previous bag back before the temp dir goes
                raise
        else:
            new.rename(path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return path


def make_sample(out_dir: str | Path, seed: int = 0, overwrite: bool = True) -> Path:
    """Write `out_dir/sample_bag` (the layout the repository ships)."""
    return write_sample_bag(Path(out_dir) / "sample_bag", seed=seed, overwrite=overwrite)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="write the tinygpt_ros sample bag")
    ap.add_argument("--out", default="sample/sample_bag", help="bag directory to write")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--overwrite", action="store_true")
    ap.add_argument("--event-encoding", default="pointcloud2",
                    choices=("pointcloud2", *DRIVER_SENSORS))
    args = ap.parse_args(argv)
    print(write_sample_bag(args.out, seed=args.seed, overwrite=args.overwrite,
                           event_encoding=args.event_encoding))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
