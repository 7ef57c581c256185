"""References for bag evaluation (`evaluation.refs`, `evaluation.scoring`) and the report plots'
helpers, without a model: bags on the same clock with their own spans (a "bags" section, or a
file per bag), references entirely outside the bag as an error, identical plot series flagged,
quality axes from zero."""

from __future__ import annotations

import json

import pytest

from tinygpt_ros.evaluation.issues import Issue
from tinygpt_ros.evaluation.refs import parse_refs, refs_for_bags
from tinygpt_ros.evaluation.report import (
    cost_axis_limits,
    identical_series,
    make_plots,
    score_axis_limits,
)
from tinygpt_ros.evaluation.results import BagResult, FrameRow
from tinygpt_ros.evaluation.runner import check_something_scored, failures
from tinygpt_ros.evaluation.scoring import score_results
from tinygpt_ros.spec.types import ComputeRecord


def _bag(name: str, t0: int, labels: list[str]) -> BagResult:
    rows = []
    for i, g in enumerate(labels):
        rec = ComputeRecord(frame_index=i, modality="events", tokens_in=196,
                            tokens_recomputed=196, tokens_fused=31, branch="large")
        rows.append(FrameRow(i, "events", t0 + 10 * i, t0 + 10 * i, rec, None, g))
    return BagResult(name, name, {}, {}, len(rows), {"cfg": rows}, [], 0.0, True)


def _write(path, doc) -> str:
    path.write_text(json.dumps(doc))
    return str(path)


SPAN = {"start_ns": 0, "end_ns": 100}


def test_two_bags_on_one_clock_each_scored_through_a_bags_section(tmp_path):
    """Two cameras recorded at the same time: the same stamps in both bags. A shared span is
    ambiguous (scored once, one warning row); a "bags" section gives each bag its own span."""
    front, rear = _bag("front", 0, ["a"] * 6), _bag("rear", 0, ["b"] * 6)
    shared = _write(tmp_path / "shared.json", {"gestures": [{**SPAN, "label": "a"}]})
    issues: list[Issue] = []
    refs_of = refs_for_bags(["front", "rear"], ["front", "rear"], shared, issues)
    out = score_results([front, rear], refs_of, ["cfg"], issues)
    assert out["references"]["gesture_spans_scored"] == 1
    assert [(i.kind, i.count) for i in issues] == [("ref_span_ambiguous", 1)]
    assert "bags" in issues[0].message

    keyed = _write(tmp_path / "keyed.json", {"bags": {
        "front": {"gestures": [{**SPAN, "label": "a"}]},
        "rear": {"gestures": [{**SPAN, "label": "b"}]}}})
    issues = []
    refs_of = refs_for_bags(["front", "rear"], ["front", "rear"], keyed, issues)
    out = score_results([front, rear], refs_of, ["cfg"], issues)
    assert [(g["bag"], g["label"], g["predictions"]["cfg"]) for g in out["gesture_spans"]] == [
        ("front", "a", "a"), ("rear", "b", "b")]
    assert out["gestures"]["cfg"]["accuracy"] == 1.0 and issues == []


def test_one_refs_file_per_bag(tmp_path):
    front, rear = _bag("front", 0, ["a"] * 6), _bag("rear", 0, ["b"] * 6)
    files = [_write(tmp_path / "f.json", {"gestures": [{**SPAN, "label": "a"}]}),
             _write(tmp_path / "r.json", {"gestures": [{**SPAN, "label": "b"}]})]
    issues: list[Issue] = []
    refs_of = refs_for_bags(["front", "rear"], ["front", "rear"], files, issues)
    out = score_results([front, rear], refs_of, ["cfg"], issues)
    assert out["gestures"]["cfg"] == {"accuracy": 1.0, "correct": 2, "spans": 2}
    assert issues == []
    with pytest.raises(ValueError, match="one per bag"):
        refs_for_bags(["a", "b", "c"], ["a", "b", "c"], files, [])


