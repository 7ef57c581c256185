"""EventPacket messages shaped the way each ROS 2 event-camera driver publishes them.

Why: the sample bags and the node tests must carry what a robot's camera sends, not a
simplified stand-in: 'evt3' at 1280x720 as the Prophesee metavision_driver (IMX636, EVK4),
'libcaer' / 'libcaer_cmp' at 640x480 as libcaer_driver (DVXplorer), 'mono' at the model's
128x128. The simulator's events live on the model's 128x128 grid; they are placed on the
driver's sensor at the first pixel of each grid cell, so the node's 'scale' mapping gives the
same grid events back.

Timing as the drivers do it: header.stamp is the host time of the packet's first event (the
window start when it is empty); 'evt3' words carry a 24-bit sensor microsecond clock (started
here 5 s before it wraps, so the sample bag crosses a wrap); 'libcaer' has time_base = the
driver's start time and 31-bit microsecond timestamps since then; 'libcaer_cmp' has time_base =
the packet's first event and 24-bit offsets from it; 'mono' has time_base = header.stamp.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from tinygpt_ros.bags import event_encoders as enc
from tinygpt_ros.ops.event_geometry import sensor_from_grid
from tinygpt_ros.spec.config import EVENT_SENSOR

EVENT_PACKET_TYPE = "event_camera_msgs/msg/EventPacket"
# The upstream definition's fields (ros-event-camera/event_camera_msgs, msg_ros2/EventPacket.msg),
# as interfaces/event_camera_msgs/msg/EventPacket.msg holds them; rosbags needs the text to
# write and read the type.
EVENT_PACKET_MSG = """std_msgs/Header header
uint32 height
uint32 width
uint64 seq
uint64 time_base
string encoding
bool is_bigendian
uint8[] events
"""
DRIVER_SENSORS: dict[str, tuple[int, int]] = {
    "evt3": (1280, 720),
    "libcaer": (640, 480),
    "libcaer_cmp": (640, 480),
    "mono": (EVENT_SENSOR, EVENT_SENSOR),
}
DRIVERS = {"evt3": "metavision_driver", "libcaer": "libcaer_driver",
           "libcaer_cmp": "libcaer_driver", "mono": "event_camera_codecs mono"}
EVT3_CLOCK_START_US = (1 << 24) - 5_000_000  # the sensor clock wraps 5 s into a recording


@dataclass(frozen=True)
class PacketFields:
    stamp_ns: int
    width: int
    height: int
    time_base: int
    encoding: str
    events: bytes


def register_event_packet(typestore: object) -> None:
    """Add event_camera_msgs/msg/EventPacket to a rosbags typestore (idempotent)."""
    from rosbags.typesys import get_types_from_msg

    if EVENT_PACKET_TYPE not in typestore.types:  # type: ignore[attr-defined]
        typestore.register(get_types_from_msg(EVENT_PACKET_MSG, EVENT_PACKET_TYPE))  # type: ignore


def on_sensor(events: np.ndarray, encoding: str) -> np.ndarray:
    """Grid events -> the same events on the driver's sensor (first pixel of each cell)."""
    width, height = DRIVER_SENSORS[encoding]
    out = events.copy()
    out["x"], out["y"] = sensor_from_grid(events["x"], events["y"], width, height, EVENT_SENSOR)
    return out


def driver_packet(encoding: str, events: np.ndarray, window_start_ns: int, start_ns: int
                  ) -> PacketFields:
    """One window of grid events (EVENT_DTYPE, t in absolute microseconds, sorted) -> the
    EventPacket fields the driver of `encoding` would publish; `start_ns` is when the driver
    (and the sensor clock) started."""
    width, height = DRIVER_SENSORS[encoding]
    ev = on_sensor(events, encoding)
    stamp_ns = int(ev["t"][0]) * 1000 if ev.size else int(window_start_ns)
    if encoding == "mono":
        return PacketFields(stamp_ns, width, height, stamp_ns, encoding,
                            enc.encode_mono(ev, stamp_ns // 1000))
    if encoding == "evt3":
        sensor = ev.copy()
        sensor["t"] = ev["t"] - start_ns // 1000 + EVT3_CLOCK_START_US
        return PacketFields(stamp_ns, width, height, 0, encoding, enc.encode_evt3(sensor))
    if encoding == "libcaer":
        return PacketFields(stamp_ns, width, height, start_ns, encoding,
                            enc.encode_libcaer(ev, start_ns))
    if encoding == "libcaer_cmp":
        return PacketFields(stamp_ns, width, height, stamp_ns, encoding,
                            enc.encode_libcaer_cmp(ev, stamp_ns // 1000))
    raise ValueError(f"no driver publishes {encoding!r}")
