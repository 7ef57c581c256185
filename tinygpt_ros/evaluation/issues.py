"""Damage found while evaluating a bag, as report rows instead of exceptions.

Why: one bad bag, topic or message must never stop the evaluation of everything else, so every
problem is recorded here (kind, severity, how often, the first few examples) and listed in the
report; the reader of the report decides what it means for the figures.
"""

from __future__ import annotations

from dataclasses import dataclass, field

MAX_EXAMPLES = 5  # examples kept per aggregated issue


@dataclass
class Issue:
    """One kind of damage in one bag, aggregated: how often, and the first few examples."""

    bag: str
    kind: str
    severity: str  # "warning" (evaluation went on) | "error" (that bag/topic contributed nothing)
    message: str
    count: int = 1
    examples: list[str] = field(default_factory=list)


class Issues:
    """The issues of one bag; `add(..., aggregate=True)` folds repeats of a kind into one row."""

    def __init__(self, bag: str) -> None:
        self.bag = bag
        self.items: list[Issue] = []
        self._index: dict[tuple[str, str], Issue] = {}

    def add(self, kind: str, message: str, severity: str = "warning",
            example: str | None = None, aggregate: bool = False) -> None:
        """Record an issue; `aggregate` folds repeats of `kind` into one entry with a count."""
        if aggregate and (kind, severity) in self._index:
            item = self._index[(kind, severity)]
            item.count += 1
            if example is not None and len(item.examples) < MAX_EXAMPLES:
                item.examples.append(example)
            return
        item = Issue(self.bag, kind, severity, message,
                     examples=[example] if example is not None else [])
        self.items.append(item)
        if aggregate:
            self._index[(kind, severity)] = item


def sorted_issues(issues: list[Issue]) -> list[Issue]:
    """Errors first, then warnings, each in the order found."""
    order = {"error": 0, "warning": 1}
    return sorted(issues, key=lambda i: order.get(i.severity, 2))
