"""Live evaluation: play a bag into the real node graph and compare with the offline output.

The offline evaluation calls the engine directly; users run the ROS node. Each live run (one bag,
one configuration) is a process of its own, so runs go in parallel (`--workers`) and no rclpy
state outlives a run. It brings the edge graph up (`ros.bringup.bring_up`: TinyGptNode +
lifecycle manager, on a fresh rclpy context with localhost-only discovery, on the user's
ROS_DOMAIN_ID or else a random domain, under a namespace of its own so parallel runs in one
domain never see each other's topics), plays the bag with
`ros.bag_player.BagPlayer` in lockstep (each message is published only after the node answered
the previous one on /diagnostics, so nothing is dropped for being early) and records every
caption, gesture and per-frame diagnostic, matched to its source message by the stamp in the
diagnostics header. `compare` then lists every difference from the offline rows of the same
configuration: missing outputs (dropped frames), other captions or gestures, other token
counts, branches or FLOPs.

Lockstep works through the player's public constructor: it is given a stand-in node whose
publishers block after each publish until the answer is in.
"""

from __future__ import annotations

import multiprocessing
import os
import secrets
import tempfile
import threading
import time
from collections import defaultdict, deque
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from tinygpt_ros.evaluation.issues import Issue
from tinygpt_ros.evaluation.results import BagResult, FrameRow
from tinygpt_ros.ros.domain import ros_domain_id

_IMAGE_OUT = "camera/image_raw"  # under the run's namespace
_EVENTS_OUT = "events"
_FLOPS_RTOL = 1e-5  # diagnostics print floats with 6 significant digits
_MAX_DIFFS = 50


@dataclass
class LiveRow:
    """What the node answered to one message."""

    modality: str  # frame | events (from the topic it was published on)
    stamp_ns: int
    ok: bool  # False: the node refused the message (ERROR status) or did not answer
    caption: str | None = None
    gesture: str | None = None
    values: dict[str, str] = field(default_factory=dict)  # the frame status' key values
    message: str = ""


class _Listener:
    """Collects the node's captions, gestures and per-frame diagnostics (executor threads)."""

    def __init__(self, node: Any) -> None:
        from diagnostic_msgs.msg import DiagnosticArray
        from rclpy.qos import QoSProfile, ReliabilityPolicy
        from std_msgs.msg import String

        qos = QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE)
        self.cond = threading.Condition()
        self.captions: list[str] = []
        self.gestures: list[str] = []
        self.statuses: list[tuple[int, Any]] = []  # (header stamp ns, DiagnosticStatus)
        self.subs = [
            node.create_subscription(String, "caption", self._caption, qos),
            node.create_subscription(String, "gesture", self._gesture, qos),
            node.create_subscription(DiagnosticArray, "/diagnostics", self._diag, qos),
        ]

    def _caption(self, msg: Any) -> None:
        with self.cond:
            self.captions.append(msg.data)
            self.cond.notify_all()

    def _gesture(self, msg: Any) -> None:
        with self.cond:
            self.gestures.append(msg.data)
            self.cond.notify_all()

    def _diag(self, msg: Any) -> None:
        from tinygpt_ros.ros.conversions import stamp_to_ns

        stamp = stamp_to_ns(msg.header.stamp)
        with self.cond:
            for st in msg.status:
                if st.name.endswith(": frame"):
                    self.statuses.append((stamp, st))
            self.cond.notify_all()

    def connected(self) -> bool:
        return all(s.get_publisher_count() > 0 for s in self.subs[::2])  # caption, diagnostics


