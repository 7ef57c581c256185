"""Score replayed bags against their references: span matching, caption metrics, gesture
accuracy, and the compute summaries of the report.

Matching is by header stamp:

- caption span [start_ns, end_ns): the hypothesis is the caption shown at the last image in it;
- gesture span: majority of the per-window predictions after the first `GESTURE_WARMUP` windows
  of the span (ties: the class reached first).

All configurations of all bags are scored together (`metrics.caption_scores_many`), so CIDEr-D's
reference statistics are the same for every configuration.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict
from typing import Any

from tinygpt_ros.evaluation.issues import MAX_EXAMPLES, Issue
from tinygpt_ros.evaluation.metrics import caption_scores_many
from tinygpt_ros.evaluation.quality import ComputeSummary
from tinygpt_ros.evaluation.refs import CaptionSpan, GestureSpan, Refs
from tinygpt_ros.evaluation.results import BagResult

GESTURE_WARMUP = 2  # windows at the start of a gesture span that do not vote


def span_hypotheses(
    stamps: Sequence[int], captions: Sequence[str | None], spans: Sequence[CaptionSpan]
) -> list[str | None]:
    """Per span: the caption shown at the last image (largest stamp, later in the bag on ties)
    with start_ns <= stamp < end_ns; None when the bag has no image in the span."""
    out: list[str | None] = []
    for span in spans:
        best = None
        for i, stamp in enumerate(stamps):
            if span.start_ns <= stamp < span.end_ns and (best is None or stamp >= stamps[best]):
                best = i
        out.append(None if best is None else (captions[best] or ""))
    return out


def span_gestures(
    stamps: Sequence[int], predictions: Sequence[str | None], spans: Sequence[GestureSpan],
    warmup: int = GESTURE_WARMUP,
) -> list[tuple[str | None, int]]:
    """Per span: (majority of the predictions of its windows after the first `warmup`, number of
    windows in the span). Windows are ordered by stamp; a tie goes to the class reached first;
    None when fewer than warmup + 1 windows fall in the span."""
    out = []
    for span in spans:
        inside = sorted((s, i) for i, s in enumerate(stamps) if span.start_ns <= s < span.end_ns)
        votes = Counter(predictions[i] for _, i in inside[warmup:] if predictions[i])
        out.append((votes.most_common(1)[0][0] if votes else None, len(inside)))
    return out


def _span_extra(span: CaptionSpan) -> dict[str, Any]:
    return dict(span.extra)


def _as_list(refs: Refs | Sequence[Refs] | None) -> list[Refs]:
    if refs is None:
        return []
    return [refs] if isinstance(refs, Refs) else list(refs)


def bag_stamp_range(result: BagResult) -> tuple[int, int] | None:
    """First and last header stamp the bag's evaluation produced output for (None: nothing)."""
    stamps = [row.stamp_ns for rows in result.rows.values() for row in rows]
    return (min(stamps), max(stamps)) if stamps else None


def _outside(refs: Refs, bags: Sequence[BagResult]) -> tuple[int, int, list[str]] | None:
    """(first start, last end, bag ranges) when no span of `refs` overlaps the stamps of any of
    `bags` (the references are on another clock or belong to another recording), else None."""
    spans = [(s.start_ns, s.end_ns) for s in (*refs.captions, *refs.gestures)]
    ranges = [(b.name, rng) for b in bags if (rng := bag_stamp_range(b)) is not None]
    if not spans or not ranges:
        return None
    if any(start <= hi and end > lo for start, end in spans for _, (lo, hi) in ranges):
        return None
    return (min(s for s, _ in spans), max(e for _, e in spans),
            [f"{name} [{lo}, {hi}]" for name, (lo, hi) in ranges])


