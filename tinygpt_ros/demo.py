"""`tinygpt-ros demo`: bring up the edge graph in-process and play a bag into it.

The graph is the one `edge.launch.py` starts (lifecycle node + manager, configured and activated
by the manager). By default the bag is played in lockstep: each message is published once the
node has reported (on /diagnostics) the previous one, so the run is as fast as the node and
drops nothing. `--rate 1` plays with the recorded timing instead (frames may then be dropped,
and the summary counts them).
"""

from __future__ import annotations

import os
import tempfile
import threading
import time
from collections import Counter, defaultdict, deque
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from tinygpt_ros.ros.domain import ros_domain_id

FRAME_STATUS_SUFFIX = ": frame"
IMAGE_TOPIC = "/camera/image_raw"
EVENTS_TOPIC = "/events"
GESTURE_VOTE_WINDOWS = 8  # printed gesture = majority of the last 8 windows (0.4 s)


class _Collector:
    """Listens to caption, gesture and /diagnostics; prints what a user wants to see."""

    def __init__(self, node: Any, ns: str, out) -> None:
        from diagnostic_msgs.msg import DiagnosticArray
        from rclpy.qos import QoSProfile, ReliabilityPolicy
        from std_msgs.msg import String

        qos = QoSProfile(depth=50, reliability=ReliabilityPolicy.RELIABLE)
        self.out = out
        self.frames: list[dict[str, str]] = []
        self.reported: set[tuple[int, str]] = set()
        self.summary: dict[str, str] = {}
        self.cond = threading.Condition()
        self.last_caption = ""
        self.last_gesture = ""
        self.recent_gestures: deque[str] = deque(maxlen=GESTURE_VOTE_WINDOWS)
        self.t0_ns: int | None = None
        node.create_subscription(DiagnosticArray, "/diagnostics", self._on_diag, qos)
        node.create_subscription(String, f"{ns}/caption", self._on_caption, qos)
        node.create_subscription(String, f"{ns}/gesture", self._on_gesture, qos)

    def _stamp_s(self, stamp_ns: int) -> float:
        if self.t0_ns is None:
            self.t0_ns = stamp_ns
        return (stamp_ns - self.t0_ns) / 1e9

    def _on_diag(self, msg) -> None:
        stamp = msg.header.stamp.sec * 1_000_000_000 + msg.header.stamp.nanosec
        for st in msg.status:
            kv = {k.key: k.value for k in st.values}
            if st.name.endswith(FRAME_STATUS_SUFFIX):
                kv["_stamp_ns"] = str(stamp)
                kv["_level"] = str(int.from_bytes(st.level, "little")
                                   if isinstance(st.level, bytes) else int(st.level))
                kv["_message"] = st.message
                with self.cond:
                    self.frames.append(kv)
                    self.reported.add((stamp, kv.get("modality", "")))
                    self.cond.notify_all()
                if kv.get("modality") == "events" and kv.get("gesture"):
                    self._gesture(stamp, kv["gesture"], kv.get("gesture_confidence", ""))
            elif st.name.endswith(": summary"):
                self.summary = kv

    def _on_caption(self, msg) -> None:
        if msg.data != self.last_caption:
            self.last_caption = msg.data
            self.out(f"  caption : {msg.data}")

    def _on_gesture(self, msg) -> None:
        pass  # printed from diagnostics, which carry the stamp and confidence

    def _gesture(self, stamp: int, label: str, conf: str) -> None:
        """Print the majority of the last windows when it changes (per-window output flickers)."""
        self.recent_gestures.append(label)
        label = Counter(self.recent_gestures).most_common(1)[0][0]
        if label != self.last_gesture:
            self.last_gesture = label
            t = self._stamp_s(stamp)
            self.out(f"  gesture : {label} (majority of last {len(self.recent_gestures)} "
                     f"windows) at t={t:.2f}s")

    def wait_for(self, stamp_ns: int, modality: str, timeout: float) -> bool:
        with self.cond:
            return self.cond.wait_for(lambda: (stamp_ns, modality) in self.reported, timeout)


