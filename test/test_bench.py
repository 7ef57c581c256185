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


def test_dense_peer_equals_engine_dense(tiny_model, loaded, clip):
    engine = load_engine(tiny_model)
    engine.set_knob("sttf_enabled", False)
    engine.set_knob("anc_enabled", False)
    dense = peers.PeerEngine(*loaded, "dense")
    for frame in clip.frames:
        a, b = dense.process_frame(frame), engine.process_frame(frame)
        assert a.caption == b.caption
        assert a.record.tokens_fused == b.record.tokens_fused
        # the engine also runs its router (a few hundred FLOPs); everything else is identical
        assert a.record.total_flops == pytest.approx(
            b.record.total_flops - b.record.flops["router"], rel=1e-12)
        assert a.record.dense_flops == pytest.approx(b.record.dense_flops, rel=1e-12)


def test_peer_tokens_and_flops_accounting(loaded, clip):
    model, tok, classes = loaded
    cfg = model.cfg
    big = model.largest_branch
    budget = 31
    t = cfg.temporal_window
    results = {}
    for method in peers.PEERS:
        eng = peers.PeerEngine(model, tok, classes, method)
        results[method] = [eng.process_frame(f).record for f in clip.frames]
    last = {m: r[-1] for m, r in results.items()}  # full window
    n_window = t * NUM_TOKENS
    assert last["dense"].tokens_fused == n_window
    assert last["tome"].tokens_fused == budget
    assert last["tome"].flops["fusion"] == F.fusion_flops(cfg, n_window, budget)
    assert last["random_drop"].tokens_fused == budget
    assert last["random_drop"].flops["fusion"] == 0.0
    assert last["downscale"].tokens_recomputed == NUM_TOKENS // 4
    assert last["downscale"].tokens_fused == t * NUM_TOKENS // 4
    assert last["downscale"].flops["encoder"] == F.encoder_flops(cfg, big, NUM_TOKENS // 4)
    for m in ("dense", "tome", "random_drop", "fastv"):
        assert last[m].flops["encoder"] == F.encoder_flops(cfg, big)
    # decoder FLOPs follow the tokens it is given (the caption length is the same here)
    assert last["tome"].flops["decoder"] < last["downscale"].flops["decoder"] \
        < last["dense"].flops["decoder"]
    # the tiny model has one decoder layer: nothing after layer 1 to prune, fastv == dense
    assert cfg.dec_layers == 1 and last["fastv"].flops == last["dense"].flops
    # random drop is seeded: the same choice after reset
    eng = peers.PeerEngine(model, tok, classes, "random_drop", seed=3)
    caps = [eng.process_frame(f).caption for f in clip.frames]
    eng.reset()
    assert [eng.process_frame(f).caption for f in clip.frames] == caps


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
    ref = dec.generate(vis, sizes, tok.bos_id, tok.eos_id)[0]
    assert peers.fastv_generate(dec, vis, sizes, tok.bos_id, tok.eos_id, keep=60) == ref
    pruned = peers.fastv_generate(dec, vis, sizes, tok.bos_id, tok.eos_id, keep=8)
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


def test_pool_tokens_is_a_2x2_average():
    x = torch.arange(NUM_TOKENS, dtype=torch.float32).reshape(1, NUM_TOKENS, 1)
    pooled = peers.pool_tokens(x)
    assert pooled.shape == (1, 49, 1)
    assert float(pooled[0, 0, 0]) == (0 + 1 + 14 + 15) / 4


def test_frontier_and_verdict():
    pts = {"a": (1.0, 0.5), "b": (0.5, 0.5), "c": (0.2, 0.1), "d": (0.5, 0.4)}
    assert bench.frontier(pts) == ["b", "c"]
    summary = {"rows": {n: {"total_flops_vs_dense": c, "scores": {"CIDEr": q},
                            "on_frontier": {"CIDEr": n in ("b", "c")}}
                        for n, (c, q) in pts.items()}}
    assert "is on the" in bench.verdict(summary, name="b")
    text = bench.verdict(summary, name="d")
    assert "is NOT on the CIDEr-vs-FLOPs frontier" in text and "b (CIDEr 0.500" in text


def test_engine_switch_routes_knobs(tiny_model, loaded):
    engine = load_engine(tiny_model)
    switch = peers.EngineSwitch({"torch": engine, "tome": peers.PeerEngine(*loaded, "tome")})
    assert next(iter(switch.knobs())) == "engine"
    switch.set_knob("engine", "tome")
    switch.set_knob("max_fused_tokens", 12)
    assert switch.engines["tome"].knobs()["max_fused_tokens"] == 12
    assert engine.knobs()["max_fused_tokens"] != 12
    with pytest.raises(ValueError, match="engine"):
        switch.set_knob("engine", "nope")


def test_bench_cli_writes_report_plot_and_doc(tiny_model, tmp_path):
    from tinygpt_ros import cli

    doc = tmp_path / "benchmarks.md"
    doc.write_text("# Benchmarks\n\nHand-written intro.\n\n" + bench.MARK_START + "\nold\n"
                   + bench.MARK_END + "\n\nHand-written outro.\n")
    out = tmp_path / "bench"
    assert cli.main(["bench", "--model", tiny_model, "--clips-per-motion", "1", "--frames", "6",
                     "--threads", "1", "--out", str(out), "--markdown", str(doc)]) == 0
    rep = json.loads((out / "bench.json").read_text())
    assert list(rep["rows"]) == list(bench.ORDER)
    assert rep["rows"]["dense"]["total_flops_vs_dense"] == 1.0
    assert rep["rows"]["sttf+anc"]["total_flops_vs_dense"] < 1.0
    assert rep["rows"]["tome"]["decoder_tokens"] <= 31
    assert rep["clips"]["segments"] >= 3 and rep["model"]["sha256"]
    assert (out / "frontier.png").read_bytes()[:4] == b"\x89PNG"
    text = doc.read_text()
    assert text.startswith("# Benchmarks\n\nHand-written intro.")
    assert text.rstrip().endswith("Hand-written outro.") and "\nold\n" not in text
    assert "| sttf+anc |" in text and "frontier" in text and rep["model"]["sha256"] in text
    assert text.count(bench.MARK_START) == 1
    assert np.isfinite(rep["rows"]["fastv"]["latency_p50_vs_dense"])
