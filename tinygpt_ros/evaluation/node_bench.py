"""`tinygpt-ros bench-node`: the node measured the way a robot runs it.

The engine benchmarks call the engine in-process; a robot runs `edge_bringup` (or
`ros2 launch`) in its own process, with whatever environment the user has, fed by a camera
driver at 30 Hz. This brings the real edge graph up in a subprocess (`python -m
tinygpt_ros.ros.bringup`, the user's environment passed through unchanged apart from a private
ROS_DOMAIN_ID when none is set), publishes camera frames and event windows into it at camera
rates from this process, and records, for each stream:

- frames published / processed / dropped by the node's depth-1 mailbox / lost before the node
  (published - processed - mailbox drops: what the transport lost);
- publish-to-output latency: the source stamp (wall clock at publish) to this process receiving
  the frame's /diagnostics (same stamp in the header) and its caption (the k-th caption belongs
  to the k-th processed frame: the node publishes one per frame, on a reliable topic);
- the node's own per-frame figures from /diagnostics (engine latency, ROS overhead);
- the node process's CPU % (of one core) and RSS over time (/proc), and this process's CPU.

One run covers every (configuration, QoS, transport) combination, each on a freshly started
graph, each through every stream (generated still / slow / pan / busy scenes at 640x480, a
camera panning over a photograph, or the frames and event windows of a bag).
"""

from __future__ import annotations

import json
import logging
import os
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from tinygpt_ros.evaluation.budget_bench import SETTLE_FRAMES, settling_frames
from tinygpt_ros.runtime.budget import BUDGET_MODES, TARGET_PARAMS
from tinygpt_ros.spec.types import STAGES

log = logging.getLogger(__name__)

CONFIGS: dict[str, dict[str, Any]] = {
    "dense": {"sttf_enabled": False, "anc_enabled": False},
    "sttf+anc": {"sttf_enabled": True, "anc_enabled": True},
}
QOS = ("best_effort", "reliable")
TRANSPORTS = ("raw", "compressed")
STREAMS = ("still", "slow", "pan", "busy", "photo_pan")
PHOTO = "astronaut"  # photo_pan films this scikit-image photograph
CAMERA_HZ = 30.0
EVENTS_HZ = 20.0
FRAME_SIZE = (480, 640)  # (height, width): a VGA camera
NAMESPACE = "tinygpt_bench"
IMAGE_TOPIC = f"/{NAMESPACE}/camera/image_raw"
EVENTS_TOPIC = f"/{NAMESPACE}/events"
THREAD_ENV = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS",
              "BLIS_NUM_THREADS", "NUMEXPR_NUM_THREADS", "VECLIB_MAXIMUM_THREADS")
_LOOP_FRAMES = 60  # generated streams loop over 2 s of frames


# ------------------------------------------------------------------------------ streams


@dataclass
class SourceStream:
    """What one stream publishes, looped: RGB frames and event windows (EVENT_DTYPE, t in
    microseconds from the window start). `steps`: the frames (indices into `frames`) where the
    looped scene steps (`scene_steps`); the stream's first frame is one as well."""

    name: str
    frames: list[np.ndarray]
    event_windows: list[np.ndarray]
    steps: frozenset[int] = frozenset()


def scene_steps(frames: Sequence[np.ndarray], wrap_is_cut: bool,
                calm: int = SETTLE_FRAMES) -> frozenset[int]:
    """The frames of a looped stream where its scene steps: the first frame when the loop jumps
    back to it (`wrap_is_cut`: a rendered clip ends elsewhere than it began), and every frame
    that changes after at least `calm` unchanged ones (counted around the loop).

    Why: the issue measures a budget's p95 once settled, and allows 10 frames of settling
    after each step in the scene. The node bench loops 2 s of frames, so its "still" stream
    steps twice a loop (the object that moves in it starts moving at frame 29, and the loop's
    wrap moves it back), and the stream's start alone is not all its steps."""
    n = len(frames)
    changed = [not np.array_equal(frames[i], frames[i - 1]) for i in range(n)]
    if n > 1 and not wrap_is_cut:
        changed[0] = False  # the wrap continues the motion (or nothing moves): not a cut
    steps = {0} if wrap_is_cut and n > 1 and changed[0] else set()
    for i in range(n):
        quiet = 0
        while quiet < min(calm, n - 1) and not changed[(i - 1 - quiet) % n]:
            quiet += 1
        if changed[i] and quiet >= min(calm, n - 1):
            steps.add(i)
    return frozenset(steps)


def _pan_frames(seed: int, n: int, size: tuple[int, int]) -> list[np.ndarray]:
    """A camera panning over a still scene: a crop sliding 4 px per frame over a wider render."""
    from tinygpt_ros.data.scenes import render_clip

    h, w = size
    step = 4
    wide = render_clip(seed, "still", 1, (h, w + step * n), CAMERA_HZ).frames[0]
    return [np.ascontiguousarray(wide[:, i * step:i * step + w]) for i in range(n)]


