"""The training command's tiny preset: the same recipe, fast enough for CI."""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest
import torch

from tinygpt_ros.data.scenes import render_clip
from tinygpt_ros.model.weights import load_model_files
from tinygpt_ros.runtime.torch_engine import TorchEngine
from tinygpt_ros.train.recipe import PRESETS, event_windows, simulate_reuse, sliding_windows


class _Lines(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


@pytest.fixture(scope="module")
def tiny_dirs(tmp_path_factory):
    from tinygpt_ros.train.recipe import train

    base = tmp_path_factory.mktemp("tiny")
    handler = _Lines()
    logger = logging.getLogger("tinygpt_ros.train.recipe")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        a = train("tiny", base / "a", seed=3, threads=1, command="test")
    finally:
        logger.removeHandler(handler)
    b = train("tiny", base / "b", seed=3, threads=1, command="test")
    return a, b, handler.lines


def test_recipe_runs_every_stage_and_writes_a_manifest(tiny_dirs):
    a, _, logs = tiny_dirs
    stages = {line.split()[0] for line in logs if "/" in line and "loss" in line}
    assert {"pretrain", "sttf_distill", "router", "caption", "gesture", "decoder"} <= stages
    manifest = json.loads((a / "manifest.json").read_text())
    assert manifest["data_seed"] == 3
    assert manifest["command"] == "test"
    assert len(manifest["files"]["model.pt"]["sha256"]) == 64
    # "patch": stage 1's per-patch what/colour loss (the presets turn it on)
    assert set(manifest["metrics"]["train_final_loss"]) >= {"pretrain", "router", "gesture",
                                                             "patch"}
    assert manifest["training"]["preset"] == "tiny"


def test_training_is_deterministic_by_seed(tiny_dirs):
    a, b, _ = tiny_dirs
    sa, sb = load_model_files(a).state_dict, load_model_files(b).state_dict
    assert sa.keys() == sb.keys()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)


def test_router_normaliser_is_fitted(tiny_dirs):
    state = load_model_files(tiny_dirs[0]).state_dict
    std = state["router.feature_std"]
    assert not torch.equal(std, torch.ones_like(std))


def test_trained_model_streams_frames(tiny_dirs):
    engine = TorchEngine.from_dir(tiny_dirs[0])
    clip = render_clip(11, "slow", num_frames=6)
    res = [engine.process_frame(f) for f in clip.frames]
    assert all(isinstance(r.caption, str) for r in res)  # 6 training steps: may be empty
    assert res[0].record.tokens_recomputed == 196


def test_init_runs_only_the_named_stages_on_the_given_weights(tiny_dirs, tmp_path):
    """`train(init=..., stages=["decoder"])`: the decoder moves, nothing else does, and the
    manifest says which weights it started from and how they were made."""
    from tinygpt_ros.train.recipe import train

    a = tiny_dirs[0]
    out = train("tiny", tmp_path / "ft", seed=3, threads=1, command="ft", init=a,
                stages=["decoder"])
    before, after = load_model_files(a), load_model_files(out)
    moved = {k for k in before.state_dict
             if not torch.equal(before.state_dict[k], after.state_dict[k])}
    assert moved and all(k.startswith("decoder.") for k in moved)
    training = after.manifest["training"]
    assert training["stage_seconds"].keys() == {"decoder"}
    assert training["init"]["model_sha256"] == before.manifest["files"]["model.pt"]["sha256"]
    assert training["init"]["command"] == "test"
    assert after.manifest["command"] == "ft"


def test_init_refuses_weights_of_another_seed_and_partial_runs_without_init(tiny_dirs, tmp_path):
    from tinygpt_ros.train.recipe import train

    with pytest.raises(ValueError, match="seed"):
        train("tiny", tmp_path / "x", seed=4, init=tiny_dirs[0], stages=["decoder"])
    with pytest.raises(ValueError, match="init"):
        train("tiny", tmp_path / "y", seed=3, stages=["decoder"])
    with pytest.raises(ValueError, match="stages"):
        train("tiny", tmp_path / "z", seed=3, init=tiny_dirs[0], stages=["finetune"])
    assert not (tmp_path / "x").exists() and not (tmp_path / "z").exists()


