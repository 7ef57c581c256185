"""A MultiThreadedExecutor whose spin thread waits until its pool has taken each callback.

Why: rclpy's MultiThreadedExecutor (measured with Kilted's 9.1.2; Jazzy's 7.1.6 has the same
loop) submits a ready callback to its thread pool and goes straight back to its wait loop, and
that loop yields again every task that is not *executing* yet, including the one still waiting
in the pool's queue. The spin thread then never blocks: it re-submits queued tasks in a tight
loop, holding the GIL the pool thread needs to start them. In the edge node, fed 640x480 images
at 30 Hz and event windows at 20 Hz, the main thread took 100% of one core (`top -H`, py-spy:
`Executor._wait_for_ready_callbacks`) while the inference worker, the thread that matters, got
what was left of the other one. Upstream changed the loop in rclpy pull request 1547 (rolling,
November 2025).

Here the pool's `submit` returns once a pool thread has started the callable (the task is
executing, so the next pass does not yield it again), or after `HANDOFF_TIMEOUT_S` when every
pool thread is busy: then the next pass may re-submit it, as before, but at most once per
timeout instead of continuously. On an rclpy with the upstream change this only waits for the
pool to pick a task up.

The pool also starts all its threads when it is made. A `ThreadPoolExecutor` starts a worker
only when a task finds none idle and never retires one, so the process gained a thread each
time more callbacks overlapped than ever before (up to `num_threads`): in the soak's lifecycle
part (the edge graph, traffic flowing through 100 configure/activate cycles) a third pool
worker appeared after 7 cycles and stayed (py-spy: `ThreadPoolExecutor-1_2`), which reads as a
leak, and a thread was created in the middle of a frame. Started up front, the count is fixed
from the first frame.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from rclpy.executors import MultiThreadedExecutor

HANDOFF_TIMEOUT_S = 0.05


class HandOffPool(ThreadPoolExecutor):
    """A thread pool whose `submit` waits (bounded) until the callable has started."""

    def __init__(self, max_workers: int, timeout_s: float = HANDOFF_TIMEOUT_S) -> None:
        super().__init__(max_workers=max_workers)
        self.timeout_s = timeout_s
        self._start_workers(max_workers)
        self.submitted = 0  # calls to submit (tests compare it with callbacks run)

    def _start_workers(self, n: int) -> None:
        """Start all `n` threads now: each task below holds its worker until all have started,
        so every submit finds no idle worker and the pool starts a new one."""
        gate = threading.Barrier(n + 1)
        for _ in range(n):
            super().submit(gate.wait, 10.0)
        gate.wait(10.0)

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future:
        started = threading.Event()

        def run() -> Any:
            started.set()
            return fn(*args, **kwargs)

        self.submitted += 1
        future = super().submit(run)
        started.wait(self.timeout_s)
        return future


class HandOffExecutor(MultiThreadedExecutor):
    """rclpy's MultiThreadedExecutor with a `HandOffPool` (see the module docstring)."""

    def __init__(self, num_threads: int | None = None, **kwargs: Any) -> None:
        super().__init__(num_threads=num_threads, **kwargs)
        pool = getattr(self, "_executor", None)
        # rclpy keeps its pool in `_executor`; should that ever change, the stock pool stays
        if isinstance(pool, ThreadPoolExecutor) and not isinstance(pool, HandOffPool):
            workers = int(getattr(pool, "_max_workers", num_threads or 2))
            pool.shutdown(wait=False)  # it has started no thread yet
            self._executor = HandOffPool(workers)

    @property
    def hand_off(self) -> bool:
        """Whether the hand-off pool is in place (False: rclpy's own pool)."""
        return isinstance(getattr(self, "_executor", None), HandOffPool)
