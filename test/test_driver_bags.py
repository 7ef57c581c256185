"""Driver-shaped event data: the same gesture clips as PointCloud2 and as EventPacket in each
driver's encoding (evt3 1280x720, libcaer and libcaer_cmp 640x480) give the same grid events
and the same gesture predictions with the shipped model, through the node's own conversion
(`conversions.events_on_grid`); the driver-shaped sample bag carries event_camera_msgs
EventPacket messages that rosbags reads back."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from rosbags.highlevel import AnyReader
from std_msgs.msg import Header

from tinygpt_ros.bags.driver_packets import (
    DRIVER_SENSORS,
    EVENT_PACKET_MSG,
    EVENT_PACKET_TYPE,
    driver_packet,
    register_event_packet,
)
from tinygpt_ros.bags.sample import START_NS, write_sample_bag
from tinygpt_ros.data.gestures import make_gesture_clip
from tinygpt_ros.deploy.factory import load_engine
from tinygpt_ros.ops.event_codecs import Evt3Decoder
from tinygpt_ros.ros import conversions as conv

MODEL = Path(__file__).resolve().parent.parent / "models" / "tinygpt"
MSG_FILE = (Path(__file__).resolve().parent.parent / "interfaces" / "event_camera_msgs" / "msg"
            / "EventPacket.msg")
WINDOW_US = 50_000
ENCODINGS = ("evt3", "libcaer", "libcaer_cmp")


def _fields(text: str) -> list[str]:
    lines = (line.split("#")[0].strip() for line in text.splitlines())
    return [" ".join(line.split()) for line in lines if line]


def test_bag_type_definition_is_the_interface_package_s():
    assert _fields(EVENT_PACKET_MSG) == _fields(MSG_FILE.read_text())


def _packet(encoding: str, events: np.ndarray, window_start_us: int) -> SimpleNamespace:
    """Duck-typed EventPacket (this test also runs where event_camera_msgs is not built)."""
    f = driver_packet(encoding, events, window_start_us * 1000, START_NS)
    from builtin_interfaces.msg import Time

    stamp = Time(sec=f.stamp_ns // 1_000_000_000, nanosec=f.stamp_ns % 1_000_000_000)
    return SimpleNamespace(header=Header(stamp=stamp), height=f.height, width=f.width, seq=0,
                           time_base=f.time_base, encoding=f.encoding, is_bigendian=False,
                           events=f.events)


def _windows(label: str, seed: int) -> list[tuple[int, np.ndarray]]:
    clip = make_gesture_clip(label, seed, num_frames=37)  # 0.6 s at 60 fps
    ev = clip.events.copy()
    ev["t"] += START_NS // 1000
    out = []
    for start in range(0, clip.duration_us - WINDOW_US + 1, WINDOW_US):
        w0 = START_NS // 1000 + start
        out.append((w0, ev[(ev["t"] >= w0) & (ev["t"] < w0 + WINDOW_US)]))
    return out


def _predict(windows, source: str) -> tuple[list[str], list[np.ndarray]]:
    engine = load_engine(MODEL, backend="onnxruntime")
    evt3 = Evt3Decoder()
    gestures, grids = [], []
    for w0, ev in windows:
        if source == "pointcloud2":
            msg = conv.events_to_pointcloud2(ev, Header(stamp=_stamp(w0)))
            batch = conv.events_on_grid(msg, False, "relative", conv.NO_LIMITS_GIVEN,
                                        conv.EventGeometry())
            stamp = w0
        else:
            msg = _packet(source, ev, w0)
            batch = conv.events_on_grid(msg, True, "relative", conv.NO_LIMITS_GIVEN,
                                        conv.EventGeometry(), evt3)
            assert batch.sensor == DRIVER_SENSORS[source]
            stamp = conv.stamp_to_us(msg.header.stamp)
        grids.append(batch.events)
        gestures.append(engine.process_events(batch.events, stamp).gesture)
    return gestures, grids


def _stamp(us: int):
    from builtin_interfaces.msg import Time

    return Time(sec=us // 1_000_000, nanosec=(us % 1_000_000) * 1000)


@pytest.mark.parametrize("label,seed", [("arm_roll", 12)])
def test_every_encoding_gives_the_same_gestures(label, seed):
    windows = _windows(label, seed)
    reference, ref_grids = _predict(windows, "pointcloud2")
    for encoding in ENCODINGS:
        gestures, grids = _predict(windows, encoding)
        for a, b in zip(ref_grids, grids, strict=True):
            order_a = np.lexsort((a["p"], a["x"], a["y"], a["t"]))
            order_b = np.lexsort((b["p"], b["x"], b["y"], b["t"]))
            np.testing.assert_array_equal(a[order_a], b[order_b])
        assert gestures == reference, (encoding, gestures, reference)


def test_driver_shaped_sample_bag_carries_event_packets(tmp_path):
    path = write_sample_bag(tmp_path / "evt3_bag", event_encoding="evt3")
    refs = json.loads((path / "refs.json").read_text())
    assert refs["event_packet"] == {"encoding": "evt3", "driver": "metavision_driver",
                                    "sensor": [1280, 720]}
    with AnyReader([path]) as reader:
        register_event_packet(reader.typestore)
        conns = [c for c in reader.connections if c.topic == "/events"]
        assert [c.msgtype for c in conns] == [EVENT_PACKET_TYPE]
        decoder, total = Evt3Decoder(), 0
        for conn, stamp, raw in reader.messages(connections=conns):
            msg = reader.deserialize(raw, conn.msgtype)
            assert (msg.encoding, msg.width, msg.height) == ("evt3", 1280, 720)
            assert stamp == msg.header.stamp.sec * 1_000_000_000 + msg.header.stamp.nanosec
            total += conv.events_on_grid(msg, True, "relative", conv.NO_LIMITS_GIVEN,
                                         conv.EventGeometry(), decoder).events_used
    assert total == refs["events"]["count"]  # every simulated event, once
