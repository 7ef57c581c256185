"""What a person sees of tinygpt_node: the caption marker (RViz), the debug/overlay picture, and
simulated time from a bag's /clock. Real node, real topics, real subscribers.

Engine-dependent (fixtures from ros_fixtures) except the pure rendering tests.
"""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
from builtin_interfaces.msg import Time
from diagnostic_msgs.msg import DiagnosticArray
from rclpy.parameter import Parameter
from rclpy.qos import QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import Image, PointCloud2
from std_msgs.msg import Header, String
from visualization_msgs.msg import Marker

from tinygpt_ros.ros import conversions as conv
from tinygpt_ros.ros import overlay
from tinygpt_ros.ros.bag_player import BagPlayer
from tinygpt_ros.ros.diagnostics import status_values
from tinygpt_ros.ros.markers import CAPTION_NAMESPACE
from tinygpt_ros.spec.types import EVENT_DTYPE, ComputeRecord, FrameResult

pytest_plugins = ["ros_fixtures"]  # fixtures: engine_factory, model_dir, tinygpt, lifecycle
RELIABLE = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
SAMPLE_BAG = Path(__file__).resolve().parents[1] / "sample" / "sample_bag"
TINT = np.array(overlay.RECOMPUTED_RGB, np.float32) * overlay.RECOMPUTED_ALPHA


class Watch:
    """Publishers into and collectors out of the node under test."""

    def __init__(self, ros) -> None:
        self.ros = ros
        self.node = ros.make_node("watch")
        self.image = self.node.create_publisher(Image, "image", RELIABLE)
        self.events = self.node.create_publisher(PointCloud2, "events", RELIABLE)
        self.captions: list[str] = []
        self.markers: list[Marker] = []
        self.overlays: list[Image] = []
        self.diags: list[DiagnosticArray] = []
        self.node.create_subscription(String, "caption", lambda m: self.captions.append(m.data),
                                      RELIABLE)
        self.node.create_subscription(Marker, "caption_marker", self.markers.append, RELIABLE)
        self.node.create_subscription(DiagnosticArray, "/diagnostics", self.diags.append, RELIABLE)

    def watch_overlay(self) -> None:
        self.node.create_subscription(Image, "debug/overlay", self.overlays.append, RELIABLE)

    def frame_values(self, stamp: Time) -> dict[str, str] | None:
        for a in list(self.diags):
            if (a.header.stamp.sec, a.header.stamp.nanosec) == (stamp.sec, stamp.nanosec):
                for s in a.status:
                    if s.name.endswith(": frame"):
                        return status_values(s)
        return None

    def summaries(self) -> list[tuple[float, dict[str, str]]]:
        return [(a.header.stamp.sec + a.header.stamp.nanosec * 1e-9, status_values(s))
                for a in list(self.diags) for s in a.status if s.name.endswith(": summary")]


def _start(ros, lifecycle, tinygpt, **overrides):
    overrides.setdefault("qos_reliability", "reliable")
    node = tinygpt(**overrides)
    lc = lifecycle()
    assert lc.configure() and lc.activate()
    watch = Watch(ros)
    assert ros.spin_until(lambda: watch.image.get_subscription_count() > 0)
    return node, watch


def _frame(rgb_value, sec: int, frame_id: str = "cam_optical") -> Image:
    rgb = np.empty((48, 64, 3), np.uint8)
    rgb[...] = rgb_value
    return conv.rgb_to_image(rgb, Header(stamp=Time(sec=sec, nanosec=7000), frame_id=frame_id))


def _stamp(msg) -> tuple[int, int, str]:
    return msg.header.stamp.sec, msg.header.stamp.nanosec, msg.header.frame_id


def _pixels(msg: Image) -> np.ndarray:
    assert msg.encoding == "rgb8"
    return np.frombuffer(bytes(msg.data), np.uint8).reshape(msg.height, msg.width, 3)


def _tinted_fraction(picture: np.ndarray, source_rgb) -> tuple[float, float]:
    """Share of the picture's pixels that show the source colour tinted / untouched."""
    src = np.array(source_rgb, np.float32)
    tinted = (src * (1 - overlay.RECOMPUTED_ALPHA) + TINT).astype(np.uint8)
    px = picture.reshape(-1, 3).astype(np.int16)
    near = lambda c: np.all(np.abs(px - c.astype(np.int16)) <= 2, axis=1).mean()  # noqa: E731
    return float(near(tinted)), float(near(src.astype(np.uint8)))


