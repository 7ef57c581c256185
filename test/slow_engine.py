"""A wrapper that makes any engine slower than the input rate, for overload tests."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import numpy as np

from tinygpt_ros.spec.types import FrameResult


class SlowEngine:
    """Wraps any Engine, sleeping `sleep_s` per step: inference slower than the input rate."""

    def __init__(self, inner: Any, sleep_s: float) -> None:
        self.inner, self.sleep_s = inner, sleep_s
        self.steps = 0

    def process_frame(self, frame: np.ndarray, stamp_us: int | None = None,
                      pixel_scale: float = 1.0) -> FrameResult:
        time.sleep(self.sleep_s)
        self.steps += 1
        return self.inner.process_frame(frame, stamp_us, pixel_scale)

    def process_events(self, events: np.ndarray, stamp_us: int | None = None) -> FrameResult:
        time.sleep(self.sleep_s)
        self.steps += 1
        return self.inner.process_events(events, stamp_us)

    def set_knob(self, name: str, value: Any) -> None:
        self.inner.set_knob(name, value)

    def knobs(self) -> dict[str, Any]:
        return self.inner.knobs()

    def reset(self) -> None:
        self.inner.reset()


def slow_factory(factory: Callable[..., Any], sleep_s: float) -> Callable[..., SlowEngine]:
    def make(model_dir: str, backend: str = "torch", **options: Any) -> SlowEngine:
        return SlowEngine(factory(model_dir, backend, **options), sleep_s)

    return make
