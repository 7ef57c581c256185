"""Progress bars for long evaluations, from `tqdm`.

Why: a bag replay takes minutes and runs in worker processes whose stderr is usually a log file.
On a terminal the bar redraws in place; anywhere else (a file, a pipe, a worker process) it
prints one plain line per tenth of the work, so logs stay readable.
"""

from __future__ import annotations

import math
import sys
from typing import IO, Any

from tqdm import tqdm

_FORMAT = "{desc} [{bar:28}] {n_fmt}/{total_fmt} msgs {percentage:3.0f}% {rate_fmt} eta {remaining}"


class _Lines:
    """A text stream for tqdm that turns its carriage-return redraws into whole lines."""

    def __init__(self, stream: IO[str]) -> None:
        self.stream = stream

    def write(self, text: str) -> None:
        for piece in text.replace("\r", "\n").split("\n"):
            if piece.strip():
                self.stream.write(piece.rstrip() + "\n")

    def flush(self) -> None:
        self.stream.flush()


def progress_bar(total: int, label: str, enabled: bool = True,
                 stream: IO[str] | None = None) -> Any:
    """A tqdm bar over `total` messages named `label`; disabled: counts silently."""
    stream = stream or sys.stderr
    total = max(int(total), 1)
    desc = f"[eval] {label}"
    if bool(getattr(stream, "isatty", lambda: False)()):
        return tqdm(total=total, desc=desc, file=stream, disable=not enabled, unit="msg",
                    bar_format=_FORMAT, ascii=" #", mininterval=0.2)
    return tqdm(total=total, desc=desc, file=_Lines(stream), disable=not enabled, unit="msg",
                bar_format=_FORMAT, ascii=" #", mininterval=0, miniters=math.ceil(total / 10),
                maxinterval=math.inf, leave=False)  # no forced redraws between the tenths