def _photo_pan_frames(n: int, size: tuple[int, int]) -> list[np.ndarray]:
    """A real photograph filmed by a camera panning 4 px per frame with a sensor's read and
    shot noise, played forward and then back so the looped stream never jumps.

    Why: the generated scenes are flat backgrounds, where the motion stage rightly estimates
    nothing; a textured view is where it works, and what a robot's camera mostly sees."""
    from tinygpt_ros.data.camera import Camera
    from tinygpt_ros.data.photos import photo_stream

    forward = photo_stream(PHOTO, Camera(pan_px=4, read_noise=2.0, shot_noise=0.2),
                           n // 2 + 1, size=size)
    return [np.ascontiguousarray(f) for f in [*forward, *forward[-2:0:-1]]][:n]


def _event_windows(frames: Sequence[np.ndarray], fps: float, seed: int) -> list[np.ndarray]:
    """Events an event camera would see of these frames, cut into 1/EVENTS_HZ windows."""
    from tinygpt_ros.data.events import EventSimulator, resize_for_sensor

    stack = resize_for_sensor(np.stack(frames))
    ts = np.rint(np.arange(len(frames)) * 1e6 / fps).astype(np.int64)
    events = EventSimulator(seed=seed).simulate(stack, ts)
    window_us = round(1e6 / EVENTS_HZ)
    out = []
    for start in range(0, int(ts[-1]) - window_us + 1, window_us):
        ev = events[(events["t"] >= start) & (events["t"] < start + window_us)].copy()
        ev["t"] -= start
        out.append(ev)
    return out or [events[:0].copy()]


def generated_stream(name: str, seed: int = 0, size: tuple[int, int] = FRAME_SIZE,
                     num_frames: int = _LOOP_FRAMES) -> SourceStream:
    """still / slow / busy: a generated scene at that motion level; pan: a panning camera;
    photo_pan: a panning camera over a photograph."""
    from tinygpt_ros.data.scenes import render_clip, split_seeds

    if name not in STREAMS:
        raise ValueError(f"stream must be one of {STREAMS}, got {name!r}")
    scene_seed = split_seeds("test", 1, 500 + seed)[0]
    if name == "pan":
        frames = _pan_frames(scene_seed, num_frames, size)
    elif name == "photo_pan":
        frames = _photo_pan_frames(num_frames, size)
    else:
        frames = list(render_clip(scene_seed, name, num_frames, size, CAMERA_HZ).frames)
    # photo_pan plays forward then back, so its loop is seamless; the others jump at the wrap
    return SourceStream(name, frames, _event_windows(frames, CAMERA_HZ, seed),
                        scene_steps(frames, wrap_is_cut=name != "photo_pan"))


def bag_stream(path: str | Path, image_topic: str | None = None,
               events_topic: str | None = None, limit: int = 300) -> SourceStream:
    """The camera frames and event windows of a bag (first `limit` of each), replayed at camera
    rates whatever their recorded rate."""
    from rclpy.serialization import deserialize_message
    from sensor_msgs.msg import CompressedImage, Image, PointCloud2

    from tinygpt_ros.bags.reader import bag_topics, iter_bag
    from tinygpt_ros.ros import conversions as conv

    topics = bag_topics(path)
    if image_topic is None:
        image_topic = next((t for t, (ty, _) in topics.items()
                            if ty in ("sensor_msgs/msg/Image", "sensor_msgs/msg/CompressedImage")),
                           None)
    if events_topic is None:
        events_topic = next((t for t, (ty, _) in topics.items()
                             if ty == "sensor_msgs/msg/PointCloud2"), None)
    if image_topic is None:
        raise ValueError(f"bag {path}: no camera topic (Image or CompressedImage) found")
    wanted = [t for t in (image_topic, events_topic) if t]
    frames: list[np.ndarray] = []
    windows: list[np.ndarray] = []
    for m in iter_bag(path, wanted):
        if m.topic == image_topic and len(frames) < limit:
            if m.msgtype.endswith("CompressedImage"):
                frames.append(conv.compressed_to_rgb(deserialize_message(m.rawdata,
                                                                         CompressedImage)))
            else:
                frames.append(conv.image_to_rgb(deserialize_message(m.rawdata, Image)))
        elif m.topic == events_topic and len(windows) < limit:
            msg = deserialize_message(m.rawdata, PointCloud2)
            ev = conv.pointcloud2_to_events(msg, "relative")
            ev["t"] -= conv.stamp_to_us(msg.header.stamp)
            windows.append(ev)
    if not frames:
        raise ValueError(f"bag {path}: topic {image_topic} holds no frames")
    return SourceStream(Path(path).name, frames, windows, scene_steps(frames, wrap_is_cut=True))


# ------------------------------------------------------------------------------ node process


# The variables that name a Fast DDS XML profile file (Fast DDS 3, then Fast DDS 2).
PROFILE_VARS = ("FASTDDS_DEFAULT_PROFILES_FILE", "FASTRTPS_DEFAULT_PROFILES_FILE")


def node_environment(domain_id: int, drop: Sequence[str] = ()) -> dict[str, str]:
    """The user's environment as it is (thread variables included, if they set any), plus a
    ROS_DOMAIN_ID for this run when they set none; `drop`: variables the bench set for its own
    process only (the publisher's Fast DDS profile)."""
    env = {k: v for k, v in os.environ.items() if k not in drop}
    env.setdefault("ROS_DOMAIN_ID", str(domain_id))
    return env


def use_publisher_profile(path: str | Path) -> list[str]:
    """Give this process (the bench's camera publisher) a Fast DDS XML profile, as a user
    gives one to their camera driver (`config/fastdds_large_images.xml`); returns the
    variables set, which the node's environment leaves out. Must run before rclpy starts."""
    p = Path(path)
    if not p.is_file():
        raise ValueError(f"publisher profile {p}: no such file")
    for var in PROFILE_VARS:
        os.environ[var] = str(p.resolve())
    return list(PROFILE_VARS)


def _params_file(directory: Path, knobs: dict[str, Any], qos: str, transport: str,
                 model_dir: str | None, backend: str | None,
                 extra: dict[str, Any] | None = None) -> Path:
    """The default edge.yaml with this run's settings on top (bring-up takes one file)."""
    from tinygpt_ros.ros.graph import default_params_file

    doc = yaml.safe_load(Path(default_params_file()).read_text())
    params = doc.setdefault("/**/tinygpt_node", {}).setdefault("ros__parameters", {})
    params.update(knobs)
    params.update({"qos_reliability": qos, "image_transport": transport,
                   "events_msg_type": "pointcloud2"})
    if model_dir:
        params["model_dir"] = str(model_dir)
    if backend:
        params["backend"] = backend
    params.update(extra or {})
    path = directory / f"bench_node_{qos}_{transport}.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


def start_node(params_file: Path, env: dict[str, str], log_path: Path) -> subprocess.Popen:
    """`python -m tinygpt_ros.ros.bringup` with the bench topics, in its own process group."""
    cmd = [sys.executable, "-m", "tinygpt_ros.ros.bringup", "--namespace", NAMESPACE,
           "--image-topic", IMAGE_TOPIC, "--events-topic", EVENTS_TOPIC,
           "--params-file", str(params_file)]
    out = open(log_path, "wb")  # closed in stop_node
    proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT,
                            start_new_session=True)
    proc._bench_log = out  # type: ignore[attr-defined]
    return proc


def stop_node(proc: subprocess.Popen) -> None:
    """SIGINT (the bring-up tears the graph down), then SIGKILL after 15 s."""
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGINT)
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=5)
        except ProcessLookupError:
            pass
    log_file = getattr(proc, "_bench_log", None)
    if log_file is not None:
        log_file.close()


