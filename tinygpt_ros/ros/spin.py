"""The body of a node executable: init, spin one node until Ctrl-C, clean shutdown."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import rclpy
from rclpy.executors import ExternalShutdownException


def spin_node_main(make_node: Callable[[], Any], make_executor: Callable[[], Any],
                   args: list[str] | None = None) -> None:
    rclpy.init(args=args)
    node = make_node()
    executor = make_executor()
    executor.add_node(node)
    try:
        executor.spin()
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        executor.remove_node(node)
        node.destroy_node()
        executor.shutdown()
        rclpy.try_shutdown()
