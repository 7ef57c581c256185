"""The fast numpy temporal fusion gives bit-identical results to its plain formulation, a fused
set merged on (a thinned decode) keeps its mass and centroid, and the streaming controller does
not fuse an unchanged window again."""

from __future__ import annotations

import numpy as np
import pytest

from tinygpt_ros import ops
from tinygpt_ros.ops.fusion import MERGE_SCORE_QUANTUM
from tinygpt_ros.spec.config import NUM_TOKENS

D = 16


def _plain_merge(x, size, r, d, pos_weight):
    """ToMe merge written the obvious way (the numpy fusion before it was made fast)."""
    n = x.shape[0]
    r = min(int(r), n // 2)
    if r <= 0:
        return x, size
    m = x[:, :d] / np.maximum(np.linalg.norm(x[:, :d], axis=-1, keepdims=True), 1e-6)
    a_x, b_x, a_s, b_s = x[::2], x[1::2], size[::2], size[1::2]
    scores = (m[::2] @ m[1::2].T).astype(np.float32)
    if pos_weight > 0 and d < x.shape[1]:
        diff = a_x[:, None, d:] - b_x[None, :, d:]
        scores = scores - np.float32(pos_weight) * (diff * diff).sum(-1).astype(np.float32)
    q = np.float32(1.0 / MERGE_SCORE_QUANTUM)
    scores = np.round(scores * q) / q
    scores[:, b_s <= 0] = -np.inf
    scores[a_s <= 0, :] = np.inf
    best_idx = scores.argmax(-1)
    order = np.argsort(-scores[np.arange(len(best_idx)), best_idx], kind="stable")
    src, unm = order[:r], order[r:]
    num = b_x * b_s[:, None]
    np.add.at(num, best_idx[src], a_x[src] * a_s[src][:, None])
    den = b_s.copy()
    np.add.at(den, best_idx[src], a_s[src])
    merged = np.where(den[:, None] > 0, num / np.maximum(den, 1e-12)[:, None], b_x)
    return (np.concatenate([a_x[unm], merged]).astype(np.float32),
            np.concatenate([a_s[unm], den]).astype(np.float32))


def _plain_compact(x, size):
    real = size > 0
    order = np.argsort(~real, kind="stable")[: max(int(real.sum()), 1)]
    return x[order], size[order]


def _plain_fusion(window, time_embed, max_tokens, static_threshold, pos_weight):
    t, n, d = window.shape
    x = np.concatenate([window + time_embed[-t:][:, None, :],
                        ops.token_positions(t, time_embed.shape[0])], -1)
    size = np.ones((t, n), np.float32)
    if t > 1 and static_threshold > 0:
        static = ops.static_mask(window, static_threshold)
        last = np.where(static[:, None], x.mean(0), x[-1])
        x = np.concatenate([x[:-1] * (~static)[None, :, None], last[None]], 0)
        older = np.broadcast_to((~static).astype(np.float32)[None], (t - 1, n))
        size = np.concatenate([older, np.where(static, float(t), 1.0)[None]], 0)
        size = size.astype(np.float32)
    x, size = _plain_compact(x.reshape(t * n, d + 3), size.reshape(t * n))
    merge_input = x.shape[0]
    while x.shape[0] > max_tokens:
        x, size = _plain_merge(x, size, x.shape[0] - max_tokens, d, pos_weight)
        x, size = _plain_compact(x, size)
    return x[:, :d], size, x[:, d:], merge_input


def _windows(rng):
    for i in range(40):
        t = int(rng.integers(1, 5))
        w = rng.normal(size=(t, 196, D)).astype(np.float32)
        if i % 3 == 0:  # mostly static: the reused-frame case
            w[:] = w[:1] + 0.01 * rng.normal(size=w.shape).astype(np.float32)
        if i % 4 == 0:  # coarse values: many exact score ties
            w = np.round(w)
        yield w, int(rng.integers(1, 250)), (0.0, 0.1, 0.3)[i % 3], (0.0, 5.0)[i % 2]


def test_fast_fusion_is_bit_identical_to_the_plain_formulation():
    rng = np.random.default_rng(7)
    time_embed = rng.normal(size=(4, D)).astype(np.float32)
    for window, max_tokens, threshold, pos_weight in _windows(rng):
        fast = ops.temporal_fusion(window, time_embed, max_tokens, threshold, pos_weight)
        plain = _plain_fusion(window, time_embed, max_tokens, threshold, pos_weight)
        for a, b in zip(fast[:3], plain[:3], strict=True):
            assert a.dtype == b.dtype and np.array_equal(a, b)
        assert fast.merge_input == plain[3]  # what the analytical fusion FLOPs are charged on


def test_a_fused_set_merged_on_keeps_its_mass_and_its_centroid():
    """`merge_fused` (a decode the budget thins) takes a fused set's real tokens on down by
    the same merge: at most the count asked for, every window token still counted once
    (sizes sum), the size-weighted centroid of the positions unchanged, padding ignored, and
    a set already small enough comes back as it was."""
    rng = np.random.default_rng(3)
    time_embed = rng.normal(size=(4, D)).astype(np.float32)
    window = rng.normal(size=(4, NUM_TOKENS, D)).astype(np.float32)
    fused = ops.temporal_fusion(window, time_embed, 12, 0.1, 5.0)
    padded = [np.concatenate([a, np.zeros((2, *a.shape[1:]), np.float32)])
              for a in (fused.tokens, fused.sizes, fused.positions)]
    thin = ops.merge_fused(*padded, 6, 5.0)
    assert len(thin.tokens) == len(thin.sizes) == len(thin.positions) == 6
    assert thin.merge_input == len(fused.tokens)
    assert thin.sizes.sum() == pytest.approx(fused.sizes.sum()) == 4 * NUM_TOKENS
    centroid = (fused.positions * fused.sizes[:, None]).sum(0) / fused.sizes.sum()
    thin_centroid = (thin.positions * thin.sizes[:, None]).sum(0) / thin.sizes.sum()
    np.testing.assert_allclose(thin_centroid, centroid, atol=1e-5)
    same = ops.merge_fused(fused.tokens, fused.sizes, fused.positions, 12, 5.0)
    assert np.array_equal(same.tokens, fused.tokens) and np.array_equal(same.sizes, fused.sizes)
    with pytest.raises(ValueError):
        ops.merge_fused(fused.tokens, fused.sizes, fused.positions, 0)


def test_token_positions_cache_cannot_be_changed_by_a_caller():
    pos = ops.token_positions(2, 4)
    pos[:] = -1.0
    assert ops.token_positions(2, 4).min() >= 0.0
    with pytest.raises(ValueError):
        ops.token_positions(5, 4)


def test_engine_does_not_fuse_an_unchanged_window_again():
    from tinygpt_ros.deploy.factory import load_engine
    from tinygpt_ros.ros.params import default_model_dir

    engine = load_engine(default_model_dir(), backend="onnxruntime")
    calls = []
    fuse = engine.kernels.fuse
    engine.kernels.fuse = lambda *a: calls.append(1) or fuse(*a)
    frame = np.full((96, 128, 3), 90, np.uint8)
    frame[30:60, 40:80] = (200, 40, 40)
    results = [engine.process_frame(frame) for _ in range(8)]
    window = engine.cfg.temporal_window
    # the first frame computes; then the same output fills the window, after which the
    # window no longer changes and fusion is skipped
    assert [r.record.tokens_recomputed for r in results[1:]] == [0] * 7
    assert len(calls) == window
    again = fuse(np.stack([engine._streams["frame"].last_output] * window),
                 engine.knobs()["max_fused_tokens"], 0.1)
    memo = engine._streams["frame"].fusion_memo[2]
    assert all(np.array_equal(a, b) for a, b in zip(memo, again, strict=True))
    assert results[-1].record.tokens_fused == int((again[1] > 0).sum())
    engine.set_knob("max_fused_tokens", 20)  # another setting: fused again
    engine.process_frame(frame)
    assert len(calls) == window + 1
