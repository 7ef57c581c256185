"""GIT (GitForCausalLM) behind the streaming engine: loading from a local directory, clear
errors, exactness against transformers' own generate(), the gated CLIP tower, and the
log(size) attention bias of fused tokens. Tiny random checkpoints, no downloads."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

pytest.importorskip("transformers")
torch = pytest.importorskip("torch")

from hf_fixtures import check_drafts, save_tiny_git  # noqa: E402

from tinygpt_ros.deploy.factory import load_engine  # noqa: E402
from tinygpt_ros.hf.checkpoint import check_checkpoint, is_hf_checkpoint  # noqa: E402
from tinygpt_ros.model.weights import ModelLoadError  # noqa: E402


@pytest.fixture(scope="module")
def git_dir(tmp_path_factory):
    return save_tiny_git(tmp_path_factory.mktemp("git") / "tiny-git")


def _frames(n: int, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (480, 640, 3), dtype=np.uint8) for _ in range(n)]


def _reference_ids(engine, frame: np.ndarray) -> list[int]:
    """transformers' own greedy generate() on the same pixel values."""
    x = torch.from_numpy(engine.kernels.frame_input(frame))[None]
    out = engine.model.generate(pixel_values=x, max_new_tokens=engine.cfg.max_caption_len,
                                do_sample=False, num_beams=1)[0].tolist()[1:]
    eos = engine.kernels.eos_ids
    return out[: next((i for i, t in enumerate(out) if t in eos), len(out))]


def test_factory_dispatches_a_transformers_directory(git_dir):
    assert is_hf_checkpoint(git_dir)
    engine = load_engine(git_dir)
    assert type(engine).__name__ == "HfEngine"
    assert engine.cfg.branch_depths == (4, 3, 4) and engine.cfg.branch_grids == (7, 14, 14)
    assert engine.kernels.run_encoder.__self__.family == "git"


def test_captions_are_token_identical_to_generate_with_sttf_and_anc_off(git_dir):
    engine = load_engine(git_dir)
    engine.set_knob("sttf_enabled", False)
    engine.set_knob("anc_enabled", False)
    captions = set()
    for frame in _frames(3):
        result = engine.process_frame(frame)
        ref = _reference_ids(engine, frame)
        assert result.caption == engine.tokenizer.decode(ref)
        assert result.record.tokens_recomputed == 196 and not result.record.caption_reused
        captions.add(result.caption)
    assert len(captions) > 1  # the captions depend on the image


def test_gated_tower_with_every_row_selected_equals_the_dense_tower(git_dir):
    engine = load_engine(git_dir)
    k = engine.kernels
    a, b = (k.embed_frame(k.frame_input(f)) for f in _frames(2, seed=1))
    tower = k.new_encoder_state().tower
    x_a = torch.cat([k._cls_in, torch.from_numpy(a)])
    x_b = torch.cat([k._cls_in, torch.from_numpy(b)])
    dense = tower.run(x_b, None, 4).clone()
    with torch.no_grad():  # the tower's own forward (pre_layrnorm applied in embed)
        hf = x_b[None]
        for layer in k.layers:
            hf = layer(hf, None)
    torch.testing.assert_close(dense, hf[0], atol=1e-5, rtol=1e-5)
    tower.run(x_a, None, 4)
    with torch.no_grad():
        gated = tower._gated(x_b, torch.ones(197, dtype=torch.bool), 4)
    torch.testing.assert_close(gated, dense, atol=1e-5, rtol=1e-5)


def test_threshold_zero_streams_the_dense_captions(git_dir):
    dense = load_engine(git_dir)
    dense.set_knob("sttf_enabled", False)
    dense.set_knob("anc_enabled", False)
    gated = load_engine(git_dir)
    gated.set_knob("anc_enabled", False)
    gated.set_knob("fusion_threshold", 0.0)
    gated.set_knob("caption_reuse_threshold", 0.0)
    gated.set_knob("max_fused_tokens", 2 * 197)  # window of 2 frames, nothing merged away
    for frame in _frames(2, seed=2):
        dense.process_frame(frame)
        r_g = gated.process_frame(frame)
        assert r_g.record.tokens_recomputed == 196
    out_d = dense._streams["frame"].last_output
    out_g = gated._streams["frame"].last_output
    np.testing.assert_allclose(out_g, out_d, atol=1e-5)


def test_still_stream_recomputes_nothing_and_reuses_the_caption(git_dir):
    engine = load_engine(git_dir)
    engine.set_knob("anc_enabled", False)
    frame = _frames(1, seed=3)[0]
    first = engine.process_frame(frame)
    for _ in range(3):
        r = engine.process_frame(frame)
        assert r.record.tokens_recomputed == 0 and r.caption == first.caption
    assert r.record.caption_reused and r.record.tokens_fused <= engine.knobs()["max_fused_tokens"]