def score_results(
    results: Sequence[BagResult], refs_of: dict[str, Refs | Sequence[Refs] | None],
    configs: Sequence[str], issues: list[Issue],
) -> dict[str, Any]:
    """Match every bag's outputs to its references and score all configurations together.

    `refs_of` maps bag name -> its Refs (or a list of them). One Refs object may be shared by
    several bags: a span is then credited to the bag that has data in it (the first one when
    several have). References of which no span overlaps their bags at all add an error
    (`refs_outside_bag`); spans missing from an otherwise covered bag add warnings."""
    groups: dict[int, tuple[Refs, list[BagResult]]] = {}
    for r in results:
        for refs in _as_list(refs_of.get(r.name)):
            groups.setdefault(id(refs), (refs, []))[1].append(r)
    ref_map: dict[str, list[str]] = {}
    hyps: dict[str, dict[str, str]] = {c: {} for c in configs}
    spans_out: list[dict[str, Any]] = []
    gest_out: list[dict[str, Any]] = []
    g_correct: dict[str, int] = {c: 0 for c in configs}
    g_scored = 0
    n_caption_spans = n_gesture_spans = 0
    for gi, (refs, bags) in enumerate(groups.values()):
        label = refs.path
        n_caption_spans += len(refs.captions)
        n_gesture_spans += len(refs.gestures)
        per_bag = {}
        for r in bags:
            per_cfg = {}
            for c in configs:
                frames = [row for row in r.rows[c] if row.modality == "frame"]
                windows = [row for row in r.rows[c] if row.modality == "events"]
                per_cfg[c] = (
                    span_hypotheses([f.stamp_ns for f in frames], [f.caption for f in frames],
                                    refs.captions),
                    span_gestures([w.stamp_ns for w in windows], [w.gesture for w in windows],
                                  refs.gestures),
                )
            per_bag[r.name] = per_cfg
        missing_caps, missing_gest, short_gest, ambiguous = [], [], [], []
        for si, span in enumerate(refs.captions):
            owners = [b for b in per_bag if per_bag[b][configs[0]][0][si] is not None]
            if not owners:
                missing_caps.append(f"captions[{si}] [{span.start_ns}, {span.end_ns})")
                continue
            if len(owners) > 1:
                ambiguous.append(f"captions[{si}] in {owners}")
            owner = owners[0]
            sid = f"{gi}:{si}"
            ref_map[sid] = list(span.captions)
            entry = {"id": sid, "bag": owner, "refs": label, "span": si,
                     "start_ns": span.start_ns, "end_ns": span.end_ns,
                     "reference": span.captions[0], **_span_extra(span), "hypotheses": {}}
            for c in configs:
                h = per_bag[owner][c][0][si] or ""
                hyps[c][sid] = h
                entry["hypotheses"][c] = h
            spans_out.append(entry)
        for si, span in enumerate(refs.gestures):
            owners = [b for b in per_bag if per_bag[b][configs[0]][1][si][1] > 0]
            if not owners:
                missing_gest.append(f"gestures[{si}] [{span.start_ns}, {span.end_ns})")
                continue
            if len(owners) > 1:
                ambiguous.append(f"gestures[{si}] in {owners}")
            owner = owners[0]
            n_windows = per_bag[owner][configs[0]][1][si][1]
            if n_windows <= GESTURE_WARMUP:
                short_gest.append(f"gestures[{si}] ({n_windows} window(s))")
            g_scored += 1
            entry = {"bag": owner, "refs": label, "span": si, "start_ns": span.start_ns,
                     "end_ns": span.end_ns, "label": span.label, "windows": n_windows,
                     "predictions": {}}
            for c in configs:
                pred = per_bag[owner][c][1][si][0]
                entry["predictions"][c] = pred
                g_correct[c] += int(pred == span.label)
            gest_out.append(entry)
        bag_names = ", ".join(b.name for b in bags)
        outside = _outside(refs, bags)
        if outside is not None:
            first, last, ranges = outside
            issues.append(Issue(bag_names, "refs_outside_bag", "error",
                                f"{label}: every reference span lies outside the bag (spans "
                                f"[{first}, {last}) ns, evaluated stamps {', '.join(ranges)}): "
                                "nothing was scored. References use the messages' header "
                                "stamps in nanoseconds; check the clock and the bag",
                                len(refs.captions) + len(refs.gestures)))
            missing_caps = missing_gest = []
        if ambiguous:
            issues.append(Issue(bag_names, "ref_span_ambiguous", "warning",
                                f"{label}: span(s) with data in several bags, scored on the "
                                "first one only; give each bag its own spans (a \"bags\" "
                                "section in the file, or one --refs file per bag)",
                                len(ambiguous), ambiguous[:MAX_EXAMPLES]))
        if missing_caps:
            issues.append(Issue(bag_names, "ref_span_not_in_bag", "warning",
                                f"{label}: caption span(s) with no image in the "
                                "evaluated part of the bag (not scored)", len(missing_caps),
                                missing_caps[:MAX_EXAMPLES]))
        if missing_gest:
            issues.append(Issue(bag_names, "ref_span_not_in_bag", "warning",
                                f"{label}: gesture span(s) with no event window in "
                                "the evaluated part of the bag (not scored)", len(missing_gest),
                                missing_gest[:MAX_EXAMPLES]))
        if short_gest:
            issues.append(Issue(bag_names, "gesture_span_short", "warning",
                                f"gesture span(s) with <= {GESTURE_WARMUP} windows: no vote, "
                                "counted as wrong", len(short_gest), short_gest[:MAX_EXAMPLES]))
    captions = caption_scores_many(hyps, ref_map) if ref_map else None
    gestures = None
    if g_scored:
        gestures = {c: {"accuracy": g_correct[c] / g_scored, "correct": g_correct[c],
                        "spans": g_scored} for c in configs}
    return {
        "references": {"caption_spans": n_caption_spans, "caption_spans_scored": len(ref_map),
                       "gesture_spans": n_gesture_spans, "gesture_spans_scored": g_scored},
        "captions": captions, "gestures": gestures, "spans": spans_out,
        "gesture_spans": gest_out,
    }