class ProcessSampler:
    """CPU time and RSS of one process from /proc, sampled every `period_s` in a thread."""

    def __init__(self, pid: int, period_s: float = 0.5) -> None:
        self.pid = pid
        self.period_s = period_s
        self.samples: list[tuple[float, float, float]] = []  # (wall s, cpu s, rss MB)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="bench_sampler", daemon=True)
        self._tick = os.sysconf("SC_CLK_TCK")

    def read(self) -> tuple[float, float, float] | None:
        try:
            stat = Path(f"/proc/{self.pid}/stat").read_text()
            status = Path(f"/proc/{self.pid}/status").read_text()
        except OSError:
            return None
        fields = stat.rsplit(")", 1)[1].split()
        cpu_s = (int(fields[11]) + int(fields[12])) / self._tick  # utime + stime
        rss_kb = next((int(line.split()[1]) for line in status.splitlines()
                       if line.startswith("VmRSS:")), 0)
        return time.monotonic(), cpu_s, rss_kb / 1024.0

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _run(self) -> None:
        while not self._stop.is_set():
            s = self.read()
            if s is not None:
                self.samples.append(s)
            self._stop.wait(self.period_s)

    def between(self, t0: float, t1: float) -> tuple[float | None, float | None]:
        """(CPU % of one core, max RSS MB) over the samples in [t0, t1]."""
        inside = [s for s in self.samples if t0 <= s[0] <= t1]
        if len(inside) < 2:
            return None, None
        cpu = (inside[-1][1] - inside[0][1]) / max(inside[-1][0] - inside[0][0], 1e-9) * 100
        return cpu, max(s[2] for s in inside)


# ------------------------------------------------------------------------------ ROS side


def _level(level: Any) -> int:
    """DiagnosticStatus.level is a one-byte `bytes` in rclpy."""
    return level[0] if isinstance(level, bytes | bytearray) else int(level)


@dataclass
class _Published:
    stream: str
    kind: str  # image | events
    step: bool = False  # an image where the scene steps (the stream's first, SourceStream.steps)


@dataclass
class _Received:
    """Everything the bench process received, in arrival order (executor thread)."""

    frame_diags: list[tuple[int, int, dict[str, str]]] = field(default_factory=list)
    event_diags: list[tuple[int, int, dict[str, str]]] = field(default_factory=list)
    caption_times: list[int] = field(default_factory=list)
    summaries: list[dict[str, str]] = field(default_factory=list)
    summary_times: list[int] = field(default_factory=list)  # receipt, wall ns
    errors: list[str] = field(default_factory=list)


