"""The hand-off executor (ros/executor.py): its spin thread gives each callback to the pool once,
instead of re-submitting tasks still queued there in a busy loop."""

from __future__ import annotations

import threading
import time

from std_msgs.msg import String

from tinygpt_ros.ros.bringup import ExecutorThread
from tinygpt_ros.ros.executor import HandOffExecutor, HandOffPool


def test_submit_returns_once_the_callable_has_started():
    pool = HandOffPool(1, timeout_s=5.0)
    release = threading.Event()
    started = []
    try:
        fut = pool.submit(lambda: (started.append(True), release.wait(5.0)))
        assert started == [True] and not fut.done()  # running, not merely queued
        # every thread busy: the next submit gives up waiting after the timeout
        pool.timeout_s = 0.05
        t0 = time.monotonic()
        pool.submit(lambda: None)
        assert time.monotonic() - t0 < 2.0
    finally:
        release.set()
        pool.shutdown(wait=True)
    assert pool.submitted == 2


def test_the_pool_starts_all_its_threads_up_front():
    """Overlapping callbacks find the threads already there: the count does not rise later
    (a stock ThreadPoolExecutor starts a worker only when none is idle, and keeps it)."""
    before = threading.active_count()
    pool = HandOffPool(3, timeout_s=5.0)
    try:
        assert threading.active_count() == before + 3
        release = threading.Event()
        for _ in range(3):
            pool.submit(release.wait, 5.0)
        assert threading.active_count() == before + 3
        release.set()
    finally:
        pool.shutdown(wait=True)
    assert pool.submitted == 3


def test_busy_subscription_is_submitted_about_once_per_callback(ros):
    """40 messages at 100 Hz to a callback that takes 15 ms: rclpy's own loop re-submits the
    queued task many times per callback; the hand-off pool about once."""
    executor = HandOffExecutor(num_threads=2, context=ros.context)
    assert executor.hand_off
    sub_node = ros.make_node("handoff_sub")
    ros.executor.remove_node(sub_node)  # spun by the executor under test only
    done = []

    def slow(msg: String) -> None:
        time.sleep(0.015)
        done.append(msg.data)

    sub_node.create_subscription(String, "handoff", slow, 100)
    pub_node = ros.make_node("handoff_pub")
    pub = pub_node.create_publisher(String, "handoff", 100)
    executor.add_node(sub_node)
    spinner = ExecutorThread(executor, "handoff_spin")
    spinner.start()
    try:
        assert ros.spin_until(lambda: pub.get_subscription_count() > 0)
        for i in range(40):
            pub.publish(String(data=str(i)))
            time.sleep(0.01)
        deadline = time.monotonic() + 20.0
        while len(done) < 40 and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        spinner.stop()
        executor.remove_node(sub_node)
    assert len(done) == 40
    submitted = executor._executor.submitted
    assert submitted <= 1.5 * len(done) + 10, (submitted, len(done))
