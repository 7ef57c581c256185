"""What the middleware lost or refused before a message reached the node.

A 640x480 rgb8 frame is 921 KB. Over best-effort QoS the middleware splits it into fragments,
and when one fragment is lost the whole frame is dropped: measured on one machine (Fast DDS,
30 Hz) 2 of 90 frames arrived. The node's own mailbox never sees those frames, so without this
the loss is silent. `TransportMonitor` listens to two middleware events of every input
subscription and keeps counts the node publishes in /diagnostics:

- message lost (RMW_EVENT_MESSAGE_LOST): frames that were sent but never delivered
  (`transport_lost`), with a throttled warning saying what to change;
- requested incompatible QoS: a publisher whose QoS cannot match the subscription (e.g. a
  best-effort camera driver against a reliable subscription): nothing from it will ever
  arrive (`incompatible_qos`, an error, logged with the fix).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from rclpy.event_handler import SubscriptionEventCallbacks
from rclpy.qos import qos_policy_name_from_kind

LARGE_MESSAGES_HINT = (
    "large messages over best-effort QoS are dropped whole when one fragment is lost: set "
    "qos_reliability to reliable (the default) or use image_transport compressed (README, "
    "'Large messages and QoS')"
)


class TransportMonitor:
    """Counts of lost and refused messages per input topic (middleware event threads)."""

    def __init__(self, warn: Callable[..., None], error: Callable[..., None],
                 reliability: str) -> None:
        self._warn = warn
        self._error = error
        self._reliability = reliability
        self._lock = threading.Lock()
        self.lost: dict[str, int] = {}
        self.incompatible: dict[str, int] = {}

    @property
    def lost_total(self) -> int:
        with self._lock:
            return sum(self.lost.values())

    @property
    def incompatible_total(self) -> int:
        with self._lock:
            return sum(self.incompatible.values())

    def callbacks(self, topic: Callable[[], str], with_lost: bool = True
                  ) -> SubscriptionEventCallbacks:
        """Event callbacks for one subscription; `topic()` gives its resolved name."""

        def on_lost(info: Any) -> None:
            change = int(info.total_count_change)
            with self._lock:
                self.lost[topic()] = self.lost.get(topic(), 0) + change
                total = self.lost[topic()]
            self._warn(f"{topic()}: {change} message(s) lost before reaching the node "
                       f"({total} so far); {LARGE_MESSAGES_HINT}", throttle_duration_sec=5.0)

        def on_incompatible(info: Any) -> None:
            with self._lock:
                self.incompatible[topic()] = self.incompatible.get(topic(), 0) + 1
            policy = qos_policy_name_from_kind(info.last_policy_kind)
            fix = ("a best-effort publisher needs qos_reliability:=best_effort"
                   if self._reliability == "reliable" else "check the publisher's QoS")
            self._error(f"{topic()}: a publisher offers QoS incompatible with this subscription "
                        f"(policy {policy}; the node subscribes with qos_reliability="
                        f"{self._reliability}): nothing from it will arrive; {fix}")

        return SubscriptionEventCallbacks(incompatible_qos=on_incompatible,
                                          message_lost=on_lost if with_lost else None)

    def diagnostics(self) -> list[tuple[str, int]]:
        return [("transport_lost", self.lost_total), ("incompatible_qos", self.incompatible_total)]
