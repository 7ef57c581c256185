"""The messages of one bag for evaluation, whatever state the bag is in.

Why: users evaluate real recordings, and real recordings get cut off. An intact bag is read
through `bags.reader`; an mcap whose index or end is missing is read through
`bags.salvage.McapSalvage`. Either way every problem becomes an `Issue` and every complete message
is still delivered.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from tinygpt_ros.bags.reader import BagMessage, bag_topics, iter_bag
from tinygpt_ros.bags.salvage import McapSalvage, mcap_files
from tinygpt_ros.evaluation.issues import Issues


class BagSource:
    """The messages of one bag: through `bags.reader` when the bag is intact, through
    `McapSalvage` when an mcap's end is missing. Problems go to `issues`."""

    def __init__(self, path: str | Path, issues: Issues) -> None:
        self.path = Path(path)
        self.issues = issues
        self.salvage: list[McapSalvage] = []
        self.topics: dict[str, tuple[str, int]] = {}
        self.readable = False
        try:
            self.topics = bag_topics(self.path)
            self.readable = True
            return
        except ValueError as exc:
            error = str(exc)
        files = mcap_files(self.path)
        if not files:
            issues.add("bag_unreadable", error, "error")
            return
        try:
            counts: dict[str, list[Any]] = {}
            for f in files:
                s = McapSalvage(f)
                for m in s.scan(with_data=False):
                    counts.setdefault(m.topic, [m.msgtype, 0])[1] += 1
                self.salvage.append(s)
        except (OSError, ValueError, struct.error) as exc:
            issues.add("bag_unreadable", f"{error}; salvage failed too: {exc}", "error")
            return
        if not counts:
            issues.add("bag_unreadable", f"{error}; no complete message could be salvaged",
                       "error")
            return
        self.topics = {t: (m, n) for t, (m, n) in counts.items()}
        self.readable = True
        where = ", ".join(f"{s.path.name} byte {s.truncated_at}" for s in self.salvage
                          if s.truncated_at is not None) or "footer/summary damaged"
        bad = sum(len(s.bad_chunks) for s in self.salvage)
        issues.add("bag_truncated",
                   f"bag is truncated or its index is damaged ({error}); salvaged "
                   f"{sum(n for _, n in counts.values())} complete message(s) up to {where}"
                   + (f"; skipped {bad} damaged chunk(s)" if bad else ""))

    def messages(self, topics: set[str]) -> Iterator[BagMessage]:
        """Messages of `topics` in bag order; a read error mid-way becomes a `bag_corrupt`
        issue and ends the stream."""
        if not self.readable or not topics:
            return
        if self.salvage:
            for s in self.salvage:
                for m in s.scan(topics):
                    yield BagMessage(m.topic, m.msgtype, m.timestamp_ns, m.rawdata or b"")
            return
        n = 0
        try:
            for msg in iter_bag(self.path, sorted(topics)):
                n += 1
                yield msg
        except ValueError as exc:
            self.issues.add("bag_corrupt", f"reading stopped after {n} message(s): {exc}")
