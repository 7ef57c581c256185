"""Run-time FLOP counting (`runtime.torch_flops.FlopMeter`, `TorchKernels(count_flops=True)`)
against torch's own counter and the analytical model (`spec/flops.py`)."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from tinygpt_ros.data.scenes import make_clips
from tinygpt_ros.model.tinygpt import TinyGPT
from tinygpt_ros.runtime.torch_engine import TorchEngine
from tinygpt_ros.runtime.torch_flops import FlopMeter
from tinygpt_ros.spec import flops as F
from tinygpt_ros.spec.config import NUM_TOKENS, ModelConfig
from tinygpt_ros.spec.tokenizer import Tokenizer

CFG = ModelConfig(dim=32, heads=2, branch_depths=(1, 2, 3), temporal_window=3, dec_dim=32,
                  dec_layers=2, dec_heads=2, max_caption_len=6)


@pytest.fixture(scope="module")
def model() -> TinyGPT:
    torch.manual_seed(0)
    tok = Tokenizer.build(["a red square on a blue background"])
    return TinyGPT(dataclasses.replace(CFG, vocab_size=tok.vocab_size)).eval()


@pytest.fixture(scope="module")
def clip():
    return make_clips("test", 1, motion="pan", num_frames=6)[0]


def _engine(model, **kw) -> TorchEngine:
    tok = Tokenizer.build(["a red square on a blue background"])
    return TorchEngine(model, tok, [f"g{i}" for i in range(model.cfg.num_gestures)],
                       count_flops=True, **kw)


def test_meter_agrees_with_torch_flop_counter(model):
    x = torch.randn(1, NUM_TOKENS, CFG.dim)
    with torch.no_grad(), FlopMeter() as mine:
        model.encoder(x, 2)
    with torch.no_grad(), FlopCounterMode(display=False) as ref:
        model.encoder(x, 2)
    assert mine.total == ref.get_total_flops() == F.encoder_flops(model.cfg, 2)
    conv = torch.nn.Conv2d(3, 8, 4, 4)
    with torch.no_grad(), FlopMeter() as m:
        conv(torch.randn(2, 3, 16, 16))
    assert m.total == 2 * (2 * 8 * 4 * 4) * (3 * 4 * 4)


def test_run_time_counts_cross_check_the_analytical_model(model, clip):
    """Stage by stage, what the kernels counted as they ran against spec/flops.py: the
    networks agree exactly; the numpy decision stages are what the analytical model leaves
    out, static averaging among them."""
    eng = _engine(model)
    eng.set_knob("anc_enabled", False)
    recs = [eng.process_frame(f, int(s)).record for f, s in
            zip(clip.frames, clip.timestamps_us, strict=True)]
    for r in recs:
        m, a = r.measured_flops, r.flops
        assert m["preprocess"] == a["preprocess"]
        assert m.get("encoder", 0.0) == pytest.approx(a["encoder"], rel=1e-12)
        if not r.caption_reused:
            assert m["decoder"] == pytest.approx(a["decoder"], rel=1e-12)
        # counted here, zero in the analytical model
        assert a["change"] == 0.0 and m["change"] >= F.patch_means_flops()
        assert m["router"] > F.router_flops(model.cfg) == a["router"]
    later = recs[1:]
    assert all(r.measured_flops["change"] > F.patch_means_flops() for r in later)
    assert any("reuse_check" in r.measured_flops for r in later)
    fused = [r for r in recs if r.measured_flops.get("fusion")]
    assert fused and all(r.measured_flops["fusion"] > 0 for r in fused)
    # the analytical merge is charged on the tokens left after static averaging, so it is
    # what ran; the counter adds the averaging itself (a numpy-convention stage)
    for i, r in enumerate(recs):
        if r.measured_flops.get("fusion"):
            t = min(i + 1, CFG.temporal_window)
            averaging = F.static_average_flops(t, NUM_TOKENS, CFG.dim) if t > 1 else 0.0
            assert r.measured_flops["fusion"] == pytest.approx(r.flops["fusion"] + averaging,
                                                               rel=1e-9)
    total_m = sum(r.measured_total_flops for r in recs)
    total_a = sum(r.total_flops for r in recs)
    assert 0.5 < total_m / total_a < 1.5  # the same order: both count what ran


def test_beam_search_is_counted_per_beam(model, clip):
    greedy, beam = _engine(model), _engine(model, beam_size=3)
    for e in (greedy, beam):
        e.set_knob("sttf_enabled", False)
        e.set_knob("anc_enabled", False)
    g = greedy.process_frame(clip.frames[0]).record
    b = beam.process_frame(clip.frames[0]).record
    # the counter sees every beam's steps, and so does the analytical model (an upper
    # estimate: every step for every beam), dense's reference included
    assert b.measured_flops["decoder"] > g.measured_flops["decoder"]
    assert g.measured_flops["decoder"] == pytest.approx(g.flops["decoder"], rel=1e-12)
    assert b.flops["decoder"] > g.flops["decoder"] and b.dense_flops > g.dense_flops
    assert 0.5 * b.flops["decoder"] <= b.measured_flops["decoder"]
    assert b.measured_flops["decoder"] <= b.flops["decoder"] * (1 + 1e-12)


def test_numpy_stage_formulas():
    assert F.change_test_flops(196, 128) == 3 * 196 * 128 + 196
    assert F.change_test_flops(196, 128, dc_tolerant=True) > F.change_test_flops(196, 128)
    assert F.reuse_check_flops(31, 31, 128) > 3 * 31 * 31 * 128
    assert F.beam_decode_flops(CFG, 10, 5, 1) == F.decode_flops(CFG, 10, 5)
    assert F.beam_decode_flops(CFG, 10, 5, 3) > F.decode_flops(CFG, 10, 5)
    assert F.static_average_flops(4, 196, 128) > 0 and F.router_feature_flops(196, 56 * 56) > 0


@pytest.mark.parametrize(("stem", "channels"), [("conv", (3, 4, 8, 16, 32)),
                                                ("lean_conv", (3, 8, 16, 32, 32))])
def test_conv_frame_stems_are_counted_as_they_run(stem, channels):
    cfg = dataclasses.replace(CFG, frame_stem=stem, vocab_size=8)
    model = TinyGPT(cfg).eval()
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad(), FlopMeter() as mine:
        model.encoder.embed_frames(x)
    with torch.no_grad(), FlopCounterMode(display=False) as ref:
        model.encoder.embed_frames(x)
    assert mine.total == ref.get_total_flops() == F.patch_embed_flops(cfg, "frame")
    # `channels` at 112, 56, 28 and 14 px, 3 x 3 kernels
    c = channels
    assert F.patch_embed_flops(cfg, "frame") == 2 * 9 * (
        112**2 * c[1] * c[0] + 56**2 * c[2] * c[1] + 28**2 * c[3] * c[2] + 14**2 * c[4] * c[3])
