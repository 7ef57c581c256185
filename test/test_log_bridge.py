"""The package's Python logging reaches the node's rclpy logger (console and /rosout), at the
node's level: debug lines only when the node logs at debug.

Each case runs in a fresh interpreter, as a node process is: what earlier tests did to this
process's logging (handlers, levels, disabled loggers, rcutils severities) cannot decide it."""

from __future__ import annotations

import json
import subprocess
import sys

from conftest import ros_domain_id

SCRIPT = r"""
import json, logging, logging.config, sys, time
import rclpy
from rcl_interfaces.msg import Log
from rclpy.logging import LoggingSeverity
from tinygpt_ros.ros import log_bridge

level, disable_first = sys.argv[1], sys.argv[2] == "1"
lib = logging.getLogger("tinygpt_ros.deploy.providers")
if disable_first:  # what Ray's own logging setup does to every existing logger
    logging.config.dictConfig({"version": 1, "disable_existing_loggers": True})
ctx = rclpy.Context()
rclpy.init(context=ctx, domain_id=int(sys.argv[3]))
listener = rclpy.create_node("rosout_listener", context=ctx)
seen = []
listener.create_subscription(Log, "/rosout", lambda m: seen.append([m.level, m.msg]), 100)
node = rclpy.create_node("bridged", context=ctx)
node.get_logger().set_level(getattr(LoggingSeverity, level))
handler = log_bridge.install(node.get_logger())
ex = rclpy.executors.SingleThreadedExecutor(context=ctx)
ex.add_node(listener)
ex.add_node(node)
deadline = time.monotonic() + 20
while time.monotonic() < deadline and not any("warned" in m for _, m in seen):
    lib.debug("debugged")  # again until /rosout has matched
    lib.warning("warned")
    ex.spin_once(timeout_sec=0.05)
for _ in range(10):
    ex.spin_once(timeout_sec=0.02)
log_bridge.remove(handler)
tree = logging.getLogger("tinygpt_ros")
print(json.dumps({"seen": [s for s in seen if "providers" in s[1]],
                  "handler_removed": handler not in tree.handlers,
                  "propagate_restored": tree.propagate}))
"""


def _run(level: str, disable_first: bool = False) -> dict:
    out = subprocess.run(
        [sys.executable, "-c", SCRIPT, level, "1" if disable_first else "0",
         str(ros_domain_id())],
        capture_output=True, text=True, timeout=120, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_package_logging_reaches_rosout_at_the_nodes_level():
    from rcl_interfaces.msg import Log

    got = _run("DEBUG")
    levels = {msg: level for level, msg in got["seen"]}
    assert levels["[deploy.providers] warned"] == Log.WARN
    assert levels["[deploy.providers] debugged"] == Log.DEBUG
    assert got["handler_removed"] and got["propagate_restored"]


def test_debug_lines_stay_quiet_at_info():
    got = _run("INFO")
    msgs = {msg for _, msg in got["seen"]}
    assert "[deploy.providers] warned" in msgs
    assert not any("debugged" in m for m in msgs)


def test_bridge_survives_a_library_disabling_existing_loggers():
    """dictConfig(disable_existing_loggers=True), as Ray calls it, must not mute the package."""
    got = _run("INFO", disable_first=True)
    assert any("warned" in m for _, m in got["seen"])
