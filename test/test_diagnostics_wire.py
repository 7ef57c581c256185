"""The per-frame diagnostics' CDR encoder: the active rmw reads its bytes back as the very message
they encode, a real publisher delivers them as a DiagnosticArray, and a publisher that refuses
bytes gets message objects instead."""

from __future__ import annotations

import pytest
from diagnostic_msgs.msg import DiagnosticArray
from rclpy.serialization import deserialize_message, serialize_message
from std_msgs.msg import Header

from tinygpt_ros.ros import diagnostics as diag
from tinygpt_ros.ros.diagnostics_wire import (
    DiagnosticsPublisher,
    Status,
    encode_array,
    encoder_agrees,
    to_array_msg,
)


def _header(sec: int, nanosec: int, frame_id: str) -> Header:
    header = Header(frame_id=frame_id)
    header.stamp.sec, header.stamp.nanosec = sec, nanosec
    return header


# Strings of every length modulo 4 (each puts the next field at another alignment), empty
# strings and sequences, multi-byte UTF-8, every level, and more than one status.
CASES = [
    (0, 0, "", []),
    (1_700_000_000, 123_456_789, "camera_optical_frame", [Status(0, "n: frame", "ok")]),
    (-1, 999_999_999, "é", [
        Status(level, "x" * n, "m" * (n + 1), "h" * (n + 2),
               [("k" * i, "v" * (n + i)) for i in range(5)])
        for n, level in zip(range(8), (0, 1, 2, 3, 0, 1, 2, 3), strict=True)
    ]),
    (7, 8, "cam", [Status(2, "ünïcode: frame", "€ 3 ms", "onnxruntime:fp32",
                          [("ключ", "значение"), ("", ""), ("emoji", "🙂")])]),
]


@pytest.mark.parametrize("sec, nanosec, frame_id, statuses", CASES)
def test_the_rmw_reads_the_bytes_back_as_the_message(sec, nanosec, frame_id, statuses):
    data = encode_array(sec, nanosec, frame_id, statuses)
    expected = to_array_msg(_header(sec, nanosec, frame_id), statuses)
    assert deserialize_message(data, DiagnosticArray) == expected
    assert len(data) == len(serialize_message(expected))


def test_a_frame_status_round_trips_with_every_value():
    """The node's own builder output, with its ~45 formatted values, encodes losslessly."""
    status = diag.error_status("tinygpt", "encoding", "unsupported encoding '32FC1'",
                               errors_by_kind={"encoding": 3, "size": 1}, dropped_frames=2,
                               topic="/camera/image_raw", hardware_id="torch:fp32",
                               details=(("limit", "max_image_pixels"), ("value", 1.5e7)))
    data = encode_array(5, 6, "cam", [status])
    received = deserialize_message(data, DiagnosticArray)
    assert received.status[0].level == diag.ERROR
    assert diag.status_values(received.status[0]) == dict(status.values)
    assert dict(status.values)["errors"] == "4"


def test_the_encoder_agrees_with_the_active_rmw():
    assert encoder_agrees()


def test_a_real_publisher_delivers_the_bytes(ros):
    node = ros.make_node("wire_pub")
    listener = ros.make_node("wire_sub")
    got: list[DiagnosticArray] = []
    listener.create_subscription(DiagnosticArray, "wire_diag", got.append, 10)
    out = DiagnosticsPublisher(node.create_publisher(DiagnosticArray, "wire_diag", 10))
    assert out.encoding == "cdr"
    header = _header(42, 17, "cam")
    statuses = CASES[3][3]
    assert ros.spin_until(lambda: out.publisher.get_subscription_count() > 0)
    out.publish(header, statuses)
    assert ros.spin_until(lambda: len(got) == 1)
    assert got[0] == to_array_msg(header, statuses)


class _MessageOnlyPublisher:
    """What a publisher without serialized publishing does with bytes: refuse them."""

    def __init__(self) -> None:
        self.sent: list[DiagnosticArray] = []

    def publish(self, msg: object) -> None:
        if not isinstance(msg, DiagnosticArray):
            raise TypeError("expected DiagnosticArray")
        self.sent.append(msg)


def test_a_publisher_that_refuses_bytes_gets_messages():
    pub = _MessageOnlyPublisher()
    out = DiagnosticsPublisher(pub)
    statuses = [Status(1, "n: frame", "over budget", "", [("a", "1")])]
    out.publish(_header(1, 2, "f"), statuses)
    out.publish(_header(3, 4, "f"), statuses)
    assert out.encoding == "message"
    assert [m.header.stamp.sec for m in pub.sent] == [1, 3]
    assert pub.sent[0] == to_array_msg(_header(1, 2, "f"), statuses)
