"""Analytical FLOPs agree with torch's FlopCounterMode on the real modules (within 10%)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from tinygpt_ros.model.anc import Router
from tinygpt_ros.model.encoder import GatedEncoderCache, VisualEncoder
from tinygpt_ros.model.sttf import TemporalFusion
from tinygpt_ros.spec import flops
from tinygpt_ros.spec.config import GEOMETRY_FEATURES, ModelConfig

CFG = ModelConfig(dim=32, heads=2, branch_depths=(1, 2, 3), dec_dim=24, dec_layers=2,
                  dec_heads=2, vocab_size=50, num_gestures=11, temporal_window=4)


def _measure(fn) -> tuple[float, object]:
    with torch.no_grad(), FlopCounterMode(display=False) as fc:
        out = fn()
    return float(fc.get_total_flops()), out


def _close(measured: float, analytical: float, tol: float = 0.10) -> None:
    assert measured > 0
    assert abs(analytical - measured) <= tol * measured, (analytical, measured)


@pytest.fixture(scope="module")
def enc() -> VisualEncoder:
    torch.manual_seed(0)
    return VisualEncoder(CFG).eval()


@pytest.mark.parametrize("branch", [0, 1, 2])
def test_dense_encoder_path(enc, branch):
    x = torch.randn(1, 3, 224, 224)
    measured, _ = _measure(lambda: enc(enc.embed_frames(x), branch))
    _close(measured, flops.patch_embed_flops(CFG, "frame") + flops.encoder_flops(CFG, branch))
    h = torch.rand(1, 2, 112, 112)
    measured, _ = _measure(lambda: enc(enc.embed_events(h), branch))
    _close(measured, flops.patch_embed_flops(CFG, "events") + flops.encoder_flops(CFG, branch))


@pytest.mark.parametrize("branch", [0, 2])
def test_gated_encoder_run(enc, branch):
    with torch.no_grad():
        tokens = enc.embed_frames(torch.randn(1, 3, 224, 224))[0]
    cache = GatedEncoderCache()
    cache.run(enc, tokens, None, 2)
    sel = torch.zeros(196, dtype=torch.bool)
    sel[torch.randperm(196, generator=torch.Generator().manual_seed(0))[:39]] = True  # ~20%
    measured, _ = _measure(lambda: cache.run(enc, tokens + 0.1, sel, branch))
    assert cache.n_recomputed == 39 and not cache.last_dense
    gated = flops.encoder_flops(CFG, branch, 196, cache.n_recomputed)
    _close(measured, gated)
    assert gated < 0.3 * flops.encoder_flops(CFG, branch)


def test_branch_costs_and_default_config():
    d = flops.branch_dense_flops(ModelConfig())
    assert len(d) == 3 and d[0] < d[1] < d[2]
    assert d[1] == pytest.approx(2 * d[0]) and d[2] == pytest.approx(4 * d[0])
    assert flops.encoder_flops(CFG, 1, 196, 0) < flops.encoder_flops(CFG, 1, 196, 10)
    with pytest.raises(ValueError, match="branch"):
        flops.encoder_flops(CFG, 3)
    with pytest.raises(ValueError, match="modality"):
        flops.patch_embed_flops(CFG, "lidar")


def test_router_and_fusion():
    router = Router(CFG)
    measured, _ = _measure(lambda: router(torch.zeros(1, 4)))
    _close(measured, flops.router_flops(CFG))
    fusion = TemporalFusion(CFG)
    window = torch.randn(1, 4, 196, CFG.dim)
    measured, (tok, _, _) = _measure(lambda: fusion(window, 31, static_threshold=0.0))
    assert tok.shape[1] == 31
    _close(measured, flops.fusion_flops(CFG, 4 * 196, 31))
    assert flops.fusion_flops(CFG, 10, 20) == 0.0


class _RefBlock(nn.Module):
    """Standard pre-LN causal block as documented for the decoder (4x MLP)."""

    def __init__(self, e: int, heads: int) -> None:
        super().__init__()
        self.h = heads
        self.ln1, self.ln2 = nn.LayerNorm(e), nn.LayerNorm(e)
        self.qkv, self.proj = nn.Linear(e, 3 * e), nn.Linear(e, e)
        self.fc1, self.fc2 = nn.Linear(e, 4 * e), nn.Linear(4 * e, e)

    def forward(self, x, past=None):
        b, q, e = x.shape
        qh, k, v = self.qkv(self.ln1(x)).view(b, q, 3, self.h, e // self.h).permute(2, 0, 3, 1, 4)
        if past is not None:
            k, v = torch.cat([past[0], k], 2), torch.cat([past[1], v], 2)
        att = qh @ k.transpose(-2, -1) / math.sqrt(e // self.h)
        if past is None:
            att = att.masked_fill(torch.ones(q, q, dtype=torch.bool).triu(1), float("-inf"))
        x = x + self.proj((att.softmax(-1) @ v).transpose(1, 2).reshape(b, q, e))
        return x + self.fc2(F.gelu(self.fc1(self.ln2(x)))), (k, v)


class _RefDecoder(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.proj = nn.Linear(cfg.dim, cfg.dec_dim)
        self.geometry = nn.Linear(GEOMETRY_FEATURES, cfg.dec_dim)  # cfg.decoder_geometry
        self.blocks = nn.ModuleList(_RefBlock(cfg.dec_dim, cfg.dec_heads)
                                    for _ in range(cfg.dec_layers))
        self.ln = nn.LayerNorm(cfg.dec_dim)
        self.head = nn.Linear(cfg.dec_dim, cfg.vocab_size)

    def run(self, x, past=None):
        new = []
        for i, blk in enumerate(self.blocks):
            x, kv = blk(x, None if past is None else past[i])
            new.append(kv)
        return self.head(self.ln(x[:, -1])), new


def test_reference_decoder_prefill_and_step():
    torch.manual_seed(0)
    dec = _RefDecoder(CFG)
    vis = torch.randn(1, 31, CFG.dim)
    feats = torch.rand(1, 31, GEOMETRY_FEATURES)
    m_proj, pv = _measure(lambda: dec.proj(vis) + dec.geometry(feats))
    _close(m_proj, flops.projector_flops(CFG, 31))
    prefix = torch.cat([pv, torch.randn(1, 1, CFG.dec_dim)], 1)
    m_pre, (_, past) = _measure(lambda: dec.run(prefix))
    _close(m_pre, flops.decoder_prefill_flops(CFG, 32))
    m_step, _ = _measure(lambda: dec.run(torch.randn(1, 1, CFG.dec_dim), past))
    _close(m_step, flops.decoder_step_flops(CFG, 33))


def test_real_decoder_if_present():
    from tinygpt_ros.model import decoder
    torch.manual_seed(0)
    dec = decoder.TinyGPTDecoder(CFG).eval()
    vis, size, pos = torch.randn(1, 20, CFG.dim), torch.ones(1, 20), torch.rand(1, 20, 3)
    bos = torch.zeros(1, 1, dtype=torch.long)
    m_proj, _ = _measure(lambda: dec.project(vis, pos))
    _close(m_proj, flops.projector_flops(CFG, 20))
    m_pre, (_, cache) = _measure(lambda: dec.prefill(vis, size, bos, pos))
    _close(m_pre + m_proj, flops.projector_flops(CFG, 20) + flops.decoder_prefill_flops(CFG, 21))
    m_step, _ = _measure(lambda: dec.step(torch.tensor([3]), cache))
    _close(m_step, flops.decoder_step_flops(CFG, 22))
    max_len = 6
    m_gen, ids = _measure(lambda: dec.generate(vis, size, 0, 1, max_len=max_len, vis_pos=pos))
    n_gen = len(ids[0]) + 1 if len(ids[0]) < max_len else max_len
    _close(m_gen, flops.decode_flops(CFG, 20, n_gen))


def test_real_gesture_head_if_present():
    from tinygpt_ros.model import heads
    head = heads.GestureHead(CFG).eval()
    vis, size, pos = torch.randn(1, 31, CFG.dim), torch.ones(1, 31), torch.rand(1, 31, 3)
    measured, _ = _measure(lambda: head(vis, size, pos))
    _close(measured, flops.gesture_head_flops(CFG, 31))
    assert flops.gesture_head_flops(CFG) < flops.gesture_head_flops(CFG, 31)


def test_frame_stem_is_a_config_choice_old_manifests_read_as_patch():
    conv = ModelConfig(dim=32, heads=2, frame_stem="conv")
    assert conv.to_dict()["frame_stem"] == "conv"
    assert ModelConfig.from_dict(conv.to_dict()) == conv
    assert "frame_stem" not in CFG.to_dict()  # the patch stem writes no key
    assert ModelConfig.from_dict(CFG.to_dict()).frame_stem == "patch"
    sides = [side for *_, side in conv.frame_stem_layers()]
    assert sides == [112, 56, 28, 14] and conv.frame_stem_layers()[-1][1] == 32
    assert VisualEncoder(conv).embed_frames(torch.zeros(1, 3, 224, 224)).shape == (1, 196, 32)
    # the patch stem's module keeps its key: shipped weights load as before
    assert isinstance(VisualEncoder(CFG).frame_embed, nn.Conv2d)
    with pytest.raises(ValueError, match="frame_stem"):
        VisualEncoder(ModelConfig(dim=32, heads=2, frame_stem="resnet"))
    with pytest.raises(ValueError, match="divisible by 8"):
        VisualEncoder(ModelConfig(dim=36, heads=2, frame_stem="conv"))
    # the lean stem's first widths are fixed, so any width works, and it round-trips too
    lean = ModelConfig(dim=36, heads=2, frame_stem="lean_conv")
    assert ModelConfig.from_dict(lean.to_dict()) == lean
    assert [c_out for _, c_out, *_ in lean.frame_stem_layers()] == [8, 16, 32, 36]
    assert VisualEncoder(lean).embed_frames(torch.zeros(1, 3, 224, 224)).shape == (1, 196, 36)
    # at the shipped width it costs less than the patch stem it would replace
    assert (flops.patch_embed_flops(ModelConfig(frame_stem="lean_conv"), "frame")
            < flops.patch_embed_flops(ModelConfig(), "frame"))
