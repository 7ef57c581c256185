"""Resource use of another process, read from /proc (Linux): what a soak test watches grow."""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from pathlib import Path


@dataclass
class ProcSample:
    t_s: float  # seconds since the soak started
    rss_mib: float
    threads: int
    fds: int

    def as_dict(self) -> dict[str, float]:
        return asdict(self)


def sample(pid: int, t_s: float) -> ProcSample:
    """RSS, thread count and open file descriptors of `pid` now. Raises OSError when the
    process is gone."""
    status = Path(f"/proc/{pid}/status").read_text()
    fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
    rss_kib = int(fields["VmRSS"].split()[0])
    threads = int(fields["Threads"])
    fds = len(os.listdir(f"/proc/{pid}/fd"))
    return ProcSample(t_s, rss_kib / 1024.0, threads, fds)


def growth_pct(values: list[float], warmup_fraction: float = 0.2) -> float:
    """Growth of the last fifth over the first fifth after warm-up, in percent (medians, so
    one allocator burst does not count as growth)."""
    import statistics

    if len(values) < 4:
        return 0.0
    start = int(len(values) * warmup_fraction)
    rest = values[start:]
    k = max(1, len(rest) // 5)
    first, last = statistics.median(rest[:k]), statistics.median(rest[-k:])
    return 100.0 * (last - first) / first if first else 0.0