def test_moving_patch_recomputes_only_changed_tokens(git_dir):
    engine = load_engine(git_dir)
    engine.set_knob("anc_enabled", False)
    engine.set_knob("fusion_threshold", 1.0)
    frame = np.full((224, 224, 3), 90, np.uint8)
    engine.process_frame(frame)
    moved = frame.copy()
    moved[32:64, 48:80] = 250  # a 2x2-patch square: 4 tokens changed
    r = engine.process_frame(moved)
    assert 0 < r.record.tokens_recomputed <= 9
    assert r.token_mask.sum() == r.record.tokens_recomputed


def test_fused_size_bias_equals_duplicated_tokens(git_dir):
    """log(size) in the attention bias makes a token of size 2 attend like two copies of it."""
    k = load_engine(git_dir).kernels
    rng = np.random.default_rng(4)
    tokens = rng.normal(size=(5, 32)).astype(np.float32) * 3
    dup = np.concatenate([tokens, tokens[2:3], tokens[2:3]])
    sizes = np.array([1, 1, 3, 1, 1], np.float32)
    assert k.generate(tokens, sizes) == k.generate(dup, np.ones(7, np.float32))
    assert k.generate(tokens, sizes) != k.generate(tokens, np.ones(5, np.float32))


def test_event_windows_are_refused_with_a_clear_error(git_dir):
    from tinygpt_ros.spec.types import EVENT_DTYPE

    engine = load_engine(git_dir)
    with pytest.raises(ValueError, match="no event-camera input"):
        engine.process_events(np.zeros(3, EVENT_DTYPE))
    assert engine.process_frame(_frames(1)[0]).caption is not None  # still works


def test_hub_id_and_incomplete_directories_get_clear_errors(git_dir, tmp_path):
    with pytest.raises(ModelLoadError, match=r"hf download microsoft/git-base-coco --local-dir"):
        load_engine("microsoft/git-base-coco")
    partial = tmp_path / "partial"
    shutil.copytree(git_dir, partial)
    (partial / "tokenizer.json").unlink()
    (partial / "preprocessor_config.json").unlink()
    with pytest.raises(ModelLoadError, match=r"tokenizer.*preprocessor_config.json.*download"):
        load_engine(partial)
    (partial / "config.json").write_text(json.dumps({"model_type": "bert"}))
    with pytest.raises(ModelLoadError, match=r"model_type .bert..*not supported"):
        check_checkpoint(partial)


def test_train_router_self_distils_on_a_bag_and_the_engine_follows_it(git_dir, tmp_path):
    from tinygpt_ros.cli import main
    from tinygpt_ros.cli.paths import default_sample_bag
    from tinygpt_ros.hf.router import load_router

    loose = tmp_path / "loose.json"
    rc = main(["train-router", "--model", str(git_dir), "--bags", str(default_sample_bag()),
               "--max-frames", "4", "--tolerance", "10", "--out", str(loose)])
    assert rc == 0
    router = load_router(loose, (4, 3, 4), (7, 14, 14))
    assert router.info["label_counts"] == [4, 0, 0]  # every exit is "close enough"
    engine = load_engine(git_dir, router_path=loose)
    r = engine.process_frame(_frames(1)[0])
    assert r.record.branch == "small" and r.record.router_probs[0] > 0.5

    strict = tmp_path / "strict.json"
    assert main(["train-router", "--model", str(git_dir), "--bags", str(default_sample_bag()),
                 "--max-frames", "3", "--tolerance", "0", "--target", "tokens",
                 "--out", str(strict)]) == 0
    assert load_router(strict, (4, 3, 4), (7, 14, 14)).info["label_counts"] == [0, 0, 3]
    engine = load_engine(git_dir, router_path=strict)
    assert engine.process_frame(_frames(1)[0]).record.branch == "large"


def test_depth_branches_share_the_cache(git_dir):
    """A shallower branch after a deeper one is a gated step on the cached layers."""
    engine = load_engine(git_dir)
    k = engine.kernels
    state = k.new_encoder_state()
    a, b = (k.embed_frame(k.frame_input(f)) for f in _frames(2, seed=5))
    k.run_encoder(state, a, None, 2)
    sel = np.zeros(196, bool)
    sel[:10] = True
    out, n = k.run_encoder(state, b, sel, 1)
    assert n == 10 and not state.tower.last_dense and state.tower.depth == 3
    _, n = k.run_encoder(state, b, sel, 2)  # deeper than cached: dense
    assert n == 196 and state.tower.last_dense
    assert out.shape == (197, engine.cfg.dec_dim)