class _Gate:
    """Stand-in node for BagPlayer: its publishers publish one message, then wait for the
    node's answer (or `timeout_s`); after `limit` messages they stop the player."""

    def __init__(self, node: Any, listener: _Listener, modality_of: dict[str, str],
                 limit: int | None, timeout_s: float) -> None:
        self.node = node
        self.listener = listener
        self.modality_of = modality_of  # published topic -> frame | events
        self.limit = limit
        self.timeout_s = timeout_s
        self.stop = threading.Event()
        self.sent = 0
        self.rows: list[LiveRow] = []
        self.timeouts = 0

    def create_publisher(self, msg_type: Any, topic: str, qos: Any) -> _GatedPublisher:
        return _GatedPublisher(self.node.create_publisher(msg_type, topic, qos), self,
                               self.modality_of.get(topic, "frame"))

    def destroy_publisher(self, pub: _GatedPublisher) -> None:
        self.node.destroy_publisher(pub.inner)

    def publish(self, inner: Any, modality: str, msg: Any) -> None:
        from tinygpt_ros.ros.conversions import stamp_to_ns
        from tinygpt_ros.ros.diagnostics import ERROR, status_values

        if self.limit is not None and self.sent >= self.limit:
            self.stop.set()
            return
        stamp = stamp_to_ns(msg.header.stamp)
        lst = self.listener
        with lst.cond:
            n_status, n_cap, n_gest = len(lst.statuses), len(lst.captions), len(lst.gestures)
        inner.publish(msg)
        self.sent += 1
        outputs = lst.captions if modality == "frame" else lst.gestures
        n_out = n_cap if modality == "frame" else n_gest

        def answered() -> Any:
            for s, st in lst.statuses[n_status:]:
                if s == stamp and (st.level == ERROR or len(outputs) > n_out):
                    return st
            return None

        with lst.cond:
            lst.cond.wait_for(lambda: answered() is not None, timeout=self.timeout_s)
            st = answered()
            out = outputs[n_out] if len(outputs) > n_out else None
        if st is None:
            self.timeouts += 1
            self.rows.append(LiveRow(modality, stamp, False,
                                     message=f"no answer within {self.timeout_s:g} s"))
            return
        values = status_values(st)
        row = LiveRow(modality, stamp, st.level != ERROR, values=values, message=st.message)
        if row.ok:
            if modality == "frame":
                row.caption = out
            else:
                row.gesture = out
        self.rows.append(row)


class _GatedPublisher:
    def __init__(self, inner: Any, gate: _Gate, modality: str) -> None:
        self.inner = inner
        self.gate = gate
        self.modality = modality

    def publish(self, msg: Any) -> None:
        self.gate.publish(self.inner, self.modality, msg)

    def get_subscription_count(self) -> int:
        return self.inner.get_subscription_count()


def _params_file(directory: Path, model_dir: str, backend: str, knobs: dict[str, Any],
                 image_type: str | None, events_type: str | None,
                 startup_timeout_s: float = 120.0) -> str:
    params: dict[str, Any] = {
        "model_dir": str(model_dir),
        "backend": backend,
        "image_transport": ("compressed" if image_type == "sensor_msgs/msg/CompressedImage"
                            else "raw"),
        "events_msg_type": ("event_packet" if events_type == "event_camera_msgs/msg/EventPacket"
                            else "pointcloud2"),
        "qos_reliability": "reliable",  # lockstep: nothing may be lost on the way either
        "qos_depth": 10,
        **knobs,
        # lockstep: each frame is answered by its caption and its status, whatever the knobs
        "caption_publish": "every_frame",
        "frame_diagnostics": True,
    }
    path = directory / "live_params.yaml"
    # A live run is a fresh process: configure also imports the backend (torch), which takes
    # longer than the manager's default deadline on a busy machine.
    manager = {"transition_timeout_s": float(startup_timeout_s)}
    path.write_text(yaml.safe_dump({"/**/tinygpt_node": {"ros__parameters": params},
                                    "/**/lifecycle_manager": {"ros__parameters": manager}}))
    return str(path)


