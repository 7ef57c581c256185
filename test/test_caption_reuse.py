"""Caption reuse: a still scene republishes its caption, a small moving object does not."""

from __future__ import annotations

import numpy as np

from tinygpt_ros.ops import fused_set_movement


def test_identical_sets_do_not_move():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(31, 16)).astype(np.float32)
    assert fused_set_movement(a, a) == 0.0
    assert fused_set_movement(a[::-1].copy(), a) == 0.0  # order does not matter


def test_one_moving_token_counts_fully():
    """The mean of 31 tokens barely moves when one token changes; the set movement does."""
    rng = np.random.default_rng(1)
    a = (1.0 + 0.1 * rng.normal(size=(31, 16))).astype(np.float32)  # tokens share a component
    b = a.copy()
    b[7] += 3.0
    mean_shift = np.linalg.norm(b.mean(0) - a.mean(0)) / np.linalg.norm(a.mean(0))
    movement = fused_set_movement(b, a)
    assert movement > 0.5
    assert mean_shift < movement / 10


def test_empty_sets_always_count_as_moved():
    a = np.zeros((0, 8), np.float32)
    assert fused_set_movement(a, np.ones((3, 8), np.float32)) == float("inf")
