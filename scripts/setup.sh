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
  "$venv/bin/python" -c "import rclpy, torch, cv2, onnxruntime, rosbags, pycocoevalcap" \
    || { echo "[setup] dependency install failed" >&2; exit 1; }
  echo "$want" > "$stamp"
fi

# Without a sourced ROS distro nothing sets AMENT_PREFIX_PATH; this hook (a module the venv's .pth
# imports at start-up) points it at our colcon install (share/tinygpt_ros, lib/tinygpt_ros) and at
# the venv, and the .pth puts the package on sys.path. It leaves colcon's own helper alone:
# `source install/setup.bash` runs _local_setup_util_sh.py with this python to work out which
# variables to export, and would export nothing if the variable were already set inside it.
site=$("$venv/bin/python" -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")
cat > "$site/_tinygpt_ros_env.py" <<PY
"""Written by scripts/setup.sh: AMENT_PREFIX_PATH for the venv python without a sourced setup."""
import os
import sys

PREFIXES = ['$repo/install', sys.prefix]


def _is_colcon_setup_helper() -> bool:
    script = os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else ''
    return script.startswith('_local_setup_util')


if not _is_colcon_setup_helper():
    _current = os.environ.get('AMENT_PREFIX_PATH', '').split(os.pathsep)
    os.environ['AMENT_PREFIX_PATH'] = os.pathsep.join(
        dict.fromkeys(p for p in PREFIXES + _current if p))
PY
cat > "$site/tinygpt_ros_env.pth" <<PTH
import _tinygpt_ros_env
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
