"""LLaVA (LlavaForConditionalGeneration: CLIP or SigLIP tower, Qwen2 or Llama decoder) behind
the streaming engine: loading from a local directory through the real loading code, exactness
against transformers' own generate(), the shared gated tower, fusion before the projector,
the log(size) bias in the decoder's 4-D mask and caption reuse. Tiny random checkpoints,
built offline; no downloads."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("transformers")
torch = pytest.importorskip("torch")

from hf_fixtures import check_drafts, save_tiny_llava  # noqa: E402

from tinygpt_ros.deploy.factory import load_engine  # noqa: E402
from tinygpt_ros.hf.checkpoint import check_checkpoint  # noqa: E402

VARIANTS = {"clip-qwen2": ("clip", "qwen2"), "siglip-llama": ("siglip", "llama")}


@pytest.fixture(scope="module", params=sorted(VARIANTS))
def llava_dir(request, tmp_path_factory):
    tower, text = VARIANTS[request.param]
    return save_tiny_llava(tmp_path_factory.mktemp("llava") / request.param, tower=tower,
                           text=text)


def _frames(n: int, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (480, 640, 3), dtype=np.uint8) for _ in range(n)]


def _reference_ids(engine, frame: np.ndarray) -> list[int]:
    """transformers' own greedy generate() on the processor's prompt and the same pixels."""
    from transformers import AutoProcessor

    k = engine.kernels
    processor = AutoProcessor.from_pretrained(check_checkpoint(engine_dir(engine)).path,
                                              local_files_only=True)
    conv = [{"role": "user", "content": [{"type": "image"},
                                         {"type": "text", "text": k.prompt}]}]
    text = processor.apply_chat_template(conv, add_generation_prompt=True, tokenize=False)
    ids = processor(text=text, images=frame, return_tensors="pt")["input_ids"]
    x = torch.from_numpy(k.frame_input(frame))[None]
    out = engine.model.generate(input_ids=ids, pixel_values=x, do_sample=False, num_beams=1,
                                max_new_tokens=engine.cfg.max_caption_len)[0]
    out = out[ids.shape[1]:].tolist()
    return out[: next((i for i, t in enumerate(out) if t in k.eos_ids), len(out))]


def engine_dir(engine):
    return engine.model.name_or_path


def test_factory_loads_the_llava_family(llava_dir):
    ckpt = check_checkpoint(llava_dir)
    assert ckpt.family == "llava"
    engine = load_engine(llava_dir)
    k = engine.kernels
    assert type(engine).__name__ == "HfEngine" and k.family == "llava"
    # CLIP: features from the penultimate of 4 layers, CLS dropped; SigLIP: last layer, no CLS
    assert engine.cfg.branch_depths == ((3, 2, 3) if k.front.has_cls else (4, 3, 4))
    assert engine.cfg.branch_grids == (7, 14, 14)
    assert k.n_keep == 0


def test_captions_are_token_identical_to_generate_with_sttf_and_anc_off(llava_dir):
    engine = load_engine(llava_dir)
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


def test_gated_tower_equals_the_models_own_image_features(llava_dir):
    engine = load_engine(llava_dir)
    k = engine.kernels
    a, b = (k.embed_frame(k.frame_input(f)) for f in _frames(2, seed=1))
    state = k.new_encoder_state()
    dense, n = k.run_encoder(state, b, None, len(k.depths) - 1)
    assert n == 196
    x = torch.from_numpy(k.frame_input(_frames(2, seed=1)[1]))[None]
    with torch.no_grad():  # what LLaVA feeds its projector: hidden_states[feature_layer]
        hs = engine.model.model.vision_tower(x, output_hidden_states=True).hidden_states
        ref = hs[engine.model.config.vision_feature_layer][0, k.drop:]
    np.testing.assert_allclose(dense, ref.numpy(), atol=1e-4, rtol=1e-4)
    k.run_encoder(state, a, None, len(k.depths) - 1)
    gated, n = k.run_encoder(state, b, np.ones(196, bool), len(k.depths) - 1)
    np.testing.assert_allclose(gated, dense, atol=1e-5, rtol=1e-5)


def test_threshold_zero_streams_the_dense_features(llava_dir):
    dense = load_engine(llava_dir)
    dense.set_knob("sttf_enabled", False)
    dense.set_knob("anc_enabled", False)
    gated = load_engine(llava_dir)
    gated.set_knob("anc_enabled", False)
    gated.set_knob("fusion_threshold", 0.0)
    gated.set_knob("caption_reuse_threshold", 0.0)
    for frame in _frames(2, seed=2):
        dense.process_frame(frame)
        assert gated.process_frame(frame).record.tokens_recomputed == 196
    np.testing.assert_allclose(gated._streams["frame"].last_output,
                               dense._streams["frame"].last_output, atol=1e-5)


def test_still_stream_recomputes_nothing_and_reuses_the_caption(llava_dir):
    engine = load_engine(llava_dir)
    engine.set_knob("anc_enabled", False)
    frame = _frames(1, seed=3)[0]
    first = engine.process_frame(frame)
    for _ in range(3):
        r = engine.process_frame(frame)
        assert r.record.tokens_recomputed == 0 and r.caption == first.caption
    assert r.record.caption_reused and r.record.tokens_fused <= engine.knobs()["max_fused_tokens"]


def test_moving_patch_recomputes_only_changed_tokens(llava_dir):
    engine = load_engine(llava_dir)
    engine.set_knob("anc_enabled", False)
    engine.set_knob("fusion_threshold", 1.0)
    frame = np.full((224, 224, 3), 90, np.uint8)
    engine.process_frame(frame)
    moved = frame.copy()
    moved[32:64, 48:80] = 250  # a 2x2-patch square: 4 tokens changed
    r = engine.process_frame(moved)
    assert 0 < r.record.tokens_recomputed <= 9
    assert r.token_mask.sum() == r.record.tokens_recomputed


def test_fused_tokens_reach_the_decoder_as_a_log_size_mask_bias(llava_dir):
    """The projector runs on the K fused tokens, and every decoder layer gets a 4-D float mask:
    causal, plus log(size) on each fused token's key."""
    k = load_engine(llava_dir).kernels
    masks = []
    attn = k.language_model.layers[0].self_attn
    handle = attn.register_forward_pre_hook(
        lambda mod, args, kwargs: masks.append(kwargs["attention_mask"].clone()),
        with_kwargs=True)
    rng = np.random.default_rng(4)
    tokens = rng.normal(size=(5, k.cfg.dim)).astype(np.float32)
    sizes = np.array([1, 2, 3, 1, 5], np.float32)
    try:
        ids = k.generate(tokens, sizes)
    finally:
        handle.remove()
    p, n = len(k.prefix), len(k.prefix) + 5 + len(k.suffix)
    prefill = masks[0][0, 0]
    assert prefill.shape == (n, n) and len(masks) == min(len(ids) + 1, k.cfg.max_caption_len)
    np.testing.assert_allclose(prefill[-1, p:p + 5].numpy(), np.log(sizes), rtol=1e-6)
    assert (prefill[-1, :p] == 0).all() and prefill[p, p + 1] < -1e30  # causal
    step = masks[-1][0, 0]
    assert step.shape[0] == 1 and step.shape[1] == n + len(masks) - 1
    np.testing.assert_allclose(step[0, p:p + 5].numpy(), np.log(sizes), rtol=1e-6)


def test_onnxruntime_request_is_served_by_torch(llava_dir, caplog):
    engine = load_engine(llava_dir, backend="onnxruntime")
    assert engine.backend == "torch" and engine.process_frame(_frames(1)[0]).caption is not None


def test_a_draft_gives_the_plain_caption_and_the_last_one_costs_one_pass(llava_dir):
    engine = load_engine(llava_dir)
    k = engine.kernels
    for frame in _frames(2, seed=4):
        tokens = k.run_encoder(k.new_encoder_state(), k.embed_frame(k.frame_input(frame)),
                               None, len(k.depths) - 1)[0]
        check_drafts(k, tokens)