class BenchClient:
    """The bench's rclpy side: publishers for the node's inputs, subscribers to its outputs."""

    def __init__(self, domain_id: int, qos: str, transport: str) -> None:
        import rclpy
        from diagnostic_msgs.msg import DiagnosticArray
        from rclpy.executors import SingleThreadedExecutor
        from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy
        from sensor_msgs.msg import CompressedImage, Image, PointCloud2
        from std_msgs.msg import String

        self.context = rclpy.Context()
        rclpy.init(context=self.context, domain_id=domain_id)
        self.node = rclpy.create_node("tinygpt_bench_client", context=self.context)
        self.transport = transport
        self.lock = threading.Lock()
        self.received = _Received()
        self.published: dict[int, _Published] = {}
        reliability = (ReliabilityPolicy.RELIABLE if qos == "reliable"
                       else ReliabilityPolicy.BEST_EFFORT)
        # What a camera driver offers: keep-last 5, the QoS under test.
        sensor = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=5, reliability=reliability)
        if transport == "compressed":
            self.image_pub = self.node.create_publisher(CompressedImage,
                                                        IMAGE_TOPIC + "/compressed", sensor)
        else:
            self.image_pub = self.node.create_publisher(Image, IMAGE_TOPIC, sensor)
        self.events_pub = self.node.create_publisher(PointCloud2, EVENTS_TOPIC, sensor)
        out = QoSProfile(depth=200, reliability=ReliabilityPolicy.RELIABLE)
        self.subs = [
            self.node.create_subscription(DiagnosticArray, "/diagnostics", self._diag, out),
            self.node.create_subscription(String, f"/{NAMESPACE}/caption", self._caption, out),
        ]
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)
        self._spinner = threading.Thread(target=self._spin, name="bench_spin", daemon=True)
        self._spinner.start()

    def _spin(self) -> None:
        from rclpy.executors import ExternalShutdownException

        try:
            while self.context.ok():
                self.executor.spin_once(timeout_sec=0.05)
        except (ExternalShutdownException, RuntimeError):
            pass

    def _diag(self, msg: Any) -> None:
        now = time.time_ns()
        stamp = msg.header.stamp.sec * 1_000_000_000 + msg.header.stamp.nanosec
        with self.lock:
            for st in msg.status:
                if not st.name.startswith("tinygpt_node"):
                    continue
                values = {kv.key: kv.value for kv in st.values}
                if st.name.endswith(": summary"):
                    self.received.summaries.append(values)
                    self.received.summary_times.append(now)
                elif st.name.endswith(": frame"):
                    if values.get("modality") == "events":
                        self.received.event_diags.append((stamp, now, values))
                    else:
                        self.received.frame_diags.append((stamp, now, values))
                elif _level(st.level) >= 2:  # ERROR: a message the node could not use
                    self.received.errors.append(st.message)

    def _caption(self, msg: Any) -> None:
        with self.lock:
            self.received.caption_times.append(time.time_ns())

    def wait_for_node(self, timeout_s: float) -> bool:
        """True once the node is active: its 1 Hz summary only goes out while active."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            with self.lock:
                if self.received.summaries:
                    return True
            time.sleep(0.1)
        return False

    def publish_stream(self, stream: SourceStream, seconds: float, camera_hz: float,
                       events_hz: float) -> tuple[int, int]:
        """Publish for `seconds` on a fixed schedule (a late tick is published at once, never
        twice, like a driver); returns (images, event windows) published."""
        from std_msgs.msg import Header

        from tinygpt_ros.ros import conversions as conv

        images = [self._image_msg(f) for f in stream.frames]
        n_img = n_ev = 0
        t0 = time.monotonic()
        next_img = next_ev = t0
        end = t0 + seconds
        while True:
            now = time.monotonic()
            if now >= end:
                break
            if now >= next_img:
                msg = images[n_img % len(images)]
                stamp = time.time_ns()
                msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(stamp, 1_000_000_000)
                with self.lock:
                    self.published[stamp] = _Published(
                        stream.name, "image", n_img == 0 or n_img % len(images) in stream.steps)
                self.image_pub.publish(msg)
                n_img += 1
                next_img = max(next_img + 1.0 / camera_hz, now)
            if events_hz > 0 and stream.event_windows and now >= next_ev:
                ev = stream.event_windows[n_ev % len(stream.event_windows)].copy()
                stamp = time.time_ns()
                ev["t"] += stamp // 1000
                header = Header(frame_id="event_camera")
                header.stamp.sec, header.stamp.nanosec = divmod((stamp // 1000) * 1000,
                                                                1_000_000_000)
                with self.lock:
                    self.published[(stamp // 1000) * 1000] = _Published(stream.name, "events")
                self.events_pub.publish(conv.events_to_pointcloud2(ev, header))
                n_ev += 1
                next_ev = max(next_ev + 1.0 / events_hz, now)
            time.sleep(max(0.0, min(next_img, next_ev if events_hz > 0 else end, end)
                           - time.monotonic()))
        return n_img, n_ev

    def _image_msg(self, frame: np.ndarray) -> Any:
        from tinygpt_ros.ros import conversions as conv

        if self.transport == "compressed":
            msg = conv.rgb_to_compressed(frame)
        else:
            msg = conv.rgb_to_image(frame)
        msg.header.frame_id = "camera"
        return msg

    def close(self) -> None:
        import rclpy

        try:
            self.executor.shutdown(timeout_sec=2.0)
            self.node.destroy_node()
        finally:
            if self.context.ok():
                rclpy.shutdown(context=self.context)
        self._spinner.join(timeout=5)


# ------------------------------------------------------------------------------ statistics


def _pct(values: Sequence[float], q: float) -> float | None:
    return float(np.percentile(values, q)) if len(values) else None


def _f(values: dict[str, str], key: str) -> float:
    try:
        return float(values.get(key, "nan"))
    except ValueError:
        return float("nan")


def stream_stats(stream: str, published: dict[int, _Published], rec: _Received,
                 caption_index: dict[int, int], t_wall: tuple[int, int], n_img: int,
                 n_ev: int, drops: tuple[int, int], sampler: ProcessSampler,
                 t_mono: tuple[float, float], warmup_s: float) -> dict[str, Any]:
    """One stream's figures; latencies skip the first `warmup_s` (the graph settling after the
    scene changed)."""
    mine = [(s, r, v) for s, r, v in rec.frame_diags
            if s in published and published[s].stream == stream]
    mine_ev = [(s, r, v) for s, r, v in rec.event_diags
               if s in published and published[s].stream == stream]
    steady = [(s, r, v) for s, r, v in mine if s >= t_wall[0] + warmup_s * 1e9]
    in_order = sorted(mine, key=lambda x: x[0])
    lat = [(r - s) / 1e6 for s, r, _ in steady]
    cap = [(rec.caption_times[caption_index[s]] - s) / 1e6 for s, _, _ in steady
           if caption_index.get(s, -1) < len(rec.caption_times) and s in caption_index]
    engine = [_f(v, "latency_ms_total") for _, _, v in steady]
    overhead = [_f(v, "ros_overhead_ms") for _, _, v in steady]
    conversion = [_f(v, "conversion_ms") for _, _, v in steady]
    diagnostics = [_f(v, "diagnostics_ms") for _, _, v in steady]
    age = [_f(v, "input_age_ms") for _, _, v in steady]
    queued = [_f(v, "queue_ms") for _, _, v in steady]
    share = [o / (e + o) for e, o in zip(engine, overhead, strict=True) if e + o > 0]
    ev_lat = [(r - s) / 1e6 for s, r, _ in mine_ev]
    seconds = (t_wall[1] - t_wall[0]) / 1e9
    cpu, rss = sampler.between(*t_mono)
    dropped = drops[1] - drops[0]
    processed = len(mine) + len(mine_ev)
    return {
        "seconds": round(seconds, 2),
        "images_published": n_img,
        "images_processed": len(mine),
        "events_published": n_ev,
        "events_processed": len(mine_ev),
        "mailbox_dropped": dropped,
        "lost_before_node": max(n_img + n_ev - processed - dropped, 0),
        "processed_fps": round(len(mine) / seconds, 2) if seconds > 0 else None,
        "latency_ms_p50": _pct(lat, 50),
        "latency_ms_p95": _pct(lat, 95),
        "caption_latency_ms_p50": _pct(cap, 50),
        "caption_latency_ms_p95": _pct(cap, 95),
        "events_latency_ms_p50": _pct(ev_lat, 50),
        "engine_ms_p50": _pct(engine, 50),
        "ros_overhead_ms_p50": _pct(overhead, 50),
        "conversion_ms_p50": _pct(conversion, 50),
        "diagnostics_ms_p50": _pct(diagnostics, 50),
        "input_age_ms_p50": _pct(age, 50),
        "queue_ms_p50": _pct(queued, 50),
        "ros_overhead_share_p50": _pct(share, 50),
        "tokens_recomputed_mean": (float(np.mean([_f(v, "tokens_recomputed")
                                                  for _, _, v in mine])) if mine else None),
        "node_cpu_pct": cpu,
        "node_rss_mb_max": rss,
        "budget": budget_stats([v for _, _, v in in_order],
                               [published[stamp].step for stamp, _, _ in in_order]),
        "stage_ms": stage_percentiles([v for _, _, v in steady]),
    }


def summary_stream_stats(rec: _Received, t_wall: tuple[int, int], drain_s: float, n_img: int,
                         n_ev: int, sampler: ProcessSampler, t_mono: tuple[float, float],
                         warmup_s: float) -> dict[str, Any]:
    """One stream's figures from the node's 1 Hz summaries alone, for a node run with
    `frame_diagnostics` false. Each summary covers the frames since the previous one, and the
    streams are a drain apart, so the summaries received during a stream and its drain count
    its frames; those received over a second after its warm-up give its ROS overhead (the
    median of their per-second p50s). The summaries count camera frames only, and latency and
    the engine need per-frame statuses: those figures are None."""
    t0, t1 = t_wall
    during = [v for t, v in zip(rec.summary_times, rec.summaries, strict=True)
              if t0 < t <= t1 + drain_s * 1e9]
    steady = [v for t, v in zip(rec.summary_times, rec.summaries, strict=True)
              if t0 + (warmup_s + 1.0) * 1e9 <= t <= t1 and int(_f(v, "ros_overhead_frames")) > 0]
    before = [v for t, v in zip(rec.summary_times, rec.summaries, strict=True) if t <= t0]
    dropped = (int(_f(during[-1], "dropped_frames")) if during else 0) - (
        int(_f(before[-1], "dropped_frames")) if before else 0)
    processed = sum(int(_f(v, "ros_overhead_frames")) for v in during)
    seconds = (t1 - t0) / 1e9
    cpu, rss = sampler.between(*t_mono)
    overhead = [_f(v, "ros_overhead_ms_p50") for v in steady]
    share = [_f(v, "ros_overhead_pct_p50") / 100.0 for v in steady]
    unknown = dict.fromkeys(
        ("latency_ms_p50", "latency_ms_p95", "caption_latency_ms_p50", "caption_latency_ms_p95",
         "events_latency_ms_p50", "engine_ms_p50", "conversion_ms_p50", "diagnostics_ms_p50",
         "input_age_ms_p50", "queue_ms_p50", "tokens_recomputed_mean"))
    return {
        "seconds": round(seconds, 2),
        "source": "summary",
        "images_published": n_img,
        "images_processed": processed,
        "events_published": n_ev,
        "events_processed": None,
        "mailbox_dropped": dropped,  # images and event windows: the node counts them together
        "lost_before_node": max(n_img - processed - dropped, 0),
        "processed_fps": round(processed / seconds, 2) if seconds > 0 else None,
        "ros_overhead_ms_p50": float(np.median(overhead)) if overhead else None,
        "ros_overhead_share_p50": float(np.median(share)) if share else None,
        "summaries_used": len(steady),
        **unknown,
        "node_cpu_pct": cpu,
        "node_rss_mb_max": rss,
        "budget": None,
        "stage_ms": {},
    }


def stage_percentiles(frames: Sequence[dict[str, str]]) -> dict[str, list[float | None]]:
    """Per engine stage (spec.types.STAGES): [p50, p95, p50 over the slowest 5% of frames by
    total engine time] in ms, from the frames' diagnostics. The last says which stage a
    stretched frame spent its time in (the node's tail is what a latency budget cannot hold)."""
    if not frames:
        return {}
    total = np.array([_f(v, "latency_ms_total") for v in frames])
    n_slow = max(1, int(np.ceil(0.05 * len(frames))))
    slow = [frames[i] for i in np.argsort(-total, kind="stable")[:n_slow]]
    out: dict[str, list[float | None]] = {}
    for stage in STAGES:
        ms = [_f(v, f"latency_ms_{stage}") for v in frames]
        out[stage] = [_pct(ms, 50), _pct(ms, 95),
                      _pct([_f(v, f"latency_ms_{stage}") for v in slow], 50)]
    return out


def budget_stats(frames: Sequence[dict[str, str]],
                 steps: Sequence[bool] | None = None) -> dict[str, Any] | None:
    """The budget controller's figures over one stream's frame diagnostics (in stamp order).
    `steps` flags the frames where the scene steps (`_Published.step`); by default the stream's
    first frame alone (the node keeps running from the previous stream, so its start is one).
    Settled = at least SETTLE_FRAMES frames after the last step, as the issue defines it; the
    p95 from the stream's frame SETTLE_FRAMES on, steps inside the stream included, is kept
    beside it. None when the node held no budget."""
    flags = [True] + [False] * (len(frames) - 1) if steps is None else list(steps)
    if len(flags) != len(frames):
        raise ValueError(f"steps flags {len(flags)} frames, the stream has {len(frames)}")
    keep = [i for i, v in enumerate(frames) if "budget_cost" in v]
    if not keep:
        return None
    held = [frames[i] for i in keep]
    cost = np.array([_f(v, "budget_cost") for v in held])
    since = np.zeros(len(cost), np.int64)
    for j, i in enumerate(keep):
        since[j] = 0 if flags[i] or j == 0 else since[j - 1] + 1
    target = _f(held[-1], "budget_target")
    p95_settled = _pct(list(cost[since >= SETTLE_FRAMES]), 95)
    p95_from_start = _pct(list(cost[SETTLE_FRAMES:]), 95)
    settling = settling_frames(cost, since, 1.1 * target)
    return {
        "mode": held[-1].get("budget_mode"),
        "unit": held[-1].get("budget_unit"),
        "target": target,
        "frames": len(cost),
        "steps": len(settling),
        "cost_p50": _pct(list(cost), 50),
        "cost_p95": _pct(list(cost), 95),
        "settled_p95": p95_settled,
        "settled_p95_vs_target": (p95_settled / target if p95_settled is not None and target
                                  else None),
        "p95_from_frame_10_vs_target": (p95_from_start / target
                                        if p95_from_start is not None and target else None),
        "settling_frames": max(settling),
        "steps_settled_in_time": sum(f <= SETTLE_FRAMES for f in settling),
        "in_budget_pct": 100.0 * float((cost <= target).mean()),
        "unreachable_frames": sum(v.get("budget_state") == "unreachable" for v in held),
        "level_last": _f(held[-1], "budget_level"),
        # the controller's cumulative counters at the stream's last frame (they count from the
        # node's start, so across streams they only grow)
        "let_through": _count(held[-1], "budget_let_through"),
        "new_views": _count(held[-1], "budget_new_views"),
        "deferred_decodes": _count(held[-1], "budget_deferred_decodes"),
        "thinned_decodes": _count(held[-1], "budget_thinned_decodes"),
        "split_decodes": _count(held[-1], "budget_split_decodes"),
        "held_fusions": _count(held[-1], "budget_held_fusions"),
        "filled_tokens": _count(held[-1], "budget_filled_tokens"),
        "trimmed_frames": _count(held[-1], "budget_trimmed_frames"),
    }


def _count(values: dict[str, str], key: str) -> int:
    """A counter from one frame's diagnostics; 0 when the node did not report it."""
    value = _f(values, key)
    return int(value) if np.isfinite(value) else 0


def _last_count(rec: _Received, key: str, before_ns: int) -> int:
    """The node's cumulative counter `key` (dropped_frames, transport_lost) as of a time."""
    vals = [int(_f(v, key)) for s, _, v in rec.frame_diags + rec.event_diags
            if s <= before_ns and v.get(key)]
    return max(vals) if vals else 0


# ------------------------------------------------------------------------------ one run


def run_combination(config: str, qos: str, transport: str, streams: Sequence[SourceStream],
                    seconds: float, workdir: Path, domain_id: int, model_dir: str | None = None,
                    backend: str | None = None, camera_hz: float = CAMERA_HZ,
                    events_hz: float = EVENTS_HZ, warmup_s: float = 0.5,
                    startup_timeout_s: float = 120.0, drain_s: float = 1.0,
                    params: dict[str, Any] | None = None,
                    publisher_only: Sequence[str] = ()) -> dict[str, Any]:
    """A fresh graph with one configuration, QoS and transport, fed every stream in turn;
    `publisher_only`: environment variables the node's process does not get."""
    params_file = _params_file(workdir, CONFIGS[config], qos, transport, model_dir, backend,
                               params)
    log_path = workdir / f"node_{config.replace('+', '_')}_{qos}_{transport}.log"
    client = BenchClient(domain_id, qos, transport)
    proc = start_node(params_file, node_environment(domain_id, publisher_only), log_path)
    sampler = ProcessSampler(proc.pid)
    sampler.start()
    t_start = time.monotonic()
    result: dict[str, Any] = {"config": config, "qos": qos, "transport": transport,
                              "streams": {}, "node_log": str(log_path)}
    try:
        if not client.wait_for_node(startup_timeout_s):
            tail = log_path.read_text(errors="replace")[-2000:] if log_path.exists() else ""
            raise RuntimeError(f"the node did not become active within {startup_timeout_s} s "
                               f"(exit code {proc.poll()}); log tail:\n{tail}")
        result["startup_s"] = round(time.monotonic() - t_start, 2)
        with client.lock:
            result["threads"] = client.received.summaries[-1].get("threads", "")
        spans = []
        for stream in streams:
            w0, m0 = time.time_ns(), time.monotonic()
            n_img, n_ev = client.publish_stream(stream, seconds, camera_hz, events_hz)
            w1, m1 = time.time_ns(), time.monotonic()
            time.sleep(drain_s)  # outputs of the last frames still on their way
            spans.append((stream.name, (w0, w1), (m0, m1), n_img, n_ev))
        with client.lock:
            rec = _Received(list(client.received.frame_diags), list(client.received.event_diags),
                            list(client.received.caption_times), list(client.received.summaries),
                            list(client.received.summary_times), list(client.received.errors))
            published = dict(client.published)
        # The node publishes a frame's caption, if it publishes one (caption_publish), just
        # before its diagnostics, both reliable: the k-th caption belongs to the k-th frame
        # diagnostics that say it went out.
        sent = [s for s, _, v in rec.frame_diags if v.get("caption_published", "true") == "true"]
        caption_index = {s: i for i, s in enumerate(sent)}
        # what the node was given (edge.yaml and this run's settings), not only the overrides
        from tinygpt_ros.ros.bringup import load_params_file

        node_params = load_params_file(params_file, f"/{NAMESPACE}/tinygpt_node")
        per_frame = bool(node_params.get("frame_diagnostics", True))
        result["frame_diagnostics"] = per_frame
        for name, wall, mono, n_img, n_ev in spans:
            if not per_frame:
                result["streams"][name] = summary_stream_stats(rec, wall, drain_s, n_img, n_ev,
                                                               sampler, mono, warmup_s)
                continue
            end = wall[1] + int(drain_s * 1e9)
            drops = (_last_count(rec, "dropped_frames", wall[0]),
                     _last_count(rec, "dropped_frames", end))
            stats = stream_stats(name, published, rec, caption_index, wall, n_img, n_ev, drops,
                                 sampler, mono, warmup_s)
            # what the node itself learnt from the middleware (message-lost events)
            stats["node_transport_lost"] = (_last_count(rec, "transport_lost", end)
                                            - _last_count(rec, "transport_lost", wall[0]))
            result["streams"][name] = stats
        result["errors"] = rec.errors[:10]
        if rec.summaries:
            last = rec.summaries[-1]
            result["node_summary"] = {k: last.get(k) for k in
                                      ("transport_lost", "incompatible_qos", "dropped")}
        result["captions_received"] = len(rec.caption_times)
        warm = [s for s in sampler.samples if s[0] >= spans[0][2][0] + seconds / 2]
        if len(warm) >= 2:
            result["rss_mb_after_warmup"] = round(warm[0][2], 1)
            result["rss_mb_end"] = round(warm[-1][2], 1)
            result["rss_growth_mb"] = round(warm[-1][2] - warm[0][2], 1)
        result["rss_timeline"] = [(round(t - t_start, 2), round(r, 1))
                                  for t, _, r in sampler.samples]
    finally:
        sampler.stop()
        stop_node(proc)
        client.close()
    return result


def run_node_bench(configs: Sequence[str] = tuple(CONFIGS), qos: Sequence[str] = QOS,
                   transports: Sequence[str] = TRANSPORTS, streams: Sequence[str] = STREAMS,
                   seconds: float = 8.0, bag: str | None = None, model_dir: str | None = None,
                   backend: str | None = None, camera_hz: float = CAMERA_HZ,
                   events_hz: float = EVENTS_HZ, seed: int = 0,
                   workdir: str | Path | None = None, params: dict[str, Any] | None = None,
                   publisher_profile: str | Path | None = None,
                   size: tuple[int, int] = FRAME_SIZE) -> dict[str, Any]:
    """Every combination of `configs` x `qos` x `transports`, each through every stream.
    `params`: node parameters on top of config/edge.yaml for every run (e.g. thread limits).
    `publisher_profile`: a Fast DDS XML profile for the publishing process only. `size`:
    (height, width) of the generated frames (a bag's frames keep theirs)."""
    for c in configs:
        if c not in CONFIGS:
            raise ValueError(f"config must be one of {tuple(CONFIGS)}, got {c!r}")
    for q in qos:
        if q not in QOS:
            raise ValueError(f"qos must be one of {QOS}, got {q!r}")
    for t in transports:
        if t not in TRANSPORTS:
            raise ValueError(f"transport must be one of {TRANSPORTS}, got {t!r}")
    if len(size) != 2 or min(size) < 32:
        raise ValueError(f"size must be (height, width), each at least 32 pixels, got {size}")
    publisher_only = use_publisher_profile(publisher_profile) if publisher_profile else []
    sources = ([bag_stream(bag)] if bag
               else [generated_stream(s, seed, tuple(size)) for s in streams])
    chosen = os.environ.get("ROS_DOMAIN_ID", "").strip()
    domain_id = int(chosen) if chosen else random.SystemRandom().randint(1, 232)
    work = Path(workdir) if workdir else Path(tempfile.mkdtemp(prefix="tinygpt_bench_node_"))
    work.mkdir(parents=True, exist_ok=True)
    runs = []
    for q in qos:
        for t in transports:
            for c in configs:
                log.info("bench-node: %s, %s QoS, %s images", c, q, t)
                runs.append(run_combination(c, q, t, sources, seconds, work, domain_id,
                                            model_dir, backend, camera_hz, events_hz,
                                            params=params, publisher_only=publisher_only))
    frame = sources[0].frames[0]
    return {
        "command": "tinygpt-ros bench-node",
        "settings": {
            "seconds_per_stream": seconds, "camera_hz": camera_hz, "events_hz": events_hz,
            "frame_size": f"{frame.shape[1]}x{frame.shape[0]} rgb8",
            "streams": [s.name for s in sources], "bag": bag, "backend": backend or "default",
            "publisher_qos_depth": 5, "params": dict(params or {}),
            "publisher_profile": str(publisher_profile) if publisher_profile else None,
        },
        "machine": {"cpus": os.cpu_count(), "python": sys.version.split()[0],
                    "thread_env": {k: os.environ[k] for k in THREAD_ENV if k in os.environ}},
        "runs": runs,
        "targets": targets(runs),
    }


# ------------------------------------------------------------------------------ report


def _run(runs: Sequence[dict[str, Any]], config: str, qos: str, transport: str
         ) -> dict[str, Any] | None:
    return next((r for r in runs if (r["config"], r["qos"], r["transport"])
                 == (config, qos, transport)), None)


def targets(runs: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The issue's targets, per (QoS, transport), as measured ratios and counts."""
    out: dict[str, Any] = {}
    for q in QOS:
        for t in TRANSPORTS:
            dense, sttf = _run(runs, "dense", q, t), _run(runs, "sttf+anc", q, t)
            key = f"{q}/{t}"
            entry: dict[str, Any] = {}
            if dense and sttf:
                ratios = {}
                for s, d in dense["streams"].items():
                    a = sttf["streams"].get(s, {}).get("latency_ms_p50")
                    b = d.get("latency_ms_p50")
                    ratios[s] = round(a / b, 3) if a and b else None
                entry["latency_p50_sttf_over_dense"] = ratios
            for r in (dense, sttf):
                if not r:
                    continue
                st = r["streams"].values()
                entry[r["config"]] = {
                    "published": sum(_io_counts(x)[0] for x in st),
                    "processed": sum(_io_counts(x)[1] for x in st),
                    "mailbox_dropped": sum(x["mailbox_dropped"] for x in st),
                    "lost_before_node": sum(x["lost_before_node"] for x in st),
                    "node_transport_lost": sum(x.get("node_transport_lost", 0) for x in st),
                    "ros_overhead_share_p50_max": max(
                        (x["ros_overhead_share_p50"] for x in st
                         if x["ros_overhead_share_p50"] is not None), default=None),
                    "rss_growth_mb": r.get("rss_growth_mb"),
                }
            if entry:
                out[key] = entry
    return out


def _io_counts(stream: dict[str, Any]) -> tuple[int, int]:
    """(published, processed) messages of a stream: event windows only where their processed
    count is known (not from summaries alone)."""
    if stream["events_processed"] is None:
        return stream["images_published"], stream["images_processed"]
    return (stream["images_published"] + stream["events_published"],
            stream["images_processed"] + stream["events_processed"])


def _ms(v: float | None) -> str:
    return "–" if v is None else f"{v:.1f}"


def _num(v: float | None, spec: str) -> str:
    return "–" if v is None else format(v, spec)


def markdown(report: dict[str, Any]) -> str:
    s = report["settings"]
    lines = [
        "## Node at camera rates (`tinygpt-ros bench-node`)",
        "",
        f"The edge graph started as a user starts it (`python -m tinygpt_ros.ros.bringup`, "
        f"the default `config/edge.yaml` plus the settings in the table, no thread variables "
        f"in the environment: {report['machine']['thread_env'] or 'none set'}), fed "
        f"{s['frame_size']} frames at {s['camera_hz']:g} Hz and event windows (PointCloud2) at "
        f"{s['events_hz']:g} Hz from another process, {s['seconds_per_stream']:g} s per stream "
        f"({', '.join(s['streams'])}), on {report['machine']['cpus']} CPU cores, one run. "
        "Latency: source stamp (wall clock at publish) to receipt of the frame's /diagnostics "
        "and of its caption; first 0.5 s of each stream left out; to node = the source stamp to "
        "the node's subscription callback (the middleware's delivery), queued = the callback to "
        "the node's worker taking the frame, p50 each. lost = published - processed "
        "- mailbox drops (lost by the transport before the node saw them; in brackets the count "
        "the node itself reports as `transport_lost` from the middleware's message-lost events). "
        "ROS ms = the node's conversion and publishing per frame (caption, gesture and the "
        "frame's /diagnostics: each frame carries the previous one's diagnostics cost), p50, in "
        "brackets the conversion alone (decoding, for jpeg) and the diagnostics alone; share = "
        "ROS overhead / (engine + ROS overhead) per frame, p50. CPU = node process, % of one "
        "core."
        + (f" The publishing process had the Fast DDS profile `{s['publisher_profile']}`; the "
           "node's did not." if s.get("publisher_profile") else "")
        + (" Node parameters on top of config/edge.yaml: " + ", ".join(
            f"`{k}: {json.dumps(v)}`" for k, v in s["params"].items()) + "."
           if s.get("params") else "")
        + (" With `frame_diagnostics` false the node sends no per-frame status: its figures "
           "come from the 1 Hz summaries (processed images; mailbox drops of images and event "
           "windows together; ROS ms and share of camera frames, the median of the per-second "
           "p50s after warm-up); latency, engine and the parts of the ROS time are not "
           "measured (–)."
           if any(r.get("frame_diagnostics") is False for r in report["runs"]) else ""),
        "",
        "| QoS | images | config | stream | published img/ev | processed img/ev | mailbox drops "
        "| lost (node saw) | fps | latency p50 / p95 ms | to node / queued ms | caption p50 ms "
        "| engine p50 ms "
        "| ROS ms (conversion, diagnostics) / share | CPU % | RSS MB |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in report["runs"]:
        for name, x in r["streams"].items():
            share = x["ros_overhead_share_p50"]
            lines.append(
                f"| {r['qos']} | {r['transport']} | {r['config']} | {name} "
                f"| {x['images_published']}/{x['events_published']} "
                f"| {x['images_processed']}/{_num(x['events_processed'], 'd')} "
                f"| {x['mailbox_dropped']} "
                f"| {x['lost_before_node']} ({x.get('node_transport_lost', '–')}) "
                f"| {x['processed_fps'] or 0:.1f} "
                f"| {_ms(x['latency_ms_p50'])} / {_ms(x['latency_ms_p95'])} "
                f"| {_ms(x.get('input_age_ms_p50'))} / {_ms(x.get('queue_ms_p50'))} "
                f"| {_ms(x['caption_latency_ms_p50'])} | {_ms(x['engine_ms_p50'])} "
                f"| {_num(x['ros_overhead_ms_p50'], '.2f')} "
                f"({_num(x.get('conversion_ms_p50'), '.2f')}, "
                f"{_num(x.get('diagnostics_ms_p50'), '.2f')}) / {_num(share, '.1%')} "
                f"| {_num(x['node_cpu_pct'], '.0f')} "
                f"| {_num(x['node_rss_mb_max'], '.0f')} |")
    lines += budget_markdown(report)
    lines += stage_markdown(report)
    lines += ["", "Per run: start-up, thread limits the node reports, RSS after warm-up -> end:",
              ""]
    for r in report["runs"]:
        lines.append(f"- {r['config']}, {r['qos']}, {r['transport']}: up in "
                     f"{r.get('startup_s', '–')} s; threads `{r.get('threads') or '?'}`; RSS "
                     f"{r.get('rss_mb_after_warmup', '–')} -> {r.get('rss_mb_end', '–')} MB "
                     f"({r.get('rss_growth_mb', '–')} MB)")
    lines += ["", "Sttf+anc latency p50 over dense (target: <= 0.33 on still and slow, <= 1 on "
              "busy):", ""]
    for key, entry in report["targets"].items():
        ratios = entry.get("latency_p50_sttf_over_dense")
        if ratios:
            lines.append(f"- {key}: " + ", ".join(f"{k} {v}" for k, v in ratios.items()))
    return "\n".join(lines) + "\n"


def stage_markdown(report: dict[str, Any]) -> list[str]:
    """Engine ms per stage: p50 over all frames / p50 over the slowest 5% (stages that never
    took 0.05 ms left out)."""
    rows = [(r, name, x["stage_ms"]) for r in report["runs"] for name, x in r["streams"].items()
            if x.get("stage_ms")]
    if not rows:
        return []
    used = [st for st in STAGES
            if any(max(v or 0.0 for v in sm.get(st, [0.0])) >= 0.05 for _, _, sm in rows)]
    lines = ["", "Engine ms per stage, per camera frame: p50 over all frames / p50 over the "
             "slowest 5% of frames (by total engine ms):", "",
             "| QoS | images | config | stream | " + " | ".join(used) + " |",
             "|---|---|---|---|" + "---|" * len(used)]
    for r, name, sm in rows:
        cells = [f"{_num(sm[st][0], '.1f')} / {_num(sm[st][2], '.1f')}" for st in used]
        lines.append(f"| {r['qos']} | {r['transport']} | {r['config']} | {name} | "
                     + " | ".join(cells) + " |")
    return lines


def budget_markdown(report: dict[str, Any]) -> list[str]:
    """The budget controller's table (frames: camera stream), when the node held a budget."""
    rows = [(r, name, x["budget"]) for r in report["runs"] for name, x in r["streams"].items()
            if x.get("budget")]
    if not rows:
        return []
    b0 = rows[0][2]
    lines = ["", f"Budget controller ({b0['mode']}, target {b0['target']:g} {b0['unit']} of "
             "engine cost per camera frame). Steps in the scene: each stream's start (streams "
             "follow each other without a restart), the loop's wrap where the clip jumps back, "
             f"and motion that starts after {SETTLE_FRAMES} still frames (`scene_steps`); "
             f"settled = at least {SETTLE_FRAMES} frames after the last step, as the issue "
             f"defines it (beside it the p95 from frame {SETTLE_FRAMES} of the stream on, steps "
             "included); settling = frames after a step until the rest of its stretch stays "
             "within 1.1 x target (<= 5% over), the slowest of the stream's steps:", "",
             "| QoS | images | config | stream | frames | steps | cost p50 / p95 "
             "| settled p95 / target | p95 / target from frame 10 | settling frames, max; "
             "steps within 10 | in budget | unreachable | level at end |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r, name, b in rows:
        ratio = b["settled_p95_vs_target"]
        met = "" if ratio is None or ratio <= 1.1 else " (missed)"
        lines.append(
            f"| {r['qos']} | {r['transport']} | {r['config']} | {name} | {b['frames']} "
            f"| {b['steps']} | {_num(b['cost_p50'], '.2f')} / {_num(b['cost_p95'], '.2f')} "
            f"| {_num(ratio, '.2f')}{met} | {_num(b['p95_from_frame_10_vs_target'], '.2f')} "
            f"| {b['settling_frames']}; {b['steps_settled_in_time']} of {b['steps']} "
            f"| {b['in_budget_pct']:.0f}% | {b['unreachable_frames']} | {b['level_last']:g} |")
    return lines


def budget_params(mode: str | None, target: float | None) -> dict[str, Any]:
    """`--budget-mode` / `--budget-target` as node parameters (budget_mode + that mode's
    target parameter)."""
    if mode is None or mode == "off":
        return {} if mode is None else {"budget_mode": "off"}
    if mode not in BUDGET_MODES:
        raise ValueError(f"budget mode must be one of {BUDGET_MODES}, got {mode!r}")
    if target is None:
        raise ValueError(f"--budget-mode {mode} needs --budget-target (in {TARGET_PARAMS[mode]})")
    return {"budget_mode": mode, TARGET_PARAMS[mode]: float(target)}


def parse_param(text: str) -> tuple[str, Any]:
    """`name=value` with a YAML value (`blas_threads=0`, `qos_depth=10`)."""
    name, sep, value = text.partition("=")
    if not sep or not name.strip():
        raise ValueError(f"--param wants name=value, got {text!r}")
    return name.strip(), yaml.safe_load(value)


def main(args: Any) -> int:
    """`tinygpt-ros bench-node` (arguments: cli/bench_node.py)."""
    from tinygpt_ros.evaluation.bench import write_markdown_section

    report = run_node_bench(
        configs=args.configs, qos=args.qos, transports=args.transports, streams=args.streams,
        seconds=args.seconds, bag=args.bag, model_dir=args.model, backend=args.backend,
        camera_hz=args.camera_hz, events_hz=args.events_hz, seed=args.seed,
        workdir=Path(args.out) / "work",
        params={**dict(parse_param(p) for p in args.param),
                **budget_params(args.budget_mode, args.budget_target)},
        publisher_profile=args.publisher_profile, size=tuple(args.size),
    )
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "node_bench.json").write_text(json.dumps(report, indent=2) + "\n")
    text = markdown(report)
    (out / "node_bench.md").write_text(text)
    if args.markdown:
        write_markdown_section(args.markdown, text, name="node")
    print(text)
    return 0
