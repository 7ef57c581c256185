"""tinygpt_node data path over real topics: captions, gestures, diagnostics, token map, bad
messages, overload, compressed input, and bag replay with BagPlayer.

Engine-dependent (fixtures `engine_factory` / `model_dir` from ros_fixtures): every test that
starts a tinygpt node (all but test_bag_player_reports_corrupt_bags).
"""

from __future__ import annotations

import threading

import cv2
import numpy as np
import pytest
from builtin_interfaces.msg import Time
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
from rclpy.parameter import Parameter
from rclpy.qos import QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
from rclpy.serialization import serialize_message
from sensor_msgs.msg import CompressedImage, Image, PointCloud2, PointField
from std_msgs.msg import Header, String

from tinygpt_ros.data.gestures import GESTURE_CLASSES
from tinygpt_ros.ros import conversions as conv
from tinygpt_ros.ros.bag_player import BagError, BagPlayer
from tinygpt_ros.ros.diagnostics import status_values
from tinygpt_ros.spec.types import EVENT_DTYPE, NO_GESTURE, STAGES

pytest_plugins = ["ros_fixtures"]  # fixtures: engine_factory, model_dir, tinygpt, lifecycle
RELIABLE = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
FRAME_KEYS = (
    ["tokens_in", "tokens_recomputed", "tokens_fused", "branch", "flops_total", "flops_encoder",
     "flops_dense", "flops_ratio", "latency_ms_total", "caption_reused", "decoder_passes",
     "dropped_frames", "errors", "energy_mj", "energy_source", "ros_overhead_ms",
     "conversion_ms", "diagnostics_ms", "motion_compensation", "motion_dx", "motion_dy",
     "motion_scale", "motion_rotation_deg", "exposure_gain", "exposure_offset", "reanchored"]
    + [f"latency_ms_{s}" for s in STAGES]
)


class Io:
    """Publishers into and collectors out of the node under test."""

    def __init__(self, ros, qos=RELIABLE) -> None:
        self.ros = ros
        self.node = ros.make_node("io")
        self.image = self.node.create_publisher(Image, "image", qos)
        self.compressed = self.node.create_publisher(CompressedImage, "image/compressed", qos)
        self.events = self.node.create_publisher(PointCloud2, "events", qos)
        self.captions: list[str] = []
        self.gestures: list[str] = []
        self.diags: list[DiagnosticArray] = []
        self.node.create_subscription(String, "caption", lambda m: self.captions.append(m.data),
                                      RELIABLE)
        self.node.create_subscription(String, "gesture", lambda m: self.gestures.append(m.data),
                                      RELIABLE)
        self.node.create_subscription(DiagnosticArray, "/diagnostics", self.diags.append, RELIABLE)

    def statuses(self, suffix: str) -> list[tuple[Header, DiagnosticStatus]]:
        return [(a.header, s) for a in list(self.diags) for s in a.status
                if s.name.endswith(suffix)]

    def connected(self, pub) -> bool:
        return self.ros.spin_until(lambda: pub.get_subscription_count() > 0)


def _start(ros, lifecycle, tinygpt, **overrides):
    overrides.setdefault("qos_reliability", "reliable")
    node = tinygpt(**overrides)
    lc = lifecycle()
    assert lc.configure() and lc.activate()
    return node, Io(ros)


def _frame(value=(200, 30, 30), size=(24, 32), stamp=None, frame_id="cam_optical") -> Image:
    stamp = stamp or Time(sec=42, nanosec=7000)
    rgb = np.empty((*size, 3), np.uint8)
    rgb[...] = value
    return conv.rgb_to_image(rgb, Header(stamp=stamp, frame_id=frame_id))


def _events_msg(n=200, stamp=None, x0=20) -> PointCloud2:
    stamp = stamp or Time(sec=5, nanosec=0)
    rng = np.random.default_rng(n)
    ev = np.zeros(n, EVENT_DTYPE)
    ev["x"] = np.clip(x0 + rng.integers(0, 30, n), 0, 127)
    ev["y"] = rng.integers(0, 128, n)
    ev["t"] = conv.stamp_to_us(stamp) + np.sort(rng.integers(0, 20_000, n))
    ev["p"] = rng.integers(0, 2, n)
    return conv.events_to_pointcloud2(ev, Header(stamp=stamp, frame_id="dvs"))


