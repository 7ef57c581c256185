"""The package's Python logging reaches the node's rclpy logger (console and /rosout), at the
node's level: debug lines only when the node logs at debug."""

from __future__ import annotations

import logging

from rcl_interfaces.msg import Log
from rclpy.logging import LoggingSeverity

from tinygpt_ros.ros import log_bridge


def _rosout(ros, texts: list[tuple[int, str]]) -> None:
    listener = ros.make_node("rosout_listener")
    listener.create_subscription(Log, "/rosout", lambda m: texts.append((m.level, m.msg)), 100)


def test_package_logging_reaches_rosout_at_the_nodes_level(ros):
    texts: list[tuple[int, str]] = []
    _rosout(ros, texts)
    node = ros.make_node("bridged")
    node.get_logger().set_level(LoggingSeverity.DEBUG)
    handler = log_bridge.install(node.get_logger())
    try:
        lib = logging.getLogger("tinygpt_ros.deploy.providers")

        def emit() -> bool:  # again until /rosout has matched (a loaded machine takes a while)
            lib.debug("engine cache at %s", "/tmp/x")
            lib.warning("provider %s unavailable", "CUDA")
            return len({t for t in texts if "deploy.providers" in t[1]}) >= 2

        assert ros.spin_until(emit)
        got = {msg: level for level, msg in texts if "deploy.providers" in msg}
        assert got["[deploy.providers] engine cache at /tmp/x"] == Log.DEBUG
        assert got["[deploy.providers] provider CUDA unavailable"] == Log.WARN
    finally:
        log_bridge.remove(handler)
    tree = logging.getLogger("tinygpt_ros")
    assert handler not in tree.handlers
    assert tree.propagate  # as before install: pytest's capture (and a user's root) still see it


def test_bridge_survives_a_library_disabling_existing_loggers(ros):
    """dictConfig(disable_existing_loggers=True), as Ray calls it, must not mute the package."""
    import logging.config

    lib = logging.getLogger("tinygpt_ros.runtime.threads")
    others = {n: lg.disabled for n, lg in logging.Logger.manager.loggerDict.items()
              if isinstance(lg, logging.Logger)}
    logging.config.dictConfig({"version": 1, "disable_existing_loggers": True})
    assert lib.disabled
    texts: list[tuple[int, str]] = []
    _rosout(ros, texts)
    node = ros.make_node("bridged_after_dictconfig")
    handler = log_bridge.install(node.get_logger())
    try:
        def emit() -> bool:
            lib.warning("still heard")
            return any("still heard" in m for _, m in texts)

        assert ros.spin_until(emit)
    finally:
        log_bridge.remove(handler)
        for name, was in others.items():  # leave the other tests the loggers as they were
            logging.getLogger(name).disabled = was


def test_debug_lines_stay_quiet_at_info(ros):
    texts: list[tuple[int, str]] = []
    _rosout(ros, texts)
    node = ros.make_node("bridged_info")
    node.get_logger().set_level(LoggingSeverity.INFO)
    handler = log_bridge.install(node.get_logger())
    try:
        lib = logging.getLogger("tinygpt_ros.runtime.streaming")

        def emit() -> bool:  # again until /rosout has matched (a loaded machine takes a while)
            lib.debug("hidden")
            lib.info("shown")
            return any("shown" in m for _, m in texts)

        assert ros.spin_until(emit)
        ros.spin_for(0.2)
        assert not any("hidden" in m for _, m in texts)
    finally:
        log_bridge.remove(handler)
