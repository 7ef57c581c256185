#!/usr/bin/env bash
# Set up (idempotent), bring up the node graph and play the bundled sample bag into it:
# captions and gestures print as they arrive, then a compute-budget summary. Extra args go to
# `tinygpt-ros demo` (e.g. --rate 1 for original timing, --image-transport compressed).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash scripts/setup.sh
export ROS_AUTOMATIC_DISCOVERY_RANGE=${ROS_AUTOMATIC_DISCOVERY_RANGE:-LOCALHOST}
exec .venv/bin/python -m tinygpt_ros.cli demo "$@"
