"""Input limits through the real node: decompression bombs (JPEG, PNG), an oversize raw image,
too many events, too many bytes. Each is refused before anything is allocated for it, with an
ERROR diagnostic of kind 'limit' naming the limit and the value, and the next valid message is
processed normally.

Engine-dependent (fixtures `engine_factory` / `model_dir` from ros_fixtures).
"""

from __future__ import annotations

import numpy as np
import pytest
from bombs import bomb_jpeg, bomb_png
from builtin_interfaces.msg import Time
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
from rclpy.parameter import Parameter
from rclpy.qos import QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import CompressedImage, Image, PointCloud2
from std_msgs.msg import Header, String

from tinygpt_ros.ros import conversions as conv
from tinygpt_ros.ros import memory
from tinygpt_ros.ros.diagnostics import status_values
from tinygpt_ros.spec.types import EVENT_DTYPE

pytest_plugins = ["ros_fixtures"]  # fixtures: engine_factory, model_dir, tinygpt, lifecycle
RELIABLE = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
MIB = 1 << 20


class Wire:
    """Publishers into the node under test, and what it publishes back."""

    def __init__(self, ros) -> None:
        self.ros = ros
        node = ros.make_node("limits_io")
        self.pubs = {
            "image": node.create_publisher(Image, "image", RELIABLE),
            "compressed": node.create_publisher(CompressedImage, "image/compressed", RELIABLE),
            "events": node.create_publisher(PointCloud2, "events", RELIABLE),
        }
        self.captions: list[str] = []
        self.gestures: list[str] = []
        self.frames: list[DiagnosticStatus] = []
        node.create_subscription(String, "caption", lambda m: self.captions.append(m.data),
                                 RELIABLE)
        node.create_subscription(String, "gesture", lambda m: self.gestures.append(m.data),
                                 RELIABLE)
        node.create_subscription(DiagnosticArray, "/diagnostics", self._on_diag, RELIABLE)

    def _on_diag(self, msg: DiagnosticArray) -> None:
        self.frames += [s for s in msg.status if s.name.endswith(": frame")]

    def send(self, channel: str, msg) -> None:
        pub = self.pubs[channel]
        assert self.ros.spin_until(lambda: pub.get_subscription_count() > 0)
        pub.publish(msg)

    def errors(self) -> list[dict[str, str]]:
        return [status_values(s) | {"message": s.message} for s in self.frames
                if s.level == DiagnosticStatus.ERROR]

    def wait_error(self) -> dict[str, str]:
        assert self.ros.spin_until(lambda: self.errors(), timeout=20.0)
        return self.errors()[0]

    def wait_ok_frames(self, n: int) -> None:
        assert self.ros.spin_until(
            lambda: sum(s.level == DiagnosticStatus.OK for s in self.frames) >= n, timeout=20.0)


def _start(ros, lifecycle, tinygpt, **overrides):
    node = tinygpt(qos_reliability="reliable", **overrides)
    lc = lifecycle()
    assert lc.configure() and lc.activate()
    return node, Wire(ros)


def _jpeg(side: int = 32) -> CompressedImage:
    rgb = np.full((side, side, 3), (40, 160, 90), np.uint8)
    return conv.rgb_to_compressed(rgb, Header(frame_id="cam"), fmt="jpeg")


def _image(width: int, height: int) -> Image:
    rgb = np.full((height, width, 3), 90, np.uint8)
    return conv.rgb_to_image(rgb, Header(frame_id="cam"))


def _events(n: int) -> PointCloud2:
    stamp = Time(sec=5)
    rng = np.random.default_rng(n)
    ev = np.zeros(n, EVENT_DTYPE)
    ev["x"], ev["y"] = rng.integers(20, 60, n), rng.integers(0, 128, n)
    ev["t"] = conv.stamp_to_us(stamp) + np.sort(rng.integers(0, 20_000, n))
    ev["p"] = rng.integers(0, 2, n)
    return conv.events_to_pointcloud2(ev, Header(stamp=stamp, frame_id="dvs"))


