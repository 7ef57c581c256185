"""ANC's token-grid branch on pretrained towers: the cheap branch runs the tower on the frame
pooled to a 7 x 7 grid, with the position embedding interpolated. It must equal the family's
own tower at that resolution (`interpolate_pos_encoding=True`), gate per coarse token, count
its own cost, and run the same on onnxruntime as on torch. Tiny random checkpoints, built
offline; no downloads."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

pytest.importorskip("transformers")
torch = pytest.importorskip("torch")

from hf_fixtures import save_tiny_git, save_tiny_llava  # noqa: E402

from tinygpt_ros import ops  # noqa: E402
from tinygpt_ros.deploy.factory import load_engine  # noqa: E402
from tinygpt_ros.hf.router import RouterParams  # noqa: E402
from tinygpt_ros.model.weights import ModelLoadError  # noqa: E402
from tinygpt_ros.spec import flops as F  # noqa: E402

SMALL = 0  # the 7 x 7 branch: cheapest first


@pytest.fixture(scope="module")
def git_dir(tmp_path_factory):
    return save_tiny_git(tmp_path_factory.mktemp("git") / "tiny-git")


@pytest.fixture(scope="module", params=["clip-qwen2", "siglip-llama"])
def llava_dir(request, tmp_path_factory):
    tower, text = request.param.split("-")
    return save_tiny_llava(tmp_path_factory.mktemp("llava") / request.param, tower=tower,
                           text=text)


def _frame(seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (480, 640, 3), dtype=np.uint8)


def _router_choosing(path, engine, branch: int):
    """A router file whose logits prefer `branch` whatever the frame."""
    nb = len(engine.cfg.branch_depths)
    b2 = np.zeros(nb, np.float32)
    b2[branch] = 8.0
    RouterParams(engine.cfg.branch_depths, engine.cfg.branch_grids,
                 np.zeros(ops.NUM_FEATURES, np.float32), np.ones(ops.NUM_FEATURES, np.float32),
                 np.zeros((1, ops.NUM_FEATURES), np.float32), np.zeros(1, np.float32),
                 np.zeros((nb, 1), np.float32), b2, {}).save(path)
    return path


def test_git_coarse_branch_is_the_towers_own_forward_at_half_resolution(git_dir):
    engine = load_engine(git_dir)
    k = engine.kernels
    assert engine.cfg.branch_grids == (7, 14, 14) and engine.cfg.branch_depths == (4, 3, 4)
    x = k.frame_input(_frame())
    out, n = k.run_encoder(k.new_encoder_state(), k.embed_frame(x), None, SMALL, pixels=x)
    assert n == 196 and out.shape == (197, engine.cfg.dec_dim)
    pooled = torch.from_numpy(ops.pool_pixels(x, 2))[None]
    with torch.no_grad():
        hf = engine.model.git.image_encoder(pixel_values=pooled, interpolate_pos_encoding=True)
        ref = engine.model.git.visual_projection(hf.last_hidden_state)[0].numpy()
    assert ref.shape[0] == 1 + 49
    np.testing.assert_allclose(out[0], ref[0], atol=1e-4)
    np.testing.assert_allclose(out[1:], ops.expand_rows(ref[1:], 7), atol=1e-4)
    with pytest.raises(ValueError, match="needs the frame's pixels"):
        k.run_encoder(k.new_encoder_state(), k.embed_frame(x), None, SMALL)


def test_llava_coarse_branch_is_the_towers_own_hidden_state_at_half_resolution(llava_dir):
    engine = load_engine(llava_dir)
    k = engine.kernels
    assert engine.cfg.branch_grids[0] == 7
    x = k.frame_input(_frame(1))
    out, n = k.run_encoder(k.new_encoder_state(), k.embed_frame(x), None, SMALL, pixels=x)
    pooled = torch.from_numpy(ops.pool_pixels(x, 2))[None]
    layer = engine.model.config.vision_feature_layer
    with torch.no_grad():
        hs = k.vision(pixel_values=pooled, interpolate_pos_encoding=True,
                      output_hidden_states=True).hidden_states[layer][0, k.drop:].numpy()
    assert n == 196 and hs.shape[0] == k.n_keep + 49
    np.testing.assert_allclose(out[k.n_keep:], ops.expand_rows(hs[k.n_keep:], 7), atol=1e-4)


def test_coarse_branch_gates_per_coarse_token(git_dir):
    k = load_engine(git_dir).kernels
    xa, xb = (k.frame_input(_frame(s)) for s in (2, 3))
    ea, eb = k.embed_frame(xa), k.embed_frame(xb)
    state = k.new_encoder_state()
    k.run_encoder(state, ea, None, SMALL, pixels=xa)
    sel = np.zeros(196, bool)
    sel[[0, 15, 100]] = True  # patches 0 and 15 share coarse token 0; 100 is in another
    _, n = k.run_encoder(state, eb, sel, SMALL, pixels=xb)
    assert n == 8 and not state.tower.last_dense and state.tower.n_recomputed == 1 + 2
    gated, _ = k.run_encoder(state, eb, np.ones(196, bool), SMALL, pixels=xb)
    dense, _ = k.run_encoder(k.new_encoder_state(), eb, None, SMALL, pixels=xb)
    np.testing.assert_allclose(gated, dense, atol=1e-5)
    # another grid cannot reuse the 7 x 7 cache: the 14 x 14 branch after it runs dense
    _, n = k.run_encoder(state, eb, sel, 1)
    assert n == 196 and state.tower.last_dense


def test_the_engine_streams_the_coarse_branch_a_router_picks(git_dir, tmp_path):
    probe = load_engine(git_dir)
    router = _router_choosing(tmp_path / "small.json", probe, SMALL)
    engine = load_engine(git_dir, router_path=router)
    engine.set_knob("fusion_threshold", 1.0)
    engine.set_knob("motion_compensation", "off")
    engine.set_knob("exposure_compensation", False)
    frame = np.full((224, 224, 3), 90, np.uint8)
    first = engine.process_frame(frame)
    assert first.record.branch == "small" and first.record.tokens_recomputed == 196
    cfg = engine.cfg
    assert first.record.flops["encoder"] == pytest.approx(F.encoder_flops(cfg, SMALL))
    moved = frame.copy()
    moved[32:48, 48:64] = 250  # one patch (row 2, column 3): coarse token (1, 1)
    r = engine.process_frame(moved)
    assert r.record.branch == "small" and r.record.tokens_recomputed == 4
    assert r.token_mask[2:4, 2:4].all() and r.token_mask.sum() == 4
    assert r.record.flops["encoder"] == pytest.approx(F.encoder_flops(cfg, SMALL, n_selected=1))
    assert r.caption


def test_onnxruntime_runs_the_coarse_branch_as_torch_does(git_dir, tmp_path):
    from tinygpt_ros.cli import main

    model = tmp_path / "git"
    shutil.copytree(git_dir, model)
    assert main(["export", "--model", str(model)]) == 0
    info = json.loads((model / "tinygpt_onnx" / "export.json").read_text())
    assert info["branch_grids"] == [7, 14, 14] and "git_embed_g7" in info["verify_max_abs_diff"]
    router = _router_choosing(tmp_path / "small.json", load_engine(model), SMALL)
    ref = load_engine(model, router_path=router)
    onnx = load_engine(model, backend="onnxruntime", router_path=router)
    assert onnx.backend == "onnxruntime"
    frame = np.full((480, 640, 3), 80, np.uint8)
    for e in (ref, onnx):
        e.set_knob("fusion_threshold", 1.0)
        e.set_knob("motion_compensation", "off")
        e.set_knob("exposure_compensation", False)
    for t in range(3):
        f = frame.copy()
        f[40 * t: 40 * t + 60, 100:180] = 230  # a bright box moving down
        r_ref, r_onnx = ref.process_frame(f), onnx.process_frame(f)
        assert r_ref.record.branch == r_onnx.record.branch == "small"
        assert r_onnx.caption == r_ref.caption
        assert r_onnx.record.tokens_recomputed == r_ref.record.tokens_recomputed
        np.testing.assert_allclose(onnx._streams["frame"].last_output,
                                   ref._streams["frame"].last_output, atol=1e-4)
    assert 0 < r_ref.record.tokens_recomputed < 196 and r_ref.record.tokens_recomputed % 4 == 0


def test_a_router_for_other_branches_is_refused_with_the_command(git_dir, tmp_path):
    engine = load_engine(git_dir)
    path = _router_choosing(tmp_path / "r.json", engine, SMALL)
    d = json.loads(path.read_text())
    old = tmp_path / "old.json"
    old.write_text(json.dumps({**d, "format": 1}))
    with pytest.raises(ModelLoadError, match=r"format 1.*tinygpt-ros train-router"):
        load_engine(git_dir, router_path=old)
    other = tmp_path / "other.json"
    other.write_text(json.dumps({**d, "branch_grids": [14, 14, 14]}))
    with pytest.raises(ModelLoadError, match=r"trained for branches.*train-router"):
        load_engine(git_dir, router_path=other)
