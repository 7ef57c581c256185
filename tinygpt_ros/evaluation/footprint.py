"""The node's footprint measured from outside, the way a robot runs it: start-up time, resident
memory and libraries per backend, and memory over repeated lifecycle cycles.

The node graph runs in its own process (`python -m tinygpt_ros.ros.bringup`, the same graph as
`edge.launch.py`) on a random ROS domain with localhost-only discovery; this process drives it
through its real lifecycle services, sends camera-sized frames (640x480 rgb8) and reads the
node process's /proc files (VmRSS, maps, threads). Nothing is set in the node's environment
beyond the ROS domain, so the figures are those of a default install.

- `startup`: seconds from spawning the process until `/tinygpt_node/get_state` answers active
  (interpreter, imports, model load and check, warm-up, manager autostart, DDS discovery), RSS
  when active and after `frames` frames, whether torch is loaded (libtorch mapped).
- `lifecycle_memory`: configure, activate, one frame, deactivate, cleanup, `cycles` times after
  `warmup` cycles; RSS while active and after cleanup in every cycle, and the growth from the
  end of the warm-up to the last cycle.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from tinygpt_ros.ros import service_calls
from tinygpt_ros.ros.memory import mapped_libraries, rss_bytes

NODE = "/tinygpt_node"
MIB = 1 << 20
_TORCH_LIBS = ("libtorch", "libc10")


def _threads(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("Threads:"):
                    return int(line.split()[1])
    except (OSError, ValueError):
        return None
    return None


def _reliable_params_file() -> str:
    """The default edge.yaml with reliable input QoS (a 640x480 frame, 900 KB, is sent in UDP
    fragments, and best-effort delivery loses whole frames on a loaded machine) and a longer
    manager transition timeout."""
    import yaml

    from tinygpt_ros.ros.graph import default_params_file

    doc = yaml.safe_load(Path(default_params_file()).read_text())
    doc["/**/tinygpt_node"]["ros__parameters"]["qos_reliability"] = "reliable"
    # A loaded machine can take longer than the default 30 s to configure the torch backend;
    # the manager would then give up and leave the node unconfigured.
    doc["/**/lifecycle_manager"]["ros__parameters"]["transition_timeout_s"] = 300.0
    fd, path = tempfile.mkstemp(prefix="tinygpt_footprint_", suffix=".yaml")
    with os.fdopen(fd, "w") as f:
        yaml.safe_dump(doc, f)
    return path


@dataclass
class NodeProcess:
    """The edge graph in a child process, driven through ROS from this one."""

    backend: str = "onnxruntime"
    autostart: bool = True
    model_dir: str | None = None
    extra_args: Sequence[str] = ()
    domain_id: int = field(default_factory=lambda: random.SystemRandom().randint(101, 232))
    proc: subprocess.Popen | None = None
    started_at: float = 0.0

    def __enter__(self) -> NodeProcess:
        import rclpy
        from lifecycle_msgs.srv import ChangeState, GetState
        from rclpy.qos import QoSProfile, ReliabilityPolicy
        from sensor_msgs.msg import Image
        from std_msgs.msg import String

        os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"  # before rclpy.init
        env = dict(os.environ, ROS_DOMAIN_ID=str(self.domain_id))
        self._params = _reliable_params_file()
        cmd = [sys.executable, "-m", "tinygpt_ros.ros.bringup", "--backend", self.backend,
               "--autostart", "true" if self.autostart else "false", "--image-topic", "image",
               "--params-file", self._params, "--log-level", "warn", *self.extra_args]
        if self.model_dir:
            cmd += ["--model-dir", self.model_dir]
        self._log = tempfile.TemporaryFile(mode="w+")  # a pipe could fill up and block it
        self.started_at = time.perf_counter()
        self.proc = subprocess.Popen(cmd, env=env, stdout=self._log, stderr=subprocess.STDOUT,
                                     text=True)
        self.context = rclpy.Context()
        rclpy.init(context=self.context, domain_id=self.domain_id)
        from rclpy.executors import SingleThreadedExecutor

        self.executor = SingleThreadedExecutor(context=self.context)
        self.client = rclpy.create_node("tinygpt_footprint", context=self.context)
        self.executor.add_node(self.client)
        self._change = self.client.create_client(ChangeState, f"{NODE}/change_state")
        self._get = self.client.create_client(GetState, f"{NODE}/get_state")
        self._image = self.client.create_publisher(
            Image, "image", QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE))
        self.captions = 0
        self.client.create_subscription(
            String, "caption", self._on_caption,
            QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE))
        self._ChangeState, self._GetState = ChangeState, GetState
        return self

    def _on_caption(self, _msg: Any) -> None:
        self.captions += 1

    def __exit__(self, *exc: object) -> None:
        import rclpy

        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.executor.shutdown()
        self.client.destroy_node()
        rclpy.try_shutdown(context=self.context)
        self._log.close()
        os.unlink(self._params)

    # ---------------------------------------------------------------------------- driving

    def _alive(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            self._log.seek(0)
            raise RuntimeError(f"the node process exited: {self._log.read()[-2000:]}")

    def _spin_until(self, cond, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if cond():
                return True
            self._alive()
            self.executor.spin_once(timeout_sec=0.02)
        return bool(cond())

    def _call(self, client, request, timeout: float, resend: bool = False):
        """A call answered within `timeout` (RuntimeError otherwise). With `resend` (get_state
        only: asking again changes nothing) a lost answer is asked for again
        (ros/service_calls.py) instead of waiting out the whole timeout."""
        deadline = time.monotonic() + timeout
        if not self._spin_until(client.service_is_ready, timeout):
            raise RuntimeError(f"{client.srv_name} did not appear within {timeout} s")
        try:
            return service_calls.call(
                client, request, max(0.0, deadline - time.monotonic()),
                lambda future, seconds: self._spin_until(future.done, seconds),
                service_calls.RESEND_AFTER_S if resend else None)
        except TimeoutError as exc:
            raise RuntimeError(f"{client.srv_name} did not answer within {timeout} s") from exc

    def state(self, timeout: float = 60.0) -> str:
        return self._call(self._get, self._GetState.Request(), timeout,
                          resend=True).current_state.label

    def transition(self, label: str, timeout: float = 60.0) -> None:
        from lifecycle_msgs.msg import Transition

        ids = {"configure": Transition.TRANSITION_CONFIGURE,
               "activate": Transition.TRANSITION_ACTIVATE,
               "deactivate": Transition.TRANSITION_DEACTIVATE,
               "cleanup": Transition.TRANSITION_CLEANUP}
        req = self._ChangeState.Request()
        req.transition.id = ids[label]
        if not self._call(self._change, req, timeout).success:
            raise RuntimeError(f"{NODE} refused {label}")

    def wait_active(self, timeout: float = 300.0) -> float:
        """Seconds from spawning the process until the node reports active."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.state(timeout=max(deadline - time.monotonic(), 0.1)) == "active":
                return time.perf_counter() - self.started_at
            self._spin_until(lambda: False, 0.05)
        self._log.seek(0)
        raise RuntimeError(f"{NODE} not active within {timeout} s: {self._log.read()[-2000:]}")

    def frame(self, index: int, timeout: float = 30.0) -> None:
        """Publish one 640x480 rgb8 frame and wait for a caption (the frame is sent again every
        2 s while discovery has not matched both ends yet; the node's input is best-effort)."""
        from sensor_msgs.msg import Image

        def matched() -> bool:
            return (self._image.get_subscription_count() > 0
                    and self.client.count_publishers("caption") > 0)

        if not self._spin_until(matched, timeout):
            raise RuntimeError("the node's image subscription / caption publisher did not appear")
        rgb = np.full((480, 640, 3), (index * 37) % 256, np.uint8)
        rgb[100:200, (index * 13) % 500:(index * 13) % 500 + 100] = (220, 40, 40)
        msg = Image(height=480, width=640, encoding="rgb8", step=640 * 3, data=rgb.tobytes())
        n = self.captions
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self._image.publish(msg)
            if self._spin_until(lambda: self.captions > n, 2.0):
                return
        raise RuntimeError(f"no caption within {timeout} s")

    def rss_mib(self) -> float:
        assert self.proc is not None
        value = rss_bytes(self.proc.pid)
        if value is None:
            raise RuntimeError("RSS is not readable on this platform (/proc)")
        return value / MIB


