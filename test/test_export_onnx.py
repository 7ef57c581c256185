"""ONNX export: files, manifest entries, checker, dynamic shapes and graph-level parity with torch.

Tolerances (fp32 graphs vs the torch modules, CPU): 1e-4 absolute.
"""

from __future__ import annotations

import hashlib
import shutil
from collections import Counter
from itertools import pairwise

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import numpy_helper
from onnx.external_data_helper import ExternalDataInfo, uses_external_data

from tinygpt_ros import ops
from tinygpt_ros.deploy.export import export_model
from tinygpt_ros.deploy.graphs import (
    FUSION_FILE,
    GRAPHS,
    WEIGHTS_NAME,
    graph_file,
    graph_names,
    graph_spec,
    weights_file,
)
from tinygpt_ros.deploy.shared_weights import ALIGN, INLINE_MAX_BYTES
from tinygpt_ros.model.encoder import GatedEncoderCache
from tinygpt_ros.model.tinygpt import TinyGPT
from tinygpt_ros.model.weights import (
    MODEL_FILE,
    ModelLoadError,
    load_manifest,
    load_model_files,
    verify_files,
)

ATOL = 1e-4


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    from tinygpt_ros.train.recipe import train

    d = train("tiny", tmp_path_factory.mktemp("export") / "tiny", seed=0, threads=1)
    entries = export_model(d, opset=17, precisions=("fp32", "fp16"), command="test export")
    loaded = load_model_files(d)
    model = TinyGPT(loaded.config)
    model.load_state_dict(loaded.state_dict)
    return d, entries, model.eval(), loaded


def _session(d, name, precision="fp32"):
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    return ort.InferenceSession(str(d / graph_file(name, precision)), opts,
                                providers=["CPUExecutionProvider"])


def test_files_manifest_and_checker(exported):
    d, entries, model, loaded = exported
    cfg = loaded.config
    names = graph_names(cfg)
    assert names == ["embed_frames", "embed_events", "encoder_b0", "encoder_b1", "encoder_b2",
                     "router", "decoder_prefill", "decoder_step", "gesture_head"]
    manifest = load_manifest(d)
    graphs = {graph_file(n, p) for n in names for p in ("fp32", "fp16")}
    shared = {weights_file(p) for p in ("fp32", "fp16")}
    expected = graphs | shared | {FUSION_FILE}
    assert set(entries) == expected and expected <= set(manifest["files"])
    verify_files(d, sorted(expected))  # sha256 + size recorded
    source = manifest["files"][MODEL_FILE]["sha256"]
    for rel in sorted(graphs | shared):
        e = manifest["files"][rel]
        assert e["opset"] == 17 and e["export_command"] == "test export"
        assert e["source_sha256"] == source and e["precision"] in rel
    for rel in sorted(graphs):
        e = manifest["files"][rel]
        assert e["external_data"] == weights_file(e["precision"])
        proto = onnx.load(str(d / rel))
        onnx.checker.check_model(proto, full_check=True)
        assert {o.domain: o.version for o in proto.opset_import}[""] == 17
        spec = graph_spec(e["graph"], cfg)
        assert [i.name for i in proto.graph.input] == list(spec["inputs"]) == e["inputs"]
        assert [o.name for o in proto.graph.output] == list(spec["outputs"]) == e["outputs"]
        # fp16 graphs keep float32 I/O; their weights are float16
        io_types = {v.type.tensor_type.elem_type for v in [*proto.graph.input,
                                                            *proto.graph.output]}
        assert onnx.TensorProto.FLOAT16 not in io_types
        init_types = {t.data_type for t in proto.graph.initializer}
        if e["precision"] == "fp16":
            assert onnx.TensorProto.FLOAT16 in init_types
        else:
            assert onnx.TensorProto.FLOAT16 not in init_types
    te = np.load(d / FUSION_FILE)
    assert np.array_equal(te, model.fusion.time_embed.detach().numpy())