def test_steps_replace_some_step_counts_and_the_manifest_records_them(tmp_path):
    """`tinygpt-ros train --steps pretrain=2 decoder=1`: those stages run that many steps, the
    others the preset's own, the manifest says what ran and the preset itself is untouched; bad
    counts are refused before anything is written."""
    from tinygpt_ros.cli import main
    from tinygpt_ros.train.recipe import train

    handler = _Lines()
    logger = logging.getLogger("tinygpt_ros.train.recipe")
    logger.addHandler(handler)
    level = logger.level
    logger.setLevel(logging.INFO)
    try:
        assert main(["train", "--preset", "tiny", "--seed", "3", "--threads", "1",
                     "--steps", "pretrain=2", "decoder=1", "--out", str(tmp_path / "m")]) == 0
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
    ran = {line.split()[0]: line.split()[1] for line in handler.lines if " loss " in line}
    tiny = PRESETS["tiny"].steps
    assert ran["pretrain"] == "2/2" and ran["decoder"] == "1/1"
    assert ran["router"] == f"{tiny['router']}/{tiny['router']}"
    manifest = json.loads((tmp_path / "m" / "manifest.json").read_text())
    steps = manifest["training"]["preset_config"]["steps"]
    assert steps == {**tiny, "pretrain": 2, "decoder": 1}
    assert tiny["pretrain"] == 6
    for bad in ({"finetune": 1}, {"pretrain": -1}):
        with pytest.raises(ValueError, match="steps"):
            train("tiny", tmp_path / "x", seed=3, steps=bad)
    with pytest.raises(SystemExit, match="STAGE=N"):
        main(["train", "--preset", "tiny", "--steps", "pretrain", "--out", str(tmp_path / "y")])
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()


def test_unknown_preset_is_refused(tmp_path):
    from tinygpt_ros.train.recipe import train

    with pytest.raises(ValueError, match="preset"):
        train("huge", tmp_path / "x")


def test_simulated_reuse_keeps_stale_tokens():
    out = torch.arange(2 * 3 * 4 * 1, dtype=torch.float32).view(2, 3, 4, 1)
    stale = torch.zeros(2, 3, 4, dtype=torch.bool)
    stale[:, 2, 1] = True  # token 1 did not change at step 2: keeps step 1's output
    got = simulate_reuse(out, stale)
    assert torch.equal(got[:, 2, 1], out[:, 1, 1])
    assert torch.equal(got[:, 2, 0], out[:, 2, 0])


def test_sliding_windows_cover_every_run():
    seq = torch.arange(5, dtype=torch.float32).view(1, 5, 1, 1).expand(2, 5, 3, 2)
    w = sliding_windows(seq, 3)
    assert w.shape == (2 * 3, 3, 3, 2)
    assert w[0, :, 0, 0].tolist() == [0, 1, 2] and w[2, :, 0, 0].tolist() == [2, 3, 4]


def test_event_windows_split_by_time():
    from tinygpt_ros.spec.types import EVENT_DTYPE

    ev = np.zeros(5, EVENT_DTYPE)
    ev["t"] = [0, 10, 60_000, 60_001, 149_999]
    wins = event_windows(ev, 50_000)
    assert [len(w) for w in wins] == [2, 2, 1]


def test_full_preset_targets_the_design_budget():
    full = PRESETS["full"]
    assert full.model.branch_depths == (1, 2, 4)
    assert full.model.temporal_window >= 2


def test_event_balanced_runs_end_inside_an_event():
    """event_prob=1: every run's newest window lies inside an event (a whole window where the
    event is that long), so actions are seen as often as the sampler is told."""
    from tinygpt_ros.data.scenes import make_clips
    from tinygpt_ros.train.recipe import CaptionSampler

    clips = make_clips("train", 6, motion="busy", num_frames=24)
    sampler = CaptionSampler(clips, seq_len=6, window=4, seed=0, event_prob=1.0)
    batch = sampler.batch(40)
    newest = batch.segments[2::3]  # 3 windows per run; the last one ends at the run's end
    assert len(newest) == 40 and all(s.kind != "still" for s in newest)
    uniform = CaptionSampler(clips, seq_len=6, window=4, seed=0).batch(40)
    assert any(s.kind == "still" for s in uniform.segments[2::3])
    with pytest.raises(ValueError, match="event_prob"):
        CaptionSampler(clips, seq_len=6, window=4, seed=0, event_prob=1.5)



