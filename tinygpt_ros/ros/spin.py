"""The body of a node executable: init, spin one node until Ctrl-C, clean shutdown."""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable
from typing import Any

import rclpy
from rclpy.executors import ExternalShutdownException
from rclpy.impl.implementation_singleton import rclpy_implementation as _rclpy


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
    except _rclpy.RCLError:
        # Ctrl-C shuts the context down from the signal handler; when that lands between the
        # executor's `context.ok()` check and building its wait set, rcl raises "rcl_init() was
        # not called or rcl_shutdown() was called" instead of ExternalShutdownException.
        if rclpy.ok():
            raise
    finally:
        # Ctrl-C in a terminal reaches every process of the group and `ros2 launch` forwards it
        # once more: that second SIGINT must not abort the cleanup with a KeyboardInterrupt
        # traceback (SIGTERM, launch's next step, still ends a cleanup that hangs).
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGINT, signal.SIG_IGN)
        executor.remove_node(node)
        node.destroy_node()
        executor.shutdown()
        rclpy.try_shutdown()