def test_caption_marker_and_overlay_frames(ros, lifecycle, tinygpt):
    node, w = _start(ros, lifecycle, tinygpt)
    assert ros.spin_until(lambda: node._pubs["marker"].get_subscription_count() > 0)

    # Marker: the caption text, stamped with the source frame's header; no overlay built unasked.
    w.image.publish(_frame((20, 20, 200), sec=42))
    assert ros.spin_until(lambda: w.captions and w.markers)
    marker = w.markers[0]
    assert _stamp(marker) == (42, 7000, "cam_optical")
    assert marker.type == Marker.TEXT_VIEW_FACING and marker.action == Marker.ADD
    assert marker.text == w.captions[0] and marker.text
    assert marker.ns == CAPTION_NAMESPACE and marker.scale.z > 0 and marker.color.a == 1.0
    assert node.overlays_built == 0

    # Overlay: a new scene (tokens recomputed, tinted), then the same scene again (none).
    w.watch_overlay()
    assert ros.spin_until(lambda: node._pubs["overlay"].get_subscription_count() > 0)
    green = (30, 180, 40)
    for sec in (43, 44):
        w.image.publish(_frame(green, sec=sec, frame_id="cam2"))
        assert ros.spin_until(lambda sec=sec: any(o.header.stamp.sec == sec for o in w.overlays)
                              and w.frame_values(Time(sec=sec, nanosec=7000)) is not None)
    assert node.overlays_built >= 2
    for sec in (43, 44):
        picture = next(o for o in w.overlays if o.header.stamp.sec == sec)
        assert _stamp(picture) == (sec, 7000, "cam2")
        assert picture.width == overlay.MIN_WIDTH  # 64 px input scaled up to stay legible
        pixels = _pixels(picture)
        image_h = overlay.MIN_WIDTH * 48 // 64
        assert picture.height > image_h  # the text band below the frame
        band = pixels[image_h:]
        assert (band == overlay.BAND_RGB).all(axis=-1).mean() > 0.5  # band background
        assert (band == overlay.TEXT_RGB).all(axis=-1).any()  # and text on it
        recomputed = int(w.frame_values(Time(sec=sec, nanosec=7000))["tokens_recomputed"])
        tinted, plain = _tinted_fraction(pixels[:image_h], green)
        # Cell outlines and centroid rings cover part of each picture: compare loosely.
        assert abs(tinted - 0.8 * recomputed / 196) < 0.25, (sec, recomputed, tinted, plain)
        assert abs(plain - 0.8 * (196 - recomputed) / 196) < 0.25, (sec, recomputed, tinted)
    first = int(w.frame_values(Time(sec=43, nanosec=7000))["tokens_recomputed"])
    again = int(w.frame_values(Time(sec=44, nanosec=7000))["tokens_recomputed"])
    assert first > 150 and again < 20  # new scene vs the same scene

    # Switched off at run time: captions continue, markers stop.
    assert node.set_parameters([Parameter("caption_marker", value=False)])[0].successful
    n_markers, n_captions = len(w.markers), len(w.captions)
    w.image.publish(_frame((200, 20, 20), sec=45))
    assert ros.spin_until(lambda: len(w.captions) > n_captions)
    ros.spin_for(0.3)
    assert len(w.markers) == n_markers


def _events(sec: int) -> PointCloud2:
    rng = np.random.default_rng(3)
    n = 3000
    ev = np.zeros(n, EVENT_DTYPE)
    ev["x"] = rng.integers(10, 40, n)  # left quarter of the 128 px sensor only
    ev["y"] = rng.integers(0, 128, n)
    ev["t"] = sec * 1_000_000 + np.sort(rng.integers(0, 40_000, n))
    ev["p"] = 1  # all brighter: blue in the histogram
    return conv.events_to_pointcloud2(ev, Header(stamp=Time(sec=sec), frame_id="dvs"))


def test_overlay_of_an_event_window(ros, lifecycle, tinygpt):
    node, w = _start(ros, lifecycle, tinygpt)
    w.watch_overlay()
    assert ros.spin_until(lambda: node._pubs["overlay"].get_subscription_count() > 0)
    w.events.publish(_events(7))
    assert ros.spin_until(lambda: w.overlays)
    picture = w.overlays[0]
    assert _stamp(picture) == (7, 0, "dvs")
    pixels = _pixels(picture)
    side = overlay.MIN_WIDTH  # 112 histogram bins scaled to 448 px
    hist = pixels[:side].astype(np.int32)
    # All tokens are new in a first window: everything is tinted; events add blue on top of it.
    tinted_bg = 16 * (1 - overlay.RECOMPUTED_ALPHA) + TINT[2]
    blue = hist[..., 2] > tinted_bg + 40
    with_events, without = blue[:, 40:150].mean(), blue[:, 200:].mean()  # x 10..40 of 128
    assert with_events > 0.3 and with_events > 3 * without, (with_events, without)


