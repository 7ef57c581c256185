"""config/fastdds_large_images.xml, the Fast DDS profile the README gives a camera driver's
process: it must load, and a process using it must still deliver whole 640x480 rgb8 frames to
a subscriber with Fast DDS's default transports (this package's node sets nothing).
Interoperation is the point: FASTDDS_BUILTIN_TRANSPORTS=LARGE_DATA set for the node's process
alone cut it off from a default-configured one (bench-node never saw it become active).
A profile Fast DDS rejects (a message size above the segment) fails both tests."""

from __future__ import annotations

import os
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

PROFILE = Path(__file__).resolve().parent.parent / "config" / "fastdds_large_images.xml"
NS = "{http://www.eprosima.com}"

PUBLISHER = """
import sys, time
import numpy as np
import rclpy
from rclpy.qos import QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import Image
rclpy.init(domain_id=int(sys.argv[1]))
node = rclpy.create_node("camera_with_profile")
pub = node.create_publisher(Image, "camera/image_raw",
                            QoSProfile(depth=5, reliability=ReliabilityPolicy.RELIABLE))
frame = np.arange(480 * 640 * 3, dtype=np.uint32).astype(np.uint8)
msg = Image(height=480, width=640, encoding="rgb8", step=640 * 3, data=frame.tobytes())
deadline = time.monotonic() + 20
while time.monotonic() < deadline:
    pub.publish(msg)
    time.sleep(0.1)
"""


def test_the_profile_gives_shared_memory_room_for_a_raw_frame():
    root = ET.parse(PROFILE).getroot()
    shm = [t for t in root.iter(f"{NS}transport_descriptor") if t.findtext(f"{NS}type") == "SHM"]
    assert len(shm) == 1
    segment = int(shm[0].findtext(f"{NS}segment_size"))
    largest = int(shm[0].findtext(f"{NS}maxMessageSize"))
    assert 640 * 480 * 3 < largest <= segment  # Fast DDS refuses a message above the segment
    participant = root.find(f"{NS}profiles/{NS}participant")
    assert participant.get("is_default_profile") == "true"
    kinds = {t.findtext(f"{NS}type") for t in root.iter(f"{NS}transport_descriptor")}
    assert "UDPv4" in kinds  # discovery with default-configured processes


def test_a_camera_process_with_the_profile_reaches_a_default_subscriber(ros):
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import Image

    if os.environ.get("RMW_IMPLEMENTATION", "rmw_fastrtps_cpp") != "rmw_fastrtps_cpp":
        pytest.skip("the profile is for Fast DDS (rmw_fastrtps_cpp)")
    for var in ("FASTDDS_DEFAULT_PROFILES_FILE", "FASTRTPS_DEFAULT_PROFILES_FILE"):
        assert var not in os.environ  # this side: Fast DDS's defaults
    node = ros.make_node("default_subscriber")
    got: list[Image] = []
    node.create_subscription(Image, "camera/image_raw", got.append,
                             QoSProfile(depth=5, reliability=ReliabilityPolicy.RELIABLE))
    # Fast DDS 3 (Kilted) reads the first variable, Fast DDS 2 (Humble, Jazzy) the second
    env = {**os.environ, "FASTDDS_DEFAULT_PROFILES_FILE": str(PROFILE),
           "FASTRTPS_DEFAULT_PROFILES_FILE": str(PROFILE)}
    proc = subprocess.Popen([sys.executable, "-c", PUBLISHER, str(ros.domain_id)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        ros.spin_until(lambda: len(got) >= 3 or proc.poll() is not None, timeout=20)
    finally:
        proc.kill()
        out = proc.communicate()[0]
    assert len(got) >= 3, f"no frames from the profiled publisher; its output:\n{out}"
    assert len(got[-1].data) == 640 * 480 * 3 and got[-1].encoding == "rgb8"
    assert "Error" not in out and "error" not in out.lower(), out
