"""The body of a node executable: init, spin one node until Ctrl-C, clean shutdown."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import rclpy
from rclpy.exceptions import InvalidHandle
from rclpy.executors import ExternalShutdownException

log = logging.getLogger(__name__)


def spin_until_shutdown(executor: Any) -> None:
    """`executor.spin()` that survives rclpy's wait-set race.

    When a lifecycle cleanup destroys a subscription or publisher in one executor thread while
    another thread is building the wait set, rclpy (9.1) skips the destroyed QoS event handler
    when entering it but still adds it to the wait set, and `spin()` dies with InvalidHandle
    ("cannot use Destroyable because destruction was requested"), taking the whole graph
    process down. `tinygpt-ros soak`'s lifecycle part found it within a few cycles. The next
    wait set is built without the destroyed entity, so spinning again is safe."""
    while executor.context.ok():
        try:
            executor.spin()
            return
        except InvalidHandle as exc:
            log.debug("executor wait set met a destroyed entity (%s); spinning again", exc)


def spin_node_main(make_node: Callable[[], Any], make_executor: Callable[[], Any],
                   args: list[str] | None = None) -> None:
    rclpy.init(args=args)
    node = make_node()
    executor = make_executor()
    executor.add_node(node)
    try:
        spin_until_shutdown(executor)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        executor.remove_node(node)
        node.destroy_node()
        executor.shutdown()
        rclpy.try_shutdown()
