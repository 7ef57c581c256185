"""Streaming torch engine: behaviour the ROS node and the evaluation rely on (tiny trained model).

Written against the engine before the streaming/kernels refactor, so the refactor is held to it.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from tinygpt_ros.data.gestures import GESTURE_CLASSES, make_gesture_clip
from tinygpt_ros.data.scenes import render_clip
from tinygpt_ros.deploy.factory import load_engine
from tinygpt_ros.model.weights import MODEL_FILE, ModelLoadError
from tinygpt_ros.runtime.torch_engine import TorchEngine
from tinygpt_ros.spec.config import GRID, KNOB_SPECS, NUM_TOKENS
from tinygpt_ros.spec.types import EVENT_DTYPE, NO_GESTURE, STAGES
from tinygpt_ros.train.recipe import event_windows


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    from tinygpt_ros.train.recipe import train

    return train("tiny", tmp_path_factory.mktemp("engine") / "tiny", seed=0, threads=1)


@pytest.fixture()
def engine(model_dir):
    return TorchEngine.from_dir(model_dir)


@pytest.fixture(scope="module")
def clip():
    return render_clip(20_000_001, motion="slow", num_frames=8)


def _last_tokens(engine, modality: str = "frame") -> torch.Tensor:
    return torch.as_tensor(np.asarray(engine._streams[modality].last_output))


def test_threshold_zero_is_dense(engine, clip):
    engine.set_knob("fusion_threshold", 0.0)
    engine.set_knob("anc_enabled", False)
    model = engine.model
    for frame in clip.frames[:4]:
        res = engine.process_frame(frame)
        r = res.record
        assert r.tokens_recomputed == NUM_TOKENS and r.full_refresh
        assert r.branch == "large" and res.token_mask.all()
        from tinygpt_ros.model.preprocess import frame_to_tensor

        with torch.no_grad():
            emb = model.encoder.embed_frames(frame_to_tensor(frame)[None])
            dense = model.encoder(emb, model.largest_branch)[0]
        assert torch.allclose(_last_tokens(engine), dense, atol=1e-5)


def test_record_fields(engine, clip):
    res = engine.process_frame(clip.frames[0], 123)
    r = res.record
    assert r.frame_index == 0 and r.modality == "frame" and r.tokens_in == NUM_TOKENS
    assert set(r.flops) == {"preprocess", "change", "router", "encoder", "fusion", "decoder"}
    assert set(r.latency_ms) <= set(STAGES) and r.total_latency_ms > 0
    assert r.branch in ("small", "medium", "large")  # first frame: never "reuse"
    assert r.full_refresh and r.tokens_recomputed == NUM_TOKENS
    assert 1 <= r.tokens_fused <= engine.knobs()["max_fused_tokens"]
    assert len(r.router_probs) == 3 and abs(sum(r.router_probs) - 1) < 1e-5
    assert r.dense_flops > 0 and r.total_flops > 0
    assert isinstance(res.caption, str) and res.gesture is None
    assert res.token_mask.shape == (GRID, GRID) and res.token_mask.dtype == bool
    json.dumps(r.as_dict())  # plain types only (the ROS layer serialises it)


def test_unchanged_frame_recomputes_nothing(engine, clip):
    engine.set_knob("refresh_interval", 0)
    engine.process_frame(clip.frames[0])
    for i in range(1, 3):
        res = engine.process_frame(clip.frames[0].copy())
        r = res.record
        assert r.frame_index == i
        assert r.tokens_recomputed == 0 and r.branch == "reuse"
        assert r.flops["encoder"] == 0.0 and not r.full_refresh
        assert not res.token_mask.any()


def test_refresh_interval_forces_full_pass(engine, clip):
    engine.set_knob("refresh_interval", 3)
    refresh = [engine.process_frame(clip.frames[0]).record.full_refresh for _ in range(7)]
    assert refresh == [True, False, False, True, False, False, True]


def test_partial_recompute_on_small_change(engine, clip):
    engine.set_knob("refresh_interval", 0)
    engine.set_knob("anc_enabled", False)
    frame = clip.frames[0].copy()
    engine.process_frame(frame)
    frame[:32, :32] = 255 - frame[:32, :32]  # change the top-left 2 x 2 patches only
    res = engine.process_frame(frame)
    r = res.record
    assert 0 < r.tokens_recomputed < NUM_TOKENS
    assert res.token_mask[:2, :2].all() and res.token_mask.sum() == r.tokens_recomputed
    assert 0 < r.flops["encoder"] < engine.process_frame(clip.frames[0]).record.dense_flops


def test_a_branch_change_keeps_the_unchanged_tokens_static_in_the_window(engine, clip):
    """A new encoder branch rewrites every token; the window's older slots take the new
    branch's token wherever the input has not changed since, so temporal fusion still sees
    those positions as static. Before, nothing was static for the next `temporal_window`
    frames and fusion merged the whole window (its most expensive case) after every branch
    change, both to a deeper branch (dense pass) and to a shallower one (cached blocks)."""
    from tinygpt_ros.evaluation.budget_bench import FixedBias
    from tinygpt_ros.spec import flops as F

    engine.set_knob("refresh_interval", 0)
    engine.set_knob("motion_compensation", "off")
    engine.set_knob("exposure_compensation", False)
    window = engine.cfg.temporal_window
    base = clip.frames[0].copy()

    def flicker(i: int) -> np.ndarray:  # only the top-left 2 x 2 patches change, every frame
        f = base.copy()
        if i % 2:
            f[:32, :32] = 255 - f[:32, :32]
        return f

    large, small = FixedBias(-50.0), FixedBias(50.0)  # router logits pushed to one end
    engine.budget = large
    recs = [engine.process_frame(flicker(i)).record for i in range(window + 1)]
    steady = recs[-1].flops["fusion"]
    assert recs[-1].branch == "large" and 0 < recs[-1].tokens_recomputed < 16
    s = engine._streams["frame"]
    for bias, name in ((small, "small"), (large, "large")):
        engine.budget = bias
        before = list(s.window)
        res = engine.process_frame(flicker(len(recs)))
        recs.append(res.record)
        assert res.record.branch == name
        out = s.window[-1]
        if name == "large":  # a deeper branch than cached: dense pass
            assert res.record.full_refresh
        kept = 0
        for old, slot in zip(before[1:], list(s.window)[:-1], strict=True):
            # unchanged patches: the new branch's token; changed ones keep theirs
            moved = (slot != old).any(1)
            assert np.array_equal(slot[moved], out[moved])
            assert moved.sum() > NUM_TOKENS - 16
            kept += int((~moved).sum())
        assert kept > 0  # the flickering patches keep their old-branch tokens
        full = F.fusion_flops(engine.cfg, window * NUM_TOKENS, res.record.tokens_fused)
        assert res.record.flops["fusion"] < 0.5 * full
        assert res.record.flops["fusion"] <= 1.5 * steady


def test_fused_frames_fuses_only_the_newest_frames_of_the_window(engine):
    """`fused_frames` N hands temporal fusion the window's newest N camera frames: where few
    tokens stay static (a busy scene, a pan; here noise), the merge loop's input (and its
    cost) falls with them; the window itself keeps every frame, so going back to 0 fuses all
    of them again."""
    from tinygpt_ros.spec import flops as F

    rng = np.random.default_rng(0)  # every patch changes every frame: nothing static
    frames = [rng.integers(0, 256, (224, 224, 3), np.uint8) for _ in range(12)]
    engine.set_knob("motion_compensation", "off")
    engine.set_knob("exposure_compensation", False)
    engine.set_knob("noise_floor", 0.0)
    engine.set_knob("fusion_threshold", 0.0)
    window = engine.cfg.temporal_window
    assert window > 2
    recs = [engine.process_frame(f).record for f in frames[:window + 1]]

    def entered(rec):  # the largest merge input whose charge fits the fusion FLOPs
        return max(n for n in range(1, window * NUM_TOKENS + 1)
                   if F.fusion_flops(engine.cfg, n, rec.tokens_fused) <= rec.flops["fusion"])

    assert entered(recs[-1]) > 2 * NUM_TOKENS  # the whole window: more than two frames' worth
    engine.set_knob("fused_frames", 2)
    for f in frames[window + 1:window + 4]:
        rec = engine.process_frame(f).record
        assert 0 < rec.flops["fusion"]
        assert entered(rec) <= 2 * NUM_TOKENS
        assert len(engine._streams["frame"].window) == window
    engine.set_knob("fused_frames", 0)
    rec = engine.process_frame(frames[window + 4]).record
    assert entered(rec) > 2 * NUM_TOKENS


def test_a_smaller_fused_set_of_the_same_tokens_keeps_the_caption(engine, clip):
    """On a still scene the budget controller moves `max_fused_tokens` / `fused_frames`; a
    fused set made from the same encoder outputs with a smaller budget must not decode the
    caption again (each level step did, and the decode put a still scene over its target);
    a richer set than the caption was decoded from goes through the reuse test, and new
    content decodes."""
    engine.set_knob("motion_compensation", "off")
    engine.set_knob("exposure_compensation", False)
    engine.set_knob("refresh_interval", 0)
    engine.set_knob("caption_reuse_threshold", 1e-6)  # any movement of the set decodes
    frame = clip.frames[0]
    for _ in range(engine.cfg.temporal_window + 2):  # the window settles on one output
        engine.process_frame(frame)
    assert engine.process_frame(frame).record.caption_reused

    def step(**knobs):
        for name, value in knobs.items():
            engine.set_knob(name, value)
        return engine.process_frame(frame).record

    user = engine.knobs()["max_fused_tokens"]
    assert step(max_fused_tokens=user - 9).caption_reused  # a different set, same tokens
    assert step(fused_frames=2).caption_reused
    assert step(max_fused_tokens=user, fused_frames=0).caption_reused  # back: decoded there
    rec = step(max_fused_tokens=user + 9)  # richer than decoded: the reuse test decides
    assert not rec.caption_reused and rec.flops["decoder"] > 0
    assert step(max_fused_tokens=user).caption_reused
    engine.set_knob("fusion_threshold", 0.0)  # every token recomputed: new outputs
    assert not engine.process_frame(clip.frames[1]).record.caption_reused


def test_max_active_tokens_caps(engine, clip):
    engine.set_knob("max_active_tokens", 5)
    engine.set_knob("fusion_threshold", 0.01)
    engine.set_knob("refresh_interval", 0)
    engine.set_knob("exposure_compensation", False)  # else +40 levels is undone as exposure
    engine.process_frame(clip.frames[0])
    noisy = np.clip(clip.frames[0].astype(int) + 40, 0, 255).astype(np.uint8)
    assert engine.process_frame(noisy).record.tokens_recomputed <= 5


def test_bad_frame_leaves_state_untouched(model_dir, clip):
    a, b = TorchEngine.from_dir(model_dir), TorchEngine.from_dir(model_dir)
    a.process_frame(clip.frames[0])
    b.process_frame(clip.frames[0])
    for bad in (np.zeros((10, 10), np.uint8), np.full((8, 8, 3), np.nan, np.float32),
                np.zeros((4, 4, 3), np.int32), "frame"):
        with pytest.raises(ValueError, match="frame"):
            a.process_frame(bad)  # type: ignore[arg-type]
    ra, rb = a.process_frame(clip.frames[1]), b.process_frame(clip.frames[1])
    assert ra.record.frame_index == rb.record.frame_index == 1
    assert ra.caption == rb.caption and ra.record.branch == rb.record.branch
    assert ra.record.tokens_recomputed == rb.record.tokens_recomputed
    assert torch.equal(_last_tokens(a), _last_tokens(b))


def test_bad_events_raise_and_next_window_works(engine):
    ev = np.zeros(3, [("x", "<u2"), ("y", "<u2"), ("t", "<i8"), ("p", "u1")])
    ev["x"] = [1, 200, 3]
    with pytest.raises(ValueError, match="'x'"):
        engine.process_events(ev)
    ev["x"] = [1, 2, 3]
    ev["t"] = [0, 10, 20]
    assert engine.process_events(ev).record.frame_index == 0


def test_knob_out_of_range_keeps_old_value(engine):
    before = engine.knobs()
    for name, value in (("fusion_threshold", -1.0), ("max_fused_tokens", 0),
                        ("routing_temperature", 0.0), ("routing_hysteresis", 2.0),
                        ("sttf_enabled", 1), ("nope", 1)):
        with pytest.raises(ValueError):
            engine.set_knob(name, value)
    assert engine.knobs() == before
    engine.set_knob("fusion_threshold", 1.5)
    assert engine.knobs()["fusion_threshold"] == 1.5
    assert set(engine.knobs()) == set(KNOB_SPECS)


def test_caption_reuse_on_still_clip(engine, clip):
    engine.set_knob("refresh_interval", 0)
    first = engine.process_frame(clip.frames[0])
    assert not first.record.caption_reused and first.record.flops["decoder"] > 0
    for _ in range(engine.cfg.temporal_window - 1):  # the window fills up: fused tokens move
        first = engine.process_frame(clip.frames[0])
    for _ in range(3):
        res = engine.process_frame(clip.frames[0])
        assert res.record.caption_reused and res.caption == first.caption
        assert res.record.flops["decoder"] == 0.0
    engine.set_knob("caption_reuse_threshold", 0.0)
    assert not engine.process_frame(clip.frames[0]).record.caption_reused


def test_sttf_off_is_dense_and_never_reuses(engine, clip):
    engine.set_knob("sttf_enabled", False)
    for _ in range(3):
        r = engine.process_frame(clip.frames[0]).record
        assert r.tokens_recomputed == NUM_TOKENS and not r.caption_reused
        assert r.flops["fusion"] == 0.0
    assert r.tokens_fused == engine.cfg.temporal_window * NUM_TOKENS


def test_mode_switch_resets_streams(engine, clip):
    engine.process_frame(clip.frames[0])
    engine.set_knob("anc_enabled", False)
    assert engine.process_frame(clip.frames[0]).record.frame_index == 0


def test_gesture_output_for_events(engine):
    gclip = make_gesture_clip("hand_clap", 20_000_000, num_frames=18)
    windows = event_windows(gclip.events, 50_000)
    assert windows
    for i, w in enumerate(windows):
        res = engine.process_events(w)
        r = res.record
        assert r.modality == "events" and r.frame_index == i
        assert res.gesture in GESTURE_CLASSES and 0 < res.gesture_confidence <= 1
        assert res.caption is None and "head" in r.flops and "decoder" not in r.flops
    # events and frames are separate streams
    assert engine.process_frame(np.zeros((32, 32, 3), np.uint8)).record.frame_index == 0
    empty = engine.process_events(windows[0][:0])
    assert empty.gesture == NO_GESTURE  # silence is no gesture, not a confident class
    assert empty.record.flops["head"] == 0.0
    assert engine.process_events(windows[0][:0]).record.tokens_recomputed == 0


def test_gesture_gate_on_event_count(engine):
    """Fewer events than gesture_min_events: "none" (the head does not run); at the gate and
    above, or with the gate off, a class."""
    gate = engine.knobs()["gesture_min_events"]
    assert gate > 0
    w = event_windows(make_gesture_clip("hand_clap", 20_000_000, num_frames=18).events,
                      50_000)[2]
    assert len(w) > gate
    sparse = engine.process_events(w[:gate - 1])
    assert sparse.gesture == NO_GESTURE and sparse.gesture_confidence == 1.0
    assert engine.process_events(w[:gate]).gesture in GESTURE_CLASSES
    engine.set_knob("gesture_min_events", 0)
    assert engine.process_events(w[:0]).gesture in GESTURE_CLASSES


def _events_in_patch(row: int, col: int, n: int) -> np.ndarray:
    """n events inside one 14 x 14 grid cell of the 128 px sensor, sorted by time."""
    ev = np.zeros(n, dtype=EVENT_DTYPE)
    ev["x"] = col * 128 // GRID + 4
    ev["y"] = row * 128 // GRID + 4
    ev["t"] = np.arange(n) * 100
    ev["p"] = 1
    return ev


def test_event_sttf_recomputes_changed_and_silenced_patches(engine):
    engine.set_knob("refresh_interval", 0)
    engine.set_knob("anc_enabled", False)
    ten = _events_in_patch(2, 3, 10)
    assert engine.process_events(ten).record.tokens_recomputed == NUM_TOKENS  # stream start
    assert engine.process_events(ten).record.tokens_recomputed == 0  # same counts
    silent = engine.process_events(ten[:0])  # the patch fell silent: its token must update
    assert silent.record.tokens_recomputed == 1 and silent.token_mask[2, 3]
    assert engine.process_events(ten[:0]).record.tokens_recomputed == 0
    engine.set_knob("event_fusion_threshold", 20.0)  # now 10 events are no change
    assert engine.process_events(ten).record.tokens_recomputed == 0
    engine.set_knob("event_fusion_threshold", 0.0)  # 0 recomputes everything
    assert engine.process_events(ten).record.tokens_recomputed == NUM_TOKENS


def test_reset_forgets_state(engine, clip):
    engine.process_frame(clip.frames[0])
    engine.reset()
    r = engine.process_frame(clip.frames[0]).record
    assert r.frame_index == 0 and r.full_refresh


def test_load_engine_errors(model_dir, tmp_path):
    assert isinstance(load_engine(model_dir, backend="torch", precision="fp32"), TorchEngine)
    with pytest.raises(ValueError, match="backend"):
        load_engine(model_dir, backend="tensorflow")
    with pytest.raises(ModelLoadError, match="does not exist"):
        load_engine(tmp_path / "missing")
    import shutil

    bad = tmp_path / "truncated"
    shutil.copytree(model_dir, bad)
    data = (bad / MODEL_FILE).read_bytes()
    (bad / MODEL_FILE).write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelLoadError, match=rf"{MODEL_FILE}.*size mismatch"):
        load_engine(bad)
