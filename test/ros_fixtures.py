"""Engine and node fixtures shared by the ROS-layer tests.

Every engine-dependent ROS test runs the real engine (`deploy.factory.load_engine`) on the shipped
trained model in models/tinygpt; TINYGPT_ROS_TEST_MODEL_DIR points them at another model
directory (e.g. one made with `tinygpt-ros train --preset tiny`).

Test modules load this file with `pytest_plugins = ["ros_fixtures"]` and use only its fixtures:
`engine_factory`, `model_dir`, `tinygpt` (make a TinyGptNode) and `lifecycle` (drive one through
its lifecycle services).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from lifecycle_msgs.msg import State, Transition
from lifecycle_msgs.srv import ChangeState, GetState
from rclpy.parameter import Parameter
from rclpy.qos import QoSProfile, ReliabilityPolicy

from tinygpt_ros.deploy.factory import load_engine
from tinygpt_ros.ros.node import TinyGptNode

RELIABLE = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
SHIPPED_MODEL_DIR = Path(__file__).resolve().parent.parent / "models" / "tinygpt"


@pytest.fixture
def engine_factory() -> Callable[..., Any]:
    """The factory the node uses in production."""
    return load_engine


@pytest.fixture
def model_dir() -> str:
    """The shipped trained model (or TINYGPT_ROS_TEST_MODEL_DIR)."""
    return os.environ.get("TINYGPT_ROS_TEST_MODEL_DIR") or str(SHIPPED_MODEL_DIR)


class Lifecycle:
    """Drive a lifecycle node through its services, as `ros2 lifecycle set/get` do."""

    def __init__(self, ros, target: str) -> None:
        self.ros = ros
        self.client_node = ros.make_node(f"lc_client_{int(time.monotonic_ns() % 1_000_000)}")
        self.change = self.client_node.create_client(ChangeState, f"{target}/change_state")
        self.get = self.client_node.create_client(GetState, f"{target}/get_state")

    def transition(self, transition_id: int) -> bool:
        req = ChangeState.Request(transition=Transition(id=transition_id))
        return bool(self.ros.call(self.change, req, timeout=20.0).success)

    def state(self) -> str:
        return self.ros.call(self.get, GetState.Request()).current_state.label

    def configure(self) -> bool:
        return self.transition(Transition.TRANSITION_CONFIGURE)

    def activate(self) -> bool:
        return self.transition(Transition.TRANSITION_ACTIVATE)

    def deactivate(self) -> bool:
        return self.transition(Transition.TRANSITION_DEACTIVATE)

    def cleanup(self) -> bool:
        return self.transition(Transition.TRANSITION_CLEANUP)

    def shutdown(self) -> bool:
        ids = {
            State.PRIMARY_STATE_UNCONFIGURED: Transition.TRANSITION_UNCONFIGURED_SHUTDOWN,
            State.PRIMARY_STATE_INACTIVE: Transition.TRANSITION_INACTIVE_SHUTDOWN,
            State.PRIMARY_STATE_ACTIVE: Transition.TRANSITION_ACTIVE_SHUTDOWN,
        }
        current = self.ros.call(self.get, GetState.Request()).current_state.id
        return self.transition(ids[current])


@pytest.fixture
def tinygpt(ros, engine_factory, model_dir) -> Iterator[Callable[..., TinyGptNode]]:
    """`tinygpt(name=..., factory=..., **param_overrides)` -> a TinyGptNode in the test context
    (spun by the harness) using the switchable engine and model dir unless overridden."""

    def make(name: str = "tinygpt_node", factory=None, **overrides: Any) -> TinyGptNode:
        overrides.setdefault("model_dir", model_dir)
        # The tests publish PointCloud2 events unless they ask for EventPacket: 'auto' would
        # pick EventPacket wherever event_camera_msgs is built (the Kilted environment).
        overrides.setdefault("events_msg_type", "pointcloud2")
        plist = [Parameter(k, value=v) for k, v in overrides.items()]
        node = TinyGptNode(factory or engine_factory, node_name=name, context=ros.context,
                           parameter_overrides=plist)
        ros.add_node(node)
        return node

    yield make


@pytest.fixture
def lifecycle(ros) -> Callable[[str], Lifecycle]:
    """`lifecycle("tinygpt_node")` -> a client for that node's lifecycle services."""
    return lambda target="tinygpt_node": Lifecycle(ros, target)