def test_unknown_bag_key_is_a_warning_and_bad_section_an_error(tmp_path):
    doc = _write(tmp_path / "k.json", {"bags": {"nope": {"gestures": [{**SPAN, "label": "a"}]}}})
    issues: list[Issue] = []
    refs_for_bags(["front"], ["front"], doc, issues)
    assert [(i.kind, i.severity) for i in issues] == [("refs_unknown_bag", "warning")]
    with pytest.raises(ValueError, match=r"bags\['x'\]: gestures\[0\]\.label"):
        parse_refs({"bags": {"x": {"gestures": [SPAN]}}})


def test_refs_entirely_outside_the_bag_fail_partial_overlap_warns():
    bag = _bag("b", 1_000, ["a"] * 6)  # stamps 1000 .. 1050
    outside = parse_refs({"gestures": [{"start_ns": 9_000, "end_ns": 9_100, "label": "a"}]})
    issues: list[Issue] = []
    out = score_results([bag], {"b": outside}, ["cfg"], issues)
    check_something_scored(out["references"], issues)
    kinds = {(i.kind, i.severity) for i in issues}
    assert kinds == {("refs_outside_bag", "error"), ("nothing_scored", "error")}
    msg = next(i.message for i in issues if i.kind == "refs_outside_bag")
    assert "[9000, 9100)" in msg and "[1000, 1050]" in msg
    report = {"bags": [{"ok": True}], "issues": [i.__dict__ for i in issues]}
    assert len(failures(report)) == 2

    partial = parse_refs({"gestures": [{"start_ns": 1_000, "end_ns": 1_100, "label": "a"},
                                       {"start_ns": 9_000, "end_ns": 9_100, "label": "a"}]})
    issues = []
    out = score_results([bag], {"b": partial}, ["cfg"], issues)
    check_something_scored(out["references"], issues)
    assert [(i.kind, i.severity) for i in issues] == [("ref_span_not_in_bag", "warning")]
    assert failures({"bags": [{"ok": True}], "issues": [i.__dict__ for i in issues]}) == []


def test_identical_series_are_named_and_quality_axes_start_at_zero(tmp_path):
    assert identical_series({"dense": [1, 2], "sttf": [1, 2], "anc": [3, 4],
                             "x": [1, 2]}) == {"sttf": "dense", "x": "dense"}
    assert score_axis_limits([1.300e-9, 1.330e-9]) == (0.0, 1.0)
    lo, hi = score_axis_limits([0.2, 2.5])
    assert lo == 0.0 and hi > 2.5
    lo, hi = cost_axis_limits([0.031, 0.0312])
    assert lo == 0.0 and 0.0312 < hi < 0.05

    # the report plots: identical token series get a legend/plot note, quality plot made
    cols = {"modality": ["frame"] * 4, "tokens_recomputed": [196, 20, 20, 196],
            "tokens_fused": [31, 31, 31, 31], "branch": ["large"] * 4,
            "flops_total": [1e9] * 4, "flops_dense": [1e9] * 4, "latency_ms": [1.0] * 4}
    configs = ["dense", "sttf", "anc"]
    report = {
        "configs": {c: {} for c in configs},
        "frames": {c: {"bag": dict(cols)} for c in configs},
        "compute": {c: {"frame": {"total_gflops": 1.0}} for c in configs},
        "captions": {c: {"BLEU-4": 1.3e-9, "METEOR": 0.2, "ROUGE-L": 0.3, "CIDEr": 0.1}
                     for c in configs},
        "gestures": None,
    }
    made, notes = make_plots(report, tmp_path)
    assert "tokens" in made and "quality" in made
    assert "sttf is identical to dense" in notes["tokens"]
    assert "anc is identical to dense" in notes["tokens"]


def test_cli_takes_one_refs_file_per_bag_without_eating_the_bags():
    from tinygpt_ros.cli import build_parser

    args = build_parser().parse_args(["eval", "--refs", "f.json", "front/", "rear/",
                                      "--refs", "r.json"])
    assert args.refs == ["f.json", "r.json"] and args.bags == ["front/", "rear/"]
    assert build_parser().parse_args(["eval", "front/"]).refs is None
