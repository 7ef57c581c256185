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
                "config/fastdds_large_images.xml",
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


def _plain_bash(script: str) -> str:
    """Run `script` in a fresh bash with the environment of a new login shell (no ROS, no venv,
    no AMENT_PREFIX_PATH), as a user who just opened a terminal."""
    env = {k: os.environ[k] for k in ("HOME", "USER", "LANG") if k in os.environ}
    env["PATH"] = "/usr/local/bin:/usr/bin:/bin"
    return subprocess.run(["bash", "--noprofile", "--norc", "-c", script], capture_output=True,
                          text=True, check=True, cwd=REPO, env=env).stdout


def test_sourcing_install_setup_exports_ament_prefix_path():
    """`source install/setup.bash` in a plain shell: AMENT_PREFIX_PATH names our install, and
    the ament index lookup `ros2 pkg prefix tinygpt_ros` does (a marker file under
    share/ament_index in one of its prefixes) finds the package."""
    venv_python = REPO / ".venv" / "bin" / "python"
    out = _plain_bash(
        "source install/setup.bash\n"
        'echo "prefix_path=$AMENT_PREFIX_PATH"\n'
        "IFS=: read -ra prefixes <<< \"$AMENT_PREFIX_PATH\"\n"
        'for p in "${prefixes[@]}"; do\n'
        '  [ -e "$p/share/ament_index/resource_index/packages/tinygpt_ros" ] && echo "found=$p"\n'
        "done\n"
        f"{venv_python} -c 'from ament_index_python.packages import get_package_prefix as g; "
        "print(\"python=\" + g(\"tinygpt_ros\"))'\n"
    )
    lines = dict(line.split("=", 1) for line in out.splitlines() if "=" in line)
    install = str(REPO / "install")
    assert install in lines["prefix_path"].split(":"), out
    assert lines.get("found") == install, out
    assert lines["python"] == install, out


def test_venv_python_finds_the_share_directory_without_sourcing():
    venv_python = REPO / ".venv" / "bin" / "python"
    out = _plain_bash(
        f"{venv_python} -c 'from ament_index_python.packages import "
        "get_package_share_directory as g; print(g(\"tinygpt_ros\"))'"
    )
    assert out.strip() == str(REPO / "install" / "share" / "tinygpt_ros"), out