def test_image_gives_caption_and_frame_diagnostics(ros, lifecycle, tinygpt):
    _, io = _start(ros, lifecycle, tinygpt)
    assert io.connected(io.image)
    io.image.publish(_frame())
    assert ros.spin_until(lambda: io.captions and io.statuses(": frame"))
    assert isinstance(io.captions[0], str) and io.captions[0]
    header, status = io.statuses(": frame")[0]
    assert status.name == "tinygpt_node: frame"
    assert status.level == DiagnosticStatus.OK
    assert (header.stamp.sec, header.stamp.nanosec, header.frame_id) == (42, 7000, "cam_optical")
    values = status_values(status)
    missing = [k for k in FRAME_KEYS if k not in values]
    assert not missing
    assert values["energy_source"] == "estimate"
    assert int(values["tokens_in"]) == 196
    assert 0 <= int(values["tokens_recomputed"]) <= 196
    assert float(values["flops_total"]) > 0 and float(values["flops_ratio"]) > 0
    assert float(values["energy_mj"]) > 0
    assert values["errors"] == "0"
    assert values["motion_compensation"] == "similarity" and values["reanchored"] == "false"
    assert float(values["exposure_gain"]) == 1.0  # first frame: it is the anchor


def test_ros_overhead_counts_the_diagnostics_publish(ros, lifecycle, tinygpt):
    """A frame's diagnostics cannot time their own publish, so the next frame carries it: the
    first frame has none, the second the first's build and publish, inside ros_overhead_ms."""
    _, io = _start(ros, lifecycle, tinygpt)
    assert io.connected(io.image)
    for i in range(2):
        io.image.publish(_frame(stamp=Time(sec=50 + i)))
        assert ros.spin_until(lambda n=i + 1: len(io.statuses(": frame")) == n)
    first, second = (status_values(s) for _, s in io.statuses(": frame"))
    assert float(first["diagnostics_ms"]) == 0.0
    assert float(second["diagnostics_ms"]) > 0.0
    parts = float(second["conversion_ms"]) + float(second["diagnostics_ms"])
    assert float(second["ros_overhead_ms"]) >= parts


def test_input_age_and_queue_time_are_reported(ros, lifecycle, tinygpt):
    """A frame stamped now arrives within seconds on the node's clock (input_age_ms); the time
    it waited in the mailbox is there too. An unstamped frame has no age to report."""
    _, io = _start(ros, lifecycle, tinygpt)
    assert io.connected(io.image)
    now = io.node.get_clock().now().to_msg()
    io.image.publish(_frame(stamp=now))
    assert ros.spin_until(lambda: len(io.statuses(": frame")) == 1)
    values = status_values(io.statuses(": frame")[0][1])
    assert 0.0 <= float(values["input_age_ms"]) < 5000.0
    assert 0.0 <= float(values["queue_ms"]) < 5000.0
    io.image.publish(_frame(stamp=Time(sec=0, nanosec=0)))
    assert ros.spin_until(lambda: len(io.statuses(": frame")) == 2)
    values = status_values(io.statuses(": frame")[1][1])
    assert "input_age_ms" not in values and float(values["queue_ms"]) >= 0.0


@pytest.mark.parametrize("encoding", ["yuv422_yuy2", "bayer_rggb8", "rgb16"])
def test_raw_camera_encodings_are_captioned(ros, lifecycle, tinygpt, encoding):
    """What USB (YUV 4:2:2) and machine-vision (Bayer, 16-bit) cameras send, undecoded, is
    captioned like rgb8: a caption and an OK frame status, no error counted."""
    _, io = _start(ros, lifecycle, tinygpt)
    assert io.connected(io.image)
    rgb = np.empty((24, 32, 3), np.uint8)
    rgb[...] = (200, 30, 30)
    if encoding == "yuv422_yuy2":
        raw = cv2.cvtColor(rgb, cv2.COLOR_RGB2YUV_YUYV)
    elif encoding == "bayer_rggb8":
        raw = np.zeros((24, 32), np.uint8)
        raw[0::2, 0::2], raw[0::2, 1::2], raw[1::2, 0::2], raw[1::2, 1::2] = 200, 30, 30, 30
    else:
        raw = rgb.astype(np.uint16) * 256
    msg = Image(header=Header(stamp=Time(sec=42), frame_id="cam"), height=24, width=32,
                encoding=encoding, step=raw[0].nbytes, data=raw.tobytes())
    io.image.publish(msg)
    assert ros.spin_until(lambda: io.captions and io.statuses(": frame"))
    _, status = io.statuses(": frame")[0]
    assert status.level == DiagnosticStatus.OK, status.message
    assert status_values(status)["errors"] == "0"


