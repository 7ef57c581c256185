"""The shipped sample bag: readable, deserializable by rclpy, stamped right, reproducible."""

from __future__ import annotations

import hashlib
import itertools
import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from rclpy.serialization import deserialize_message
from sensor_msgs.msg import CompressedImage, Image, PointCloud2, PointField

from tinygpt_ros.bags import sample
from tinygpt_ros.bags.reader import bag_topics, iter_bag
from tinygpt_ros.data.gestures import GESTURE_CLASSES

SHIPPED = Path(__file__).resolve().parent.parent / "sample" / "sample_bag"
MSG_TYPES = {sample.IMAGE_TOPIC: Image, sample.COMPRESSED_TOPIC: CompressedImage,
             sample.EVENTS_TOPIC: PointCloud2}


def digests(bag: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(bag.iterdir()) if p.is_file()}


def stamp_ns(msg) -> int:
    return msg.header.stamp.sec * 1_000_000_000 + msg.header.stamp.nanosec


@pytest.fixture(scope="module")
def fresh(tmp_path_factory) -> Path:
    return sample.write_sample_bag(tmp_path_factory.mktemp("bag") / "sample_bag", seed=0)


def test_regenerated_bag_is_bit_identical_to_shipped(fresh):
    assert SHIPPED.is_dir(), "sample bag missing: run `tinygpt-ros make-sample --overwrite`"
    assert set(digests(fresh)) == {"metadata.yaml", "sample_bag.mcap", "refs.json"}
    assert digests(fresh) == digests(SHIPPED)
    assert sum(p.stat().st_size for p in SHIPPED.iterdir()) < 4 * 1024 * 1024


def test_topics_and_counts_and_rosbags_anyreader():
    from rosbags.highlevel import AnyReader
    from rosbags.typesys import Stores, get_typestore

    with AnyReader([SHIPPED], default_typestore=get_typestore(Stores.ROS2_KILTED)) as reader:
        conn = next(c for c in reader.connections if c.topic == sample.EVENTS_TOPIC)
        _, stamp, raw = next(reader.messages(connections=[conn]))
        msg = reader.deserialize(raw, conn.msgtype)
        assert [f.name for f in msg.fields] == ["x", "y", "t", "p"] and stamp_ns(msg) == stamp
    topics = bag_topics(SHIPPED)
    assert topics == {
        "/camera/image_raw": ("sensor_msgs/msg/Image", 66),
        "/camera/image_raw/compressed": ("sensor_msgs/msg/CompressedImage", 66),
        "/events": ("sensor_msgs/msg/PointCloud2", 264),
    }


def test_every_message_deserializes_with_rclpy_and_stamps_match():
    images: dict[int, np.ndarray] = {}
    jpegs: dict[int, np.ndarray] = {}
    last = -1
    n_events = 0
    for m in iter_bag(SHIPPED):
        assert m.timestamp_ns >= last
        last = m.timestamp_ns
        msg = deserialize_message(m.rawdata, MSG_TYPES[m.topic])
        assert stamp_ns(msg) == m.timestamp_ns
        if m.topic == sample.IMAGE_TOPIC:
            assert (msg.height, msg.width, msg.encoding, msg.step) == (128, 128, "rgb8", 384)
            assert msg.header.frame_id == "camera"
            images[m.timestamp_ns] = np.frombuffer(bytes(msg.data), np.uint8).reshape(128, 128, 3)
        elif m.topic == sample.COMPRESSED_TOPIC:
            assert msg.format == "jpeg" and msg.header.frame_id == "camera"
            bgr = cv2.imdecode(np.frombuffer(bytes(msg.data), np.uint8), cv2.IMREAD_COLOR)
            assert bgr.shape == (128, 128, 3)
            jpegs[m.timestamp_ns] = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
        else:
            assert msg.header.frame_id == "event_camera"
            fields = [(f.name, f.offset, f.datatype, f.count) for f in msg.fields]
            assert fields == [("x", 0, PointField.UINT16, 1), ("y", 2, PointField.UINT16, 1),
                              ("t", 4, PointField.UINT32, 1), ("p", 8, PointField.UINT8, 1)]
            assert msg.height == 1 and msg.is_dense and not msg.is_bigendian
            assert msg.point_step == 9 and msg.row_step == 9 * msg.width
            pts = np.frombuffer(bytes(msg.data), sample.EVENT_POINT_DTYPE)
            assert len(pts) == msg.width
            if len(pts):
                assert pts["x"].max() < 128 and pts["y"].max() < 128
                assert pts["t"].max() < 50_000 and set(np.unique(pts["p"])) <= {0, 1}
                assert np.all(np.diff(pts["t"].astype(np.int64)) >= 0)
            n_events += len(pts)
    assert sorted(images) == sorted(jpegs) and len(images) == 66
    for k, rgb in images.items():  # same frames, lossy but close
        assert np.abs(rgb.astype(int) - jpegs[k].astype(int)).mean() < 6
    refs = json.loads((SHIPPED / "refs.json").read_text())
    assert n_events == refs["events"]["count"] > 100_000


