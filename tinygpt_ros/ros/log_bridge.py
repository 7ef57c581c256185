"""Python `logging` -> the node's rclpy logger.

The package's library code logs with `logging.getLogger(__name__)` (it imports no ROS). Inside a
node those records would go to stderr unformatted and ignore `--log-level`; this bridge sends
every record of the `tinygpt_ros` logger tree to the node's rclpy logger, so they reach the
console, log files and /rosout like the node's own lines, and sets the tree's level from the
node's so `ros2 launch ... log_level:=debug` shows the package's debug lines.
"""

from __future__ import annotations

import logging
from typing import Any

from rclpy.logging import LoggingSeverity

PACKAGE_LOGGER = "tinygpt_ros"

_TO_PYTHON = {
    LoggingSeverity.DEBUG: logging.DEBUG,
    LoggingSeverity.INFO: logging.INFO,
    LoggingSeverity.WARN: logging.WARNING,
    LoggingSeverity.ERROR: logging.ERROR,
    LoggingSeverity.FATAL: logging.CRITICAL,
}


class RclpyLogHandler(logging.Handler):
    """Forwards records to an rclpy logger (`node.get_logger()`) at the matching severity."""

    def __init__(self, ros_logger: Any) -> None:
        super().__init__()
        self._ros = ros_logger
        self.previous: tuple[bool, int] = (True, logging.NOTSET)  # the tree's, before install

    def emit(self, record: logging.LogRecord) -> None:
        try:
            text = f"[{record.name.removeprefix(PACKAGE_LOGGER + '.')}] {record.getMessage()}"
            if record.levelno >= logging.CRITICAL:
                self._ros.fatal(text)
            elif record.levelno >= logging.ERROR:
                self._ros.error(text)
            elif record.levelno >= logging.WARNING:
                self._ros.warning(text)
            elif record.levelno >= logging.INFO:
                self._ros.info(text)
            else:
                self._ros.debug(text)
        except Exception:  # a logging failure must never take the node down
            self.handleError(record)


def install(ros_logger: Any) -> RclpyLogHandler:
    """Route the package's Python logging to `ros_logger`; returns the handler for `remove`."""
    handler = RclpyLogHandler(ros_logger)
    tree = logging.getLogger(PACKAGE_LOGGER)
    # A library's logging.config.dictConfig(disable_existing_loggers=True) (Ray's does, unless
    # told not to) silently disables every logger that existed then, ours included.
    for name, logger in logging.Logger.manager.loggerDict.items():
        if isinstance(logger, logging.Logger) and (
                name == PACKAGE_LOGGER or name.startswith(PACKAGE_LOGGER + ".")):
            logger.disabled = False
    handler.previous = (tree.propagate, tree.level)
    tree.addHandler(handler)
    tree.propagate = False  # not twice (root handlers print to stderr unformatted)
    tree.setLevel(_TO_PYTHON.get(LoggingSeverity(ros_logger.get_effective_level()), logging.INFO))
    return handler


def remove(handler: RclpyLogHandler) -> None:
    """Undo `install`: the tree's propagation and level are as they were before it."""
    tree = logging.getLogger(PACKAGE_LOGGER)
    tree.removeHandler(handler)
    tree.propagate, level = handler.previous
    tree.setLevel(level)
