"""Reference spans for bag evaluation: the references JSON, validated.

Why: users bring their own references, so a mistake in the file must be reported with the field
that is wrong (`captions[3].end_ns must be > start_ns`) before any bag is replayed. The schema is
the sample bag's refs.json (`bags/sample.py` writes it), plus an optional "bags" object that
gives spans to one bag by name: bags recorded at the same time (two cameras, two robots) share a
clock, so a span alone cannot say which bag it describes.
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
    bags: dict[str, Refs] = field(default_factory=dict)  # spans for one bag, by bag name

    def has_spans(self) -> bool:
        return bool(self.captions or self.gestures)


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


def _parse_spans(doc: dict[str, Any], path: str) -> tuple[list[CaptionSpan], list[GestureSpan]]:
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
    return spans, gspans


def parse_refs(doc: Any, path: str = "refs") -> Refs:
    """Validate the references JSON:
    {"captions": [{start_ns, end_ns, captions: [str, ...]}], "gestures": [{start_ns, end_ns,
    label}], "bags": {"<bag name>": {"captions": [...], "gestures": [...]}}}; every list
    optional. Top-level spans go to whichever bag has data in them; the spans under "bags" go to
    that bag only. Errors name the offending field."""
    if not isinstance(doc, dict):
        raise ValueError(f"{path}: must be a JSON object with 'captions' and/or 'gestures'")
    caps, gests = _parse_spans(doc, path)
    per_bag = doc.get("bags", {})
    if not isinstance(per_bag, dict):
        raise ValueError(f"{path}: 'bags' must be an object of bag name -> "
                         "{captions, gestures}")
    bags: dict[str, Refs] = {}
    for name, section in per_bag.items():
        where = f"{path}: bags[{name!r}]"
        if not isinstance(section, dict):
            raise ValueError(f"{where} must be an object with 'captions' and/or 'gestures'")
        bags[name] = Refs(f"{path}#{name}", *_parse_spans(section, where))
    return Refs(path, caps, gests, bags)


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


def _refs_files(refs: str | Path | Sequence[str | Path] | None, n_bags: int
                ) -> list[Refs] | None:
    if refs is None:
        return None
    files = [refs] if isinstance(refs, str | Path) else list(refs)
    if not files:
        return None
    if len(files) not in (1, n_bags):
        raise ValueError(f"refs: give one references file for all bags or one per bag "
                         f"({n_bags}), got {len(files)}")
    loaded = [load_refs(f) for f in files]
    return loaded * n_bags if len(loaded) == 1 else loaded


def refs_for_bags(bags: Sequence[str | Path], names: Sequence[str],
                  refs: str | Path | Sequence[str | Path] | None,
                  issues: list[Issue]) -> dict[str, list[Refs]]:
    """Bag name -> the references that apply to it.

    `refs`: one file for every bag, one file per bag (in the order of `bags`), or None for each
    bag's own refs.json. From a file, a bag gets its section under "bags" (by its report name)
    and the top-level spans; the same top-level Refs object shared by several bags lets scoring
    credit each span to the bag that has data in it. A bag without usable references is
    evaluated for compute only and gets an issue (`no_refs`, `refs_invalid`); a file given on the
    command line that is invalid raises."""
    given = _refs_files(refs, len(bags))
    refs_of: dict[str, list[Refs]] = {}
    for k, (bag, name) in enumerate(zip(bags, names, strict=True)):
        doc: Refs | None
        if given is not None:
            doc = given[k]
        else:
            path = default_refs_path(bag)
            if not Path(bag).exists():
                refs_of[name] = []  # the bag itself is reported as unreadable
                continue
            if not path.exists():
                refs_of[name] = []
                issues.append(Issue(name, "no_refs", "warning", f"no references ({path} does "
                                    "not exist; pass --refs): compute only"))
                continue
            try:
                doc = load_refs(path)
            except ValueError as exc:
                refs_of[name] = []
                issues.append(Issue(name, "refs_invalid", "error", str(exc)))
                continue
        own = [doc.bags[name]] if name in doc.bags else []
        refs_of[name] = own + ([doc] if doc.has_spans() or not own else [])
    files = {id(d): d for d in (given or [])}
    for d in files.values():
        for key in sorted(set(d.bags) - set(names)):
            issues.append(Issue(", ".join(names), "refs_unknown_bag", "warning",
                                f"{d.path}: bags[{key!r}] names no evaluated bag (bags are "
                                f"named {list(names)}); its spans are not scored"))
    return refs_of