def test_patch_loss_reads_labels_and_skips_unknown_patches():
    """The stage-1 patch loss is cross-entropy over what covers each patch and its colour,
    averaged over branches; unknown patches (-1, moving-camera clips) add nothing."""
    from tinygpt_ros.data.scenes import COLOUR_CLASSES, WHAT_CLASSES
    from tinygpt_ros.train.recipe import patch_loss

    torch.manual_seed(0)
    head = torch.nn.Linear(8, len(WHAT_CLASSES) + len(COLOUR_CLASSES))
    exits = [torch.randn(2, 3, 196, 8, requires_grad=True) for _ in range(2)]
    unknown = torch.full((2, 3, 196, 2), -1)
    assert float(patch_loss(head, exits, unknown)) == 0.0
    labels = unknown.clone()
    labels[0, :, :5, 0], labels[0, :, :5, 1] = 6, 2
    loss = patch_loss(head, exits, labels)
    loss.backward()
    assert float(loss) > 0
    # only the labelled patches get a gradient
    for e in exits:
        assert e.grad[0, :, :5].abs().sum() > 0 and e.grad[1].abs().sum() == 0
        assert e.grad[0, :, 5:].abs().sum() == 0


def test_caption_batches_carry_patch_labels_for_still_cameras():
    from tinygpt_ros.data.scenes import make_clips
    from tinygpt_ros.train.recipe import CaptionSampler

    clips = make_clips("train", 2, motion="slow", num_frames=12) + \
        make_clips("train", 1, motion="pan", num_frames=12, base_seed=5)
    batch = CaptionSampler(clips, seq_len=6, window=4, seed=0).batch(12)
    assert batch.labels.shape == (12, 6, 196, 2)
    known = (batch.labels >= 0).all(axis=(1, 2, 3))
    unknown = (batch.labels == -1).all(axis=(1, 2, 3))
    assert (known | unknown).all() and known.any() and unknown.any()


def test_fresh_clips_draw_a_new_training_scene_for_every_run():
    from tinygpt_ros.data.scenes import SPLIT_OFFSETS, clip_segments, motion_for_seed
    from tinygpt_ros.train.recipe import CaptionSampler, FreshClips

    fresh = FreshClips(base_seed=5, num_frames=10)
    sampler = CaptionSampler([], seq_len=6, window=4, seed=0, event_prob=1.0, fresh=fresh)
    batch = sampler.batch(6)
    assert fresh.drawn == 6
    assert batch.frames.shape == (6, 6, 224, 224, 3) and batch.labels.shape == (6, 6, 196, 2)
    # each run's windows (3 per run) describe a segment of the clip it came from, and with
    # event_prob 1 the last window lies inside an event wherever the clip has one
    for run in range(6):
        seed = SPLIT_OFFSETS["train"] + 5 + run
        segs = batch.segments[3 * run:3 * run + 3]
        plan = clip_segments(seed, motion_for_seed(seed), 10)
        assert all(any(s.captions == p.captions for p in plan) for s in segs)
        if any(p.kind != "still" for p in plan):
            assert segs[-1].kind != "still"
    # the same base seed draws the same scenes; the pool-less sampler refuses a short clip
    again = CaptionSampler([], 6, 4, 0, 1.0, FreshClips(5, 10)).batch(6)
    assert np.array_equal(again.frames, batch.frames)
    with pytest.raises(ValueError, match="seq_len"):
        CaptionSampler([], 12, 4, 0, fresh=FreshClips(0, 10))
    with pytest.raises(ValueError, match="needs clips"):
        CaptionSampler([], 6, 4, 0)


def test_tokenizer_of_fresh_scenes_knows_every_template_word():
    from tinygpt_ros.data.scenes import caption_vocabulary
    from tinygpt_ros.spec.tokenizer import Tokenizer
    from tinygpt_ros.train.recipe import FreshClips

    tok = Tokenizer.build(FreshClips(0, 16).captions(20))
    assert caption_vocabulary() <= set(tok.itos)


