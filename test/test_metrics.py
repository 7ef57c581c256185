"""Caption metrics via pycocoevalcap (Java for PTB tokenisation and METEOR) and accuracy.

All caption checks share one `caption_scores_many` call: METEOR's Java start-up (~5 s) is paid
once.
"""

from __future__ import annotations

import os
import subprocess

import numpy as np
import pytest

from tinygpt_ros.evaluation.metrics import (
    METRIC_KEYS,
    accuracy,
    caption_scores,
    caption_scores_many,
    ptb_tokenize,
)

REFS = {
    "s1": ["A red circle moves to the left of the screen.", "a red ball rolls left"],
    "s2": ["a blue square stays still in the middle", "a blue box does not move"],
    "s3": ["a green triangle appears on the right side", "a green shape enters from the right"],
    7: ["the yellow star spins slowly in place", "a yellow star is rotating"],
}
EXACT = {
    "s1": "a red circle moves to the left of the screen",
    "s2": "a blue square stays still in the middle",
    "s3": "a green triangle appears on the right side",
    7: "the yellow star spins slowly in place",
}
WRONG = {"s1": "dog cat", "s2": "xyz qqq", "s3": "", 7: "zebra"}
PARTIAL = {
    "s1": "a red circle moves",
    "s2": "a blue box",
    "s3": "a green triangle on the left",
    7: "a star spins",
}


def _java_meteor_processes() -> int:
    """METEOR jar processes started by this test process (not other jobs on the machine)."""
    out = subprocess.run(["ps", "-eo", "ppid=,args="], capture_output=True, text=True).stdout
    mine = str(os.getpid())
    return sum(line.split(None, 1)[0] == mine and "meteor-1.5.jar" in line
               for line in out.splitlines() if line.strip())


@pytest.fixture(scope="module")
def scores():
    before = _java_meteor_processes()
    result = caption_scores_many({"exact": EXACT, "wrong": WRONG, "partial": PARTIAL}, REFS)
    assert _java_meteor_processes() <= before  # the METEOR subprocess was closed
    return result


def test_keys(scores):
    for s in scores.values():
        assert tuple(s) == METRIC_KEYS
        assert all(isinstance(v, float) for v in s.values())


def test_exact_match(scores):
    s = scores["exact"]
    assert s["BLEU-4"] == pytest.approx(1.0, abs=1e-6)
    assert s["ROUGE-L"] == pytest.approx(1.0, abs=1e-9)
    assert 0.0 < s["METEOR"] <= 1.0


def test_disjoint_hypothesis(scores):
    s = scores["wrong"]
    assert s["BLEU-4"] == pytest.approx(0.0, abs=1e-6)
    assert s["ROUGE-L"] == 0.0
    assert s["CIDEr"] == pytest.approx(0.0, abs=1e-9)


def test_ordering(scores):
    ex, part, wr = scores["exact"], scores["partial"], scores["wrong"]
    assert ex["CIDEr"] > part["CIDEr"] > wr["CIDEr"]
    assert ex["METEOR"] > part["METEOR"] > wr["METEOR"]
    assert 0.0 < part["METEOR"] <= 1.0


def test_ptb_tokenize():
    assert ptb_tokenize(["A Red-Circle, moves LEFT!", "", "the robot's arm"]) == [
        "a red-circle moves left", "", "the robot 's arm"
    ]


def test_validation_names_offending_id():
    with pytest.raises(ValueError, match="'s2'"):
        caption_scores(REFS, {k: v for k, v in EXACT.items() if k != "s2"})
    with pytest.raises(ValueError, match="'extra'"):
        caption_scores(REFS, {**EXACT, "extra": "a"})
    with pytest.raises(ValueError, match=r"refs\['s1'\]"):
        caption_scores({**REFS, "s1": []}, EXACT)
    with pytest.raises(ValueError, match=r"configs\['b'\]"):
        caption_scores_many({"a": EXACT, "b": {"s1": "x"}}, REFS)
    with pytest.raises(ValueError, match=r"hyps\[7\]"):
        caption_scores(REFS, {**EXACT, 7: ["not", "a", "str"]})


def test_accuracy():
    assert accuracy([1, 2, 3, 4], [1, 2, 0, 4]) == 0.75
    assert accuracy(np.array(["a", "b"]), ["a", "b"]) == 1.0
    with pytest.raises(ValueError, match="shape"):
        accuracy([1, 2], [1])
    with pytest.raises(ValueError, match="empty"):
        accuracy([], [])
