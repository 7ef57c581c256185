"""A node executable whose parent dies shuts down as on Ctrl-C (`ros/spin.py`
`exit_with_parent`): `ros2 launch` killed with SIGTERM or SIGKILL exits at once and would leave
its nodes running, orphaned, still processing frames. Real processes: a parent starts the
executable, the parent is killed, the executable must be gone soon after."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest
from conftest import ros_domain_id

PARENT = textwrap.dedent("""
    import subprocess, sys, time
    child = subprocess.Popen([sys.executable, "-m", sys.argv[1]])
    print(child.pid, flush=True)
    time.sleep(120)
""")


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split()[2] != "Z"  # a zombie has exited (its parent is gone too)
    except FileNotFoundError:
        return False


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")
@pytest.mark.parametrize("module", ["tinygpt_ros.ros.node", "tinygpt_ros.ros.manager"])
def test_an_orphaned_node_executable_shuts_down(module):
    env = dict(os.environ, ROS_DOMAIN_ID=str(ros_domain_id()),
               ROS_AUTOMATIC_DISCOVERY_RANGE="LOCALHOST")
    parent = subprocess.Popen([sys.executable, "-c", PARENT, module], env=env,
                              stdout=subprocess.PIPE, text=True, start_new_session=True)
    child = int(parent.stdout.readline())
    try:
        time.sleep(3.0)  # up and spinning
        assert _alive(child), "the executable did not start"
        parent.kill()
        parent.wait(10)
        deadline = time.monotonic() + 15.0
        while _alive(child) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not _alive(child), "the executable outlived its parent"
    finally:
        if _alive(child):
            os.kill(child, signal.SIGKILL)