def test_recipe_on_fresh_scenes_with_the_conv_stem_trains_a_model_that_streams(tmp_path,
                                                                               monkeypatch):
    """The `fresh` preset's changes at the tiny preset's scale: every stage runs (the shapes
    stage first) with a new scene per caption run, new labelled scenes every stage-1 step and
    the lean conv frame stem, and the written model loads and streams."""
    import dataclasses

    from tinygpt_ros.deploy.factory import load_engine
    from tinygpt_ros.train.recipe import train

    tiny = PRESETS["tiny"]
    monkeypatch.setitem(PRESETS, "tiny-fresh", dataclasses.replace(
        tiny, fresh_clip_frames=12, patch_scenes=2, shapes_scenes=3,
        steps={**tiny.steps, "shapes": 2},
        model=dataclasses.replace(tiny.model, frame_stem=PRESETS["fresh"].model.frame_stem)))
    d = train("tiny-fresh", tmp_path / "m", seed=1, threads=1, command="test")
    manifest = json.loads((d / "manifest.json").read_text())
    assert manifest["config"]["frame_stem"] == "lean_conv"
    assert manifest["training"]["preset_config"]["fresh_clip_frames"] == 12
    assert {"patch_scenes", "shapes"} <= set(manifest["metrics"]["train_final_loss"])
    assert next(iter(manifest["training"]["stage_seconds"])) == "shapes"
    engine = load_engine(str(d), backend="torch")
    clip = render_clip(7, "slow", num_frames=3)
    results = [engine.process_frame(f) for f in clip.frames]
    assert all(isinstance(r.caption, str) for r in results)
    engine.close()


def test_labelled_frames_are_new_still_camera_scenes_with_their_labels():
    from tinygpt_ros.train.recipe import FreshClips

    source = FreshClips(0, 2, ("still", "busy"))
    frames, labels = source.labelled_frames(3)
    assert frames.shape == (1, 3, 224, 224, 3) and labels.shape == (1, 3, 196, 2)
    assert (labels >= 0).all() and source.drawn == 3
    assert len({f.tobytes() for f in frames[0]}) == 3
    with pytest.raises(ValueError, match="camera"):
        FreshClips(0, 2, ("pan",)).labelled_frames(1)


def test_shapes_stage_trains_the_encoder_alone_on_new_labelled_scenes():
    """Stage 0 fits the per-patch labels on `shapes_scenes` scenes a step: the encoder and the
    training head move, the decoder, router and gesture head do not, and the label loss on
    scenes it never saw falls."""
    import dataclasses

    from tinygpt_ros.train.recipe import FreshClips, Trainer, encode_frames, patch_loss

    tiny = PRESETS["tiny"]
    preset = dataclasses.replace(tiny, shapes_scenes=4, patch_scenes=2,
                                 steps={**tiny.steps, "shapes": 30})
    trainer = Trainer(preset, seed=2)
    held_frames, held_labels = FreshClips(9_000_000, 2, ("still",)).labelled_frames(8)

    def held_loss() -> float:
        with torch.no_grad():
            exits = encode_frames(trainer.model, held_frames)[1]
            return float(patch_loss(trainer.patch_head, exits, held_labels))

    before = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    loss0 = held_loss()
    trainer.shapes()
    after = trainer.model.state_dict()
    moved = {k.split(".")[0] for k in before if not torch.equal(before[k], after[k])}
    assert moved == {"encoder"}
    assert held_loss() < 0.8 * loss0
    assert len(trainer.history["shapes"]) == 30 and trainer.patch_scenes.drawn == 120
    # stage 1 then draws its own count a step (`patch_scenes`), not the shapes stage's
    trainer.pretrain()
    assert trainer.patch_scenes.drawn == 120 + 2 * tiny.steps["pretrain"]
    # a preset without the stage's steps skips it; steps without labelled scenes are refused
    skip = Trainer(tiny, seed=2)
    skip.shapes()
    assert "shapes" not in skip.history
    # stage 1's own count (`patch_scenes`) does not feed the shapes stage
    with pytest.raises(ValueError, match="shapes_scenes"):
        Trainer(dataclasses.replace(tiny, patch_scenes=2, steps={**tiny.steps, "shapes": 1}),
                seed=2).shapes()
