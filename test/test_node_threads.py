"""The node sets its own thread limits: started the way a user starts it (edge_bringup in its
own process) with no OMP/BLAS variable in its environment, it reports the pools capped at the
parameters' values. This checks the applied configuration, never timing."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import yaml
from diagnostic_msgs.msg import DiagnosticArray
from rclpy.qos import QoSProfile, ReliabilityPolicy

from tinygpt_ros.evaluation.node_bench import THREAD_ENV
from tinygpt_ros.ros.graph import default_params_file
from tinygpt_ros.runtime.threads import DEFAULT_BLAS_THREADS, DEFAULT_INTRA_OP_THREADS


def _clean_env(domain_id: int) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in THREAD_ENV}
    env["ROS_DOMAIN_ID"] = str(domain_id)
    env["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
    return env


def _reported_threads(ros, params_file: str, namespace: str, tmp_path: Path) -> str:
    """Start the graph in a subprocess and return the `threads` value of its first summary."""
    got: list[str] = []

    def on_diag(msg):
        for st in msg.status:
            if st.name == "tinygpt_node: summary":
                got.extend(kv.value for kv in st.values if kv.key == "threads")

    listener = ros.make_node("threads_listener")
    listener.create_subscription(DiagnosticArray, "/diagnostics", on_diag,
                                 QoSProfile(depth=20, reliability=ReliabilityPolicy.RELIABLE))
    log = tmp_path / f"{namespace}.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "tinygpt_ros.ros.bringup", "--namespace", namespace,
             "--params-file", params_file, "--log-level", "info"],
            env=_clean_env(ros.domain_id), stdout=out, stderr=subprocess.STDOUT)
        try:
            ros.spin_until(lambda: bool(got) or proc.poll() is not None, timeout=90.0)
        finally:
            proc.terminate()
            proc.wait(timeout=30)
    assert got, f"no summary with thread limits; node log:\n{log.read_text()[-3000:]}"
    assert "thread limits:" in log.read_text()  # also logged once on configure
    return got[0]


def _pools(summary: str, kind: str) -> list[int]:
    field = re.search(rf"{kind} (\S+)", summary)
    assert field, summary
    return [int(p.rsplit(":", 1)[-1]) for p in field.group(1).split(",") if p != "-"]


def test_node_in_a_clean_environment_applies_its_default_thread_limits(ros, tmp_path):
    assert not any(k in _clean_env(0) for k in THREAD_ENV)
    summary = _reported_threads(ros, default_params_file(), "threads_default", tmp_path)
    assert f"blas_threads={DEFAULT_BLAS_THREADS}" in summary
    assert _pools(summary, "blas") and set(_pools(summary, "blas")) == {DEFAULT_BLAS_THREADS}
    assert _pools(summary, "opencv") == [DEFAULT_BLAS_THREADS]
    assert _pools(summary, "onnxruntime") == [DEFAULT_INTRA_OP_THREADS]


def test_node_applies_thread_parameters_from_its_params_file(ros, tmp_path):
    doc = yaml.safe_load(Path(default_params_file()).read_text())
    doc["/**/tinygpt_node"]["ros__parameters"].update({"blas_threads": 3,
                                                       "intra_op_threads": 2})
    params = tmp_path / "threads.yaml"
    params.write_text(yaml.safe_dump(doc))
    summary = _reported_threads(ros, str(params), "threads_custom", tmp_path)
    assert set(_pools(summary, "blas")) == {3}
    assert _pools(summary, "opencv") == [3]
    assert _pools(summary, "onnxruntime") == [2]