def test_caption_on_change_sends_only_a_changed_caption(ros, lifecycle, tinygpt):
    """caption_publish on_change: eight copies of one frame give eight frame statuses but a
    caption only where its text changed (once the window holds nothing but that frame, the
    caption cannot change), and what arrived is exactly what the statuses say went out. Set
    back to every_frame at run time, the next frame's caption goes out although unchanged."""
    node, io = _start(ros, lifecycle, tinygpt, caption_publish="on_change")
    assert io.connected(io.image)
    for i in range(8):
        io.image.publish(_frame(stamp=Time(sec=60 + i)))
        assert ros.spin_until(lambda n=i + 1: len(io.statuses(": frame")) == n)
    published = [status_values(s)["caption_published"] for _, s in io.statuses(": frame")]
    ros.spin_for(0.3)  # a caption sent with the last status has time to arrive
    assert published[0] == "true" and published.count("false") >= 3
    assert len(io.captions) == published.count("true")
    assert all(a != b for a, b in zip(io.captions, io.captions[1:], strict=False))
    assert node.set_parameters([Parameter("caption_publish", value="every_frame")])[0].successful
    io.image.publish(_frame(stamp=Time(sec=70)))
    assert ros.spin_until(lambda: len(io.statuses(": frame")) == 9)
    assert status_values(io.statuses(": frame")[-1][1])["caption_published"] == "true"
    assert ros.spin_until(lambda: len(io.captions) == published.count("true") + 1)
    assert io.captions[-1] == io.captions[-2]
    bad = node.set_parameters([Parameter("caption_publish", value="sometimes")])[0]
    assert not bad.successful and "one of" in bad.reason
    assert node.get_parameter("caption_publish").value == "every_frame"


def test_frame_diagnostics_off_leaves_the_summary_and_the_errors(ros, lifecycle, tinygpt):
    """frame_diagnostics false: frames are captioned with no per-frame status, the 1 Hz summary
    still reports their ROS overhead, a bad message still gets its ERROR status at once, and
    set back to true at run time the next frame has its status again."""
    node, io = _start(ros, lifecycle, tinygpt, frame_diagnostics=False)
    assert io.connected(io.image)
    for i in range(3):
        io.image.publish(_frame(stamp=Time(sec=80 + i)))
        assert ros.spin_until(lambda n=i + 1: len(io.captions) == n)
    assert ros.spin_until(lambda: any(
        int(status_values(s)["ros_overhead_frames"]) > 0 for _, s in io.statuses(": summary")))
    summary = next(status_values(s) for _, s in io.statuses(": summary")
                   if int(status_values(s)["ros_overhead_frames"]) > 0)
    assert float(summary["ros_overhead_ms_p50"]) > 0.0
    assert 0.0 < float(summary["ros_overhead_pct_p50"]) < 100.0
    assert int(summary["frames"]) >= 3
    assert io.statuses(": frame") == []
    io.image.publish(_bad_image_encoding())
    assert ros.spin_until(lambda: len(io.statuses(": frame")) == 1)
    assert io.statuses(": frame")[0][1].level == DiagnosticStatus.ERROR
    assert node.set_parameters([Parameter("frame_diagnostics", value=True)])[0].successful
    io.image.publish(_frame(stamp=Time(sec=90)))
    assert ros.spin_until(lambda: len(io.statuses(": frame")) == 2)
    assert io.statuses(": frame")[1][1].level == DiagnosticStatus.OK
    assert not node.set_parameters([Parameter("frame_diagnostics", value="no")])[0].successful
    assert node.get_parameter("frame_diagnostics").value is True