def _params_file(image_transport: str, backend: str, events_msg_type: str = "pointcloud2") -> str:
    from tinygpt_ros.ros.graph import default_params_file

    with open(default_params_file()) as f:
        tree = yaml.safe_load(f)
    for key, section in tree.items():
        if "tinygpt" in key and "ros__parameters" in section:
            section["ros__parameters"]["image_transport"] = image_transport
            section["ros__parameters"]["backend"] = backend
            section["ros__parameters"]["qos_reliability"] = "reliable"
            section["ros__parameters"]["events_msg_type"] = events_msg_type
    fd, path = tempfile.mkstemp(prefix="tinygpt_demo_", suffix=".yaml")
    with os.fdopen(fd, "w") as f:
        yaml.safe_dump(tree, f)
    return path


def summarize(frames: list[dict[str, str]], out) -> dict[str, Any]:
    """Print the compute-budget summary from per-frame diagnostics; returns the figures."""
    by_mod: dict[str, list[dict[str, str]]] = defaultdict(list)
    for f in frames:
        by_mod[f.get("modality", "?")].append(f)
    figures: dict[str, Any] = {}
    out("\n=== compute-budget summary ===")
    for modality, rows in sorted(by_mod.items()):
        def col(key: str, rows=rows) -> np.ndarray:
            return np.array([float(r.get(key, 0) or 0) for r in rows])

        lat = col("latency_ms_total")
        flops, dense = col("flops_total").sum(), col("flops_dense").sum()
        branches = Counter(r.get("branch", "?") for r in rows)
        fig = {
            "frames": len(rows),
            "tokens_recomputed_pct": float(100 * col("tokens_recomputed").sum()
                                           / max(1.0, col("tokens_in").sum())),
            "tokens_fused_mean": float(col("tokens_fused").mean()),
            "branches": dict(sorted(branches.items())),
            "flops_vs_dense_pct": float(100 * flops / dense) if dense else float("nan"),
            "gflops_total": float(flops / 1e9),
            "gflops_dense": float(dense / 1e9),
            "latency_ms_p50": float(np.percentile(lat, 50)),
            "latency_ms_p95": float(np.percentile(lat, 95)),
            "ros_overhead_ms_mean": float(col("ros_overhead_ms").mean()),
            "caption_reused_pct": float(100 * np.mean([r.get("caption_reused") == "true"
                                                       for r in rows])),
            "dropped_frames": int(max(col("dropped_frames"), default=0)),
            "errors": int(max(col("errors"), default=0)),
            "energy_mj": float(col("energy_mj").sum()),
        }
        figures[modality] = fig
        label = "camera frames" if modality == "frame" else "event windows"
        out(f"{label}: {fig['frames']}")
        out(f"  tokens recomputed : {fig['tokens_recomputed_pct']:.1f}% of "
            f"{int(col('tokens_in').sum())}; fused tokens per step {fig['tokens_fused_mean']:.1f}")
        out("  branches          : " + ", ".join(f"{k} {v}" for k, v in fig["branches"].items()))
        out(f"  FLOPs             : {fig['gflops_total']:.2f} GFLOP vs dense "
            f"{fig['gflops_dense']:.2f} GFLOP ({fig['flops_vs_dense_pct']:.1f}% of dense)")
        out(f"  latency           : p50 {fig['latency_ms_p50']:.1f} ms, p95 "
            f"{fig['latency_ms_p95']:.1f} ms (ROS overhead {fig['ros_overhead_ms_mean']:.2f} ms)")
        if modality == "frame":
            out(f"  captions reused   : {fig['caption_reused_pct']:.0f}% of frames")
        out(f"  dropped / errors  : {fig['dropped_frames']} / {fig['errors']}; energy estimate "
            f"{fig['energy_mj']:.1f} mJ")
    return figures