@pytest.mark.parametrize("fmt", ["jpeg", "png"])
def test_decompression_bomb_refused_without_allocating(ros, lifecycle, tinygpt, fmt):
    """A 16000x16000 JPEG/PNG of a few KB is refused from its header: peak RSS while it is
    refused stays within a few MB of the baseline (decoding it would take 768 MB)."""
    node, wire = _start(ros, lifecycle, tinygpt, image_transport="compressed")
    wire.send("compressed", _jpeg())  # warm the data path first
    wire.wait_ok_frames(1)
    data = bomb_jpeg() if fmt == "jpeg" else bomb_png()
    bomb = CompressedImage(header=Header(frame_id="cam"), format=fmt, data=data)
    ros.spin_for(0.2)
    if not memory.reset_peak_rss():
        pytest.skip("this kernel does not allow resetting the peak RSS (/proc/self/clear_refs)")
    baseline = memory.rss_bytes()
    wire.send("compressed", bomb)
    error = wire.wait_error()
    peak = memory.peak_rss_bytes()
    assert peak - baseline < 8 * MIB, f"peak RSS rose by {(peak - baseline) / MIB:.1f} MiB"
    assert error["error_kind"] == "limit"
    assert (error["limit"], error["limit_value"], error["value"]) == (
        "max_image_pixels", "8294400", "256000000")
    assert "16000x16000" in error["message"] and "max_image_pixels=8294400" in error["message"]
    assert node.stats.error_counts() == {"limit": 1}

    n = len(wire.captions)
    wire.send("compressed", _jpeg(48))  # the next valid frame is processed normally
    wire.wait_ok_frames(2)
    assert ros.spin_until(lambda: len(wire.captions) > n)


def test_oversize_raw_image_refused_then_next_processed(ros, lifecycle, tinygpt):
    _, wire = _start(ros, lifecycle, tinygpt, max_image_pixels=64 * 64)
    wire.send("image", _image(80, 64))
    error = wire.wait_error()
    assert (error["error_kind"], error["limit"], error["limit_value"], error["value"]) == (
        "limit", "max_image_pixels", "4096", "5120")
    assert error["errors_limit"] == "1"
    wire.send("image", _image(64, 64))  # exactly at the limit
    wire.wait_ok_frames(1)
    assert ros.spin_until(lambda: wire.captions)


def test_too_many_events_refused_then_next_processed(ros, lifecycle, tinygpt):
    _, wire = _start(ros, lifecycle, tinygpt, max_events_per_message=150)
    wire.send("events", _events(200))
    error = wire.wait_error()
    assert (error["error_kind"], error["limit"], error["limit_value"], error["value"]) == (
        "limit", "max_events_per_message", "150", "200")
    wire.send("events", _events(150))
    wire.wait_ok_frames(1)
    assert ros.spin_until(lambda: wire.gestures)


def test_byte_limit_changes_at_run_time_and_bad_values_are_refused(ros, lifecycle, tinygpt):
    node, wire = _start(ros, lifecycle, tinygpt)
    for bad in (0, -5, 1 << 40):
        result = node.set_parameters([Parameter("max_message_bytes", value=bad)])[0]
        assert not result.successful and "max_message_bytes" in result.reason
    assert node.get_parameter("max_message_bytes").value == conv.DEFAULT_MAX_MESSAGE_BYTES
    assert node.set_parameters([Parameter("max_message_bytes", value=1000)])[0].successful
    wire.send("image", _image(32, 32))  # 3072 bytes of data
    error = wire.wait_error()
    assert (error["limit"], error["limit_value"], error["value"]) == (
        "max_message_bytes", "1000", "3072")
    wire.send("image", _image(16, 16))  # 768 bytes
    wire.wait_ok_frames(1)
