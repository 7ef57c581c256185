#!/usr/bin/env bash
# Set up (idempotent), ruff, and the whole test suite: what CI runs.
#   1. Kilted (.venv): every test.
#   2. Humble fallbacks: the node's parameter and lifecycle tests again with the rclpy API that
#      Humble lacks hidden (tinygpt_ros/ros/compat.py), in the Kilted environment.
#   3. Jazzy (.venv-jazzy, PyPI wheels, no torch): the ROS-facing tests that need no torch.
# Extra arguments go to pytest and run only leg 1 (e.g. `scripts/test.sh test/test_node_io.py`).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash scripts/setup.sh
.venv/bin/ruff check tinygpt_ros test launch scripts
if [ "$#" -gt 0 ]; then
  exec .venv/bin/python -m pytest "$@"
fi
echo "[test] leg 1/3: ROS 2 Kilted, every test"
.venv/bin/python -m pytest
echo "[test] leg 2/3: Humble fallbacks (newer rclpy API hidden)"
TINYGPT_ROS_EMULATE_HUMBLE=1 .venv/bin/python -m pytest -q \
  test/test_compat.py test/test_node_params.py test/test_node_lifecycle.py
echo "[test] leg 3/3: ROS 2 Jazzy, ROS-facing tests (no torch)"
TINYGPT_ROS_DISTRO=jazzy bash scripts/setup.sh
TINYGPT_ROS_TEST_LEG=ros .venv-jazzy/bin/python -m pytest
