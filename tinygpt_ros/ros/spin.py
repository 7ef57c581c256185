"""The body of a node executable: init, spin one node until Ctrl-C, clean shutdown."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import rclpy
from rclpy.exceptions import InvalidHandle
from rclpy.executors import ExternalShutdownException

log = logging.getLogger(__name__)


def spin_forever(executor: Any) -> None:
    """`executor.spin()` that survives a known rclpy race: when a lifecycle cleanup destroys a
    publisher or subscription while another executor thread is building its wait set, rclpy
    (9.x) skips entering the destroyed QoS-event handler but still adds it, and `spin` raises
    InvalidHandle, which ended the whole process (seen over repeated lifecycle cycles). The
    executor builds a fresh wait set on the next spin, so spinning again is safe."""
    while True:
        try:
            executor.spin()
            return
        except InvalidHandle as exc:
            log.warning("executor: an entity was destroyed while waiting (%s); spinning on", exc)


def spin_node_main(make_node: Callable[[], Any], make_executor: Callable[[], Any],
                   args: list[str] | None = None) -> None:
    rclpy.init(args=args)
    node = make_node()
    executor = make_executor()
    executor.add_node(node)
    try:
        spin_forever(executor)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        executor.remove_node(node)
        node.destroy_node()
        executor.shutdown()
        rclpy.try_shutdown()
