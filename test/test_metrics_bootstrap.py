"""Paired bootstrap interval of CIDEr ratios (pycocoevalcap CIDEr-D on resampled clips)."""

from __future__ import annotations

import pytest

from tinygpt_ros.evaluation.metrics import caption_scores_many, cider_ratio_intervals

COLOURS = ["red", "blue", "green", "yellow", "white", "orange"]
SHAPES = ["ball", "cube", "ring", "star"]
MOVES = ["moves left", "moves right", "rests", "spins"]


def _refs() -> dict[int, list[str]]:
    refs = {}
    for i in range(48):
        c, s, m = COLOURS[i % 6], SHAPES[(i // 6) % 4], MOVES[(i // 2) % 4]
        refs[i] = [f"a {c} {s} {m}", f"the {c} {s} {m} on the floor"]
    return refs


def test_intervals_bracket_the_point_ratio_and_order_configs():
    refs = _refs()
    good = {i: r[0] for i, r in refs.items()}
    half = {i: (r[0] if i % 7 not in (0, 3, 5) else "a grey shape waits")
            for i, r in refs.items()}
    groups = {i: i // 4 for i in refs}  # 12 "clips" of 4 segments
    hyps = {"dense": good, "half": half}
    iv = cider_ratio_intervals(hyps, refs, groups, "dense", n_boot=60, seed=1)
    assert iv["dense"] == pytest.approx((1.0, 1.0))
    lo, hi = iv["half"]
    scores = caption_scores_many(hyps, refs)
    point = scores["half"]["CIDEr"] / scores["dense"]["CIDEr"]
    assert 0 < lo < hi < 1
    assert lo - 0.1 <= point <= hi + 0.1
    # same seed, same interval
    assert cider_ratio_intervals(hyps, refs, groups, "dense", n_boot=60, seed=1) == iv


def test_interval_arguments_are_checked():
    refs = _refs()
    hyps = {"dense": {i: r[0] for i, r in refs.items()}}
    with pytest.raises(ValueError, match="baseline"):
        cider_ratio_intervals(hyps, refs, {i: 0 for i in refs}, "nope")
    with pytest.raises(ValueError, match="groups"):
        cider_ratio_intervals(hyps, refs, {0: 0}, "dense")
    with pytest.raises(ValueError, match="n_boot"):
        cider_ratio_intervals(hyps, refs, {i: 0 for i in refs}, "dense", n_boot=1)
