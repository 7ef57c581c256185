"""Peer benchmark (`tinygpt-ros bench`): what each peer runs and how its FLOPs are counted, the
frontier, and the report/doc the command writes. Tiny trained model, a few short clips.
"""

from __future__ import annotations

import copy
import dataclasses
import json

import numpy as np
import pytest
import torch

from tinygpt_ros.data.scenes import make_clips
from tinygpt_ros.deploy.factory import load_engine
from tinygpt_ros.evaluation import bench, peers
from tinygpt_ros.spec import flops as F
from tinygpt_ros.spec.config import NUM_TOKENS


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> str:
    from tinygpt_ros.train.recipe import train

    out = tmp_path_factory.mktemp("tiny_model")
    train("tiny", out, seed=0, threads=1)
    return str(out)


@pytest.fixture(scope="module")
def loaded(tiny_model):
    return peers.load_model(tiny_model)


@pytest.fixture(scope="module")
def clip():
    return make_clips("test", 1, motion="busy", num_frames=6)[0]


def test_dense_window_peer_equals_engine_dense(tiny_model, loaded, clip):
    engine = load_engine(tiny_model)
    engine.set_knob("sttf_enabled", False)
    engine.set_knob("anc_enabled", False)
    t = loaded[0].cfg.temporal_window
    dense = peers.PeerEngine(*loaded, peers.PeerSpec("dense", 0, t))
    for frame in clip.frames:
        a, b = dense.process_frame(frame), engine.process_frame(frame)
        assert a.caption == b.caption
        assert a.record.tokens_fused == b.record.tokens_fused
        # the engine also runs its router (a few hundred FLOPs); everything else is identical
        assert a.record.total_flops == pytest.approx(
            b.record.total_flops - b.record.flops["router"], rel=1e-12)
        assert a.record.dense_flops == pytest.approx(b.record.dense_flops, rel=1e-12)


def _last_records(loaded, clip, specs):
    model, tok, classes = loaded
    out = {}
    for name, spec in specs.items():
        eng = peers.PeerEngine(model, tok, classes, spec)
        out[name] = [eng.process_frame(f).record for f in clip.frames][-1]
    return out


def test_peer_tokens_and_run_time_flops(loaded, clip):
    """Token counts per method and budget; the FLOPs counted as each peer ran equal the
    analytical formulas for what it ran (matmuls and convs only, both conventions)."""
    model = loaded[0]
    cfg = model.cfg
    big = model.largest_branch
    depth = cfg.branch_depths[big]
    specs = {"dense": peers.PeerSpec("dense"), "tome": peers.PeerSpec("tome", 16),
             "drop": peers.PeerSpec("random_drop", 31), "down": peers.PeerSpec("downscale", 7),
             "fastv": peers.PeerSpec("fastv", 0.5)}
    last = _last_records(loaded, clip, specs)
    assert last["dense"].tokens_fused == NUM_TOKENS  # single frame: the current frame only
    assert last["tome"].tokens_fused == NUM_TOKENS - depth * 16
    assert last["drop"].tokens_fused == 31
    assert last["down"].tokens_recomputed == 49 and last["down"].tokens_fused == 49
    assert last["down"].flops["encoder"] == F.encoder_flops(cfg, big, 49)
    assert last["fastv"].tokens_fused == NUM_TOKENS // 2
    # ToMe's savings are in the encoder; random drop's only after it
    assert last["tome"].flops["encoder"] < last["dense"].flops["encoder"]
    assert last["drop"].flops["encoder"] == last["dense"].flops["encoder"]
    for name, rec in last.items():
        assert rec.measured_total_flops == pytest.approx(rec.total_flops, rel=1e-9), name
    # random drop is seeded: the same choice after reset
    model, tok, classes = loaded
    eng = peers.PeerEngine(model, tok, classes, peers.PeerSpec("random_drop", 31), seed=3)
    caps = [eng.process_frame(f).caption for f in clip.frames]
    eng.reset()
    assert [eng.process_frame(f).caption for f in clip.frames] == caps


def test_tome_with_r_zero_is_the_dense_encoder(loaded):
    """No merges: sizes stay 1, log(1) = 0, so proportional attention changes nothing."""
    enc = loaded[0].encoder
    torch.manual_seed(0)
    x = torch.randn(1, NUM_TOKENS, enc.cfg.dim)
    pos = torch.rand(1, NUM_TOKENS, 2)
    branch = enc.num_branches - 1
    out, size, _, counts = peers.tome_encode(enc, x, branch, 0, pos)
    torch.testing.assert_close(out, enc(x, branch), rtol=1e-5, atol=1e-5)
    assert counts == [NUM_TOKENS] * enc.depth_of(branch) and bool((size == 1).all())
    out, size, pos2, counts = peers.tome_encode(enc, x, branch, 20, pos)
    assert out.shape[1] == NUM_TOKENS - 20 * enc.depth_of(branch)
    assert counts[1] == NUM_TOKENS - 20
    # sizes add up to the patches they stand for; positions stay inside the image
    assert float(size.sum()) == pytest.approx(NUM_TOKENS)
    assert float(pos2.min()) >= 0.0 and float(pos2.max()) <= 1.0
    with pytest.raises(ValueError, match="fastv budget"):
        peers.PeerSpec("fastv", 2.0)


