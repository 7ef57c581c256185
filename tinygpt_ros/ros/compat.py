"""One code path for Humble, Jazzy and Kilted: rclpy features that not every supported distro has,
detected by presence (never by version strings), each with the fallback used where it is missing.

| feature (used by)                                     | Humble (rclpy 3.3)      | Jazzy, Kilted |
|-------------------------------------------------------|-------------------------|---------------|
| `Node.add_post_set_parameters_callback` (node)        | missing (Iron+)         | present       |
| `Node.add_pre_set_parameters_callback` (not used)     | missing (Iron+)         | present       |
| `ROS_AUTOMATIC_DISCOVERY_RANGE` (tests, demo, eval)   | reads ROS_LOCALHOST_ONLY | read         |

The fallbacks are exercised by tests that hide the newer API (`test_compat.py`, and the
Humble leg of scripts/test.sh). Checked and needing no fallback (present in Humble's rclpy):
`rclpy.lifecycle` (LifecycleNode, create/destroy_lifecycle_publisher), `rclpy.init(domain_id=)`
with a `Context`, `rclpy.try_shutdown`, `ExternalShutdownException`, `MultiThreadedExecutor`,
parameter descriptors with ranges, `get_effective_level` of the rclpy logger; the message
definitions the node uses are the same on all three; the launch file passes `namespace`, which
Humble's `LifecycleNode` action requires.
"""

from __future__ import annotations

from collections.abc import Callable, MutableMapping
from typing import Any

ParamsCallback = Callable[[list[Any]], Any]


def add_parameter_callbacks(node: Any, validate: ParamsCallback, apply: ParamsCallback) -> str:
    """Register `validate` (returns SetParametersResult, changes nothing) and `apply` (called with
    the parameters once they are set). Returns which mechanism was used. (Pre-set callbacks,
    also missing in Humble, are not used: the node converts integers for doubles in its
    `set_parameters` override instead.)

    Humble lacks post-set callbacks: there `apply` runs from the on-set callback once `validate`
    accepted the whole call. The node registers only this one on-set callback, so nothing can
    refuse the call after it, and the effect is the same: only accepted values are applied.
    """
    if callable(getattr(node, "add_post_set_parameters_callback", None)):
        node.add_on_set_parameters_callback(validate)
        node.add_post_set_parameters_callback(apply)
        return "post_set"

    def validate_then_apply(params: list[Any]) -> Any:
        result = validate(params)
        if result.successful:
            apply(params)
        return result

    node.add_on_set_parameters_callback(validate_then_apply)
    return "on_set"


def localhost_discovery(env: MutableMapping[str, str]) -> None:
    """Keep discovery on this machine on every distro: Iron and later read
    ROS_AUTOMATIC_DISCOVERY_RANGE, Humble reads ROS_LOCALHOST_ONLY. A value the user set wins.
    ROS_LOCALHOST_ONLY is only added where the range variable is unknown to the distro, since
    Jazzy and Kilted warn that it is deprecated; `range_supported` decides that below."""
    env.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    if not discovery_range_supported():
        env.setdefault("ROS_LOCALHOST_ONLY", "1")


def discovery_range_supported() -> bool:
    """Whether this rclpy's middleware reads ROS_AUTOMATIC_DISCOVERY_RANGE (Iron and later). The
    same release added post-set parameter callbacks to rclpy, the cheapest feature to probe
    without starting a context."""
    from rclpy.node import Node

    return callable(getattr(Node, "add_post_set_parameters_callback", None))
