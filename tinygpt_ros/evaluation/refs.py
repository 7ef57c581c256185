"""Reference spans for bag evaluation: the references JSON, validated.

Why: users bring their own references, so a mistake in the file must be reported with the field
that is wrong (`captions[3].end_ns must be > start_ns`) before any bag is replayed. The schema is
the sample bag's refs.json (`bags/sample.py` writes it).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tinygpt_ros.evaluation.issues import Issue


@dataclass
class CaptionSpan:
    start_ns: int
    end_ns: int
    captions: list[str]
    extra: dict[str, Any] = field(default_factory=dict)  # kind, motion, ... passed through


@dataclass
class GestureSpan:
    start_ns: int
    end_ns: int
    label: str


@dataclass
class Refs:
    path: str
    captions: list[CaptionSpan]
    gestures: list[GestureSpan]


def _span_bounds(item: Any, where: str) -> tuple[int, int]:
    if not isinstance(item, dict):
        raise ValueError(f"{where} must be an object with start_ns, end_ns")
    for key in ("start_ns", "end_ns"):
        v = item.get(key)
        if isinstance(v, bool) or not isinstance(v, int):
            raise ValueError(f"{where}.{key} must be an integer (nanoseconds), got {v!r}")
    if item["end_ns"] <= item["start_ns"]:
        raise ValueError(f"{where}.end_ns ({item['end_ns']}) must be > start_ns "
                         f"({item['start_ns']})")
    return int(item["start_ns"]), int(item["end_ns"])


def parse_refs(doc: Any, path: str = "refs") -> Refs:
    """Validate the references JSON:
    {"captions": [{start_ns, end_ns, captions: [str, ...]}], "gestures": [{start_ns, end_ns,
    label}]}; both lists optional. Errors name the offending field."""
    if not isinstance(doc, dict):
        raise ValueError(f"{path}: must be a JSON object with 'captions' and/or 'gestures'")
    caps, gests = doc.get("captions", []), doc.get("gestures", [])
    if not isinstance(caps, list) or not isinstance(gests, list):
        raise ValueError(f"{path}: 'captions' and 'gestures' must be lists")
    spans = []
    for i, item in enumerate(caps):
        where = f"{path}: captions[{i}]"
        start, end = _span_bounds(item, where)
        texts = item.get("captions")
        if (not isinstance(texts, list) or not texts
                or not all(isinstance(t, str) and t.strip() for t in texts)):
            raise ValueError(f"{where}.captions must be a non-empty list of non-empty strings")
        extra = {k: item[k] for k in ("kind", "motion") if k in item}
        spans.append(CaptionSpan(start, end, list(texts), extra))
    gspans = []
    for i, item in enumerate(gests):
        where = f"{path}: gestures[{i}]"
        start, end = _span_bounds(item, where)
        label = item.get("label")
        if not isinstance(label, str) or not label:
            raise ValueError(f"{where}.label must be a non-empty string")
        gspans.append(GestureSpan(start, end, label))
    return Refs(path, spans, gspans)


def load_refs(path: str | Path) -> Refs:
    """Read and validate a references file (ValueError names the file and the field)."""
    p = Path(path)
    try:
        doc = json.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ValueError(f"refs: {str(p)!r} does not exist") from None
    except (OSError, json.JSONDecodeError) as exc:
        raise ValueError(f"refs: {str(p)!r} is not readable JSON ({exc})") from None
    return parse_refs(doc, str(p))


def default_refs_path(bag: str | Path) -> Path:
    """refs.json inside the bag directory (next to the file for a bare .mcap/.db3)."""
    p = Path(bag)
    return (p if p.is_dir() else p.parent) / "refs.json"


def refs_for_bags(bags: Sequence[str | Path], names: Sequence[str], refs: str | Path | None,
                  issues: list[Issue]) -> dict[str, Refs | None]:
    """Bag name -> its references: the shared `refs` file for every bag when given, else each
    bag's own refs.json. A bag without usable references is evaluated for compute only and
    gets an issue (`no_refs`, `refs_invalid`); a shared file that is invalid raises."""
    shared = load_refs(refs) if refs is not None else None
    refs_of: dict[str, Refs | None] = {}
    for bag, name in zip(bags, names, strict=True):
        if shared is not None:
            refs_of[name] = shared
            continue
        path = default_refs_path(bag)
        if not Path(bag).exists():
            refs_of[name] = None  # the bag itself is reported as unreadable
            continue
        if not path.exists():
            refs_of[name] = None
            issues.append(Issue(name, "no_refs", "warning", f"no references ({path} does "
                                "not exist; pass --refs): compute only"))
            continue
        try:
            refs_of[name] = load_refs(path)
        except ValueError as exc:
            refs_of[name] = None
            issues.append(Issue(name, "refs_invalid", "error", str(exc)))
    return refs_of