def run_live(
    bag: str | Path,
    model_dir: str | Path,
    knobs: dict[str, Any],
    topics: dict[str, tuple[str, str]],
    backend: str = "torch",
    limit: int | None = None,
    timeout_s: float = 30.0,
    startup_timeout_s: float = 120.0,
) -> dict[str, Any]:
    """Play `bag` into a freshly started node graph configured with `knobs`.

    topics: role (image, events) -> (bag topic, message type). limit: publish only the first
    `limit` messages of those topics (the offline evaluation's prefix). Returns {"rows": [LiveRow],
    "error": str | None, "published": int, "timeouts": int, "domain_id", "namespace", "pid",
    "started", "finished" (wall clock)}."""
    import rclpy

    from tinygpt_ros.ros import compat
    from tinygpt_ros.ros.bag_player import BagError, BagPlayer
    from tinygpt_ros.ros.bringup import ExecutorThread, bring_up, tear_down

    # Before rclpy.init of this context: discovery stays on this machine (the variable each
    # distro reads). A namespace of its own keeps parallel runs in one domain apart; the
    # node's absolute /diagnostics is remapped into it for this context only.
    compat.localhost_discovery(os.environ)
    domain = ros_domain_id()
    namespace = f"/tinygpt_eval_{secrets.token_hex(4)}"
    context = rclpy.Context()
    rclpy.init(context=context, domain_id=domain,
               args=["--ros-args", "-r", f"/diagnostics:={namespace}/diagnostics"])
    out: dict[str, Any] = {"rows": [], "error": None, "published": 0, "timeouts": 0,
                           "domain_id": domain, "namespace": namespace, "pid": os.getpid(),
                           "started": time.time(), "finished": None}
    executor = spinner = None
    nodes: list[Any] = []
    image = topics.get("image")
    events = topics.get("events")
    image_out, events_out = f"{namespace}/{_IMAGE_OUT}", f"{namespace}/{_EVENTS_OUT}"
    try:
        with tempfile.TemporaryDirectory(prefix="tinygpt_live_") as tmp:
            params = _params_file(Path(tmp), str(model_dir), backend, knobs,
                                  image[1] if image else None, events[1] if events else None,
                                  startup_timeout_s)
            executor, nodes = bring_up(context, namespace=namespace, params_file=params,
                                       model_dir=str(model_dir), backend=backend,
                                       image_topic=image_out, events_topic=events_out,
                                       log_level="error")
        probe = rclpy.create_node("tinygpt_eval_probe", namespace=namespace, context=context)
        nodes.append(probe)
        listener = _Listener(probe)
        executor.add_node(probe)
        spinner = ExecutorThread(executor, name="tinygpt_eval_spin")
        spinner.start()
        node, manager = nodes[0], nodes[1]
        deadline = time.monotonic() + startup_timeout_s
        while manager.state not in ("active", "failed") and time.monotonic() < deadline:
            time.sleep(0.02)
        if manager.state != "active":
            out["error"] = (f"node graph did not come up (manager {manager.state}): "
                            f"{node.last_error or manager.failures}")
            return out
        remap, modality_of = {}, {}
        if image:
            dest = image_out + ("/compressed" if image[1].endswith("CompressedImage") else "")
            remap[image[0]], modality_of[dest] = dest, "frame"
        if events:
            remap[events[0]], modality_of[events_out] = events_out, "events"
        gate = _Gate(probe, listener, modality_of, limit, timeout_s)
        try:
            player = BagPlayer(gate, bag, topics=list(remap), rate=None, remap=remap)
        except BagError as exc:
            out["error"] = f"bag could not be played: {exc}"
            return out
        try:
            player.wait_for_subscribers(10.0)
            deadline = time.monotonic() + 10.0
            while not listener.connected() and time.monotonic() < deadline:
                time.sleep(0.02)
            try:
                player.play(stop=gate.stop)
            except BagError as exc:
                out["error"] = f"playback stopped: {exc}"
        finally:
            player.close()
        out.update(rows=gate.rows, published=gate.sent, timeouts=gate.timeouts)
        return out
    except Exception as exc:  # a live failure is a finding for the report, not a crash
        out["error"] = f"live run failed: {exc!r}"
        return out
    finally:
        # Dispatching stops and running callbacks end before the executor shuts down and the
        # nodes are destroyed (`ExecutorThread`): otherwise a callback fails with "cannot use
        # Destroyable", which rclpy prints at exit because no one retrieves it.
        if executor is not None:
            tear_down(executor, nodes, spinner)
        if context.ok():
            rclpy.shutdown(context=context)
        out["finished"] = time.time()