def test_jetson_power_rails_give_measured_energy(ros, lifecycle, tinygpt, tmp_path):
    """With INA3221 rails readable (a fake hwmon tree here), energy per frame is measured."""
    dev = tmp_path / "ina3221" / "1-0040" / "hwmon" / "hwmon3"
    dev.mkdir(parents=True)
    for name, text in {"in1_label": "VDD_IN", "in1_input": "5000", "curr1_input": "2000"}.items():
        (dev / name).write_text(text + "\n")
    _, io = _start(ros, lifecycle, tinygpt, power_iio_glob=str(tmp_path / "none" / "*"),
                   power_hwmon_glob=str(tmp_path / "ina3221" / "*" / "hwmon" / "hwmon*"))
    io.image.publish(_frame())
    assert ros.spin_until(lambda: io.statuses(": frame"))
    values = status_values(io.statuses(": frame")[0][1])
    assert values["energy_source"] == "ina3221:VDD_IN"
    # 10 W held over the frame's processing time: millijoules = 10 W x seconds x 1000
    assert 0 < float(values["energy_mj"]) < 10.0 * 5.0 * 1e3


def _summary_value(io, key: str) -> int:
    values = [status_values(s).get(key) for _, s in io.statuses(": summary")]
    return max((int(v) for v in values if v is not None), default=-1)


def test_reliable_by_default_and_an_unmatched_best_effort_publisher_is_reported(
        ros, lifecycle, tinygpt):
    """Reliable input QoS by default (whole 640x480 frames at 30 Hz on one machine). A
    sensor-data (best-effort) camera cannot match it: the node says so (error log, counted as
    incompatible_qos in its summary) instead of silently receiving nothing."""
    node = tinygpt()
    assert node.get_parameter("qos_reliability").value == "reliable"
    lc = lifecycle()
    assert lc.configure() and lc.activate()
    io = Io(ros, qos=qos_profile_sensor_data)
    assert ros.spin_until(lambda: _summary_value(io, "incompatible_qos") >= 1, timeout=15.0)
    assert io.image.get_subscription_count() == 0  # never matched
    assert _summary_value(io, "transport_lost") == 0
    reliable = io.node.create_publisher(Image, "image", RELIABLE)
    assert io.connected(reliable)
    reliable.publish(_frame())
    assert ros.spin_until(lambda: io.captions and io.statuses(": frame"))
    _, status = io.statuses(": frame")[-1]
    assert status_values(status)["transport_lost"] == "0"


def test_sensor_data_qos_when_configured(ros, lifecycle, tinygpt):
    tinygpt(qos_reliability="best_effort")
    lc = lifecycle()
    assert lc.configure() and lc.activate()
    io = Io(ros, qos=qos_profile_sensor_data)
    assert io.connected(io.image)
    for _ in range(20):  # best effort: publish until one gets through
        io.image.publish(_frame())
        if ros.spin_until(lambda: io.captions, 0.3):
            break
    assert io.captions


