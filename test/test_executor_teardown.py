"""Tearing down a node graph spun in a background thread prints nothing: with `ExecutorThread`,
dispatching stops and the running callbacks end before the executor shuts down and the nodes are
destroyed. (Spinning with `executor.spin()` and stopping it with `executor.shutdown()` printed
"The following exception was never retrieved: cannot use Destroyable because destruction was
requested" after most live evaluations: rclpy destroys the executor's guard condition while
callbacks still run.) Real rclpy, in a subprocess so messages printed at exit are seen."""

from __future__ import annotations

import os
import subprocess
import sys

from conftest import ros_domain_id

SCRIPT = r"""
import gc, sys, time
import rclpy
from rclpy.executors import MultiThreadedExecutor
from std_msgs.msg import String
from tinygpt_ros.ros.bringup import ExecutorThread, tear_down

for cycle in range(int(sys.argv[1])):
    ctx = rclpy.Context()
    rclpy.init(context=ctx, domain_id=int(sys.argv[2]))
    executor = MultiThreadedExecutor(num_threads=4, context=ctx)
    nodes, got = [], []
    for k in range(3):
        node = rclpy.create_node(f"busy_{k}", context=ctx)
        pub = node.create_publisher(String, "chatter", 10)
        node.create_subscription(String, "chatter", got.append, 10)
        node.create_timer(0.001, lambda pub=pub: pub.publish(String(data="x")))
        executor.add_node(node)
        nodes.append(node)
    spinner = ExecutorThread(executor)
    spinner.start()
    deadline = time.monotonic() + 10.0
    while len(got) < 20 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert got, "no callback ran"
    tear_down(executor, nodes, spinner)
    rclpy.shutdown(context=ctx)
    gc.collect()
print("cycles done", file=sys.stderr)
"""


def test_busy_graph_tears_down_without_unretrieved_exceptions():
    env = {**os.environ, "ROS_AUTOMATIC_DISCOVERY_RANGE": "LOCALHOST"}
    out = subprocess.run([sys.executable, "-c", SCRIPT, "8", str(ros_domain_id())],
                         capture_output=True, text=True, timeout=240, env=env)
    assert out.returncode == 0, out.stderr
    assert out.stderr.strip() == "cycles done", out.stderr