def measure_startup(backend: str, frames: int = 30, model_dir: str | None = None) -> dict:
    """Start-up time, RSS and libraries of the node on `backend` (one run)."""
    with NodeProcess(backend=backend, model_dir=model_dir) as node:
        startup_s = node.wait_active()
        rss_active = node.rss_mib()
        for i in range(frames):
            node.frame(i)
        libs = mapped_libraries(node.proc.pid)
        return {
            "backend": backend,
            "startup_s": round(startup_s, 2),
            "rss_active_mib": round(rss_active, 1),
            f"rss_after_{frames}_frames_mib": round(node.rss_mib(), 1),
            "threads": _threads(node.proc.pid),
            "torch_loaded": any(lib.startswith(_TORCH_LIBS) for lib in libs),
            "onnxruntime_loaded": any("onnxruntime" in lib for lib in libs),
        }


def measure_lifecycle_memory(cycles: int = 100, warmup: int = 5, backend: str = "onnxruntime",
                             model_dir: str | None = None, progress=None) -> dict:
    """RSS over `warmup` + `cycles` configure/activate/frame/deactivate/cleanup cycles."""
    active: list[float] = []
    cleaned: list[float] = []
    with NodeProcess(backend=backend, autostart=False, model_dir=model_dir) as node:
        if node.state() != "unconfigured":
            raise RuntimeError(f"{NODE} should start unconfigured")
        unconfigured = node.rss_mib()
        t0 = time.perf_counter()
        for i in range(warmup + cycles):
            node.transition("configure")
            node.transition("activate")
            node.frame(i)
            active.append(node.rss_mib())
            node.transition("deactivate")
            node.transition("cleanup")
            cleaned.append(node.rss_mib())
            if progress is not None:
                progress(i, active[-1], cleaned[-1])
        seconds = time.perf_counter() - t0
        threads = _threads(node.proc.pid)

    def growth(series: list[float]) -> float:
        base = series[warmup - 1] if warmup else series[0]
        return 100.0 * (series[-1] - base) / base

    return {
        "backend": backend,
        "warmup": warmup,
        "cycles": cycles,
        "rss_unconfigured_mib": round(unconfigured, 1),
        "rss_active_mib": [round(v, 1) for v in active],
        "rss_after_cleanup_mib": [round(v, 1) for v in cleaned],
        "growth_active_pct": round(growth(active), 2),
        "growth_after_cleanup_pct": round(growth(cleaned), 2),
        "max_active_mib": round(max(active[warmup - 1 if warmup else 0:]), 1),
        "threads_at_end": threads,
        "seconds": round(seconds, 1),
    }