def test_reference_spans_cover_the_bag():
    refs = json.loads((SHIPPED / sample.REFS_NAME).read_text())
    for key in ("captions", "gestures"):
        spans = refs[key]
        assert spans[0]["start_ns"] == refs["start_ns"]
        assert spans[-1]["end_ns"] == refs["end_ns"]
        for a, b in itertools.pairwise(spans):
            assert a["end_ns"] == b["start_ns"] and b["end_ns"] > b["start_ns"]
    assert all(len(s["captions"]) >= 5 for s in refs["captions"])
    assert {s["motion"] for s in refs["captions"]} == {"still", "slow", "busy"}
    assert any(s["kind"] != "still" for s in refs["captions"])
    assert sorted(s["label"] for s in refs["gestures"]) == sorted(GESTURE_CLASSES)
    stamps = [m.timestamp_ns for m in iter_bag(SHIPPED)]
    assert refs["start_ns"] <= min(stamps) and max(stamps) < refs["end_ns"]


def test_existing_bag_is_never_clobbered(fresh):
    before = digests(fresh)
    with pytest.raises(FileExistsError, match="overwrite"):
        sample.write_sample_bag(fresh, seed=1)
    assert digests(fresh) == before
    # overwrite swaps a complete new bag in and leaves no temp dirs behind
    sample.write_sample_bag(fresh, seed=1, overwrite=True)
    assert digests(fresh) != before
    assert sorted(p.name for p in fresh.parent.iterdir()) == ["sample_bag"]
    sample.write_sample_bag(fresh, seed=0, overwrite=True)
    assert digests(fresh) == before


def test_reader_errors_are_clear(tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        iter_bag(tmp_path / "nope")  # checked on the call, before any iteration
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "metadata.yaml").write_text("rosbag2_bagfile_information: [1, 2")
    with pytest.raises(ValueError, match="broken"):
        bag_topics(broken)
    junk = tmp_path / "junk.mcap"
    junk.write_bytes(b"\x89MCAP0\r\n" + b"\x00" * 64)
    with pytest.raises(ValueError, match="junk"):
        list(iter_bag(junk))
    with pytest.raises(ValueError, match="/nothing"):
        iter_bag(SHIPPED, topics=["/nothing"])
    only = list(iter_bag(SHIPPED, topics=[sample.EVENTS_TOPIC]))
    assert len(only) == 264 and {m.msgtype for m in only} == {"sensor_msgs/msg/PointCloud2"}


def test_a_sample_image_travels_through_real_ros(ros):
    raw = next(m for m in iter_bag(SHIPPED, topics=[sample.IMAGE_TOPIC]))
    msg = deserialize_message(raw.rawdata, Image)
    talker = ros.make_node("bag_talker")
    listener = ros.make_node("bag_listener")
    got: list[Image] = []
    listener.create_subscription(Image, "camera/image_raw", got.append, 10)
    pub = talker.create_publisher(Image, "camera/image_raw", 10)
    assert ros.spin_until(lambda: pub.get_subscription_count() > 0, 10)
    pub.publish(msg)
    assert ros.spin_until(lambda: len(got) == 1, 10)
    assert stamp_ns(got[0]) == raw.timestamp_ns
    assert bytes(got[0].data) == bytes(msg.data) and got[0].encoding == "rgb8"


def test_reader_reads_sqlite3_bags_too(tmp_path):
    from rosbags.rosbag2 import Writer
    from rosbags.typesys import Stores, get_typestore
    from std_msgs.msg import String

    ts = get_typestore(Stores.ROS2_KILTED)
    StringT = ts.types["std_msgs/msg/String"]
    with Writer(tmp_path / "db", version=9) as writer:  # default storage: sqlite3
        conn = writer.add_connection("/chatter", "std_msgs/msg/String", typestore=ts)
        for i in range(3):
            raw = ts.serialize_cdr(StringT(data=f"m{i}"), StringT.__msgtype__)
            writer.write(conn, 1_000 + i, raw)
    assert bag_topics(tmp_path / "db") == {"/chatter": ("std_msgs/msg/String", 3)}
    msgs = list(iter_bag(tmp_path / "db"))
    assert [m.timestamp_ns for m in msgs] == [1_000, 1_001, 1_002]
    assert [deserialize_message(m.rawdata, String).data for m in msgs] == ["m0", "m1", "m2"]