def compute_summaries(results: Sequence[BagResult], configs: Sequence[str]) -> dict[str, Any]:
    """quality.ComputeSummary per configuration and modality over all bags."""
    out: dict[str, Any] = {}
    for c in configs:
        per: dict[str, Any] = {}
        for modality in ("frame", "events"):
            recs = [row.record for r in results for row in r.rows[c] if row.modality == modality]
            if recs:
                s = ComputeSummary.of(recs)
                d = asdict(s)
                d["flops_ratio"] = s.total_gflops / s.dense_gflops if s.dense_gflops else None
                conv = [row.conversion_ms for r in results for row in r.rows[c]
                        if row.modality == modality]
                d["conversion_ms_mean"] = sum(conv) / len(conv)
                per[modality] = d
        out[c] = per
    return out


def frame_columns(result: BagResult, config: str) -> dict[str, list[Any]]:
    """Per-frame records of one bag and configuration, column-wise (compact JSON)."""
    cols: dict[str, list[Any]] = {k: [] for k in (
        "index", "modality", "stamp_ns", "tokens_recomputed", "tokens_fused", "branch",
        "flops_total", "flops_encoder", "flops_dense", "latency_ms", "conversion_ms",
        "caption_reused", "full_refresh", "output")}
    for row in result.rows[config]:
        rec = row.record
        cols["index"].append(row.index)
        cols["modality"].append(row.modality)
        cols["stamp_ns"].append(row.stamp_ns)
        cols["tokens_recomputed"].append(rec.tokens_recomputed)
        cols["tokens_fused"].append(rec.tokens_fused)
        cols["branch"].append(rec.branch)
        cols["flops_total"].append(rec.total_flops)
        cols["flops_encoder"].append(rec.encoder_flops)
        cols["flops_dense"].append(float(rec.dense_flops))
        cols["latency_ms"].append(round(rec.total_latency_ms, 4))
        cols["conversion_ms"].append(round(row.conversion_ms, 4))
        cols["caption_reused"].append(bool(rec.caption_reused))
        cols["full_refresh"].append(bool(rec.full_refresh))
        cols["output"].append(row.caption if row.modality == "frame" else row.gesture)
    return cols