def test_fastv_prunes_after_layer_one(loaded):
    """A 2-layer decoder made of the trained layer twice: keeping every token reproduces
    decoder.generate exactly, pruning shortens layer 2's keys, FLOPs follow."""
    model, tok, _ = loaded
    dec = copy.deepcopy(model.decoder)
    dec.blocks.append(copy.deepcopy(dec.blocks[0]))
    dec.cfg = dataclasses.replace(dec.cfg, dec_layers=2)
    torch.manual_seed(0)
    vis = torch.randn(1, 60, dec.cfg.dim)
    sizes = torch.ones(1, 60)
    pos = torch.rand(1, 60, 3)
    ref = dec.generate(vis, sizes, tok.bos_id, tok.eos_id, vis_pos=pos)[0]
    assert peers.fastv_generate(dec, vis, sizes, tok.bos_id, tok.eos_id, keep=60,
                                vis_pos=pos) == ref
    pruned = peers.fastv_generate(dec, vis, sizes, tok.bos_id, tok.eos_id, keep=8, vis_pos=pos)
    assert all(0 <= i < dec.cfg.vocab_size for i in pruned)
    # pruning everything but the most attended tokens equals decoding those tokens in layer 2
    cfg = dec.cfg
    n = 5
    assert peers.fastv_flops(cfg, 60, 60, n) == F.decode_flops(cfg, 60, n)
    one = dataclasses.replace(cfg, dec_layers=1)
    head = F.lm_head_flops(cfg)
    expected = (F.projector_flops(cfg, 60) + F.decoder_prefill_flops(one, 61)
                + F.decoder_prefill_flops(one, 9) - head)
    for j in range(1, n):
        expected += F.decoder_step_flops(one, 60 + j + 1) + F.decoder_step_flops(one, 8 + j + 1)
        expected -= head
    assert peers.fastv_flops(cfg, 60, 8, n) == pytest.approx(expected, rel=1e-12)
    with pytest.raises(ValueError, match="prune_after"):
        peers.fastv_generate(dec, vis, sizes, tok.bos_id, tok.eos_id, keep=8, prune_after=0)


def test_pool_grid_is_a_block_average():
    x = torch.arange(NUM_TOKENS, dtype=torch.float32).reshape(1, NUM_TOKENS, 1)
    pooled = peers.pool_grid(x, 7)
    assert pooled.shape == (1, 49, 1)
    assert float(pooled[0, 0, 0]) == (0 + 1 + 14 + 15) / 4
    assert peers.pool_grid(x, 5).shape == (1, 25, 1)


def test_frontier_verdict_and_targets():
    pts = {"a": (1.0, 0.5), "b": (0.5, 0.5), "c": (0.2, 0.1), "d": (0.5, 0.4)}
    assert bench.frontier(pts) == ["b", "c"]
    summary = {"rows": {n: {"total_flops_vs_dense": c, "scores": {"CIDEr": q},
                            "on_frontier": {"CIDEr": n in ("b", "c")}}
                        for n, (c, q) in pts.items()}}
    assert "is on the" in bench.verdict(summary, name="b")
    text = bench.verdict(summary, name="d")
    assert "is NOT on the CIDEr-vs-FLOPs frontier" in text and "b (CIDEr 0.500" in text

    def row(family, cost, cider):
        return {"family": family, "total_flops_vs_dense": cost, "scores": {"CIDEr": cider},
                "quality_vs_dense": {"CIDEr": cider}, "cider_vs_dense_interval": None}

    rows = {"dense": row(None, 1.0, 1.0), "sttf+anc": row("sttf+anc", 0.18, 0.98),
            "sttf+anc fused=16": row("sttf+anc", 0.10, 0.90),
            "tome r=40": row("tome", 0.25, 0.95), "downscale 4x4": row("downscale", 0.12, 0.80)}
    t = bench.targets(rows)
    assert t["quality_at_cost"]["met"] and t["curve_above_peers"]["met"]
    assert t["curve_above_peers"]["peer_points_checked"] == 2
    rows["downscale 4x4"] = row("downscale", 0.05, 0.80)  # cheaper than any STTF+ANC point
    rows["sttf+anc"] = row("sttf+anc", 0.25, 0.98)
    t = bench.targets(rows)
    assert not t["quality_at_cost"]["met"]
    assert [x["peer"] for x in t["curve_above_peers"]["losses"]] == ["downscale 4x4"]
    assert bench.family_of("sttf+anc no caption reuse") is None
    assert bench.family_of("fastv keep 50%") == "fastv"


