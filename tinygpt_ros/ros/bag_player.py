"""Replay a rosbag2 bag (mcap or sqlite3) into a running ROS graph without `ros2 bag`.

rosbag2_py is not installable everywhere we run (CI, this venv), so the bag is read with the
pure-Python `rosbags` library; the stored CDR bytes are exactly what rclpy serializes, so they go
straight into `rclpy.serialization.deserialize_message` with the message class named by the bag.
Publishers are reliable (depth 10): that matches both reliable and best-effort subscribers.
With `clock=True` the bag's record time also goes out on /clock before each message (what
`ros2 bag play --clock` does), so nodes with use_sim_time run on the bag's time.
"""

from __future__ import annotations

import argparse
import importlib
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from builtin_interfaces.msg import Time
from rclpy.qos import QoSProfile, ReliabilityPolicy
from rclpy.serialization import deserialize_message
from rosbags.rosbag2 import Reader
from rosgraph_msgs.msg import Clock


class BagError(RuntimeError):
    """The bag cannot be opened or a message in it cannot be read (corrupt or truncated)."""


def message_class(msgtype: str) -> type:
    """'sensor_msgs/msg/Image' -> the rclpy message class."""
    try:
        from rosidl_runtime_py.utilities import get_message  # type: ignore[import-not-found]

        return get_message(msgtype)
    except ImportError:
        pass
    parts = msgtype.split("/")
    if len(parts) != 3 or parts[1] != "msg":
        raise ValueError(f"message type {msgtype!r} is not of the form pkg/msg/Name")
    return getattr(importlib.import_module(f"{parts[0]}.msg"), parts[2])


@dataclass
class PlayReport:
    published: Counter[str] = field(default_factory=Counter)  # per output topic
    skipped_topics: dict[str, str] = field(default_factory=dict)  # topic -> why
    duration_s: float = 0.0

    @property
    def total(self) -> int:
        return sum(self.published.values())