def test_shared_weights_store_each_tensor_once(exported):
    """No initializer bytes are stored twice within a precision, and the weights file is smaller
    than the graphs' weights summed (what per-graph copies held; the shipped model's whole
    export is smaller than that sum: test_shipped_model)."""
    d, _entries, _model, loaded = exported
    manifest = load_manifest(d)
    files = manifest["files"]
    for precision in ("fp32", "fp16"):
        blob = (d / weights_file(precision)).read_bytes()
        regions: dict[tuple[int, int], str] = {}
        inline: Counter[str] = Counter()
        referenced = 0
        for name in graph_names(loaded.config):
            path = d / graph_file(name, precision)
            proto = onnx.load(str(path), load_external_data=False)
            for t in proto.graph.initializer:
                if uses_external_data(t):
                    info = ExternalDataInfo(t)
                    assert info.location == WEIGHTS_NAME and info.offset % ALIGN == 0
                    raw = blob[info.offset: info.offset + info.length]
                    assert len(raw) == info.length > 0
                    regions[(info.offset, info.length)] = hashlib.sha256(raw).hexdigest()
                    referenced += info.length
                else:  # small and used once: it stays in its graph
                    raw = numpy_helper.to_array(t).tobytes()
                    assert len(raw) < INLINE_MAX_BYTES, t.name
                    inline[hashlib.sha256(raw).hexdigest()] += 1
        stored = list(regions.values())
        assert len(stored) == len(set(stored)), "two regions of the file hold the same bytes"
        assert set(inline).isdisjoint(stored) and max(inline.values(), default=1) == 1
        spans = sorted(regions)
        assert all(a + n <= b for (a, n), (b, _) in pairwise(spans))
        payload = sum(n for _, n in spans)
        assert len(blob) - payload < ALIGN * len(spans)  # nothing but alignment padding
        entry = files[weights_file(precision)]
        assert entry["referenced_bytes"] == referenced and entry["stored_bytes"] == payload
        assert entry["deduplicated_bytes"] == referenced - payload > 0
        assert len(blob) < referenced
    on_disk = sum((d / rel).stat().st_size for rel in files)
    assert manifest["model_dir_bytes"] == on_disk


def test_encoder_graph_matches_gated_cache(exported):
    d, _, model, loaded = exported
    cfg = loaded.config
    gen = torch.Generator().manual_seed(1)
    ref_cache, np_cache = GatedEncoderCache(), ops.StackedEncoderCache()
    sessions = {b: _session(d, f"encoder_b{b}") for b in range(len(cfg.branch_depths))}

    def step_for(b):
        s = sessions[b]
        names = [i.name for i in s.get_inputs()]
        return lambda *a: tuple(s.run(None, dict(zip(names, a, strict=True))))

    base = torch.randn(196, cfg.dim, generator=gen)
    # dense, gated with several n, a shallower branch (cache cut), a deeper one (dense again)
    plan = [(2, None), (2, 1), (2, 30), (0, 5), (0, 196), (1, 7), (2, 3)]
    for branch, n_sel in plan:
        tokens = base + 0.3 * torch.randn(196, cfg.dim, generator=gen)
        sel = None
        if n_sel is not None:
            sel = torch.zeros(196, dtype=torch.bool)
            sel[torch.randperm(196, generator=gen)[:n_sel]] = True
        with torch.no_grad():
            want = ref_cache.run(model.encoder, tokens, sel, branch).numpy()
        got = np_cache.run(step_for(branch), tokens.numpy(), None if sel is None else
                           sel.numpy(), cfg.branch_depths[branch], cfg.heads)
        assert np_cache.n_recomputed == ref_cache.n_recomputed
        assert np_cache.depth == ref_cache.depth
        np.testing.assert_allclose(got, want, atol=ATOL)
        np.testing.assert_allclose(np_cache.y, torch.stack(ref_cache.outputs).numpy(), atol=ATOL)


def test_decoder_graphs_dynamic_lengths(exported):
    d, _, model, loaded = exported
    cfg, tok = loaded.config, loaded.tokenizer
    prefill, step = _session(d, "decoder_prefill"), _session(d, "decoder_step")
    gen = torch.Generator().manual_seed(2)
    for k in (1, 7, 31, 3 * 196):
        vis = torch.randn(1, k, cfg.dim, generator=gen)
        size = torch.randint(1, 5, (1, k), generator=gen).float()
        if k > 2:
            size[0, 1] = 0.0  # padding
        where = torch.rand(1, k, 3, generator=gen)
        ids = torch.tensor([[tok.bos_id]])
        with torch.no_grad():
            want, cache = model.decoder.prefill(vis, size, ids, where)
        got, pk, pv, kb = prefill.run(None, {"vis": vis.numpy(), "vis_size": size.numpy(),
                                             "vis_pos": where.numpy(), "ids": ids.numpy()})
        np.testing.assert_allclose(got, want.numpy(), atol=ATOL)
        np.testing.assert_allclose(pk, torch.stack(cache.k).numpy(), atol=ATOL)
        for pos in (1, 2, 3):
            nxt = torch.tensor([pos + 3])
            with torch.no_grad():
                want, cache = model.decoder.step(nxt, cache)
            got, pk, pv, kb = step.run(None, {"next_ids": nxt.numpy(),
                                              "position": np.array([pos]), "past_k": pk,
                                              "past_v": pv, "key_bias": kb})
            np.testing.assert_allclose(got, want.numpy(), atol=ATOL)
            assert kb.shape == (1, k + 1 + pos)


