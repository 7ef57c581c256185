"""Depth-1 latest-value mailbox (no ROS)."""

from __future__ import annotations

import threading
import time

from tinygpt_ros.ros.mailbox import LatestMailbox


def test_put_take_and_drop_counting():
    box: LatestMailbox[int] = LatestMailbox()
    assert box.take() is None
    assert box.put(1) is False
    assert box.put(2) is True  # 1 was never consumed
    assert len(box) == 1
    assert box.take() == 2
    assert box.take() is None
    assert (box.puts, box.taken, box.dropped) == (2, 1, 1)


def test_get_waits_and_close_releases():
    box: LatestMailbox[str] = LatestMailbox()
    threading.Timer(0.05, box.put, args=("late",)).start()
    assert box.get(timeout=2.0) == "late"
    assert box.get(timeout=0.01) is None
    threading.Timer(0.05, box.close).start()
    t0 = time.monotonic()
    assert box.get(timeout=5.0) is None
    assert time.monotonic() - t0 < 2.0
    assert box.put("after close") is False and len(box) == 0


def test_clear_discards_without_counting_a_drop():
    box: LatestMailbox[int] = LatestMailbox()
    box.put(1)
    assert box.clear() is True
    assert box.clear() is False
    assert (box.dropped, box.discarded) == (0, 1)


def test_shared_wake_event():
    wake = threading.Event()
    a: LatestMailbox[int] = LatestMailbox(wake)
    b: LatestMailbox[int] = LatestMailbox(wake)
    b.put(7)
    assert wake.is_set()
    wake.clear()
    a.put(3)
    assert wake.wait(0.1)
    assert (a.take(), b.take()) == (3, 7)


def test_fast_producer_slow_consumer_stays_bounded():
    box: LatestMailbox[int] = LatestMailbox()
    got: list[int] = []
    done = threading.Event()

    def consume() -> None:
        while not done.is_set() or len(box):
            item = box.get(timeout=0.05)
            if item is not None:
                got.append(item)
                time.sleep(0.005)  # slower than the producer

    worker = threading.Thread(target=consume)
    worker.start()
    for i in range(2000):
        box.put(i)
        assert len(box) <= 1
    done.set()
    worker.join(5.0)
    assert not worker.is_alive()
    assert got == sorted(got)  # newest-wins never reorders
    assert got[-1] == 1999  # the last item is never lost
    assert box.taken + box.dropped == 2000
    assert box.dropped > 0
