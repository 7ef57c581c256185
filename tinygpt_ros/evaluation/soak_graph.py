"""The two sides of `tinygpt-ros soak`: the node graph in its own process, and a driver node.

`GraphProcess` starts `python -m tinygpt_ros.ros.bringup` (tinygpt_node + lifecycle_manager, the
graph the launch file starts) in a subprocess on a given ROS domain, so what is measured (RSS,
threads, open fds) is the graph alone and a crash is a dead process, not a dead test.

`Driver` is a plain rclpy node in this process that talks to the graph only the way other ROS
programs do: it publishes camera images and event windows, listens to /diagnostics, caption,
gesture and /rosout, and calls the lifecycle and parameter services that `ros2 lifecycle` and
`ros2 param` call.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter, deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import rclpy
from diagnostic_msgs.msg import DiagnosticArray
from lifecycle_msgs.msg import Transition
from lifecycle_msgs.srv import ChangeState, GetState
from rcl_interfaces.msg import Log
from rcl_interfaces.msg import Parameter as ParameterMsg
from rcl_interfaces.srv import GetParameters, SetParameters
from rclpy._rclpy_pybind11 import RCLError
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node
from rclpy.parameter import parameter_value_to_python
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from rclpy.signals import SignalHandlerOptions
from sensor_msgs.msg import CompressedImage, Image, PointCloud2
from std_msgs.msg import String

from tinygpt_ros.ros import service_calls
from tinygpt_ros.ros.conversions import stamp_to_ns
from tinygpt_ros.ros.diagnostics import status_values

NODE = "tinygpt_node"
MANAGER = "lifecycle_manager"  # edge_bringup's manager node, started with the graph
IMAGE_TOPIC = "/camera/image_raw"
EVENTS_TOPIC = "/events"
TRANSITIONS = {
    "configure": Transition.TRANSITION_CONFIGURE,
    "activate": Transition.TRANSITION_ACTIVATE,
    "deactivate": Transition.TRANSITION_DEACTIVATE,
    "cleanup": Transition.TRANSITION_CLEANUP,
}
RELIABLE = QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE)


def _wait_on_spinner(future: Any, seconds: float) -> bool:
    """Wait for `future` while the driver's own thread spins its executor."""
    done = threading.Event()
    future.add_done_callback(lambda _f: done.set())
    return done.wait(seconds)


class GraphProcess:
    """The edge graph in a subprocess; its output goes to `log_path`."""

    def __init__(self, domain: int, params_file: str, model_dir: str, log_path: Path,
                 autostart: bool = True, obey_file_modes: bool = False) -> None:
        env = dict(os.environ, ROS_DOMAIN_ID=str(domain), ROS_AUTOMATIC_DISCOVERY_RANGE="LOCALHOST",
                   PYTHONUNBUFFERED="1")
        self.log_path = log_path
        self._log = open(log_path, "w")  # open as long as the process runs
        cmd = [sys.executable, "-m", "tinygpt_ros.ros.bringup", "--params-file", params_file,
               "--model-dir", model_dir, "--autostart", str(autostart).lower()]
        self.proc = subprocess.Popen(
            cmd, stdout=self._log, stderr=subprocess.STDOUT, env=env,
            preexec_fn=_drop_file_override if obey_file_modes else None,
        )

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self, timeout: float = 20.0) -> int:
        """Ctrl-C, as a user stops it; kill only if it does not exit. Returns the exit code."""
        if self.alive():
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()
        return int(self.proc.returncode)

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


_PR_CAPBSET_DROP = 24
_CAP_DAC_OVERRIDE, _CAP_DAC_READ_SEARCH = 1, 2


def _drop_file_override() -> None:
    """In the child before exec: drop the capabilities that let root ignore file modes (from
    the bounding set, so the exec'd graph never gets them), so a mode-0 directory is
    unreadable to it as it is to any robot user. No-op for a non-root user."""
    if os.geteuid() != 0:
        return
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    for cap in (_CAP_DAC_OVERRIDE, _CAP_DAC_READ_SEARCH):
        if libc.prctl(_PR_CAPBSET_DROP, cap, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP) failed")


@dataclass
class Seen:
    """What the driver heard from the graph (filled by executor callbacks)."""

    statuses: dict[int, tuple[int, dict[str, str], str]] = field(default_factory=dict)
    summary: dict[str, str] = field(default_factory=dict)
    summaries: int = 0
    captions: int = 0
    gestures: Counter[str] = field(default_factory=Counter)
    logs: deque[tuple[int, str, str]] = field(default_factory=lambda: deque(maxlen=2000))
    manager_state: str | None = None  # the lifecycle manager's latched ~/state