def test_onnx_export_streams_the_same_captions_as_torch(git_dir, tmp_path):
    from tinygpt_ros.cli import main

    model = tmp_path / "git"
    shutil.copytree(git_dir, model)
    warnings: list[str] = []
    fallback = load_engine(model, backend="onnxruntime", logger=warnings.append)
    assert fallback.backend == "torch" and "tinygpt-ros export" in warnings[0]
    assert main(["export", "--model", str(model)]) == 0
    ref = load_engine(model)
    onnx = load_engine(model, backend="onnxruntime")
    assert onnx.backend == "onnxruntime" and onnx.model is None
    for sess in onnx.kernels.sessions.values():  # no session's idle pool spins on the cores
        opts = sess.get_session_options()
        assert opts.get_session_config_entry("session.intra_op.allow_spinning") == "0"
    assert onnx.intra_op_threads == 0 and ref.intra_op_threads is None  # library defaults
    assert load_engine(model, backend="onnxruntime", threads=1).intra_op_threads == 1
    assert abs(onnx.kernels.change_scale - ref.kernels.change_scale) < 1e-3
    frame = np.full((480, 640, 3), 80, np.uint8)
    for i, knobs in enumerate(({"sttf_enabled": False, "anc_enabled": False},
                               {"sttf_enabled": True, "anc_enabled": False,
                                "fusion_threshold": 1.0,
                                # a flat synthetic frame gives the exposure fit nothing to
                                # hold on to (it re-anchors): gating is what is compared here
                                "motion_compensation": "off",
                                "exposure_compensation": False})):
        for e in (ref, onnx):
            for name, value in knobs.items():
                e.set_knob(name, value)
            e.reset()
        for t in range(3):
            f = frame.copy()
            f[40 * t: 40 * t + 60, 100:180] = 230  # a bright box moving down
            r_ref, r_onnx = ref.process_frame(f), onnx.process_frame(f)
            assert r_onnx.caption == r_ref.caption, (i, t)
            assert r_onnx.record.tokens_recomputed == r_ref.record.tokens_recomputed
        np.testing.assert_allclose(onnx._streams["frame"].last_output,
                                   ref._streams["frame"].last_output, atol=1e-4)
    assert 0 < r_ref.record.tokens_recomputed < 196  # the last step was gated
    info_file = model / "tinygpt_onnx" / "export.json"
    info = json.loads(info_file.read_text())
    info_file.write_text(json.dumps({**info, "format": 1}))  # an export by an older version
    with pytest.raises(ModelLoadError, match=r"format 1.*rerun `tinygpt-ros export"):
        load_engine(model, backend="onnxruntime")


def test_bench_hf_runs_on_a_local_checkpoint(git_dir, tmp_path):
    from tinygpt_ros.cli import main

    out, md = tmp_path / "bench.json", tmp_path / "bench.md"
    assert main(["bench-hf", "--model", str(git_dir), "--frames", "3", "--streams", "still",
                 "busy", "--out", str(out), "--markdown", str(md)]) == 0
    rep = json.loads(out.read_text())
    still, busy = rep["streams"]["still"], rep["streams"]["busy"]
    assert still["tokens_recomputed_after_first_pct"] == 0 and still["captions_reused_pct"] > 0
    assert 0 < busy["tokens_recomputed_after_first_pct"] < 100
    assert "| still |" in md.read_text()
    small, medium, large = rep["branches"]
    assert (small["grid"], small["depth"]) == (7, 4) and large["flops_vs_large"] == 1
    assert small["flops_vs_large"] < medium["flops_vs_large"] < 1
    assert "| small | 7x7 | 4 |" in md.read_text()


def test_bench_hf_on_onnxruntime_exports_a_checkpoint_and_times_its_graphs(tmp_path):
    """`bench-hf --backend onnxruntime` exports a checkpoint that has no export yet and times
    the graphs through the engine the node loads: the same decisions as on torch."""
    from tinygpt_ros.cli import main

    model = save_tiny_git(tmp_path / "tiny-git")
    reports = {}
    for backend in ("torch", "onnxruntime"):
        out, md = tmp_path / f"{backend}.json", tmp_path / f"{backend}.md"
        threads = ["--threads", "1"] if backend == "onnxruntime" else []  # torch's: global
        assert main(["bench-hf", "--model", str(model), "--backend", backend, "--frames", "3",
                     "--streams", "still", "busy", "--out", str(out), "--markdown",
                     str(md), *threads]) == 0
        reports[backend] = json.loads(out.read_text())
    assert (model / "tinygpt_onnx" / "export.json").is_file()
    ort = reports["onnxruntime"]
    assert ort["backend"] == "onnxruntime" and "onnxruntime" in ort["machine"]
    assert ort["parameters"] == reports["torch"]["parameters"]
    for stream in ("still", "busy"):
        for key in ("tokens_recomputed_pct", "captions_reused_pct"):
            assert ort["streams"][stream][key] == reports["torch"]["streams"][stream][key]
    assert "bench-hf-onnxruntime:start" in (tmp_path / "onnxruntime.md").read_text()
    assert ort["machine"]["session_threads"] == 1
    assert "1 intra-op threads per session" in (tmp_path / "onnxruntime.md").read_text()