def compare(offline: Sequence[FrameRow], live: Sequence[LiveRow]) -> dict[str, Any]:
    """Differences between offline rows (`replay.evaluate_bag`) and live rows of one config."""
    pending: dict[tuple[str, int], deque[LiveRow]] = defaultdict(deque)
    for row in live:
        pending[(row.modality, row.stamp_ns)].append(row)
    diffs: list[str] = []
    dropped = compared = 0
    for off in offline:
        where = f"{off.modality} @ {off.stamp_ns}"
        queue = pending.get((off.modality, off.stamp_ns))
        row = queue.popleft() if queue else None
        if row is None or not row.ok:
            dropped += 1
            why = "no output" if row is None else f"node refused it or did not answer: " \
                                                  f"{row.message}"
            diffs.append(f"{where}: dropped live ({why})")
            continue
        compared += 1
        rec = off.record
        v = row.values
        if off.modality == "frame" and row.caption != off.caption:
            diffs.append(f"{where}: caption {row.caption!r} live vs {off.caption!r} offline")
        if off.modality == "events" and row.gesture != off.gesture:
            diffs.append(f"{where}: gesture {row.gesture!r} live vs {off.gesture!r} offline")
        for key, want in (("tokens_recomputed", rec.tokens_recomputed),
                          ("tokens_fused", rec.tokens_fused), ("branch", rec.branch)):
            if v.get(key) != str(want):
                diffs.append(f"{where}: {key} {v.get(key)} live vs {want} offline")
        live_flops = float(v.get("flops_total", "nan"))
        if not np.isclose(live_flops, rec.total_flops, rtol=_FLOPS_RTOL, atol=0.0):
            diffs.append(f"{where}: flops_total {live_flops:.6g} live vs "
                         f"{rec.total_flops:.6g} offline")
    extra = [r for q in pending.values() for r in q if r.ok]
    diffs += [f"{r.modality} @ {r.stamp_ns}: live output with no offline counterpart"
              for r in extra]
    oks = [r for r in live if r.ok]

    def p50(key: str, modality: str) -> float | None:
        vals = [float(r.values.get(key, "nan")) for r in oks if r.modality == modality]
        return float(np.median(vals)) if vals else None

    drops = [int(r.values.get("dropped_frames", "0")) for r in oks]
    return {
        "offline": len(offline), "live": len(live), "compared": compared,
        "equal": not diffs, "n_differences": len(diffs), "differences": diffs[:_MAX_DIFFS],
        "dropped": dropped, "node_dropped_frames": max(drops, default=0),
        # per modality: the engine's own stage times, and conversion + publish in the node
        "latency_ms_p50": {m: p50("latency_ms_total", m) for m in ("frame", "events")},
        "ros_overhead_ms_p50": {m: p50("ros_overhead_ms", m) for m in ("frame", "events")},
    }


@dataclass
class LiveJob:
    """One live run: one bag into a fresh node graph with one configuration (picklable)."""

    bag: str
    name: str  # the bag's report name
    config: str
    knobs: dict[str, Any]
    topics: dict[str, tuple[str, str]]
    model_dir: str
    backend: str
    limit: int
    timeout_s: float


def run_live_job(job: LiveJob) -> dict[str, Any]:
    """`run_live` for one job; the entry point of a live worker process."""
    return run_live(job.bag, job.model_dir, job.knobs, job.topics, backend=job.backend,
                    limit=job.limit, timeout_s=job.timeout_s)


def run_live_jobs(jobs: Sequence[LiveJob], workers: int = 1) -> list[dict[str, Any]]:
    """Every job in a process of its own (spawned, used for that job only), `workers` at a
    time; results in job order."""
    if not jobs:
        return []
    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=max(1, min(workers, len(jobs))), mp_context=ctx,
                             max_tasks_per_child=1) as pool:
        return list(pool.map(run_live_job, jobs))


def live_section(results: Sequence[BagResult], configs: dict[str, dict[str, Any]],
                 model_dir: str, backend: str, issues: list[Issue], timeout_s: float = 30.0,
                 workers: int = 1) -> dict[str, Any]:
    """Run every evaluated bag live for every configuration, `workers` runs in parallel, and
    compare with the offline rows (`runner.run_eval`)."""
    section: dict[str, Any] = {"bags": {}, "equal": True, "workers": workers}
    jobs: list[LiveJob] = []
    for r in results:
        section["bags"][r.name] = {}
        topics = {role: (t, r.topics[t][0]) for role, t in r.used_topics.items()}
        if not r.ok or not topics:
            section["bags"][r.name]["-"] = {"equal": False, "error": "bag not evaluated offline"}
            section["equal"] = False
            continue
        jobs += [LiveJob(r.path, r.name, name, knobs, topics, model_dir, backend,
                         r.messages_read, timeout_s) for name, knobs in configs.items()]
    offline = {r.name: r for r in results}
    for job, run in zip(jobs, run_live_jobs(jobs, workers), strict=True):
        cmp = compare(offline[job.name].rows[job.config], run["rows"])
        cmp["published"] = run["published"]
        cmp["error"] = run["error"]
        cmp.update({k: run[k] for k in ("domain_id", "pid", "started", "finished")})
        if run["error"]:
            cmp["equal"] = False
            issues.append(Issue(job.name, "live", "warning",
                                f"live [{job.config}]: {run['error']}"))
        section["bags"][job.name][job.config] = cmp
        section["equal"] = section["equal"] and cmp["equal"]
    return section