def markdown(startup: list[dict], lifecycle: dict | None) -> str:
    lines = []
    if startup:
        frames_key = next(k for k in startup[0] if k.startswith("rss_after_"))
        lines += [
            "| backend | start-up to active (s) | RSS active (MiB) | RSS after frames (MiB) "
            "| threads | torch loaded |",
            "|---|---|---|---|---|---|",
        ]
        lines += [
            f"| {r['backend']} | {r['startup_s']:.1f} | {r['rss_active_mib']:.0f} | "
            f"{r[frames_key]:.0f} | {r['threads']} | {'yes' if r['torch_loaded'] else 'no'} |"
            for r in startup
        ]
    if lifecycle:
        w, act = lifecycle["warmup"], lifecycle["rss_active_mib"]
        cln = lifecycle["rss_after_cleanup_mib"]
        base = w - 1 if w else 0
        lines += [
            "",
            f"Lifecycle ({lifecycle['backend']}): {lifecycle['cycles']} cycles after {w} warm-up "
            f"cycles, {lifecycle['seconds']:.0f} s; unconfigured at start "
            f"{lifecycle['rss_unconfigured_mib']:.0f} MiB.",
            "",
            "| | cycle 1 | end of warm-up | last cycle | growth after warm-up | max |",
            "|---|---|---|---|---|---|",
            f"| RSS while active (MiB) | {act[0]:.1f} | {act[base]:.1f} | {act[-1]:.1f} | "
            f"{lifecycle['growth_active_pct']:+.1f}% | {max(act[base:]):.1f} |",
            f"| RSS after cleanup (MiB) | {cln[0]:.1f} | {cln[base]:.1f} | {cln[-1]:.1f} | "
            f"{lifecycle['growth_after_cleanup_pct']:+.1f}% | {max(cln[base:]):.1f} |",
        ]
    return "\n".join(lines) + "\n"