def test_small_graphs_match_torch(exported):
    d, _, model, loaded = exported
    cfg = loaded.config
    gen = torch.Generator().manual_seed(3)
    frames = torch.randn(3, 3, 224, 224, generator=gen)
    hist = torch.rand(1, 2, 112, 112, generator=gen)
    feats = torch.randn(5, cfg.num_router_features, generator=gen)
    vis = torch.randn(2, 9, cfg.dim, generator=gen)
    size = torch.ones(2, 9)
    size[1, 4:] = 0
    pos = torch.rand(2, 9, 3, generator=gen)
    with torch.no_grad():
        cases = [
            ("embed_frames", (frames,), model.encoder.embed_frames(frames)),
            ("embed_events", (hist,), model.encoder.embed_events(hist)),
            ("router", (feats,), model.router(feats)),
            ("gesture_head", (vis, size, pos), model.gesture_head(vis, size, pos)),
        ]
    for name, args, want in cases:
        got = _session(d, name).run(None, {n: a.numpy() for n, a in
                                           zip(GRAPHS[name]["inputs"], args, strict=True)})[0]
        np.testing.assert_allclose(got, want.numpy(), atol=ATOL, err_msg=name)
        half = _session(d, name, "fp16").run(None, {n: a.numpy() for n, a in
                                                    zip(GRAPHS[name]["inputs"], args,
                                                        strict=True)})[0]
        assert half.dtype == np.float32
        np.testing.assert_allclose(half, want.numpy(), atol=5e-2, err_msg=name)


def test_bad_arguments_and_missing_model(exported, tmp_path):
    d, *_ = exported
    with pytest.raises(ValueError, match="opset"):
        export_model(d, opset=16)
    with pytest.raises(ValueError, match="precision"):
        export_model(d, precisions=("int8",))
    with pytest.raises(ModelLoadError, match="does not exist"):
        export_model(tmp_path / "nope")


def test_cli_export(exported, tmp_path):
    from tinygpt_ros.cli import main

    d, *_ = exported
    copy = tmp_path / "m"
    copy.mkdir()
    for name in (MODEL_FILE, "manifest.json"):
        shutil.copy(d / name, copy / name)
    manifest = load_manifest(copy)
    manifest["files"] = {MODEL_FILE: manifest["files"][MODEL_FILE]}  # a fresh, unexported model
    (copy / "manifest.json").write_text(__import__("json").dumps(manifest))
    assert main(["export", "--model", str(copy), "--precision", "fp32"]) == 0
    files = load_manifest(copy)["files"]
    assert graph_file("decoder_step", "fp32") in files
    assert graph_file("decoder_step", "fp16") not in files
    assert files[graph_file("router", "fp32")]["export_command"] == (
        f"tinygpt-ros export --model {copy} --opset 17 --precision fp32")


def test_conv_frame_stem_exports_and_both_engines_count_it(tmp_path):
    """A model with the overlapping conv stem (ModelConfig.frame_stem): its manifest says so,
    the exported embedding graph matches torch, and both engines charge the stem's FLOPs."""
    from tinygpt_ros.deploy.factory import load_engine
    from tinygpt_ros.model.weights import save_model
    from tinygpt_ros.spec import flops as F
    from tinygpt_ros.spec.config import ModelConfig
    from tinygpt_ros.spec.tokenizer import Tokenizer

    tok = Tokenizer.build(["a red square on a blue background"])
    cfg = ModelConfig(dim=32, heads=2, branch_depths=(1, 2), temporal_window=3, dec_dim=32,
                      dec_layers=1, dec_heads=2, max_caption_len=6, vocab_size=tok.vocab_size,
                      num_gestures=2, frame_stem="conv")
    torch.manual_seed(0)
    model = TinyGPT(cfg).eval()
    d = save_model(tmp_path / "conv", model.state_dict(), cfg, tok, gesture_classes=["a", "b"],
                   data_seed=0, command="test", metrics={})
    export_model(d, opset=17, precisions=("fp32",), command="test export")
    assert load_manifest(d)["config"]["frame_stem"] == "conv"
    x = np.random.default_rng(0).random((2, 3, 224, 224), dtype=np.float32)
    with torch.no_grad():
        ref = model.encoder.embed_frames(torch.from_numpy(x)).numpy()
    got = _session(d, "embed_frames").run(None, {"frames": x})[0]
    assert np.abs(got - ref).max() < ATOL
    frame = np.random.default_rng(1).integers(0, 255, (120, 160, 3), dtype=np.uint8)
    stem = F.patch_embed_flops(cfg, "frame")
    for backend in ("torch", "onnxruntime"):
        engine = load_engine(d, backend=backend)
        assert engine._dc_basis is None  # not linear in the pixels: the plain change test
        record = engine.process_frame(frame).record
        assert record.flops["preprocess"] == stem
        engine.close()
