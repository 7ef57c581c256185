"""Diagnostic statuses as plain values, and a DiagnosticArray publisher that sends them as
serialized CDR bytes instead of message objects.

Why: the node sends a DiagnosticArray of about 45 key/value pairs for every frame, and the ROS
overhead budget is 5% of a frame. Through message objects that costs twice: a `KeyValue` built
per pair, then rclpy converting each one to C on publish. Measured in the node under
`tinygpt-ros bench-node` (sttf+anc, reliable raw and jpeg, still and slow, A/B one run each):
`diagnostics_ms` 0.38-0.44 ms as messages, 0.26-0.35 ms as these bytes. Most of what remains is
the middleware's write, which runs cold once a frame: on the 2-core CI machine a publish 10 ms
after the previous one takes 0.14 ms even with nobody subscribed, against 3 us straight after
it.

The bytes are the XCDR1 little-endian encoding that the rmw implementations put on the wire for
ROS 2 message types. `encoder_agrees` checks that once per process against the active rmw's
own deserializer and size, and `DiagnosticsPublisher` falls back to message objects when it
disagrees or the publisher refuses bytes: an rmw with another serialization costs speed, never
diagnostics. Padding bytes are zeros, where the rmw's own serializer leaves whatever was in its
buffer; deserializers skip them.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from std_msgs.msg import Header

_ENCAPSULATION = b"\x00\x01\x00\x00"  # CDR, little endian, no options
_U32 = struct.Struct("<I")
_STAMP = struct.Struct("<iI")
_PAD = (b"", b"\x00\x00\x00", b"\x00\x00", b"\x00")  # indexed by the offset modulo 4


@dataclass
class Status:
    """One DiagnosticStatus as plain values: `level` 0 OK, 1 WARN, 2 ERROR, 3 STALE; `values`
    (key, formatted value) pairs in order."""

    level: int
    name: str
    message: str
    hardware_id: str = ""
    values: list[tuple[str, str]] = field(default_factory=list)

    def to_msg(self) -> DiagnosticStatus:
        return DiagnosticStatus(
            level=bytes((self.level,)), name=self.name, message=self.message,
            hardware_id=self.hardware_id,
            values=[KeyValue(key=k, value=v) for k, v in self.values],
        )


def encode_array(sec: int, nanosec: int, frame_id: str, statuses: Sequence[Status]) -> bytes:
    """A DiagnosticArray with this header stamp and frame_id, serialized. Offsets are counted
    from the end of the 4-byte encapsulation, where CDR alignment starts."""
    parts = [_ENCAPSULATION, _STAMP.pack(sec, nanosec)]
    offset = 8

    def string(text: str) -> None:
        nonlocal offset
        data = text.encode()
        pad = _PAD[offset & 3]
        parts.extend((pad, _U32.pack(len(data) + 1), data, b"\x00"))
        offset += len(pad) + 5 + len(data)

    def count(n: int) -> None:
        nonlocal offset
        pad = _PAD[offset & 3]
        parts.extend((pad, _U32.pack(n)))
        offset += len(pad) + 4

    string(frame_id)
    count(len(statuses))
    for status in statuses:
        parts.append(bytes((status.level,)))
        offset += 1
        string(status.name)
        string(status.message)
        string(status.hardware_id)
        count(len(status.values))
        for key, value in status.values:
            string(key)
            string(value)
    return b"".join(parts)


def to_array_msg(header: Header, statuses: Sequence[Status]) -> DiagnosticArray:
    return DiagnosticArray(header=Header(stamp=header.stamp, frame_id=header.frame_id),
                           status=[s.to_msg() for s in statuses])


_PROBE = (
    Status(2, "probé: frame", "", "h", [("k", "vv"), ("", ""), ("ключ", "1.5"), ("abc", "defg")]),
    Status(0, "", "ok", "", []),
)


@lru_cache(maxsize=1)
def encoder_agrees() -> bool:
    """Whether the active rmw reads `encode_array`'s bytes back as the message they encode, and
    its own serializer produces as many bytes (checked once: a process has one rmw)."""
    try:
        from rclpy.serialization import deserialize_message, serialize_message

        header = Header(frame_id="cam_é")
        header.stamp.sec, header.stamp.nanosec = -3, 999_999_999
        expected = to_array_msg(header, _PROBE)
        ours = encode_array(-3, 999_999_999, "cam_é", _PROBE)
        return (deserialize_message(ours, DiagnosticArray) == expected
                and len(serialize_message(expected)) == len(ours))
    except Exception:  # an rmw that cannot (de)serialize this way: use message objects
        return False


class DiagnosticsPublisher:
    """Publishes statuses on a DiagnosticArray publisher (a lifecycle one included), as bytes
    where `encoder_agrees`, else as message objects. `encoding` says which ('cdr' or
    'message'), for the summary diagnostics."""

    def __init__(self, publisher: Any) -> None:
        self.publisher = publisher
        self.encoding = "cdr" if encoder_agrees() else "message"

    def publish(self, header: Header, statuses: Sequence[Status]) -> None:
        if self.encoding == "cdr":
            stamp = header.stamp
            data = encode_array(stamp.sec, stamp.nanosec, header.frame_id, statuses)
            try:
                self.publisher.publish(data)
                return
            except TypeError:  # an rclpy whose publish takes message objects only
                self.encoding = "message"
        self.publisher.publish(to_array_msg(header, statuses))