def test_overlay_command_draws_a_bag_frame(tmp_path, capsys):
    """`tinygpt-ros overlay` on the sample bag: a PNG with the frame and the event window."""
    import cv2

    from tinygpt_ros.cli import main

    out = tmp_path / "overlay.png"
    assert main(["overlay", "--bag", str(SAMPLE_BAG), "--frame", "2", "--out", str(out)]) == 0
    picture = cv2.imread(str(out))
    assert picture is not None
    h, w = picture.shape[:2]
    assert w == 2 * overlay.MIN_WIDTH + 8 and h > overlay.MIN_WIDTH  # two panels, text below
    assert picture.std() > 20  # a picture, not a blank
    # the bag's jpeg topic, decoded as the node decodes it: the same picture within jpeg's loss
    jpeg_out = tmp_path / "overlay_jpeg.png"
    assert main(["overlay", "--bag", str(SAMPLE_BAG), "--frame", "2", "--out", str(jpeg_out),
                 "--image-topic", "/camera/image_raw/compressed"]) == 0
    from_jpeg = cv2.imread(str(jpeg_out))
    assert from_jpeg.shape == picture.shape
    assert np.abs(from_jpeg.astype(int) - picture).mean() < 10
    assert main(["overlay", "--bag", str(SAMPLE_BAG), "--frame", "500", "--out",
                 str(tmp_path / "none.png"), "--events-topic", ""]) == 2
    assert "only 66 frames" in capsys.readouterr().err
    assert not (tmp_path / "none.png").exists()


def test_info_lines_say_what_the_step_cost():
    rec = ComputeRecord(frame_index=3, modality="frame", tokens_in=196, tokens_recomputed=12,
                        tokens_fused=31, branch="small", flops={"encoder": 2e8, "decoder": 3e8},
                        dense_flops=2e9, latency_ms={"encoder": 4.0, "decoder": 8.5})
    lines = overlay.info_lines(FrameResult(rec, caption="a red ball rolls"))
    assert lines[0] == "caption: a red ball rolls"
    assert "branch small" in lines[1] and "12.5 ms" in lines[1] and "0.500 GFLOPs" in lines[1]
    assert "25.0% of dense" in lines[1]
    assert "recomputed 12/196" in lines[2] and "31 fused" in lines[2]
    rec.modality = "events"
    lines = overlay.info_lines(FrameResult(rec, gesture="wave", gesture_confidence=0.87))
    assert lines[0] == "gesture: wave (87%)"


def test_render_marks_centroids_where_they_are():
    rec = ComputeRecord(frame_index=0, modality="frame", tokens_in=196, tokens_recomputed=0,
                        tokens_fused=1, branch="reuse", dense_flops=1.0)
    result = FrameResult(rec, caption="x", token_mask=np.zeros((14, 14), bool),
                         fused_centroids=np.array([[0.75, 0.25, 1.0]], np.float32),
                         fused_sizes=np.array([4.0], np.float32))
    picture = overlay.render_frame(np.zeros((448, 448, 3), np.uint8), result)
    ring = (picture[:448] == overlay.CENTROID_NEW_RGB).all(axis=-1)
    ys, xs = np.nonzero(ring)
    assert ring.any() and abs(xs.mean() - 336) < 3 and abs(ys.mean() - 112) < 3
    assert not (picture[:448, :224] != 0).any()  # nothing drawn away from it


def test_sim_time_from_the_sample_bag_clock(ros, lifecycle, tinygpt):
    """With use_sim_time and the bag's /clock, the summary is stamped and timed in bag time: a
    summary per simulated second while the bag plays at 3x, fps = frames per simulated second."""
    node, w = _start(ros, lifecycle, tinygpt, use_sim_time=True)
    player = BagPlayer(w.node, SAMPLE_BAG, topics=["/camera/image_raw", "/events"], rate=3.0,
                       remap={"/camera/image_raw": "image", "/events": "events"}, clock=True)
    assert ros.spin_until(lambda: node.count_subscribers("/clock") > 0
                          and all(p.get_subscription_count() > 0 for p in player._pubs.values()))
    done = threading.Event()
    threading.Thread(target=lambda: (player.play(), done.set()), daemon=True).start()
    assert ros.spin_until(done.is_set, 30.0)
    ros.spin_for(0.5)
    player.close()
    bag_start, bag_end = 1_700_000_000.0, 1_700_000_013.15
    summaries = w.summaries()
    assert len(summaries) >= 8, summaries  # ~13 simulated seconds, whatever the wall time was
    stamps = np.array([t for t, _ in summaries])
    assert ((stamps >= bag_start) & (stamps <= bag_end + 0.1)).all(), stamps
    steps = np.diff(stamps)
    # 1 Hz of simulated time on average (at 3x a callback late by 0.2 s of wall time is 0.6 s
    # late in bag time, so single steps vary on a busy machine)
    assert abs(steps.mean() - 1.0) < 0.2 and np.all(steps > 0), steps
    frames = np.array([int(v["frames"]) for _, v in summaries])
    fps = np.array([float(v["fps"]) for _, v in summaries])
    assert frames[-1] >= 3  # how many depends on the machine: the rest were dropped
    np.testing.assert_allclose(fps[1:] * steps, np.diff(frames), atol=1.0)
    assert node.get_clock().now().nanoseconds / 1e9 >= bag_end - 0.1
