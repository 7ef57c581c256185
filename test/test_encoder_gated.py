"""Visual encoder branches and gated token reuse (Eventful-Transformers-style caches)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tinygpt_ros import ops
from tinygpt_ros.model.encoder import GatedEncoderCache, VisualEncoder
from tinygpt_ros.ops import TokenReference
from tinygpt_ros.spec.config import ModelConfig


def token_change(embed, reference) -> torch.Tensor:
    """The engines' change test (numpy, `ops/gating.py`) on torch embeddings."""
    return torch.from_numpy(ops.token_change(np.asarray(embed), np.asarray(reference)))


def select_tokens(change: torch.Tensor, threshold: float, max_active: int = 0) -> torch.Tensor:
    return torch.from_numpy(ops.select_tokens(change.numpy(), threshold, max_active))


CFG = ModelConfig(dim=32, heads=2, branch_depths=(1, 2, 3))


@pytest.fixture(scope="module")
def enc() -> VisualEncoder:
    torch.manual_seed(0)
    return VisualEncoder(CFG).eval()


@pytest.fixture(scope="module")
def frames(enc) -> tuple[torch.Tensor, torch.Tensor]:
    """Embedded tokens of two frames (196, D); the second differs in patches of rows 0-2."""
    g = torch.Generator().manual_seed(1)
    a = torch.randn(1, 3, 224, 224, generator=g)
    b = a.clone()
    b[..., :48, :] += torch.randn(1, 3, 48, 224, generator=g)
    with torch.no_grad():
        return enc.embed_frames(a)[0], enc.embed_frames(b)[0]


def _dense(enc, tokens, branch):
    with torch.no_grad():
        return enc(tokens[None], branch)[0]


def test_shapes_and_structure(enc):
    assert len(enc.blocks) == 3 and len(enc.exit_norms) == 3
    with torch.no_grad():
        assert enc.embed_frames(torch.zeros(2, 3, 224, 224)).shape == (2, 196, 32)
        assert enc.embed_events(torch.zeros(2, 2, 112, 112)).shape == (2, 196, 32)
        assert enc(torch.randn(2, 50, 32), 1).shape == (2, 50, 32)  # token drop: N < 196
    with pytest.raises(ValueError, match="frames"):
        enc.embed_frames(torch.zeros(1, 3, 200, 200))
    with pytest.raises(ValueError, match="event"):
        enc.embed_events(torch.zeros(1, 3, 112, 112))
    with pytest.raises(ValueError, match="branch"):
        enc(torch.randn(1, 4, 32), 3)
    with pytest.raises(ValueError, match="multiple of heads"):
        VisualEncoder(ModelConfig(dim=30, heads=4))


def test_forward_exits_match_forward(enc, frames):
    x = torch.stack(frames)
    with torch.no_grad():
        exits = enc.forward_exits(x)
        for b in range(3):
            assert torch.equal(exits[b], enc(x, b))


def test_forward_exits_trains_every_exit():
    torch.manual_seed(0)
    enc = VisualEncoder(CFG)
    exits = enc.forward_exits(torch.randn(2, 10, 32))
    sum(e.pow(2).mean() for e in exits).backward()
    assert all(n.weight.grad is not None for n in enc.exit_norms)


@pytest.mark.parametrize("branch", [0, 1, 2])
def test_dense_path_is_bit_identical(enc, frames, branch):
    cache = GatedEncoderCache()
    a, b = frames
    out = cache.run(enc, a, None, branch)
    assert torch.equal(out, _dense(enc, a, branch)) and cache.last_dense
    assert cache.n_recomputed == 196 and cache.depth == CFG.branch_depths[branch]
    out = cache.run(enc, b, torch.ones(196, dtype=torch.bool), branch)
    assert torch.equal(out, _dense(enc, b, branch)) and cache.last_dense


def test_threshold_zero_recomputes_everything_exactly(enc, frames):
    cache, ref = GatedEncoderCache(), TokenReference()
    for emb in (*frames, frames[0]):
        change = token_change(emb, ref.value) if not ref.is_empty else torch.zeros(196)
        sel = select_tokens(change, 0.0)
        out = cache.run(enc, emb, sel, 2)
        ref.update(emb.numpy(), sel.numpy())
        assert cache.n_recomputed == 196
        assert torch.equal(out, _dense(enc, emb, 2))


def test_first_gated_call_on_empty_cache_is_dense(enc, frames):
    cache = GatedEncoderCache()
    sel = torch.zeros(196, dtype=torch.bool)
    sel[:5] = True
    out = cache.run(enc, frames[0], sel, 1)
    assert cache.last_dense and torch.equal(out, _dense(enc, frames[0], 1))


