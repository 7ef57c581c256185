#!/usr/bin/env bash
# Create the project-local virtual environment (.venv) with pinned dependencies and build the
# package the ROS way (colcon, ament_python, symlink install into ./install). Idempotent: a second
# run only re-runs the 2-second colcon build.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
repo=$(pwd)
venv="$repo/.venv"
py=${PYTHON:-python3}

if [ ! -x "$venv/bin/python" ]; then
  echo "[setup] creating $venv"
  "$py" -m venv "$venv"
fi
stamp="$venv/.requirements.sha256"
want=$(cat requirements.txt constraints.txt | sha256sum | cut -c1-64)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  echo "[setup] installing pinned dependencies (first run: about a minute)"
  "$venv/bin/python" -m pip install -q --disable-pip-version-check --upgrade pip 2>&1 | grep -v "is ignored" || true
  "$venv/bin/python" -m pip install -q --disable-pip-version-check -r requirements.txt -c constraints.txt 2>&1 \
    | grep -v "is ignored" || true
  "$venv/bin/python" -c "import rclpy, torch, cv2, onnxruntime, rosbags, pycocoevalcap, transformers" \
    || { echo "[setup] dependency install failed" >&2; exit 1; }
  echo "$want" > "$stamp"
fi

# Without a sourced ROS distro nothing sets AMENT_PREFIX_PATH; this .pth points it at our colcon
# install (share/tinygpt_ros, lib/tinygpt_ros) and at the venv, and puts the package on sys.path.
site=$("$venv/bin/python" -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")
cat > "$site/tinygpt_ros_env.pth" <<PTH
import os, sys; os.environ['AMENT_PREFIX_PATH'] = os.pathsep.join(dict.fromkeys([p for p in ['$repo/install', sys.prefix] + os.environ.get('AMENT_PREFIX_PATH', '').split(os.pathsep) if p]))
$repo/build/tinygpt_ros
PTH

mkdir -p "$repo/log"
echo "[setup] colcon build (symlink install)"
(
  source "$venv/bin/activate"
  colcon --log-base "$repo/log" build --symlink-install --merge-install --base-paths "$repo" \
    --build-base "$repo/build" --install-base "$repo/install" >/dev/null 2>"$repo/log/colcon_stderr.txt" \
    || { cat "$repo/log/colcon_stderr.txt" >&2; exit 1; }
)
"$venv/bin/python" -c "
from ament_index_python.packages import get_package_share_directory as g
import tinygpt_ros, os
share = g('tinygpt_ros')
assert os.path.exists(os.path.join(share, 'package.xml')), share
print('[setup] ok: tinygpt_ros', tinygpt_ros.__version__, 'share at', share)
"
