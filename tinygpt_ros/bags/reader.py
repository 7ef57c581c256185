"""Read raw messages from a rosbag2 bag (mcap or sqlite3) without ROS, via `rosbags`.

Why: the player, the evaluation and the tests all need "give me (topic, type, stamp, CDR bytes)
in time order"; the CDR bytes go straight to `rclpy.serialization.deserialize_message` or to a
rosbags typestore. Problems with the bag surface as one `ValueError` that names the path.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import NamedTuple

from rosbags.rosbag2 import Reader


class BagMessage(NamedTuple):
    topic: str
    msgtype: str  # e.g. "sensor_msgs/msg/Image"
    timestamp_ns: int  # the bag's receive/record stamp
    rawdata: bytes  # CDR-serialized message


def _open(path: str | Path) -> Reader:
    p = Path(path)
    if not p.exists():
        raise ValueError(f"bag path {str(p)!r} does not exist")
    try:
        reader = Reader(p)
        reader.open()
    except Exception as exc:  # rosbags raises several kinds: make it one
        raise ValueError(f"bag path {str(p)!r} is not a readable rosbag2 bag (mcap or sqlite3 "
                         f"directory, or a .mcap/.db3 file): {exc}") from exc
    return reader


def bag_topics(path: str | Path) -> dict[str, tuple[str, int]]:
    """{topic: (msgtype, message count)} of a bag."""
    reader = _open(path)
    try:
        out: dict[str, tuple[str, int]] = {}
        for conn in reader.connections:
            msgtype, count = out.get(conn.topic, (conn.msgtype, 0))
            out[conn.topic] = (msgtype, count + conn.msgcount)
        return out
    finally:
        reader.close()


def iter_bag(path: str | Path, topics: Iterable[str] | None = None) -> Iterator[BagMessage]:
    """Messages in timestamp order, optionally only `topics` (each must exist in the bag).

    The bag is checked when this is called (ValueError right away), then read lazily."""
    reader = _open(path)
    try:
        present = {c.topic for c in reader.connections}
    finally:
        reader.close()
    wanted = None if topics is None else set(topics)
    if wanted is not None and wanted - present:
        raise ValueError(f"topics not in bag {str(path)!r}: {sorted(wanted - present)}; bag has "
                         f"{sorted(present)}")
    return _messages(path, wanted)


def _messages(path: str | Path, wanted: set[str] | None) -> Iterator[BagMessage]:
    reader = _open(path)
    try:
        connections = [c for c in reader.connections if wanted is None or c.topic in wanted]
        if not connections:
            return
        try:
            for conn, stamp, raw in reader.messages(connections=connections):
                yield BagMessage(conn.topic, conn.msgtype, int(stamp), bytes(raw))
        except Exception as exc:  # corrupt chunks, bad records
            raise ValueError(f"bag {str(path)!r} is corrupt: {exc}") from exc
    finally:
        reader.close()