def event_packet_type() -> Any:
    """event_camera_msgs/EventPacket, or None where the package is not installed (the Jazzy
    environment; scripts/setup.sh builds it for Kilted)."""
    try:
        from event_camera_msgs.msg import EventPacket
    except ImportError:
        return None
    return EventPacket


class Driver:
    """A node in this process on the graph's domain; every call blocks the calling thread only
    (the executor spins in its own thread)."""

    def __init__(self, domain: int, name: str = "tinygpt_soak_driver") -> None:
        self.context = rclpy.Context()
        # Ctrl-C must reach the caller as KeyboardInterrupt (so the graph process is stopped),
        # not only shut this context down under a thread waiting for a service answer.
        rclpy.init(context=self.context, domain_id=domain,
                   signal_handler_options=SignalHandlerOptions.NO)
        self.node = Node(name, context=self.context)
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)
        self.cond = threading.Condition()
        self.seen = Seen()
        n = self.node
        self.pubs: dict[str, Any] = {}
        n.create_subscription(DiagnosticArray, "/diagnostics", self._on_diag, RELIABLE)
        n.create_subscription(String, "/caption", self._on_caption, RELIABLE)
        n.create_subscription(String, "/gesture", self._on_gesture, RELIABLE)
        n.create_subscription(Log, "/rosout", self._on_log, RELIABLE)
        latched = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE,
                             durability=DurabilityPolicy.TRANSIENT_LOCAL)
        n.create_subscription(String, f"/{MANAGER}/state", self._on_manager_state, latched)
        self._change = n.create_client(ChangeState, f"/{NODE}/change_state")
        self._get_state = n.create_client(GetState, f"/{NODE}/get_state")
        self._set_params = n.create_client(SetParameters, f"/{NODE}/set_parameters")
        self._get_params = n.create_client(GetParameters, f"/{NODE}/get_parameters")
        self._spinner = threading.Thread(target=self._spin, daemon=True)
        self._spinner.start()

    def _spin(self) -> None:
        try:
            self.executor.spin()
        except Exception:  # the context was shut down under it
            pass

    # ------------------------------------------------------------------------------ listening

    def _on_diag(self, msg: DiagnosticArray) -> None:
        stamp = stamp_to_ns(msg.header.stamp)
        with self.cond:
            for st in msg.status:
                level = int.from_bytes(st.level, "little") if isinstance(st.level, bytes) \
                    else int(st.level)
                if st.name.endswith(": frame"):
                    self.seen.statuses[stamp] = (level, status_values(st), st.message)
                elif st.name == f"{NODE}: summary":
                    self.seen.summary = status_values(st)
                    self.seen.summaries += 1
            self.cond.notify_all()

    def _on_caption(self, msg: String) -> None:
        with self.cond:
            self.seen.captions += 1
            self.cond.notify_all()

    def _on_gesture(self, msg: String) -> None:
        with self.cond:
            self.seen.gestures[msg.data] += 1

    def _on_log(self, msg: Log) -> None:
        if msg.name == NODE:
            with self.cond:
                self.seen.logs.append((time.monotonic_ns(), msg.msg, str(msg.level)))

    def _on_manager_state(self, msg: String) -> None:
        with self.cond:
            self.seen.manager_state = msg.data
            self.cond.notify_all()

    def wait_manager(self, label: str, timeout: float) -> bool:
        """Until the lifecycle manager reports `label` on its latched state topic: its start-up
        sequence is over, so it no longer drives the node (a part that cycles the node while
        the manager still finishes its start-up races with it)."""
        return self.wait_for(lambda: self.seen.manager_state == label, timeout)

    def wait_for(self, predicate: Any, timeout: float) -> bool:
        with self.cond:
            return self.cond.wait_for(predicate, timeout)

    def status_for(self, stamp_ns: int, timeout: float) -> tuple[int, dict[str, str], str] | None:
        """The node's per-message status (frame or ERROR) for the message stamped `stamp_ns`."""
        with self.cond:
            self.cond.wait_for(lambda: stamp_ns in self.seen.statuses, timeout)
            return self.seen.statuses.pop(stamp_ns, None)

    def summary(self) -> dict[str, str]:
        with self.cond:
            return dict(self.seen.summary)

    def next_summary(self, timeout: float = 15.0) -> dict[str, str]:
        """The node's next 1 Hz summary (counters that include everything answered so far)."""
        with self.cond:
            n = self.seen.summaries
            self.cond.wait_for(lambda: self.seen.summaries > n, timeout)
            return dict(self.seen.summary)

    def logs_since(self, t_ns: int) -> list[str]:
        with self.cond:
            return [text for t, text, _ in self.seen.logs if t >= t_ns]

    # ----------------------------------------------------------------------------- publishing

    def publisher(self, kind: str, qos: QoSProfile = RELIABLE) -> Any:
        """Publisher for input `kind` (image | compressed | pointcloud2 | event_packet) on the
        graph's topics (event_packet needs event_camera_msgs: see `event_packet_type`)."""
        key = (kind, qos.reliability)
        if key not in self.pubs:
            msg_type, topic = {
                "image": (Image, IMAGE_TOPIC),
                "compressed": (CompressedImage, IMAGE_TOPIC + "/compressed"),
                "pointcloud2": (PointCloud2, EVENTS_TOPIC),
                "event_packet": (event_packet_type(), EVENTS_TOPIC),
            }[kind]
            # DDS refuses a second type on a topic in one participant: the events topic
            # carries PointCloud2 or EventPacket, so the other kind's publisher goes first
            name = self.node.resolve_topic_name(topic)
            for other in [k for k, p in self.pubs.items()
                          if p.topic_name == name and p.msg_type is not msg_type]:
                self.node.destroy_publisher(self.pubs.pop(other))
            self.pubs[key] = self._create_publisher(msg_type, topic, qos)
        return self.pubs[key]

    def _create_publisher(self, msg_type: Any, topic: str, qos: QoSProfile,
                          timeout: float = 10.0) -> Any:
        """create_publisher, retried while a destroyed publisher of another type on the topic
        is still held by the spinning executor (its QoS event handlers sit in the wait set, so
        rclpy finishes the destruction only when that wait returns)."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                return self.node.create_publisher(msg_type, topic, qos)
            except RCLError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    def wait_subscribed(self, pub: Any, timeout: float = 60.0) -> bool:
        deadline = time.monotonic() + timeout
        while pub.get_subscription_count() == 0:
            if time.monotonic() > deadline:
                return False
            time.sleep(0.02)
        return True

    def subscriptions_on(self, topic: str) -> int:
        """Subscriptions the graph holds on `topic` (the driver itself subscribes to none of
        the input topics)."""
        return self.node.count_subscribers(topic)

    # ------------------------------------------------------------------------------- services

    def _call(self, client: Any, request: Any, timeout: float, resend: bool = False) -> Any:
        """One service call, answered within `timeout` or TimeoutError. With `resend` (only for
        requests whose repetition changes nothing: reads, or setting the same value again) an
        unanswered request is sent again after service_calls.RESEND_AFTER_S, doubling."""
        deadline = time.monotonic() + timeout
        while not client.service_is_ready():
            if time.monotonic() > deadline:
                raise TimeoutError(f"service {client.srv_name} not available")
            time.sleep(0.02)
        return service_calls.call(client, request, max(0.0, deadline - time.monotonic()),
                                  _wait_on_spinner,
                                  service_calls.RESEND_AFTER_S if resend else None)

    def transition(self, name: str, timeout: float = 180.0) -> bool:
        req = ChangeState.Request(transition=Transition(id=TRANSITIONS[name]))
        return bool(self._call(self._change, req, timeout).success)

    def state(self, timeout: float = 60.0) -> str:
        return self._call(self._get_state, GetState.Request(), timeout,
                          resend=True).current_state.label

    def wait_state(self, label: str, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if self.state(timeout=max(0.5, deadline - time.monotonic())) == label:
                    return True
            except TimeoutError:
                pass
            time.sleep(0.1)
        return False

    def set_parameter(self, param: ParameterMsg, timeout: float = 60.0) -> tuple[bool, str]:
        result = self._call(self._set_params, SetParameters.Request(parameters=[param]),
                            timeout, resend=True).results[0]
        return bool(result.successful), result.reason

    def get_parameter(self, name: str, timeout: float = 60.0) -> Any:
        values = self._call(self._get_params, GetParameters.Request(names=[name]), timeout,
                            resend=True).values
        return parameter_value_to_python(values[0]) if values else None

    def close(self) -> None:
        self.executor.shutdown(timeout_sec=2.0)
        self._spinner.join(timeout=5.0)
        self.node.destroy_node()
        rclpy.try_shutdown(context=self.context)