def run_demo(
    bag: str | Path,
    model_dir: str | Path,
    rate: float = 0.0,
    backend: str = "onnxruntime",
    image_transport: str = "raw",
    out=print,
    domain_id: int | None = None,
) -> int:
    import rclpy
    from rclpy.serialization import deserialize_message

    from tinygpt_ros.bags.reader import bag_topics, iter_bag
    from tinygpt_ros.ros import compat
    from tinygpt_ros.ros.bag_player import message_class
    from tinygpt_ros.ros.bringup import bring_up, tear_down

    compat.localhost_discovery(os.environ)
    domain = domain_id if domain_id is not None else ros_domain_id()
    image_topic = IMAGE_TOPIC + ("/compressed" if image_transport == "compressed" else "")
    bag = Path(bag)
    # the node subscribes to the events type the bag carries (`make-sample --event-encoding`
    # writes EventPacket the way a driver publishes it)
    events_type = bag_topics(bag).get(EVENTS_TOPIC, ("", 0))[0]
    events_msg_type = "event_packet" if events_type.endswith("/EventPacket") else "pointcloud2"
    out(f"[demo] model {model_dir}, backend {backend}, bag {bag}, "
        f"{'lockstep' if rate <= 0 else f'rate {rate}x'}, ROS domain {domain}")
    ctx = rclpy.Context()
    rclpy.init(context=ctx, domain_id=domain)
    params = _params_file(image_transport, backend, events_msg_type)
    executor = nodes = None
    try:
        executor, nodes = bring_up(ctx, params_file=params, model_dir=str(model_dir),
                                   backend=backend, image_topic=IMAGE_TOPIC,
                                   events_topic=EVENTS_TOPIC)
        from rclpy.node import Node
        from rclpy.qos import QoSProfile, ReliabilityPolicy

        player = Node("tinygpt_demo_player", context=ctx)
        executor.add_node(player)
        nodes.append(player)
        collector = _Collector(player, "", out)
        spinner = threading.Thread(target=executor.spin, daemon=True)
        spinner.start()
        node = next(n for n in nodes if n.get_name() == "tinygpt_node")
        deadline = time.monotonic() + 60
        while not node.is_active:
            if time.monotonic() > deadline:
                out(f"[demo] the node did not become active: {node.last_error or 'timeout'}")
                return 1
            time.sleep(0.05)
        out("[demo] graph active; playing the bag\n")
        qos = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
        pubs: dict[str, Any] = {}
        types: dict[str, type] = {}
        wanted = {image_topic: "frame", EVENTS_TOPIC: "events"}
        start_wall, first_ns = time.monotonic(), None
        sent = 0
        for m in iter_bag(bag, topics=list(wanted)):
            if m.topic not in pubs:
                types[m.topic] = message_class(m.msgtype)
                pubs[m.topic] = player.create_publisher(types[m.topic], m.topic, qos)
                _wait_subscribed(pubs[m.topic])
            msg = deserialize_message(bytes(m.rawdata), types[m.topic])
            if rate > 0:
                first_ns = m.timestamp_ns if first_ns is None else first_ns
                delay = start_wall + (m.timestamp_ns - first_ns) / 1e9 / rate - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
            pubs[m.topic].publish(msg)
            sent += 1
            if rate <= 0:
                stamp = msg.header.stamp.sec * 1_000_000_000 + msg.header.stamp.nanosec
                if not collector.wait_for(stamp, wanted[m.topic], timeout=10.0):
                    out(f"[demo] no diagnostics for {m.topic} at {stamp}; continuing")
        time.sleep(0.5)  # let the last outputs arrive
        out(f"\n[demo] played {sent} messages in {time.monotonic() - start_wall:.1f}s")
        summarize(collector.frames, out)
        return 0
    finally:
        if executor is not None:
            tear_down(executor, nodes)
        rclpy.try_shutdown(context=ctx)
        os.unlink(params)


def _wait_subscribed(pub: Any, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while pub.get_subscription_count() == 0 and time.monotonic() < deadline:
        time.sleep(0.02)
