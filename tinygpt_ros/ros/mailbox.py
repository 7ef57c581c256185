"""Depth-1 latest-value mailbox between ROS callbacks and the inference worker.

A camera produces frames faster than an edge model can caption them; queueing them would add
latency without bound. The mailbox keeps only the newest item: `put` never blocks, and an item
the worker has not taken yet is replaced and counted as dropped.
"""

from __future__ import annotations

import threading
from typing import Generic, TypeVar

T = TypeVar("T")


class LatestMailbox(Generic[T]):
    """One slot. Producers `put` (never block); the consumer `take`s or waits with `get`.

    `wake` (optional, may be shared by several mailboxes) is set on every put so one worker can
    wait on many inputs.
    """

    def __init__(self, wake: threading.Event | None = None) -> None:
        self._cond = threading.Condition(threading.Lock())
        self._item: T | None = None
        self._full = False
        self._closed = False
        self._wake = wake
        self.puts = 0
        self.taken = 0
        self.dropped = 0  # items replaced before the consumer took them
        self.discarded = 0  # items thrown away by clear()

    def put(self, item: T) -> bool:
        """Store `item`; returns True when it replaced an unconsumed one (a drop)."""
        with self._cond:
            if self._closed:
                return False
            replaced = self._full
            if replaced:
                self.dropped += 1
            self._item, self._full = item, True
            self.puts += 1
            self._cond.notify()
        if self._wake is not None:
            self._wake.set()
        return replaced

    def take(self) -> T | None:
        """The pending item (removing it), or None at once when empty."""
        with self._cond:
            return self._pop()

    def get(self, timeout: float | None = None) -> T | None:
        """Wait up to `timeout` s for an item; None on timeout or when closed."""
        with self._cond:
            self._cond.wait_for(lambda: self._full or self._closed, timeout)
            return self._pop()

    def clear(self) -> bool:
        """Discard a pending item (e.g. on deactivate); True if there was one."""
        with self._cond:
            had = self._full
            if had:
                self.discarded += 1
            self._item, self._full = None, False
            return had

    def close(self) -> None:
        """Refuse further puts and release waiters; the pending item is discarded."""
        with self._cond:
            self._closed = True
            if self._full:
                self.discarded += 1
            self._item, self._full = None, False
            self._cond.notify_all()
        if self._wake is not None:
            self._wake.set()

    @property
    def closed(self) -> bool:
        return self._closed

    def __len__(self) -> int:
        return int(self._full)

    def _pop(self) -> T | None:
        if not self._full:
            return None
        item, self._item, self._full = self._item, None, False
        self.taken += 1
        return item
