"""Shared fixtures: an isolated real ROS 2 context per test, and executor spin helpers.

Each test gets its own rclpy Context with localhost-only discovery, on the ROS_DOMAIN_ID the user
set or, when none is set, on a random domain per test, so parallel runs on one machine rarely meet.
Nothing in ROS is mocked.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator

import pytest

from tinygpt_ros.ros import compat
from tinygpt_ros.ros.domain import ros_domain_id

# Must be set before the first rclpy.init: discovery stays on this machine, through the variable
# the distro reads (Kilted ignores ROS_LOCALHOST_ONLY, Humble reads only that one).
os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
compat.localhost_discovery(os.environ)
os.environ.setdefault("RMW_IMPLEMENTATION", "rmw_fastrtps_cpp")
# No OMP_NUM_THREADS here: the node and the benchmark commands set their own thread limits
# (runtime/threads.py), so tests run them the way a robot does.


class RosHarness:
    """A private rclpy context with an executor, nodes it owns, and spin-until helpers."""

    def __init__(self) -> None:
        import rclpy
        from rclpy.executors import SingleThreadedExecutor

        self.domain_id = ros_domain_id()
        self.context = rclpy.Context()
        rclpy.init(context=self.context, domain_id=self.domain_id)
        self.executor = SingleThreadedExecutor(context=self.context)
        self._nodes: list = []

    def make_node(self, name: str, **kwargs):
        """A plain rclpy node in this context, spun by this harness's executor."""
        from rclpy.node import Node

        node = Node(name, context=self.context, **kwargs)
        self.add_node(node)
        return node

    def add_node(self, node) -> None:
        self._nodes.append(node)
        self.executor.add_node(node)

    def spin_until(self, condition: Callable[[], bool], timeout: float = 10.0) -> bool:
        """Spin until `condition()` is true or `timeout` seconds pass; returns the final value."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if condition():
                return True
            self.executor.spin_once(timeout_sec=0.02)
        return bool(condition())

    def spin_for(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            self.executor.spin_once(timeout_sec=0.02)

    def call(self, client, request, timeout: float = 10.0):
        """Call a service the way `ros2 lifecycle` / `ros2 param` do, spinning until it answers."""
        if not self.spin_until(client.service_is_ready, timeout):
            raise TimeoutError(f"service {client.srv_name} not available")
        future = client.call_async(request)
        if not self.spin_until(future.done, timeout):
            raise TimeoutError(f"service {client.srv_name} did not answer")
        return future.result()

    def close(self) -> None:
        import rclpy

        for node in self._nodes:
            self.executor.remove_node(node)
            node.destroy_node()
        self.executor.shutdown()
        if self.context.ok():
            rclpy.shutdown(context=self.context)


@pytest.fixture
def ros() -> Iterator[RosHarness]:
    harness = RosHarness()
    try:
        yield harness
    finally:
        harness.close()


# TINYGPT_ROS_TEST_LEG=ros: only the ROS-facing test files that need no torch (the Jazzy leg of
# scripts/test.sh runs them in an environment without torch, as a robot on onnxruntime would).
_ROS_HINTS = ("rclpy", "ros_fixtures", "tinygpt_ros.ros", "ros2")
_TORCH_HINTS = ("import torch", "from torch", "tinygpt_ros.train", "tinygpt_ros.model",
                "torch_engine", "hf_fixtures", "transformers", "needs torch")


def pytest_ignore_collect(collection_path, config: pytest.Config) -> bool | None:
    if os.environ.get("TINYGPT_ROS_TEST_LEG", "all") != "ros":
        return None
    name = collection_path.name
    if not (name.startswith("test_") and name.endswith(".py")):
        return None
    src = collection_path.read_text()
    ros_facing = any(h in src for h in _ROS_HINTS)
    return True if not ros_facing or any(h in src for h in _TORCH_HINTS) else None


def pytest_configure(config: pytest.Config) -> None:
    """TINYGPT_ROS_EMULATE_HUMBLE=1: run with the rclpy API that Humble lacks hidden, so the
    Humble fallbacks of `tinygpt_ros.ros.compat` carry the node tests (scripts/test.sh)."""
    if os.environ.get("TINYGPT_ROS_EMULATE_HUMBLE") == "1":
        from humble_api import hide

        hide()
