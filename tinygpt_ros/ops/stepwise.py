"""Greedy caption decoding one decoder pass at a time, resumable between camera frames.

Why: a caption decode is a dozen sequential decoder passes (the prefill, then one step per
token), and at the ladder's cheap end it is half a frame's milliseconds: every frame that
decodes lands over a latency target that the frames around it meet. Run to the end inside one
frame, it is the frame the control loop waits longest for, however rarely captions change.
Resumable, the engine runs as many passes as the frame's time left allows and goes on in the
next frames; the caption is the one a single-frame decode gives (the same passes on the same
tokens and cache), shown a frame or two later.

The backend supplies two callbacks over its own key/value cache: `prefill()` runs the vision
tokens and bos and returns (the logits over the vocabulary for the first token, the cache);
`step(token, position, cache)` feeds one token at text position `position` (bos is 0) and
returns the next logits and cache. Both return a (vocab,) row.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

Logits = np.ndarray


class StepwiseGreedy:
    """Greedy decoding advanced one pass per `advance()` call: the same token choices as the
    engines' one-call greedy loop (bos never generated, eos ends, at most `max_len` tokens), so
    `finish()` from the start is that loop."""

    def __init__(self, prefill: Callable[[], tuple[Logits, Any]],
                 step: Callable[[int, int, Any], tuple[Logits, Any]],
                 bos_id: int, eos_id: int, max_len: int) -> None:
        if max_len < 1:
            raise ValueError(f"max_len must be >= 1, got {max_len}")
        self._prefill, self._step = prefill, step
        self.bos_id, self.eos_id, self.max_len = bos_id, eos_id, max_len
        self.ids: list[int] = []
        self.passes = 0
        self.done = False
        self._cache: Any = None

    def advance(self) -> bool:
        """Run the next decoder pass and take its token; True once the caption is complete
        (eos chosen or `max_len` tokens), after which nothing more runs."""
        if self.done:
            return True
        if self.passes == 0:
            logits, self._cache = self._prefill()
        else:  # the token chosen by the last pass, at the text position after it
            logits, self._cache = self._step(self.ids[-1], self.passes, self._cache)
        self.passes += 1
        row = np.array(logits, np.float32).reshape(-1)
        row[self.bos_id] = -np.inf
        token = int(row.argmax())
        if token == self.eos_id:
            self.done = True
        else:
            self.ids.append(token)
            self.done = len(self.ids) >= self.max_len
        if self.done:
            self._cache = None  # free the key/value cache now, not when the object goes
        return self.done

    def finish(self) -> list[int]:
        """Run the remaining passes; the caption's ids (without bos or eos)."""
        while not self.advance():
            pass
        return self.ids
