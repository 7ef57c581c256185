"""STTF: change detection, selection and references (numpy, `ops/gating.py`), and the torch
ToMe merging and temporal fusion invariants."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tinygpt_ros.model.sttf import TemporalFusion, bipartite_merge, token_positions
from tinygpt_ros.ops import TokenReference, select_tokens, token_change
from tinygpt_ros.spec.config import ModelConfig

CFG = ModelConfig(dim=16, heads=2, branch_depths=(1, 2, 3), temporal_window=4)


def _wmean(x: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
    return (x * s[..., None]).sum(1) / s.sum(1, keepdim=True)


def test_token_change_and_selection():
    ref = np.zeros((5, 4), np.float32)
    emb = np.zeros((5, 4), np.float32)
    emb[:, 0] = [0.0, 0.2, 0.6, 3.0, 1.0]
    ch = token_change(emb, ref)
    assert np.allclose(ch, emb[:, 0])
    assert select_tokens(ch, 0.0).all()
    assert select_tokens(ch, 0.0, max_active=2).all()  # threshold 0 = dense, cap ignored
    assert select_tokens(ch, 0.5).tolist() == [False, False, True, True, True]
    assert select_tokens(ch, 0.5, max_active=2).tolist() == [False, False, False, True, True]
    assert select_tokens(ch, 0.5, max_active=9).tolist() == [False, False, True, True, True]
    with pytest.raises(ValueError, match="threshold"):
        select_tokens(ch, -1.0)
    with pytest.raises(ValueError, match="max_active"):
        select_tokens(ch, 0.5, -1)
    with pytest.raises(ValueError, match="same shape"):
        token_change(emb, ref[:3])


def test_reference_staleness_accumulates_until_fire():
    ref = TokenReference()
    assert ref.is_empty
    emb = np.zeros((3, 2), np.float32)
    ref.update(emb, np.zeros(3, dtype=bool))  # empty: takes every row
    assert np.array_equal(ref.value, emb)
    fired = []
    for _ in range(4):  # token 0 drifts 0.3 per frame, threshold 0.5
        emb = emb.copy()
        emb[0, 0] += 0.3
        sel = select_tokens(token_change(emb, ref.value), 0.5)
        ref.update(emb, sel)
        fired.append(bool(sel[0]))
        assert not sel[1:].any()
    assert fired == [False, True, False, True]
    ref.reset()
    assert ref.is_empty


def test_bipartite_merge_preserves_mass_and_mean():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(3, 20, 8, generator=g)
    s = torch.rand(3, 20, generator=g) * 3 + 0.5
    y, t = bipartite_merge(x, s, 7)
    assert y.shape == (3, 13, 8) and t.shape == (3, 13)
    assert torch.allclose(t.sum(1), s.sum(1))
    assert torch.allclose(_wmean(y, t), _wmean(x, s), atol=1e-5)
    y, t = bipartite_merge(x, s, 100)  # r clipped to N // 2
    assert y.shape == (3, 10, 8)
    y, t = bipartite_merge(x, s, 0)
    assert y is x


def test_bipartite_merge_merges_most_similar_first():
    x = torch.tensor([[[1.0, 0.0], [0.0, 1.0], [0.0, 1.0], [1.0, 0.05]]])  # A: 0, 2  B: 1, 3
    y, s = bipartite_merge(x, torch.tensor([[1.0, 2.0, 1.0, 3.0]]), 1)
    # A token 2 equals B token 1 exactly (cosine 1), so it is merged, weighted 1:2
    assert s.tolist() == [[1.0, 3.0, 3.0]]
    assert torch.allclose(y[0, 1], torch.tensor([0.0, 1.0]))
    assert torch.allclose(y[0, 0], x[0, 0])


def test_bipartite_merge_padding_never_changes_real_tokens():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(2, 12, 4, generator=g)
    s = torch.ones(2, 12)
    pad = torch.zeros(2, 12, dtype=torch.bool)
    pad[0, [0, 2, 5, 7]] = True  # two pads in A, two in B
    pad[1, [1, 3]] = True
    x[pad] = 1e4  # garbage in padding must not leak
    s[pad] = 0
    y, t = bipartite_merge(x, s, 2)
    # row 0: the two A pads are merged first (into anything); every real token survives as is
    real_in = x[0][~pad[0]]
    real_out = y[0][t[0] > 0]
    assert real_out.shape == real_in.shape
    assert torch.equal(real_out.sort(0).values, real_in.sort(0).values)
    assert torch.allclose(t.sum(1), s.sum(1))
    assert torch.allclose(_wmean(y, t), _wmean(x, s), atol=1e-4)
    assert (y[t > 0].abs() < 100).all()


def test_bipartite_merge_is_differentiable():
    x = torch.randn(2, 10, 4, requires_grad=True)
    y, s = bipartite_merge(x, torch.ones(2, 10), 3)
    (y * s[..., None]).pow(2).sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0


@pytest.mark.parametrize(("b", "t", "max_tokens"), [(2, 3, 31), (1, 4, 1), (3, 1, 64),
                                                     (2, 4, 500), (2, 2, 2000)])
def test_fusion_invariants(b, t, max_tokens):
    torch.manual_seed(0)
    fusion = TemporalFusion(CFG)
    window = torch.randn(b, t, 196, 16)
    window[0, :, :50] = window[0, -1:, :50]  # some static positions in row 0 only
    with torch.no_grad():
        tok, size, pos = fusion(window, max_tokens)
        embedded = window + fusion.time_embed[-t:][None, :, None]
    k = tok.shape[1]
    assert tok.shape == (b, k, 16) and size.shape == (b, k) and pos.shape == (b, k, 3)
    assert k <= max_tokens and int((size > 0).sum(1).max()) <= max_tokens
    assert torch.allclose(size.sum(1), torch.full((b,), float(t * 196)))
    ref = embedded.reshape(b, t * 196, 16).mean(1)
    assert torch.allclose(_wmean(tok, size), ref, atol=1e-5)
    # centroids are averaged with the same weights: their size-weighted mean is the grid's
    grid = token_positions(t, CFG.temporal_window).reshape(t * 196, 3).mean(0)
    assert torch.allclose(_wmean(pos, size), grid.expand(b, 3), atol=1e-5)
    real = size > 0
    assert ((pos[real] >= 0) & (pos[real] <= 1)).all()


def test_fusion_without_reduction_equals_dense_tokens():
    torch.manual_seed(1)
    fusion = TemporalFusion(CFG)
    window = torch.randn(1, 3, 196, 16)
    with torch.no_grad():
        tok, size, pos = fusion(window, 10_000, static_threshold=0.0)
        dense, ones, dense_pos = fusion.dense(window)
    assert torch.equal(size, ones)
    assert torch.equal(tok, dense)  # no static, no merge: same tokens, same order
    assert torch.equal(pos, dense_pos)
    assert torch.equal(dense_pos[0], token_positions(3, CFG.temporal_window).reshape(-1, 3))
    assert torch.allclose(dense.reshape(1, 3, 196, 16) - window,
                          fusion.time_embed[-3:][None, :, None].expand(1, 3, 196, 16),
                          atol=1e-6)


def test_static_averaging_triggers_only_for_static_positions():
    torch.manual_seed(2)
    fusion = TemporalFusion(CFG)
    t = 4
    window = torch.randn(2, t, 196, 16)
    window[:, :, :100] = window[:, :1, :100] + 0.01 * torch.randn(2, t, 100, 16)  # ~static
    window[1, :, 100:150] = window[1, :1, 100:150]  # row 1: 50 more exactly static
    static = TemporalFusion.static_mask(window, 0.1)
    assert static[0, :100].all() and not static[0, 100:].any()
    assert static[1, :150].all() and not static[1, 150:].any()
    with torch.no_grad():
        tok, size, pos = fusion(window, 10_000, static_threshold=0.1)
        embedded = window + fusion.time_embed[None, :, None]
    real = (size > 0).sum(1)
    assert real.tolist() == [100 + 96 * t, 150 + 46 * t]
    assert tok.shape[1] == 100 + 96 * t  # row 1 is padded to row 0's length
    assert int((size == t).sum(1)[0]) == 100 and int((size == t).sum(1)[1]) == 150
    # a static token is the time-mean of its (time-embedded) position
    means = embedded[0].mean(0)[:100]
    got = tok[0][size[0] == t]
    assert torch.allclose(got.sort(0).values, means.sort(0).values, atol=1e-6)
    # ... sitting at its grid cell, half-way through the window in time
    assert torch.allclose(pos[0][size[0] == t][:, 2], torch.full((100,), 0.5))
    assert torch.allclose(size.sum(1), torch.full((2,), float(t * 196)))


def test_fusion_gradients_and_errors():
    fusion = TemporalFusion(CFG)
    window = torch.randn(1, 2, 196, 16, requires_grad=True)
    tok, size, _ = fusion(window, 20)
    (tok * size[..., None]).sum().backward()
    assert window.grad is not None and fusion.time_embed.grad is not None
    assert fusion.time_embed.grad[:2].abs().sum() == 0  # T=2 uses the last two slots
    with pytest.raises(ValueError, match="T=5"):
        fusion(torch.randn(1, 5, 196, 16), 10)
    with pytest.raises(ValueError, match="max_tokens"):
        fusion(torch.randn(1, 2, 196, 16), 0)
    with pytest.raises(ValueError, match="window"):
        fusion(torch.randn(2, 196, 16), 10)


def test_token_positions_layout():
    pos = token_positions(2, 4)
    assert pos.shape == (2, 196, 3)
    assert torch.allclose(pos[0, 0], torch.tensor([0.5 / 14, 0.5 / 14, 2 / 3]))
    assert torch.allclose(pos[1, 15], torch.tensor([1.5 / 14, 1.5 / 14, 1.0]))  # row 1, col 1
    assert torch.equal(token_positions(1, 1)[..., 2], torch.zeros(1, 196))
    with pytest.raises(ValueError, match="t must be"):
        token_positions(5, 4)


def test_position_weight_keeps_merges_local():
    """Similar features everywhere: plain ToMe merges pairs from anywhere in the image, the
    position term merges neighbours. One-hot identity channels (outside the metric) record
    which two tokens each size-2 output holds."""
    gen = torch.Generator().manual_seed(0)
    feats = torch.ones(1, 196, 8) + 0.1 * torch.randn(1, 196, 8, generator=gen)
    ident = torch.eye(196)[None]
    pos = token_positions(1, 1)
    x = torch.cat([feats, ident, pos], -1)
    mean_cells = {}
    for w in (0.0, 5.0):
        y, s = bipartite_merge(x, torch.ones(1, 196), 98, metric=x[..., :8],
                               pos=x[..., -3:], pos_weight=w)
        pairs = y[0, s[0] == 2, 8:-3].topk(2, dim=-1).indices  # the two source tokens
        rows, cols = pairs // 14, pairs % 14
        dist = ((rows[:, 0] - rows[:, 1]) ** 2 + (cols[:, 0] - cols[:, 1]) ** 2).float().sqrt()
        mean_cells[w] = float(dist.mean())
    assert mean_cells[5.0] < 2.0 < 4.0 < mean_cells[0.0], mean_cells


def test_merge_scores_are_quantised_so_float_noise_does_not_flip_merges():
    """Backends differ by ~1e-6. A uniform background has exact ties (equal features, equally
    near neighbours); noise that small must not decide which neighbour a token joins."""
    gen = torch.Generator().manual_seed(3)
    pos = token_positions(1, 1)
    x = torch.cat([torch.ones(1, 196, 8), pos], -1)
    noisy = x.clone()
    noisy[..., :8] += 1e-6 * torch.randn(1, 196, 8, generator=gen)
    out = [bipartite_merge(v, torch.ones(1, 196), 90, metric=v[..., :8], pos=v[..., 8:],
                           pos_weight=5.0) for v in (x, noisy)]
    assert torch.equal(out[0][1], out[1][1])
    assert torch.allclose(out[0][0][..., 8:], out[1][0][..., 8:], atol=1e-6)  # same centroids
