"""TinyGPT decoder (prefix LM, log-size bias, KV cache, greedy/beam) and the gesture head."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from tinygpt_ros.model.decoder import TinyGPTDecoder
from tinygpt_ros.model.heads import GestureHead, tent_weights
from tinygpt_ros.spec import flops as F
from tinygpt_ros.spec.config import ModelConfig

# The decoding mechanics (cache, beams, padding, proportional attention) are tested without the
# geometry embedding; the tests at the end repeat the key ones with it.
CFG = ModelConfig(dim=16, dec_dim=32, dec_layers=2, dec_heads=4, vocab_size=12,
                  max_caption_len=8, num_gestures=5, decoder_geometry=False)
GEO = dataclasses.replace(CFG, decoder_geometry=True)
BOS, EOS = 1, 2


def make_decoder(seed: int, sharpen: float = 8.0, cfg: ModelConfig = CFG) -> TinyGPTDecoder:
    """Random init with larger weights, so outputs vary (eos appears, captions differ)."""
    torch.manual_seed(seed)
    dec = TinyGPTDecoder(cfg).eval()
    with torch.no_grad():
        for p in dec.parameters():
            if p.dim() > 1:
                p.mul_(sharpen)
    return dec


def vision(seed: int, b: int = 3, k: int = 6) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1000 + seed)
    vis = torch.randn(b, k, CFG.dim, generator=g)
    size = torch.randint(1, 5, (b, k), generator=g)
    size[0, -2:] = 0  # padding at the end
    if b > 1:
        size[1, 1] = 0  # padding in the middle
    return vis, size


def test_requires_vocab():
    with pytest.raises(ValueError, match="vocab_size"):
        TinyGPTDecoder(ModelConfig(vocab_size=0))


def test_prefill_and_steps_match_teacher_forcing():
    dec = make_decoder(0)
    vis, size = vision(0)
    ids = torch.randint(0, CFG.vocab_size, (3, 7))
    with torch.no_grad():
        full = dec(vis, size, ids)
        assert full.shape == (3, 7, CFG.vocab_size)
        logits, cache = dec.prefill(vis, size, ids[:, :3])
        outs = [logits]
        for j in range(3, 7):
            logits, cache = dec.step(ids[:, j], cache)
            outs.append(logits)
    assert cache.text_len == 7 and cache.seq_len == 6 + 7
    torch.testing.assert_close(torch.stack(outs, 1), full[:, 2:], atol=1e-5, rtol=0)


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_cache_gives_same_tokens_as_no_cache(seed):
    dec = make_decoder(seed)
    vis, size = vision(seed)
    greedy = dec.generate(vis, size, BOS, EOS, use_cache=True)
    assert greedy == dec.generate(vis, size, BOS, EOS, use_cache=False)
    beam = dec.generate(vis, size, BOS, EOS, beam_size=3, use_cache=True)
    assert beam == dec.generate(vis, size, BOS, EOS, beam_size=3, use_cache=False)
    for out in (greedy, beam):
        assert len(out) == 3
        for ids in out:
            assert len(ids) <= CFG.max_caption_len
            assert BOS not in ids and EOS not in ids


def test_generation_varies_and_stops_at_eos():
    """Guard that the equality test above is not vacuous: lengths and captions differ."""
    outs = []
    for seed in range(4):
        dec = make_decoder(seed)
        vis, size = vision(seed)
        outs += dec.generate(vis, size, BOS, EOS) + dec.generate(vis, size, BOS, EOS, beam_size=3)
    assert len({tuple(o) for o in outs}) > 4
    assert any(len(o) < CFG.max_caption_len for o in outs)


def test_padding_tokens_do_not_change_output():
    dec = make_decoder(5)
    vis, size = vision(5)
    ids = torch.randint(0, CFG.vocab_size, (3, 5))
    with torch.no_grad():
        ref = dec(vis, size, ids)
        extra = torch.randn(3, 4, CFG.dim) * 100
        vis2 = torch.cat([vis, extra], 1)
        size2 = torch.cat([size, torch.zeros(3, 4, dtype=size.dtype)], 1)
        torch.testing.assert_close(dec(vis2, size2, ids), ref, atol=1e-5, rtol=0)
        # changing what the existing padding slots hold does not matter either
        vis3 = vis.clone()
        vis3[size == 0] = 50.0
        torch.testing.assert_close(dec(vis3, size, ids), ref, atol=1e-5, rtol=0)
    assert dec.generate(vis2, size2, BOS, EOS) == dec.generate(vis, size, BOS, EOS)


def test_all_padding_row_gives_finite_logits():
    dec = make_decoder(6)
    vis, size = vision(6)
    size[2] = 0
    with torch.no_grad():
        out = dec(vis, size, torch.randint(0, CFG.vocab_size, (3, 4)))
    assert torch.isfinite(out).all()


def test_log_size_bias_is_proportional_attention():
    """A token of size 2 == two identical tokens of size 1."""
    dec = make_decoder(7)
    vis, size = vision(7, b=2, k=4)
    size = torch.tensor([[2, 1, 3, 1], [2, 4, 1, 0]])
    dup_vis = torch.cat([vis[:, :1], vis], 1)
    dup_size = torch.cat([torch.ones(2, 1, dtype=size.dtype), size], 1)
    dup_size[:, 1] = 1
    ids = torch.randint(0, CFG.vocab_size, (2, 6))
    with torch.no_grad():
        torch.testing.assert_close(dec(dup_vis, dup_size, ids), dec(vis, size, ids),
                                   atol=1e-5, rtol=0)


def test_decode_flops_match_flop_counter():
    dec = make_decoder(8, sharpen=1.0)  # weak weights: no eos, a long caption
    vis = torch.randn(1, 7, CFG.dim)
    size = torch.ones(1, 7)
    counted_ids = []
    for beam in (1,):
        with FlopCounterMode(display=False) as fc:
            ids = dec.generate(vis, size, BOS, EOS, beam_size=beam, use_cache=True)[0]
        counted_ids.append(ids)
        # n generated = caption + eos, or max_len when it ran out without eos
        n_gen = len(ids) + 1 if len(ids) < CFG.max_caption_len else len(ids)
        expected = F.decode_flops(CFG, 7, n_gen)
        assert abs(fc.get_total_flops() - expected) <= 0.10 * expected
    # and with an eos early: sharper weights
    dec = make_decoder(0)
    vis, size = vision(0, b=1, k=5)
    size = size.clamp_min(1)
    with FlopCounterMode(display=False) as fc:
        ids = dec.generate(vis, size, BOS, EOS)[0]
    n_gen = len(ids) + 1 if len(ids) < CFG.max_caption_len else len(ids)
    assert abs(fc.get_total_flops() - F.decode_flops(CFG, 5, n_gen)) <= 0.10 * F.decode_flops(
        CFG, 5, n_gen
    )


def test_generate_validates_arguments():
    dec = make_decoder(0)
    vis, size = vision(0)
    with pytest.raises(ValueError, match="beam_size"):
        dec.generate(vis, size, BOS, EOS, beam_size=0)
    with pytest.raises(ValueError, match="max_len"):
        dec.generate(vis, size, BOS, EOS, max_len=CFG.max_caption_len + 3)
    with pytest.raises(ValueError, match="vis_size"):
        dec.generate(vis, size[:, :2], BOS, EOS)
    with pytest.raises(ValueError, match="ids"):
        dec(vis, size, torch.zeros(3, CFG.max_caption_len + 3, dtype=torch.long))


# ------------------------------------------------------------------------- geometry embedding


def centroids(seed: int, b: int = 3, k: int = 6) -> torch.Tensor:
    return torch.rand(b, k, 3, generator=torch.Generator().manual_seed(2000 + seed))


def test_geometry_decoder_reads_where_and_when_tokens_are():
    """The same tokens at other centroids caption differently: what moved shows."""
    dec = make_decoder(0, cfg=GEO)
    vis, size = vision(0)
    pos = centroids(0)
    ids = torch.randint(0, CFG.vocab_size, (3, 5))
    with torch.no_grad():
        ref = dec(vis, size, ids, pos)
        moved = pos.clone()
        moved[:, :, 0] = 1.0 - moved[:, :, 0]  # mirrored left-right
        assert (dec(vis, size, ids, moved) - ref).abs().max() > 1e-3
        later = pos.clone()
        later[:, :, 2] = 0.0  # every token from the oldest frame
        assert (dec(vis, size, ids, later) - ref).abs().max() > 1e-3
        # padding's centroids do not matter, as its features do not
        pad = pos.clone()
        pad[size == 0] = 0.5
        torch.testing.assert_close(dec(vis, size, ids, pad), ref, atol=1e-5, rtol=0)


@pytest.mark.parametrize("seed", [0, 1])
def test_geometry_decoder_cache_and_teacher_forcing_agree(seed):
    dec = make_decoder(seed, cfg=GEO)
    vis, size = vision(seed)
    pos = centroids(seed)
    ids = torch.randint(0, CFG.vocab_size, (3, 6))
    with torch.no_grad():
        full = dec(vis, size, ids, pos)
        logits, cache = dec.prefill(vis, size, ids[:, :2], pos)
        outs = [logits]
        for j in range(2, 6):
            logits, cache = dec.step(ids[:, j], cache)
            outs.append(logits)
    torch.testing.assert_close(torch.stack(outs, 1), full[:, 1:], atol=1e-5, rtol=0)
    for beam in (1, 3):
        assert (dec.generate(vis, size, BOS, EOS, beam_size=beam, vis_pos=pos)
                == dec.generate(vis, size, BOS, EOS, beam_size=beam, use_cache=False,
                                vis_pos=pos))


def test_geometry_decoder_requires_centroids():
    dec = make_decoder(0, cfg=GEO)
    vis, size = vision(0)
    ids = torch.ones(3, 1, dtype=torch.long)
    with pytest.raises(ValueError, match="centroids"):
        dec(vis, size, ids)
    with pytest.raises(ValueError, match="centroids"):
        dec.generate(vis, size, BOS, EOS)
    with pytest.raises(ValueError, match="vis_pos"):
        dec(vis, size, ids, centroids(0)[:, :2])
    with pytest.raises(ValueError, match="centroids"):
        dec.project(vis)


def test_geometry_decode_flops_match_flop_counter():
    dec = make_decoder(8, sharpen=1.0, cfg=GEO)
    vis, size, pos = torch.randn(1, 7, CFG.dim), torch.ones(1, 7), centroids(8, b=1, k=7)
    with FlopCounterMode(display=False) as fc:
        ids = dec.generate(vis, size, BOS, EOS, vis_pos=pos)[0]
    n_gen = len(ids) + 1 if len(ids) < CFG.max_caption_len else len(ids)
    expected = F.decode_flops(GEO, 7, n_gen)
    assert abs(fc.get_total_flops() - expected) <= 0.10 * expected
    # the embedding's own Linear is in the count: 2 * K * GEOMETRY_FEATURES * dec_dim
    assert F.projector_flops(GEO, 7) - F.projector_flops(CFG, 7) == 2 * 7 * 21 * CFG.dec_dim


def test_manifests_from_before_the_geometry_embedding_load_without_it():
    old = {k: v for k, v in CFG.to_dict().items() if k != "decoder_geometry"}
    assert ModelConfig.from_dict(old).decoder_geometry is False
    assert ModelConfig.from_dict(GEO.to_dict()).decoder_geometry is True
    assert TinyGPTDecoder(ModelConfig.from_dict(old)).geometry is None


# ------------------------------------------------------------------------------ gesture head


def test_gesture_head_excludes_padding_and_weights_by_size():
    torch.manual_seed(0)
    head = GestureHead(CFG).eval()
    vis = torch.randn(2, 5, CFG.dim)
    size = torch.tensor([[1, 2, 1, 0, 0], [3, 1, 1, 1, 2]])
    pos = torch.rand(2, 5, 3)
    with torch.no_grad():
        ref = head(vis, size, pos)
        assert ref.shape == (2, CFG.num_gestures)
        # padding content and extra padding slots change nothing
        vis2, pos2 = vis.clone(), pos.clone()
        vis2[0, 3:] = 1e3
        pos2[0, 3:] = 0.0
        torch.testing.assert_close(head(vis2, size, pos2), ref, atol=1e-5, rtol=0)
        vis3 = torch.cat([vis, torch.randn(2, 3, CFG.dim)], 1)
        size3 = torch.cat([size, torch.zeros(2, 3, dtype=size.dtype)], 1)
        pos3 = torch.cat([pos, torch.rand(2, 3, 3)], 1)
        torch.testing.assert_close(head(vis3, size3, pos3), ref, atol=1e-5, rtol=0)
        # a size-2 token counts like two identical size-1 tokens at the same place
        dup = torch.cat([vis[:, 1:2], vis], 1)
        dpos = torch.cat([pos[:, 1:2], pos], 1)
        dsize = torch.cat([torch.ones(2, 1, dtype=size.dtype), size], 1)
        dsize[0, 2] = 1  # token 1 of row 0 had size 2
        got = head(dup, dsize, dpos)
        torch.testing.assert_close(got[0], ref[0], atol=1e-5, rtol=0)
        # all padding: finite
        assert torch.isfinite(head(vis, torch.zeros_like(size), pos)).all()


def test_gesture_head_sees_where_tokens_are():
    """The same tokens at mirrored places must be told apart (the old pooled head could not)."""
    torch.manual_seed(1)
    head = GestureHead(CFG).eval()
    vis, size = torch.randn(1, 6, CFG.dim), torch.ones(1, 6)
    pos = torch.rand(1, 6, 3)
    mirrored = pos.clone()
    mirrored[..., 0] = 1 - mirrored[..., 0]
    with torch.no_grad():
        assert not torch.allclose(head(vis, size, pos), head(vis, size, mirrored), atol=1e-4)


def test_tent_weights_interpolate_and_sum_to_one():
    w = tent_weights(torch.tensor([0.0, 1 / 3, 0.5, 1.0, 1.7]), 4)
    torch.testing.assert_close(w.sum(-1), torch.ones(5))
    torch.testing.assert_close(w[1], torch.tensor([0.0, 1.0, 0.0, 0.0]))
    torch.testing.assert_close(w[2], torch.tensor([0.0, 0.5, 0.5, 0.0]))
    torch.testing.assert_close(w[4], torch.tensor([0.0, 0.0, 0.0, 1.0]))  # clamped
    assert torch.equal(tent_weights(torch.tensor([0.3]), 1), torch.ones(1, 1))


def test_gesture_head_input_errors():
    head = GestureHead(CFG)
    vis, size, pos = torch.randn(1, 4, CFG.dim), torch.ones(1, 4), torch.rand(1, 4, 3)
    with pytest.raises(ValueError, match="vis_pos"):
        head(vis, size, pos[..., :2])
    with pytest.raises(ValueError, match="vis_size"):
        head(vis, size[:, :3], pos)
    with pytest.raises(ValueError, match="vis must"):
        head(vis[0], size, pos)


def test_gesture_head_flops_match_flop_counter():
    head = GestureHead(CFG)
    vis, size, pos = torch.randn(1, 9, CFG.dim), torch.ones(1, 9), torch.rand(1, 9, 3)
    with FlopCounterMode(display=False) as fc, torch.no_grad():
        head(vis, size, pos)
    expected = F.gesture_head_flops(CFG, 9)
    assert abs(fc.get_total_flops() - expected) <= 0.10 * expected