def test_bench_hf_counts_parameters_from_either_weights_file(git_dir, tmp_path):
    """The parameter count the onnxruntime bench reports comes from the weights file: the
    safetensors header, or a pytorch_model.bin (tied weights counted once, as torch does)."""
    import shutil

    import torch
    from transformers import GitForCausalLM

    from tinygpt_ros.evaluation.hf_bench import _parameters

    model = GitForCausalLM.from_pretrained(git_dir)
    want = sum(p.numel() for p in model.parameters())
    legacy = tmp_path / "legacy"
    shutil.copytree(git_dir, legacy)
    (legacy / "model.safetensors").unlink()
    torch.save(model.state_dict(), legacy / "pytorch_model.bin")
    assert _parameters(git_dir) == _parameters(legacy) == want


def test_bench_hf_refuses_llava_on_onnxruntime(capsys):
    from tinygpt_ros.cli import main

    assert main(["bench-hf", "--family", "llava", "--backend", "onnxruntime", "--frames",
                 "1"]) == 2
    assert "LLaVA has no ONNX export" in capsys.readouterr().err


@pytest.mark.parametrize("backend", ["torch", "onnxruntime"])
def test_a_draft_gives_the_plain_caption_and_the_last_one_costs_one_pass(git_dir, tmp_path,
                                                                         backend):
    from tinygpt_ros.cli import main

    model = git_dir
    if backend == "onnxruntime":
        model = tmp_path / "git"
        shutil.copytree(git_dir, model)
        assert main(["export", "--model", str(model)]) == 0
    engine = load_engine(model, backend=backend)
    assert engine.backend == backend
    k = engine.kernels
    for frame in _frames(3, seed=4):
        tokens = k.run_encoder(k.new_encoder_state(), k.embed_frame(k.frame_input(frame)),
                               None, len(k.depths) - 1)[0]
        check_drafts(k, tokens)


def test_the_engine_drafts_with_the_last_caption_only_when_asked(git_dir):
    engine = load_engine(git_dir)
    engine.set_knob("anc_enabled", False)
    engine.set_knob("caption_reuse_threshold", 0.0)  # decode every frame
    drafts: list = []
    decode = engine.kernels.decode

    def spy(tokens, sizes, recent=(), positions=None):
        drafts.append(list(recent))
        return decode(tokens, sizes, recent, positions=positions)

    engine.kernels.decode = spy
    frames = _frames(3, seed=6)
    with_draft = [engine.process_frame(f).caption for f in frames]
    assert drafts[0] == [] and all(d for d in drafts[1:])
    engine.set_knob("caption_draft", False)
    engine.reset()
    drafts.clear()
    without = [engine.process_frame(f).caption for f in frames]
    assert drafts == [[]] * 3 and without == with_draft


def test_fusion_flops_count_the_merge_loop_of_the_patch_tokens_only(git_dir):
    """GIT's CLS row is kept out of fusion: the analytical fusion term replays the merge loop
    from the patch tokens that entered it down to the fused patch tokens, not to the fused set
    with the CLS row in it (which stopped the replay one merge short)."""
    from tinygpt_ros.runtime.streaming import STATIC_THRESHOLD
    from tinygpt_ros.spec import flops as F

    engine = load_engine(git_dir)
    engine.set_knob("anc_enabled", False)
    # 13 fused = 12 patch tokens + CLS: from 196 or 392 patch tokens the replay down to 13
    # takes one merge step fewer than the one down to 12 (most counts give the same sum)
    engine.set_knob("max_fused_tokens", 13)
    kept = engine.kernels.n_keep
    assert kept == 1
    checked = differs = 0
    for frame in _frames(4, seed=9):
        r = engine.process_frame(frame)
        if not r.record.flops["fusion"]:
            continue
        window = np.stack(engine._streams["frame"].window)
        fused = engine.kernels.fuse(window, 13, STATIC_THRESHOLD)
        n_out = int((fused.sizes > 0).sum()) - kept
        expected = F.fusion_flops(engine.cfg, fused.merge_input, n_out)
        assert r.record.flops["fusion"] == pytest.approx(expected)
        differs += expected > F.fusion_flops(engine.cfg, fused.merge_input, n_out + kept)
        checked += 1
    assert checked >= 2 and differs >= 1
