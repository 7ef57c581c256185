"""The real thing: `ros2 launch tinygpt_ros edge.launch.py` and the `ros2` command line, run as
subprocesses the way a user types them.

Needs launch, launch_ros and ros2cli: either the wheels `scripts/setup.sh` installs into .venv
(from shared/wheels/ros2-launch beside the clone, or TINYGPT_ROS_LAUNCH_WHEELS), or a sourced
ROS 2 distro (its own `ros2`). Without either, every test here is skipped and says why.

Few launches on purpose (each costs seconds): one with the defaults (lifecycle, parameters,
captions, Ctrl-C), one with every other launch argument set (manual lifecycle), and `--show-args`.
Every process runs on a private ROS_DOMAIN_ID with localhost-only discovery.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import yaml
from conftest import ros_domain_id

from tinygpt_ros.ros.graph import LAUNCH_ARGUMENTS

REPO = Path(__file__).resolve().parents[1]
INSTALL = REPO / "install"
VENV_ROS2 = Path(sys.executable).parent / "ros2"
EDGE_YAML = REPO / "config" / "edge.yaml"
CLI_TIMEOUT = 60.0


def _ros2() -> tuple[str | None, str]:
    """The `ros2` executable to use and, when there is none, why."""
    if os.environ.get("ROS_DISTRO"):
        import shutil

        found = shutil.which("ros2")
        if found:
            return found, ""
    try:
        import launch_ros  # noqa: F401
        import ros2cli  # noqa: F401
    except ImportError as exc:
        return None, (
            f"launch/ros2cli are not installed ({exc}): put the ros2-launch wheels in "
            "shared/wheels/ros2-launch next to the clone (or point TINYGPT_ROS_LAUNCH_WHEELS at "
            "them) and rerun scripts/setup.sh, or source a ROS 2 distro"
        )
    if not VENV_ROS2.exists():
        return None, f"{VENV_ROS2} is missing: rerun scripts/setup.sh"
    return str(VENV_ROS2), ""


ROS2, WHY_NOT = _ros2()
if ROS2 is not None and not (INSTALL / "share" / "tinygpt_ros" / "launch").is_dir():
    ROS2, WHY_NOT = None, f"no colcon install in {INSTALL}: run scripts/setup.sh"
pytestmark = pytest.mark.skipif(ROS2 is None, reason=WHY_NOT)


def _env() -> dict[str, str]:
    env = dict(os.environ)
    prefixes = [str(INSTALL), sys.prefix, *env.get("AMENT_PREFIX_PATH", "").split(os.pathsep)]
    env.update(
        AMENT_PREFIX_PATH=os.pathsep.join(dict.fromkeys(p for p in prefixes if p)),
        PATH=os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")]),
        ROS_AUTOMATIC_DISCOVERY_RANGE="LOCALHOST",
        ROS_DOMAIN_ID=str(ros_domain_id()),
        PYTHONUNBUFFERED="1",
        RCUTILS_COLORIZED_OUTPUT="0",
    )
    env.pop("OMP_NUM_THREADS", None)  # the node runs as a user runs it
    return env


class Launch:
    """One `ros2 launch` process group with its merged output collected in the background."""

    def __init__(self, env: dict[str, str], *args: str) -> None:
        self.env = env
        self.proc = subprocess.Popen(
            [ROS2, "launch", "tinygpt_ros", "edge.launch.py", *args], env=env,
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True,
        )
        self._lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self._lines.append(line)

    @property
    def output(self) -> str:
        return "".join(self._lines)

    def interrupt(self, timeout: float) -> float:
        """Ctrl-C to the whole process group, as a terminal sends it; seconds until exit."""
        t0 = time.monotonic()
        os.killpg(self.proc.pid, signal.SIGINT)
        self.proc.wait(timeout)
        self._reader.join(5.0)
        return time.monotonic() - t0

    def kill(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)


def ros2(env: dict[str, str], *args: str, timeout: float = CLI_TIMEOUT, check: bool = True
         ) -> str:
    """Run one `ros2 ...` command and return its output. The commands share the ros2 daemon of
    the test domain (`ros2_env` starts and stops it), as they do for a user."""
    cmd = [ROS2, *args]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
    if done.returncode < 0:
        # The CLI process itself crashed (seen once: SIGSEGV in `ros2 param set` on a machine
        # with load ~40, no output; a known class of rclpy teardown crashes). That says nothing
        # about our node, so try once more; the commands used here are idempotent.
        done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
    out = done.stdout + done.stderr
    if check:
        assert done.returncode == 0, f"{' '.join(cmd)} -> {done.returncode}:\n{out}"
    return out


def wait_for_state(env, node: str, label: str, timeout: float = 90.0) -> str:
    """Poll `ros2 lifecycle get` until the node reports `label` (it may not exist yet).

    One query that hangs counts as "no answer yet", not as a failure: once in CI (2026-12-04)
    the first query after the launch hung for a minute (cause not found); the node's state
    is what is checked here, and the next query asks again."""
    deadline = time.monotonic() + timeout
    out = ""
    while time.monotonic() < deadline:
        try:
            out = ros2(env, "lifecycle", "get", node, check=False, timeout=30.0)
        except subprocess.TimeoutExpired:
            out = "(ros2 lifecycle get: no answer within 30 s)"
            continue
        if out.startswith(label):
            return out
        time.sleep(0.3)
    raise AssertionError(f"{node} never reached {label}; last answer: {out}")


def publish_images_until(env: dict[str, str], topic: str, proc: subprocess.Popen) -> None:
    """Publish camera frames on `topic` (from this process, domain of `env`) until `proc` ends."""
    import rclpy
    from builtin_interfaces.msg import Time
    from sensor_msgs.msg import Image
    from std_msgs.msg import Header

    from tinygpt_ros.ros import conversions as conv

    context = rclpy.Context()
    rclpy.init(context=context, domain_id=int(env["ROS_DOMAIN_ID"]))
    node = rclpy.create_node("camera_stand_in", context=context)
    try:
        pub = node.create_publisher(Image, topic, 5)
        rng = np.random.default_rng(0)
        deadline = time.monotonic() + CLI_TIMEOUT
        i = 0
        while proc.poll() is None and time.monotonic() < deadline:
            rgb = rng.integers(0, 255, (480, 640, 3), dtype=np.uint8)
            pub.publish(conv.rgb_to_image(rgb, Header(stamp=Time(sec=100 + i), frame_id="cam")))
            i += 1
            time.sleep(0.2)
    finally:
        node.destroy_node()
        rclpy.shutdown(context=context)


def echo_one_caption(env: dict[str, str], caption_topic: str, image_topic: str) -> str:
    """`ros2 topic echo --once` on the caption topic while images are published."""
    cmd = [ROS2, "topic", "echo", "--once", caption_topic, "std_msgs/msg/String"]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)
    try:
        publish_images_until(env, image_topic, proc)
        out, _ = proc.communicate(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, out
    return out


def _without_debug(text: str) -> str:
    return "\n".join(line for line in text.splitlines() if "[DEBUG]" not in line)[:4000]


def assert_clean_exit(launch: Launch) -> None:
    seconds = launch.interrupt(timeout=30.0)
    out = launch.output
    assert seconds < 15.0, f"took {seconds:.1f} s to exit on SIGINT"
    assert "Traceback" not in out, _without_debug(out[max(0, out.index("Traceback") - 200):])
    assert "process has died" not in out, out[-3000:]
    assert launch.proc.returncode == 0, (launch.proc.returncode, out[-3000:])


@pytest.fixture(scope="module")
def ros2_env() -> Iterator[dict[str, str]]:
    """The environment of every process here, with a ros2 daemon on its private domain (the
    graph cache `ros2 lifecycle/param/topic` query); stopped afterwards so nothing outlives us."""
    env = _env()
    ros2(env, "daemon", "start")
    try:
        yield env
    finally:
        ros2(env, "daemon", "stop", check=False)


@pytest.fixture(scope="module")
def default_launch(ros2_env) -> Iterator[Launch]:
    launch = Launch(ros2_env)
    try:
        yield launch
    finally:
        launch.kill()


def test_default_launch_lifecycle_params_captions_and_ctrl_c(default_launch):
    env, node = default_launch.env, "/tinygpt_node"
    # autostart: the manager configures and activates the node.
    assert wait_for_state(env, node, "active [3]")

    # ros2 lifecycle set / get
    assert "Transitioning successful" in ros2(env, "lifecycle", "set", node, "deactivate")
    assert ros2(env, "lifecycle", "get", node).startswith("inactive [2]")
    assert "Transitioning successful" in ros2(env, "lifecycle", "set", node, "activate")
    assert ros2(env, "lifecycle", "get", node).startswith("active [3]")

    # ros2 param get / set, and refusals with their reason (old value kept)
    assert "Double value is: 0.5" in ros2(env, "param", "get", node, "fusion_threshold")
    assert "Set parameter successful" in ros2(env, "param", "set", node, "fusion_threshold",
                                              "0.8")
    out = ros2(env, "param", "set", node, "routing_hysteresis", "7.0", check=False)
    assert "Setting parameter failed" in out and "routing_hysteresis" in out, out
    out = ros2(env, "param", "set", node, "precision", "int3", check=False)
    assert "Setting parameter failed" in out and "not one of ['fp32', 'fp16']" in out, out
    assert "Double value is: 0.8" in ros2(env, "param", "get", node, "fusion_threshold")
    assert "Double value is: 0.1" in ros2(env, "param", "get", node, "routing_hysteresis")

    # captions on `ros2 topic echo` while a camera publishes on the default topic
    out = echo_one_caption(env, "/caption", "/camera/image_raw")
    assert re.search(r"^data: \S", out, re.M), out

    # Ctrl-C: the whole graph exits promptly and without a traceback
    assert_clean_exit(default_launch)
    assert "active: processing input" in default_launch.output


def test_every_launch_argument(ros2_env, tmp_path):
    env = ros2_env
    params = yaml.safe_load(EDGE_YAML.read_text())
    node_params = params["/**/tinygpt_node"]["ros__parameters"]
    node_params.update(fusion_threshold=0.7, backend="torch")  # backend:= below must win
    params_file = tmp_path / "robot1.yaml"
    params_file.write_text(yaml.safe_dump(params))
    launch = Launch(env, "namespace:=robot1", "backend:=onnxruntime", "image_topic:=/cam/rgb",
                    "autostart:=false", f"params_file:={params_file}", "log_level:=debug")
    node = "/robot1/tinygpt_node"
    try:
        # autostart:=false leaves it unconfigured until configured by hand
        assert wait_for_state(env, node, "unconfigured [1]")
        assert "Transitioning successful" in ros2(env, "lifecycle", "set", node, "configure")
        assert "Transitioning successful" in ros2(env, "lifecycle", "set", node, "activate")
        assert ros2(env, "lifecycle", "get", node).startswith("active [3]")
        # params_file applied, the backend argument overrides it
        assert "Double value is: 0.7" in ros2(env, "param", "get", node, "fusion_threshold")
        assert "String value is: onnxruntime" in ros2(env, "param", "get", node, "backend")
        # image_topic remapped; outputs in the namespace
        out = echo_one_caption(env, "/robot1/caption", "/cam/rgb")
        assert re.search(r"^data: \S", out, re.M), out
        assert_clean_exit(launch)
        assert "[DEBUG]" in launch.output  # log_level:=debug reached the nodes
    finally:
        launch.kill()


def test_show_args(ros2_env):
    out = ros2(ros2_env, "launch", "tinygpt_ros", "edge.launch.py", "--show-args")
    for name, (_, description) in LAUNCH_ARGUMENTS.items():
        assert f"'{name}':" in out, name
        assert description.split()[0] in out, name