class BagPlayer:
    """Publish a bag's messages from `node`.

    topics: bag topics to play (None = all); rate: 1.0 = recorded timing, 2.0 = twice as fast,
    None = as fast as possible; remap: {bag topic: published topic}; clock: publish the bag's
    record time on /clock (rosgraph_msgs/Clock) before each message. Topics whose message type is
    not importable here are skipped and listed in the report.
    """

    def __init__(
        self,
        node: Any,
        bag_path: str | Path,
        topics: list[str] | None = None,
        rate: float | None = 1.0,
        remap: dict[str, str] | None = None,
        qos: QoSProfile | None = None,
        clock: bool = False,
    ) -> None:
        if rate is not None and not rate > 0:
            raise ValueError(f"rate must be > 0 or None, got {rate}")
        self.node = node
        self.path = Path(bag_path)
        self.rate = rate
        self.remap = dict(remap or {})
        self._qos = qos or QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
        self._skipped: dict[str, str] = {}
        reader = self._open()
        try:
            available = {c.topic: c.msgtype for c in reader.connections}
        finally:
            reader.close()
        if topics is not None:
            missing = sorted(set(topics) - set(available))
            if missing:
                raise BagError(
                    f"bag {self.path}: no topic(s) {missing}; it has {sorted(available)}"
                )
            available = {t: available[t] for t in topics}
        self._types: dict[str, type] = {}
        self._pubs: dict[str, Any] = {}
        self._clock_pub = None
        if clock:
            self._clock_pub = node.create_publisher(Clock, "/clock", self._qos)
        for topic, msgtype in available.items():
            try:
                cls = message_class(msgtype)
            except (ImportError, AttributeError, ValueError) as exc:
                self._skipped[topic] = f"type {msgtype} not available: {exc}"
                continue
            self._types[topic] = cls
            self._pubs[topic] = node.create_publisher(cls, self.remap.get(topic, topic), self._qos)

    @property
    def topics(self) -> dict[str, str]:
        """{bag topic: published topic} of what will be played."""
        return {t: self.remap.get(t, t) for t in self._pubs}

    def _open(self) -> Reader:
        if not self.path.exists():
            raise BagError(f"bag {self.path} does not exist")
        try:
            reader = Reader(self.path)
            reader.open()
        except Exception as exc:  # rosbags raises several kinds; one clear error for callers
            raise BagError(f"bag {self.path} is not a readable rosbag2 bag: {exc}") from exc
        return reader

    def wait_for_subscribers(self, timeout: float = 5.0) -> bool:
        """Wait until every publisher has a subscriber (discovery runs in the background)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if all(p.get_subscription_count() > 0 for p in self._pubs.values()):
                return True
            time.sleep(0.02)
        return all(p.get_subscription_count() > 0 for p in self._pubs.values())

    def play(self, wait_for_subscribers: float = 0.0,
             stop: threading.Event | None = None) -> PlayReport:
        """Publish the messages in bag order; blocks until done (or `stop` is set).

        Raises BagError if the bag turns out corrupt or truncated mid-way; messages before the
        damage have been published by then (the error says how many)."""
        if wait_for_subscribers > 0:
            self.wait_for_subscribers(wait_for_subscribers)
        report = PlayReport(skipped_topics=dict(self._skipped))
        reader = self._open()
        start_wall = time.monotonic()
        first_ns: int | None = None
        try:
            conns = [c for c in reader.connections if c.topic in self._pubs]
            messages = reader.messages(connections=conns)
            while True:
                try:
                    conn, stamp_ns, raw = next(messages)
                    msg = deserialize_message(bytes(raw), self._types[conn.topic])
                except StopIteration:
                    break
                except Exception as exc:
                    raise BagError(
                        f"bag {self.path} is corrupt or truncated after {report.total} "
                        f"message(s): {exc}"
                    ) from exc
                if stop is not None and stop.is_set():
                    break
                if self.rate is not None:
                    first_ns = stamp_ns if first_ns is None else first_ns
                    due = start_wall + (stamp_ns - first_ns) / 1e9 / self.rate
                    delay = due - time.monotonic()
                    if delay > 0:
                        if stop is not None:
                            if stop.wait(delay):
                                break
                        else:
                            time.sleep(delay)
                if self._clock_pub is not None:
                    sec, nsec = divmod(int(stamp_ns), 1_000_000_000)
                    self._clock_pub.publish(Clock(clock=Time(sec=sec, nanosec=nsec)))
                self._pubs[conn.topic].publish(msg)
                report.published[self.topics[conn.topic]] += 1
        finally:
            reader.close()
            report.duration_s = time.monotonic() - start_wall
        return report

    def close(self) -> None:
        for pub in self._pubs.values():
            self.node.destroy_publisher(pub)
        self._pubs.clear()
        if self._clock_pub is not None:
            self.node.destroy_publisher(self._clock_pub)
            self._clock_pub = None


def main(argv: list[str] | None = None) -> int:
    """`python -m tinygpt_ros.ros.bag_player BAG [--rate R | --fast] [--topics ...]`."""
    import rclpy

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("bag")
    parser.add_argument("--rate", type=float, default=1.0)
    parser.add_argument("--fast", action="store_true", help="as fast as possible")
    parser.add_argument("--topics", nargs="*")
    parser.add_argument("--clock", action="store_true",
                        help="publish the bag's time on /clock (for use_sim_time nodes)")
    parser.add_argument("--remap", nargs="*", default=[], metavar="FROM:=TO")
    parser.add_argument("--wait", type=float, default=2.0, help="seconds to wait for subscribers")
    args, ros_args = parser.parse_known_args(argv)
    remap = dict(r.split(":=", 1) for r in args.remap)
    rclpy.init(args=ros_args)
    node = rclpy.create_node("bag_player")
    try:
        player = BagPlayer(node, args.bag, args.topics, None if args.fast else args.rate, remap,
                           clock=args.clock)
        report = player.play(wait_for_subscribers=args.wait)
        print(f"published {report.total} messages in {report.duration_s:.2f} s: "
              f"{dict(report.published)}; skipped {report.skipped_topics}")
        return 0
    except BagError as exc:
        print(f"error: {exc}")
        return 1
    except KeyboardInterrupt:
        return 130
    finally:
        node.destroy_node()
        rclpy.try_shutdown()


if __name__ == "__main__":
    raise SystemExit(main())