def test_engine_switch_routes_knobs(tiny_model, loaded):
    engine = load_engine(tiny_model)
    switch = peers.EngineSwitch({"torch": engine,
                                 "tome": peers.PeerEngine(*loaded, peers.PeerSpec("tome", 8))})
    assert next(iter(switch.knobs())) == "engine"
    switch.set_knob("engine", "tome")
    switch.set_knob("max_fused_tokens", 12)
    assert switch.engines["tome"].knobs()["max_fused_tokens"] == 12
    assert engine.knobs()["max_fused_tokens"] != 12
    with pytest.raises(ValueError, match="engine"):
        switch.set_knob("engine", "nope")


def test_bench_cli_writes_report_plot_and_doc(tiny_model, tmp_path, monkeypatch):
    from tinygpt_ros import cli

    # one budget per family keeps the test short; the full sweep is the same code per row
    peer_rows = {k: bench.PEER_ROWS[k] for k in ("dense", "tome r=40", "random_drop 31",
                                                 "downscale 7x7", "fastv keep 50%")}
    engine_rows = {k: bench.ENGINE_ROWS[k] for k in ("dense_window", "sttf+anc",
                                                     "sttf+anc fused=16",
                                                     "sttf+anc no caption reuse")}
    monkeypatch.setattr(bench, "PEER_ROWS", peer_rows)
    monkeypatch.setattr(bench, "ENGINE_ROWS", engine_rows)

    doc = tmp_path / "benchmarks.md"
    doc.write_text("# Benchmarks\n\nHand-written intro.\n\n" + bench.MARK_START + "\nold\n"
                   + bench.MARK_END + "\n\nHand-written outro.\n")
    out = tmp_path / "bench"
    assert cli.main(["bench", "--model", tiny_model, "--clips-per-motion", "1", "--frames", "4",
                     "--long-clips", "1", "--long-frames", "8", "--bootstrap", "10",
                     "--threads", "1", "--out", str(out), "--markdown", str(doc)]) == 0
    rep = json.loads((out / "bench.json").read_text())
    assert set(rep["rows"]) == set(peer_rows) | set(engine_rows)
    assert rep["rows"]["dense"]["total_flops_vs_dense"] == 1.0
    assert rep["rows"]["dense_window"]["total_flops_vs_dense"] > 1.0
    assert rep["rows"]["sttf+anc"]["total_flops_vs_dense"] < 1.0
    assert rep["rows"]["random_drop 31"]["decoder_tokens"] == 31
    # the engine rows ran with their own knobs (not the switch's starting ones)
    assert rep["rows"]["dense_window"]["decoder_tokens"] > NUM_TOKENS
    assert rep["rows"]["sttf+anc fused=16"]["decoder_tokens"] <= 16
    assert rep["rows"]["sttf+anc no caption reuse"]["caption_reuse_pct"] == 0.0
    assert rep["rows"]["tome r=40"]["family"] == "tome"
    assert rep["targets"]["curve_above_peers"]["peer_points_checked"] >= 0
    lo, hi = rep["rows"]["sttf+anc"]["cider_vs_dense_interval"]
    if rep["rows"]["dense"]["scores"]["CIDEr"] > 0:
        assert lo <= hi
    else:  # a tiny model can score 0 on every clip: no ratio, reported as such (not 0 or inf)
        assert np.isnan(lo) and np.isnan(hi)
    assert rep["clips"]["segments"] >= 3 and rep["model"]["sha256"]
    assert rep["clips"]["split"] == "test"
    assert "held-out test split" in (out / "bench.md").read_text()
    assert rep["blind"]["caption"] and set(rep["blind"]["scores"]) >= {"CIDEr", "BLEU-4"}
    assert "blind" not in rep["rows"]  # a floor, not a configuration
    assert rep["drift"]["buckets"] and rep["drift"]["buckets"][0]["since_refresh"] == [0, 0]
    # a full refresh is a dense pass: no reuse error on refresh frames
    assert rep["drift"]["buckets"][0]["encoder_rel_error_mean"] < 1e-4
    assert set(rep["targets"]) == {"quality_at_cost", "curve_above_peers"}
    assert (out / "curves.png").read_bytes()[:4] == b"\x89PNG"
    text = doc.read_text()
    assert text.startswith("# Benchmarks\n\nHand-written intro.")
    assert text.rstrip().endswith("Hand-written outro.") and "\nold\n" not in text
    assert "Blind floor: one fixed caption" in text
    assert "| sttf+anc |" in text and "frontier" in text and rep["model"]["sha256"] in text
    assert "single-frame dense" in text and "Drift between refreshes" in text
    assert text.count(bench.MARK_START) == 1
    assert np.isfinite(rep["rows"]["fastv keep 50%"]["latency_p50_vs_dense"])


def test_bench_clips_of_the_val_split_are_other_scenes_than_the_test_clips():
    """`bench --split val` runs the same motions on val scenes (to try a model or a setting
    before the test clips see it); unknown splits are refused."""
    test = bench.bench_clips(1, 2, 1, 3)
    val = bench.bench_clips(1, 2, 1, 3, split="val")
    assert [c.motion for c in val] == [c.motion for c in test]
    assert {c.seed for c in val}.isdisjoint({c.seed for c in test})
    with pytest.raises(ValueError, match="split"):
        bench.bench_clips(1, 2, 0, 3, split="train")