def test_compressed_input(ros, lifecycle, tinygpt):
    _, io = _start(ros, lifecycle, tinygpt, image_transport="compressed")
    assert io.connected(io.compressed)
    assert io.image.get_subscription_count() == 0
    rgb = np.full((32, 48, 3), (30, 30, 200), np.uint8)
    io.compressed.publish(conv.rgb_to_compressed(rgb, Header(frame_id="cam"), fmt="jpeg"))
    assert ros.spin_until(lambda: io.captions and io.statuses(": frame"))
    assert io.captions[0]
    assert io.statuses(": frame")[0][0].frame_id == "cam"
    assert status_values(io.statuses(": frame")[0][1])["decode_scale"] == "1"  # small: full size
    # a 640x480 jpeg is decoded at half size (the engine's input is 224 px)
    yy, xx = np.mgrid[0:480, 0:640]
    big = np.stack([xx * 255 // 640, yy * 255 // 480, np.full_like(xx, 90)], -1).astype(np.uint8)
    io.compressed.publish(conv.rgb_to_compressed(big, Header(frame_id="cam"), fmt="jpeg"))
    assert ros.spin_until(lambda: len(io.statuses(": frame")) >= 2)
    assert status_values(io.statuses(": frame")[1][1])["decode_scale"] == "2"


def test_events_give_gestures(ros, lifecycle, tinygpt):
    _, io = _start(ros, lifecycle, tinygpt)
    assert io.connected(io.events)
    io.events.publish(_events_msg())
    assert ros.spin_until(lambda: io.gestures and io.statuses(": frame"))
    assert isinstance(io.gestures[0], str) and io.gestures[0]
    header, status = io.statuses(": frame")[0]
    values = status_values(status)
    assert values["modality"] == "events"
    assert values["gesture"] == io.gestures[0]
    assert 0.0 <= float(values["gesture_confidence"]) <= 1.0
    assert (header.stamp.sec, header.frame_id) == (5, "dvs")
    assert io.captions == []


def test_silent_event_window_gives_no_gesture(ros, lifecycle, tinygpt):
    """A window with 0 events is silence: gesture "none" on the topic and in /diagnostics, not a
    class at high confidence; enough events give a class again."""
    _, io = _start(ros, lifecycle, tinygpt)
    assert io.connected(io.events)
    io.events.publish(_events_msg(n=0))
    assert ros.spin_until(lambda: io.gestures and io.statuses(": frame"))
    assert io.gestures == [NO_GESTURE]
    values = status_values(io.statuses(": frame")[0][1])
    assert values["gesture"] == NO_GESTURE and float(values["gesture_confidence"]) == 1.0
    io.events.publish(_events_msg(n=400, stamp=Time(sec=6, nanosec=0)))
    assert ros.spin_until(lambda: len(io.gestures) >= 2)
    assert io.gestures[1] in GESTURE_CLASSES


def test_token_map_only_while_subscribed(ros, lifecycle, tinygpt):
    node, io = _start(ros, lifecycle, tinygpt)
    assert io.connected(io.image)
    io.image.publish(_frame())
    assert ros.spin_until(lambda: len(io.captions) >= 1)
    assert node.token_maps_built == 0  # nobody listening: never built
    assert node.markers_built == 0  # the caption marker neither (caption_marker is on)
    assert node.get_parameter("caption_marker").value is True

    maps: list[Image] = []
    io.node.create_subscription(Image, "debug/token_map", maps.append, RELIABLE)
    assert ros.spin_until(
        lambda: node._pubs["token_map"].get_subscription_count() > 0
    )
    io.image.publish(_frame((10, 200, 10)))
    assert ros.spin_until(lambda: maps)
    assert (maps[0].height, maps[0].width, maps[0].encoding) == (224, 224, "mono8")
    assert maps[0].header.frame_id == "cam_optical"
    assert node.token_maps_built >= 1


def _bad_image_encoding():
    m = _frame()
    m.encoding = "32FC1"
    return m


def _bad_image_length():
    m = _frame()
    m.data = bytes(m.data)[:-5]
    return m


def _bad_image_empty():
    m = _frame()
    m.height = m.width = m.step = 0
    m.data = b""
    return m


def _bad_jpeg():
    return CompressedImage(header=Header(frame_id="cam"), format="jpeg",
                           data=b"\xff\xd8\xff\xe0" + b"\x13" * 200)


def _bad_cloud_missing_field():
    m = _events_msg()
    m.fields = [f for f in m.fields if f.name != "p"]
    return m


def _bad_cloud_nan():
    t = np.array([0.0, 1.0, np.nan, 3.0], np.float32)
    data = np.zeros(4, [("x", "<u2"), ("y", "<u2"), ("t", "<f4"), ("p", "u1")])
    data["x"], data["y"], data["t"], data["p"] = [1, 2, 3, 4], [5, 6, 7, 8], t, [0, 1, 0, 1]
    fields = [PointField(name="x", offset=0, datatype=PointField.UINT16, count=1),
              PointField(name="y", offset=2, datatype=PointField.UINT16, count=1),
              PointField(name="t", offset=4, datatype=PointField.FLOAT32, count=1),
              PointField(name="p", offset=8, datatype=PointField.UINT8, count=1)]
    return PointCloud2(header=Header(frame_id="dvs"), height=1, width=4, fields=fields,
                       point_step=data.dtype.itemsize, row_step=4 * data.dtype.itemsize,
                       data=data.tobytes(), is_dense=True)


@pytest.mark.parametrize(
    ("make_bad", "kind", "channel"),
    [
        (_bad_image_encoding, "encoding", "image"),
        (_bad_image_length, "size", "image"),
        (_bad_image_empty, "size", "image"),
        (_bad_jpeg, "decode", "compressed"),
        (_bad_cloud_missing_field, "fields", "events"),
        (_bad_cloud_nan, "values", "events"),
    ],
)
def test_bad_message_counted_then_recovers(ros, lifecycle, tinygpt, make_bad, kind, channel):
    transport = "compressed" if channel == "compressed" else "raw"
    node, io = _start(ros, lifecycle, tinygpt, image_transport=transport)
    pub = getattr(io, channel)
    assert io.connected(pub)
    pub.publish(make_bad())
    assert ros.spin_until(lambda: any(s.level == DiagnosticStatus.ERROR
                                      for _, s in io.statuses(": frame")))
    _, status = next((h, s) for h, s in io.statuses(": frame") if s.level == DiagnosticStatus.ERROR)
    values = status_values(status)
    assert values["error_kind"] == kind
    assert values["errors"] == "1" and values[f"errors_{kind}"] == "1"
    assert node.stats.error_counts() == {kind: 1}

    if channel == "events":
        pub.publish(_events_msg())
        assert ros.spin_until(lambda: io.gestures)
    elif channel == "compressed":
        rgb = np.full((16, 16, 3), 128, np.uint8)
        pub.publish(conv.rgb_to_compressed(rgb, Header(frame_id="cam")))
        assert ros.spin_until(lambda: io.captions)
    else:
        pub.publish(_frame())
        assert ros.spin_until(lambda: io.captions)
    assert ros.spin_until(lambda: any(s.level == DiagnosticStatus.OK
                                      for _, s in io.statuses(": frame")))
    ok = [s for _, s in io.statuses(": frame") if s.level == DiagnosticStatus.OK][-1]
    assert status_values(ok)["errors"] == "1"  # the running count is carried on


def test_out_of_sensor_events_are_an_engine_input_error(ros, lifecycle, tinygpt):
    """Events outside the event sensor (event_sensor_width/height; here the 128x128 grid) are
    refused by the conversion, which knows the sensor size, as a 'values' error."""
    node, io = _start(ros, lifecycle, tinygpt)
    ev = np.zeros(3, EVENT_DTYPE)
    ev["x"] = [10, 20, 5000]  # outside the 128x128 sensor
    ev["t"] = [5_000_000, 5_000_001, 5_000_002]
    assert io.connected(io.events)
    io.events.publish(conv.events_to_pointcloud2(ev, Header(stamp=Time(sec=5))))
    assert ros.spin_until(lambda: node.stats.error_counts().get("values") == 1)
    io.events.publish(_events_msg())
    assert ros.spin_until(lambda: io.gestures)


def test_over_budget_is_warn(ros, lifecycle, tinygpt):
    _, io = _start(ros, lifecycle, tinygpt, budget_gflops=1e-6)
    assert io.connected(io.image)
    io.image.publish(_frame())
    assert ros.spin_until(lambda: io.statuses(": frame"))
    status = io.statuses(": frame")[0][1]
    assert status.level == DiagnosticStatus.WARN and "budget" in status.message


def test_summary_at_1hz(ros, lifecycle, tinygpt):
    _, io = _start(ros, lifecycle, tinygpt)
    assert io.connected(io.image)
    for i in range(3):
        io.image.publish(_frame((i * 50, 0, 0)))
        ros.spin_for(0.05)
    assert ros.spin_until(lambda: any(status_values(s)["frames"] != "0"
                                      for _, s in io.statuses(": summary")), 3.0)
    s = [s for _, s in io.statuses(": summary") if status_values(s)["frames"] != "0"][-1]
    values = status_values(s)
    assert s.name == "tinygpt_node: summary"
    for key in ("frames", "fps", "tokens_recomputed_pct_mean", "branch_histogram",
                "flops_ratio_mean", "latency_ms_p50", "latency_ms_p95", "dropped_frames",
                "errors", "energy_mj_total"):
        assert key in values
    assert int(values["frames"]) >= 1


def test_overload_drops_are_counted_and_bounded(ros, lifecycle, tinygpt, engine_factory):
    from slow_engine import slow_factory

    node = tinygpt(factory=slow_factory(engine_factory, 0.15), qos_reliability="reliable")
    lc = lifecycle()
    assert lc.configure() and lc.activate()
    io = Io(ros)
    assert io.connected(io.image)
    threads = threading.active_count()
    sent = 40
    max_pending = 0
    for i in range(sent):
        io.image.publish(_frame((i * 6, 0, 0), stamp=Time(sec=1, nanosec=i * 1000)))
        ros.spin_for(0.005)
        max_pending = max(max_pending, max(len(inp.mailbox) for inp in node._inputs))
    inputs = node._inputs
    received = lambda: sum(inp.mailbox.puts for inp in inputs)  # noqa: E731
    settled = lambda: received() == sent and all(len(i.mailbox) == 0 for i in inputs)  # noqa: E731
    assert ros.spin_until(settled, 10.0)
    # let the last frame finish (a loaded machine can take a while)
    ros.spin_until(lambda: node.stats.frames + node.dropped_frames == sent, 10.0)
    processed = node.stats.frames
    assert max_pending <= 1
    assert node.dropped_frames > 0
    assert processed < sent
    assert processed + node.dropped_frames == sent
    assert threading.active_count() == threads
    frames = io.statuses(": frame")
    assert frames and int(status_values(frames[-1][1])["dropped_frames"]) > 0


def _write_bag(path, storage: str = "sqlite3") -> None:
    from rosbags.rosbag2 import StoragePlugin, Writer
    from rosbags.typesys import Stores, get_typestore

    store = get_typestore(Stores.ROS2_KILTED)
    plugin = StoragePlugin.MCAP if storage == "mcap" else StoragePlugin.SQLITE3
    with Writer(path, version=9, storage_plugin=plugin) as writer:
        img = writer.add_connection("/camera/image_raw", "sensor_msgs/msg/Image", typestore=store)
        evc = writer.add_connection("/events", "sensor_msgs/msg/PointCloud2", typestore=store)
        for i in range(4):
            t_ns = 1_000_000_000 + i * 100_000_000  # 10 Hz
            stamp = Time(sec=1, nanosec=i * 100_000_000)
            writer.write(img, t_ns, serialize_message(_frame((60 * i, 90, 40), stamp=stamp)))
            writer.write(evc, t_ns + 1, serialize_message(_events_msg(50 + i, stamp=stamp)))


def test_bag_player_feeds_the_node(ros, lifecycle, tinygpt, tmp_path):
    _, io = _start(ros, lifecycle, tinygpt)
    bag = tmp_path / "tiny_bag"
    _write_bag(bag)
    player = BagPlayer(io.node, bag, rate=2.0, remap={"/camera/image_raw": "/image"})
    assert player.topics == {"/camera/image_raw": "/image", "/events": "/events"}
    assert ros.spin_until(lambda: all(p.get_subscription_count() > 0
                                      for p in player._pubs.values()))
    result: dict = {}
    t = threading.Thread(target=lambda: result.update(report=player.play()))
    t.start()
    while t.is_alive():
        ros.spin_for(0.02)
    t.join()
    report = result["report"]
    assert report.published == {"/image": 4, "/events": 4}
    assert 0.14 < report.duration_s < 1.5  # 0.3 s of recording played at 2x
    assert ros.spin_until(lambda: io.captions and io.gestures)
    player.close()


def test_bag_player_fast_and_topic_filter(ros, tmp_path):
    bag = tmp_path / "tiny_mcap"
    _write_bag(bag, storage="mcap")
    node = ros.make_node("player")
    got: list[Image] = []
    node.create_subscription(Image, "/camera/image_raw", got.append, RELIABLE)
    player = BagPlayer(node, bag, topics=["/camera/image_raw"], rate=None)
    assert player.wait_for_subscribers(5.0)
    report = player.play()
    assert report.published == {"/camera/image_raw": 4}
    assert ros.spin_until(lambda: len(got) == 4)
    assert got[0].encoding == "rgb8"
    with pytest.raises(BagError, match="no topic"):
        BagPlayer(node, bag, topics=["/nope"])


def test_bag_player_reports_corrupt_bags(ros, tmp_path):
    node = ros.make_node("player")
    with pytest.raises(BagError, match="does not exist"):
        BagPlayer(node, tmp_path / "missing")
    garbage = tmp_path / "garbage"
    garbage.mkdir()
    (garbage / "metadata.yaml").write_text("rosbag2_bagfile_information: [not, a, bag")
    with pytest.raises(BagError, match="not a readable"):
        BagPlayer(node, garbage)

    bag = tmp_path / "truncated"
    _write_bag(bag, storage="mcap")
    mcap = next(bag.glob("*.mcap"))
    data = mcap.read_bytes()
    mcap.write_bytes(data[: len(data) // 2])
    with pytest.raises(BagError, match=r"truncated|not a readable"):
        BagPlayer(node, bag, rate=None).play()
