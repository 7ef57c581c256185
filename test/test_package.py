"""The package as ROS sees it: catkin_pkg-valid ament_python, files where ROS tools look."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from ament_index_python.packages import get_package_prefix, get_package_share_directory

REPO = Path(__file__).resolve().parent.parent


def test_colcon_sees_an_ament_python_package():
    colcon = Path(sys.executable).parent / "colcon"
    out = subprocess.run([str(colcon), "list", "--base-paths", str(REPO)], capture_output=True,
                         text=True, check=True, cwd=REPO).stdout
    assert "tinygpt_ros" in out and "(ros.ament_python)" in out, out


def test_share_directory_holds_launch_config_model_and_sample():
    share = Path(get_package_share_directory("tinygpt_ros"))
    for rel in ("package.xml", "launch/edge.launch.py", "config/edge.yaml",
                "models/tinygpt/manifest.json", "models/tinygpt/model.pt",
                "models/tinygpt/onnx/fp32/embed_frames.onnx",
                "models/tinygpt/onnx/fp32/weights.bin",
                "sample/sample_bag/sample_bag.mcap", "sample/sample_bag/refs.json"):
        assert (share / rel).is_file(), rel


def test_executables_are_where_ros2_run_looks():
    lib = Path(get_package_prefix("tinygpt_ros")) / "lib" / "tinygpt_ros"
    for exe in ("tinygpt_node", "lifecycle_manager", "edge_bringup", "tinygpt-ros"):
        assert os.access(lib / exe, os.X_OK), exe
    out = subprocess.run([str(lib / "tinygpt-ros"), "--help"], capture_output=True, text=True,
                         check=True).stdout
    assert "demo" in out and "train" in out