def test_unchanged_frame_recomputes_nothing(enc, frames):
    cache, ref = GatedEncoderCache(), TokenReference()
    a = frames[0]
    first = cache.run(enc, a, None, 2)
    ref.update(a.numpy())
    sel = select_tokens(token_change(a, ref.value), 0.5)
    assert not sel.any()
    out = cache.run(enc, a, sel, 2)
    assert cache.n_recomputed == 0 and not cache.last_dense
    assert torch.equal(out, first)


def test_top_k_cap(enc, frames):
    a, b = frames
    change = token_change(b, a)
    over = int((change > 0.01).sum())
    assert over > 10
    sel = select_tokens(change, 0.01, max_active=10)
    assert int(sel.sum()) == 10
    assert float(change[sel].min()) >= float(change[~sel].max())
    cache = GatedEncoderCache()
    cache.run(enc, a, None, 2)
    cache.run(enc, b, sel, 2)
    assert cache.n_recomputed == 10


def test_gated_matches_dense_for_selected_rows_when_others_unchanged(enc, frames):
    """Key property: the selected rows see the fresh keys of all tokens in the first block."""
    a, b = frames
    changed = token_change(b, a) > 0
    assert 0 < int(changed.sum()) < 196
    cache = GatedEncoderCache()
    cache.run(enc, a, None, 0)
    out = cache.run(enc, b, changed, 0)
    dense_b = _dense(enc, b, 0)
    assert not cache.last_dense and cache.n_recomputed == int(changed.sum())
    assert torch.allclose(out[changed], dense_b[changed], atol=1e-5)
    # keys/values of all rows equal the dense ones of the new frame (others were unchanged)
    with torch.no_grad():
        _, k, v = enc.blocks[0].forward_kv(b[None])
    assert torch.allclose(cache.keys[0], k[0], atol=1e-5)
    assert torch.allclose(cache.values[0], v[0], atol=1e-5)


@pytest.mark.parametrize("branch", [0, 1, 2])
def test_gated_subset_of_unchanged_tokens_equals_dense(enc, frames, branch):
    a = frames[0]
    sel = torch.zeros(196, dtype=torch.bool)
    sel[torch.randperm(196, generator=torch.Generator().manual_seed(2))[:40]] = True
    cache = GatedEncoderCache()
    cache.run(enc, a, None, 2)
    out = cache.run(enc, a, sel, branch)
    assert cache.n_recomputed == 40
    assert torch.allclose(out, _dense(enc, a, branch), atol=1e-5)


def test_unselected_rows_keep_cached_outputs_and_ignore_fresh_values(enc, frames):
    a, b = frames
    sel = torch.zeros(196, dtype=torch.bool)
    sel[:20] = True
    c1, c2 = GatedEncoderCache(), GatedEncoderCache()
    first = c1.run(enc, a, None, 2)
    c2.run(enc, a, None, 2)
    out1 = c1.run(enc, b, sel, 2)
    garbage = b.clone()
    garbage[~sel] = 1e3  # values of unselected rows must not be read
    out2 = c2.run(enc, garbage, sel, 2)
    assert torch.equal(out1, out2)
    assert torch.equal(out1[~sel], first[~sel])
    assert torch.equal(c1.inputs[0][~sel], a[~sel]) and torch.equal(c1.inputs[0][sel], b[sel])


def test_branch_switching_and_cache_depth(enc, frames):
    a, b = frames
    sel = torch.zeros(196, dtype=torch.bool)
    sel[:30] = True
    cache = GatedEncoderCache()
    cache.run(enc, a, None, 1)  # depth 2 cached
    cache.run(enc, b, sel, 2)  # deeper than cached: dense fallback
    assert cache.last_dense and cache.n_recomputed == 196 and cache.depth == 3
    cache.run(enc, a, sel, 0)  # shallower: gated, deeper caches dropped (now stale)
    assert not cache.last_dense and cache.depth == 1
    out = cache.run(enc, a, sel, 1)  # deeper again: dense
    assert cache.last_dense and torch.equal(out, _dense(enc, a, 1))
    cache.reset()
    assert cache.is_empty and cache.depth == 0


def test_bad_arguments(enc, frames):
    cache = GatedEncoderCache()
    with pytest.raises(ValueError, match="branch"):
        cache.run(enc, frames[0], None, 5)
    with pytest.raises(ValueError, match="tokens"):
        cache.run(enc, frames[0][None], None, 0)
    with pytest.raises(ValueError, match="selected"):
        cache.run(enc, frames[0], torch.ones(10, dtype=torch.bool), 0)
    with pytest.raises(ValueError, match="selected"):
        cache.run(enc, frames[0], torch.ones(196), 0)


def test_token_count_change_falls_back_to_dense(enc, frames):
    cache = GatedEncoderCache()
    cache.run(enc, frames[0], None, 0)
    sub = frames[1][:100]
    sel = torch.zeros(100, dtype=torch.bool)
    sel[:3] = True
    out = cache.run(enc, sub, sel, 0)
    assert cache.last_dense and torch.equal(out, _dense(enc, sub, 0))
