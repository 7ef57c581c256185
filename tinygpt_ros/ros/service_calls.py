"""A blocking service call that survives a lost response.

Fast DDS drops a service response when the server's response writer has not yet matched the
client's response reader: it waits 100 ms, logs "failed to send response (timeout)" in the
server's process and gives up (ros2/ros2#1253). On a loaded host that happens to the first calls
after a process starts, and a client that only waits then waits out its whole timeout. A request
whose repetition changes nothing (a read, or setting a value to the value just asked for) can
be sent again instead; a lifecycle transition cannot, so callers resend only what is safe.

How the caller waits (spinning its own executor, or on an event while another thread spins) is
its business: it passes `wait_done`. The lifecycle manager does not block at all and keeps its
own non-blocking version of this in its state machine (ros/manager.py).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

# An idempotent request unanswered after this long is sent again, then after twice as long, ...
RESEND_AFTER_S = 5.0


def call(client: Any, request: Any, timeout: float, wait_done: Callable[[Any, float], bool],
         resend_after: float | None = None) -> Any:
    """Send `request` on `client` (a ready rclpy Client) and return its answer, or raise
    TimeoutError after `timeout` seconds. `wait_done(future, seconds)` waits up to `seconds`
    and says whether `future` is done. With `resend_after` an unanswered request is sent again
    after that many seconds, then twice as long, inside `timeout`; the unanswered copy is
    removed from the client, so a late answer to it is dropped. None: one request only."""
    deadline = time.monotonic() + timeout
    wait = timeout if resend_after is None else resend_after
    while True:
        future = client.call_async(request)
        if wait_done(future, max(0.0, min(wait, deadline - time.monotonic()))):
            return future.result()
        client.remove_pending_request(future)
        if time.monotonic() >= deadline:
            raise TimeoutError(f"service {client.srv_name} did not answer in {timeout:g} s")
        wait *= 2
