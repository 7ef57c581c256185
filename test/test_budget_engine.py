"""The budget controller inside the real engines (shipped model), FLOPs mode (deterministic):
a step from a still scene to a busy one and a step in the target converge within 10 frames, and
both engines take the same decisions."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest

from tinygpt_ros.deploy.factory import load_engine
from tinygpt_ros.spec.config import Knobs

MODEL_DIR = str(Path(__file__).resolve().parent.parent / "models" / "tinygpt")
SETTLE = 10


def frames(kind: str, n: int, seed: int = 0) -> list[np.ndarray]:
    """`still`: one frame repeated; `busy`: fresh noise every frame (every token changes)."""
    rng = np.random.default_rng(seed)
    if kind == "still":
        f = rng.integers(0, 255, (96, 128, 3), dtype=np.uint8)
        return [f] * n
    return [rng.integers(0, 255, (96, 128, 3), dtype=np.uint8) for _ in range(n)]


def run(engine, stream: list[np.ndarray]) -> list[tuple[float, dict]]:
    out = []
    for f in stream:
        res = engine.process_frame(f)
        out.append((res.record.total_flops / 1e9, res.budget))
    return out


@pytest.fixture(scope="module")
def engine():
    """The node's default knobs: motion and exposure compensation on (fresh noise changes
    every token; the motion stage re-anchors on it now and then, 1 frame in 10 on 96 x 128
    noise; the tokens rung gates re-anchors)."""
    e = load_engine(MODEL_DIR, backend="onnxruntime")
    e.set_knob("refresh_interval", 0)  # no periodic full refresh spikes inside the short run
    assert Knobs().motion_compensation != "off" and Knobs().exposure_compensation
    yield e
    e.close()


def test_scene_step_and_target_step_converge(engine):
    engine.reset()
    engine.budget.configure("off", 0.0)
    busy_cost = np.mean([c for c, _ in run(engine, frames("busy", 6, 1))[1:]])
    # A still frame that decodes its caption at the user's knobs: what returning to level 0
    # costs (a knob change makes the next frame decode again). The target leaves that 10%
    # headroom, so a calm scene gets the user's knobs back, and is at least half the busy
    # cost, so busy frames need the controller. (Half alone was this test's target with the
    # previous weights; with the `fresh` ones a decoding still frame costs 0.6 x busy.)
    reuse = engine.knobs()["caption_reuse_threshold"]
    engine.reset()
    engine.set_knob("caption_reuse_threshold", 0.0)
    still_decode = max(c for c, _ in run(engine, frames("still", 4))[1:])
    engine.set_knob("caption_reuse_threshold", reuse)
    target = max(0.5 * busy_cost, 1.1 * still_decode)
    assert target < 0.8 * busy_cost  # busy frames still need the controller
    engine.reset()
    engine.budget.configure("flops", target)
    still = run(engine, frames("still", 12))
    assert still[-1][1]["budget_level"] == 0.0  # calm: the user's knobs, nothing given up
    busy = run(engine, frames("busy", 30, 2))
    settled = busy[SETTLE:]
    assert sum(c > 1.1 * target for c, _ in settled) <= 1, [round(c / target, 2) for c, _ in busy]
    levels = [d["budget_level"] for _, d in settled]
    # no oscillation once settled: at most two excursions (a caption decode costs a fixed
    # spike, the controller tightens once and relaxes back; or a relax probe in the dead band
    # is undone), within half a rung, never a limit cycle
    moves = sum(a != b for a, b in itertools.pairwise(levels))
    assert moves <= 4 and max(levels) - min(levels) <= 0.5, (
        levels, [round(c / target, 2) for c, _ in busy])
    # (which rung holds it depends on the weights' cost profile; the re-anchor gating from the
    # tokens rung on is checked in test_budget.py)
    assert all(d["budget_state"] != "unreachable" for _, d in settled)
    chosen = settled[-1][1]
    assert chosen["budget_knob_fusion_threshold"] >= engine.knobs()["fusion_threshold"]
    # a step in the target: tighter by a fifth. (A third tighter is what this test asked with
    # the weights before stage 4 of the recipe. With these the cheapest setting costs 0.73 x
    # the first target on these noise frames, so 0.66 x lies under it: the controller then
    # saturates and reports `unreachable`, which test_budget.py checks.)
    tight = 0.8 * target
    engine.budget.configure("flops", tight)
    step = run(engine, frames("busy", 25, 3))
    over = [c for c, _ in step[SETTLE:] if c > 1.1 * tight]
    # at most one frame over: a caption decode (decoding is rare once reuse is raised, and
    # its cost is fixed per decode); the controller answers it by tightening further
    assert len(over) <= 1, [(round(c / tight, 2), d["budget_state"]) for c, d in step]
    assert all(d["budget_state"] != "unreachable" for _, d in step[SETTLE:])
    # the scene calms down: quality comes back (level falls toward the user's knobs)
    calm = run(engine, frames("still", 30, 4))
    assert calm[-1][1]["budget_level"] < step[-1][1]["budget_level"]
    engine.budget.configure("off", 0.0)


def test_step_to_a_panning_camera_converges_with_compensation_on(engine):
    """Generator clips (held-out split): a still scene, then a panning camera (the motion
    stage follows the pan, re-anchors past its limit, and what the noise floor leaves of the
    sensor noise and JPEG changes tokens). The target is 80% of the pan's uncontrolled cost:
    with the noise floor the pan is already cheap, and about 77% of it lies under the fixed
    costs the ladder cannot remove (a 70% target sat on that floor, and a 0.1% change in the
    pan's cost flipped the test)."""
    from tinygpt_ros.data.scenes import render_clip, split_seeds

    still_seed, pan_seed = split_seeds("test", 2, 7)
    still = render_clip(still_seed, "still", num_frames=12).frames
    pan = render_clip(pan_seed, "pan", num_frames=30).frames
    engine.reset()
    engine.budget.configure("off", 0.0)
    pan_cost = np.mean([c for c, _ in run(engine, list(pan))[2:]])
    target = 0.8 * pan_cost
    engine.reset()
    engine.budget.configure("flops", target)
    run(engine, list(still))
    trace = run(engine, list(pan))
    settled = trace[SETTLE:]
    over = [c for c, _ in settled if c > 1.1 * target]
    assert len(over) <= 1, [(round(c / target, 2), d["budget_state"]) for c, d in trace]
    assert all(d["budget_state"] != "unreachable" for _, d in settled)
    engine.budget.configure("off", 0.0)


def test_torch_and_onnxruntime_take_the_same_budget_decisions(engine):
    torch_engine = load_engine(MODEL_DIR, backend="torch")
    stream = frames("still", 4) + frames("busy", 12, 5)
    levels = {}
    for name, e in (("onnxruntime", engine), ("torch", torch_engine)):
        e.set_knob("refresh_interval", 0)
        e.reset()
        e.budget.configure("flops", 0.05)
        levels[name] = [d["budget_level"] for _, d in run(e, stream)]
        e.budget.configure("off", 0.0)
    torch_engine.close()
    assert levels["torch"] == levels["onnxruntime"]
    assert max(levels["torch"]) > 0


def test_the_caption_rung_does_not_carry_a_caption_into_a_new_scene(engine):
    """At the caption rung's cheap end the reuse threshold is 1.0, and the fused set of a new
    scene moved less than that: the previous scene's caption stood for the whole new scene.
    After a re-anchor the user's threshold applies until the caption is decoded again."""
    from tinygpt_ros.data.scenes import render_clip, split_seeds
    from tinygpt_ros.runtime.budget import LEVELS

    first_seed, second_seed = split_seeds("test", 2, 11)
    first = render_clip(first_seed, "still", num_frames=10).frames
    second = render_clip(second_seed, "still", num_frames=6).frames
    engine.reset()
    engine.budget.configure("flops", 1e-6)  # below any frame: the level climbs to the last rung
    before = [engine.process_frame(f) for f in first]
    assert before[-1].budget["budget_level"] == LEVELS
    assert before[-1].budget["budget_knob_caption_reuse_threshold"] == pytest.approx(1.0)
    engine.budget._stream("frame").credit = 0.0  # no new view: the rung's own behaviour
    after = [engine.process_frame(f) for f in second]
    engine.budget.configure("off", 0.0)
    assert after[0].record.reanchored and after[0].budget["budget_new_views"] == 0
    decoded = [i for i, r in enumerate(after) if not r.record.caption_reused]
    assert decoded, [round(r.budget["budget_level"], 2) for r in after]
    assert after[-1].caption != before[-1].caption


def test_a_new_view_runs_at_the_users_knobs_once_and_a_re_anchoring_camera_does_not(engine):
    """A scene cut re-anchors the motion stage: with a frame's worth of the target saved, that
    frame recomputes every token at the user's knobs (what a calm scene keeps) and moves
    nothing.
    A camera panning faster than the motion stage follows re-anchors on every frame: those are
    not new views."""
    from tinygpt_ros.data.scenes import render_clip, split_seeds
    from tinygpt_ros.runtime.budget import LEVELS

    first_seed, second_seed = split_seeds("test", 2, 11)  # a cut that re-anchors
    first = render_clip(first_seed, "still", num_frames=10).frames
    second = render_clip(second_seed, "still", num_frames=4).frames
    engine.reset()
    engine.budget.configure("flops", 1e-6)  # below any frame: the level climbs to the last rung
    run(engine, list(first))
    assert engine.budget.level("frame") == LEVELS
    # as if saved up over calm frames; the saving pays for the view, the allowance lets the
    # last frame over the tiny target through (the next plan)
    engine.budget._stream("frame").allowance = 1.0
    engine.budget._stream("frame").credit = 1.0 * engine.budget.target
    cut = engine.process_frame(second[0])
    user = engine.knobs()
    assert cut.record.reanchored and cut.record.full_refresh
    assert cut.budget["budget_new_views"] == 1
    assert cut.budget["budget_knob_max_fused_tokens"] == user["max_fused_tokens"]
    assert cut.record.tokens_fused > 6  # the squeeze's 6 fused tokens did not apply
    after = engine.process_frame(second[1])
    assert after.budget["budget_level"] == LEVELS
    assert after.budget["budget_knob_max_fused_tokens"] < user["max_fused_tokens"]
    # a camera panning faster than the motion stage follows re-anchors on every frame: those
    # are not new views, whatever was saved
    picture = frames("busy", 1, 6)[0]
    for i in range(1, 9):
        engine.budget._stream("frame").credit = 2.0 * engine.budget.target
        res = engine.process_frame(np.roll(picture, 64 * i, axis=1))
        assert res.budget["budget_new_views"] == 1
    assert res.record.reanchored
    engine.budget.configure("off", 0.0)


def test_a_scene_cut_under_a_latency_target_is_a_new_view_without_the_allowance(engine):
    """Under a latency target a scene cut `time_view_spacing` frames or more after the last new
    view recomputes every token at the user's knobs, with the p95 allowance empty: the cut is
    a step in the scene, inside the settling the target leaves out of its p95. The next cut,
    closer than that, is gated again."""
    from tinygpt_ros.data.scenes import render_clip, split_seeds
    from tinygpt_ros.runtime.budget import LEVELS, BudgetController, ControllerGains

    seeds = split_seeds("test", 2, 11)  # cuts that re-anchor
    clips = [render_clip(seed, "still", num_frames=12).frames for seed in seeds]
    budget = engine.budget
    try:
        engine.budget = BudgetController("latency", 1e-6,
                                         gains=ControllerGains(spike_allowance=0.0))
        engine.reset()
        run(engine, list(clips[0]))
        assert engine.budget.level("frame") == LEVELS
        assert engine.budget._stream("frame").allowance == 0.0
        cut = engine.process_frame(clips[1][0])
        rest = [engine.process_frame(f) for f in clips[1][1:5]]
        again = engine.process_frame(clips[0][0])  # a cut 5 frames after the last
    finally:
        engine.budget = budget
    user = engine.knobs()
    assert cut.record.reanchored and cut.record.full_refresh
    assert cut.budget["budget_new_views"] == 1
    assert cut.budget["budget_knob_max_fused_tokens"] == user["max_fused_tokens"]
    assert all(r.budget["budget_level"] == LEVELS for r in rest)
    assert again.record.reanchored and not again.record.full_refresh
    assert again.budget["budget_new_views"] == 1


def test_a_frame_over_a_time_target_keeps_the_last_fused_set_and_the_next_fuses(engine):
    """Under a latency target no frame can meet, a panning camera's frames keep the last fused
    set every other frame (one in a row at most): no fusion runs and none is charged, the
    decoder reads the set the frame before fused, the encoder still recomputes the changed
    tokens, and the next frame fuses them. A re-anchor (a scene cut: the window starts anew)
    fuses whatever the target says. Without a budget every frame fuses."""
    from tinygpt_ros.data.scenes import render_clip, split_seeds
    from tinygpt_ros.runtime.budget import BudgetController

    pan_seed, cut_seed = split_seeds("test", 2, 11)
    pan = render_clip(pan_seed, "pan", num_frames=10).frames
    cut = render_clip(cut_seed, "still", num_frames=3).frames
    budget = engine.budget
    try:
        engine.budget = BudgetController("latency", 1e-6)
        engine.reset()
        results = [engine.process_frame(f) for f in list(pan) + list(cut)]
        engine.budget = BudgetController()
        engine.reset()
        free = [engine.process_frame(f) for f in pan]
    finally:
        engine.budget = budget
    held = [r.budget["budget_held_fusions"] for r in results]
    steps = [b - a for a, b in itertools.pairwise([0, *held])]
    assert steps[0] == 0 and max(steps) == 1 and sum(steps) >= 3, steps
    assert all(not (a and b) for a, b in itertools.pairwise(steps)), steps  # never two in a row
    for i, (prev, now) in enumerate(itertools.pairwise(results), start=1):
        if steps[i]:
            assert now.record.flops["fusion"] == 0.0
            assert np.array_equal(now.fused_centroids, prev.fused_centroids)
            assert not now.record.reanchored
    # the tokens a held frame recomputed are fused by the next frame
    moved = [i for i in range(1, len(pan) - 1)
             if steps[i] and results[i].record.tokens_recomputed > 0]
    assert moved and all(results[i + 1].record.flops["fusion"] > 0 for i in moved)
    first_cut = results[len(pan)]
    assert first_cut.record.reanchored and steps[len(pan)] == 0
    assert all(r.record.flops["fusion"] > 0 for r in free[1:])


def test_under_a_latency_target_a_pan_is_tracked_as_a_shift_and_a_zoom_is_not(engine):
    """Once a latency target engages the ladder, the motion stage estimates a shift only while
    the user's similarity model last found no zoom or roll against the anchor, and runs the
    user's model again every SHIFT_ONLY_RUN + 1 frames (the frame's diagnostics say which ran).
    A pan is still followed on the shift frames, recomputing no more tokens than the user's
    model does at the same levels; a zoom keeps the user's model once it has seen the zoom.
    Without a budget the user's model runs on every frame."""
    from tinygpt_ros.data.scenes import render_clip, split_seeds
    from tinygpt_ros.runtime.budget import BudgetController, CheapEnd
    from tinygpt_ros.runtime.streaming import SHIFT_ONLY_RUN

    seed = split_seeds("test", 1, 11)[0]
    pan = render_clip(seed, "pan", num_frames=12).frames
    zoom = render_clip(seed, "zoom", num_frames=12).frames

    def run_clip(clip, budget: BudgetController) -> list:
        engine.budget = budget
        engine.reset()
        return [engine.process_frame(f).record for f in clip]

    budget = engine.budget
    try:
        free = run_clip(pan, BudgetController())
        tight = run_clip(pan, BudgetController("latency", 1e-6))
        # the same levels (every frame over the target: the level climbs at its most a frame)
        # with the user's model throughout
        same = run_clip(pan, BudgetController(
            "latency", 1e-6, cheap=CheapEnd(time_motion_compensation="similarity")))
        zoomed = run_clip(zoom, BudgetController("latency", 1e-6))
    finally:
        engine.budget = budget
    assert {r.motion_compensation for r in free} == {"similarity"}
    modes = [r.motion_compensation for r in tight]
    # frame 0 sets the anchor at level 0, frame 1 is the user's model's first look at it
    assert modes[:2] == ["similarity", "similarity"], modes
    shift = [i for i, m in enumerate(modes) if m == "translation"]
    assert len(shift) >= len(pan) // 2, modes
    assert all("similarity" in modes[i:i + SHIFT_ONLY_RUN + 1]
               for i in range(1, len(modes) - SHIFT_ONLY_RUN)), modes  # re-checked
    # a shift frame moves only the shift: its scale and roll are the frame before's
    assert all(np.isclose(tight[i].motion_scale, tight[i - 1].motion_scale, atol=1e-9)
               and np.isclose(tight[i].motion_rotation_deg, tight[i - 1].motion_rotation_deg,
                              atol=1e-7)
               for i in shift if not (tight[i].reanchored or tight[i - 1].reanchored))
    assert all(abs(tight[i].motion_dx) + abs(tight[i].motion_dy) > 0 for i in shift
               if not tight[i].reanchored)
    assert {r.motion_compensation for r in same} == {"similarity"}
    followed = [i for i in shift if not (tight[i].reanchored or same[i].reanchored)]
    assert followed
    assert sum(tight[i].tokens_recomputed for i in followed) <= 1.25 * sum(
        same[i].tokens_recomputed for i in followed)
    zoom_modes = [r.motion_compensation for r in zoomed]
    seen = [i for i, r in enumerate(zoomed) if abs(r.motion_scale - 1.0) > 0.005]
    assert seen, [r.motion_scale for r in zoomed]
    # after the user's model saw the zoom, no shift-only frame until a re-anchor
    for i in range(seen[0] + 1, len(zoomed)):
        if zoomed[i].reanchored:
            break
        assert zoom_modes[i] == "similarity", (i, zoom_modes)


def test_a_decode_that_would_take_a_scene_cut_over_the_target_waits_a_frame(engine):
    """A scene cut at the user's knobs recomputes every token; with the decode on top it costs
    more than a target it fits without. The decode waits for the next frame: the cut frame
    shows the last caption inside the target, and the next frame decodes the new scene."""
    from tinygpt_ros.data.scenes import render_clip, split_seeds

    first_seed, second_seed = split_seeds("test", 2, 11)  # a cut that re-anchors
    first = render_clip(first_seed, "still", num_frames=8).frames
    second = render_clip(second_seed, "still", num_frames=3).frames
    engine.reset()
    engine.budget.configure("off", 0.0)
    run(engine, list(first))
    free = engine.process_frame(second[0])
    assert free.record.reanchored and not free.record.caption_reused
    decode = free.record.flops["decoder"] / 1e9
    target = free.record.total_flops / 1e9 - 0.5 * decode  # fits only without the decode
    engine.reset()
    engine.budget.configure("flops", target)
    shown = run(engine, list(first))
    assert shown[-1][1]["budget_level"] == 0.0  # still frames: the user's knobs
    before = engine.process_frame(first[-1]).caption
    cut = engine.process_frame(second[0])
    after = engine.process_frame(second[1])
    engine.budget.configure("off", 0.0)
    assert cut.record.caption_reused and cut.caption == before
    assert cut.record.flops["decoder"] == 0.0 and cut.record.total_flops / 1e9 <= target
    assert cut.budget["budget_deferred_decodes"] == 1
    assert not after.record.caption_reused and after.caption != before


def test_a_decode_that_has_waited_twice_reads_a_thinner_set_that_fits(engine):
    """On a panning scene every frame's caption moves, and with a FLOPs target the frame fits
    only without its whole decode, each decode waits twice (`defer_decode_max`) and then reads
    a thinner fused set (`thin_decode`): a decode, not a reuse, with fewer decoder FLOPs than
    the whole set's, and inside the target when a thinner set fits. The level is pinned at the
    user's knobs (zero gains) so only the decode's own rule acts."""
    from tinygpt_ros.data.scenes import render_clip, split_seeds
    from tinygpt_ros.runtime.budget import BudgetController, ControllerGains

    clip = render_clip(split_seeds("test", 1, 3)[0], "pan", num_frames=16).frames
    engine.reset()
    engine.budget.configure("off", 0.0)
    free = [engine.process_frame(f).record for f in clip]
    decodes = [r for r in free[1:] if not r.caption_reused]
    whole = max(r.flops["decoder"] for r in decodes) / 1e9
    rest = float(np.median([(r.total_flops - r.flops["decoder"]) / 1e9 for r in decodes]))
    target = rest + 0.5 * whole  # the whole decode never fits, half of it does
    pinned = ControllerGains(gain_up=0.0, min_step_up=0.0, relax_step=0.0, gain_down=0.0)
    budget, engine.budget = engine.budget, BudgetController("flops", target, gains=pinned)
    try:
        engine.reset()
        shown = [engine.process_frame(f) for f in clip]
    finally:
        engine.budget = budget
    thinned = [r for prev, r in itertools.pairwise(shown)
               if r.budget["budget_thinned_decodes"] > prev.budget["budget_thinned_decodes"]]
    assert len(thinned) >= 2
    assert all(r.budget["budget_level"] == 0.0 for r in shown)
    for r in thinned:
        assert not r.record.caption_reused
        assert 0.0 < r.record.flops["decoder"] / 1e9 < 0.75 * whole
    assert sum(r.record.total_flops / 1e9 <= target for r in thinned) >= 2
    # each thinned decode waited the two frames before it
    assert shown[-1].budget["budget_deferred_decodes"] >= 2 * len(thinned)


def test_a_thinned_set_keeps_a_pretrained_towers_leading_rows_out_of_the_merge(engine):
    """A pretrained tower's kept rows (CLS) lead the fused set and never merge; a thinned
    decode merges only the patch tokens after them, down to the cap counting those rows."""
    rng = np.random.default_rng(5)
    tokens = rng.normal(size=(12, 128)).astype(np.float32)
    sizes = np.full(12, 4.0, np.float32)
    positions = rng.uniform(size=(12, 3)).astype(np.float32)
    kept, engine._kept_rows = engine._kept_rows, 1
    try:
        thin = engine._thin(tokens, sizes, positions, 6)
    finally:
        engine._kept_rows = kept
    assert [len(a) for a in thin] == [6, 6, 6]
    assert np.array_equal(thin[0][0], tokens[0]) and thin[1][0] == sizes[0]
    assert np.array_equal(thin[2][0], positions[0])
    assert thin[1].sum() == pytest.approx(sizes.sum())


def test_a_new_view_comes_in_as_fast_as_the_target_allows(engine):
    """A scene cut at a high level (as after a busy scene: re-anchors gated, 32 active
    tokens) with nothing saved for a new view: `fit_tokens` recomputes as many of the new
    view's changed tokens as fit the FLOPs target, so the view is in within fewer frames than
    the active-token cap alone lets it, and no frame goes over the target. The level is
    pinned (zero gains) so only the fit acts; a controller whose fit does nothing is the
    comparison."""
    from tinygpt_ros.data.scenes import render_clip, split_seeds
    from tinygpt_ros.runtime.budget import BudgetController, ControllerGains

    class CapOnly(BudgetController):
        def fit_tokens(self, *args, **kwargs):
            return None

    first_seed, second_seed = split_seeds("test", 2, 5)
    first = render_clip(first_seed, "still", num_frames=6).frames
    second = render_clip(second_seed, "still", num_frames=10).frames
    pinned = ControllerGains(gain_up=0.0, min_step_up=0.0, relax_step=0.0, gain_down=0.0,
                             spike_allowance=0.0, view_credit_cap=0.0)
    target = 0.07
    budget = engine.budget
    cut = {}
    try:
        for name, cls in (("fit", BudgetController), ("cap", CapOnly)):
            engine.budget = cls("flops", target, gains=pinned)
            engine.reset()
            for f in first:
                engine.process_frame(f)
            engine.budget._stream("frame").level = 3.5
            cut[name] = [engine.process_frame(f) for f in second]
    finally:
        engine.budget = budget
    assert cut["fit"][0].budget["budget_knob_max_active_tokens"] == 32
    assert cut["fit"][-1].budget["budget_level"] == 3.5

    def frames_to_arrive(results) -> int:
        busy = [i for i, r in enumerate(results) if r.record.tokens_recomputed > 0]
        return busy[-1] + 1 if busy else 0

    fit_in, cap_in = frames_to_arrive(cut["fit"]), frames_to_arrive(cut["cap"])
    assert fit_in < cap_in, (fit_in, cap_in)
    assert sum(r.record.tokens_recomputed for r in cut["fit"][:2]) > 1.5 * sum(
        r.record.tokens_recomputed for r in cut["cap"][:2])
    assert cut["fit"][-1].budget["budget_filled_tokens"] > 0
    assert max(r.record.total_flops / 1e9 for r in cut["fit"]) <= target


def test_the_decode_estimate_is_the_longest_recent_caption():
    """The budget weighs a caption decode at the most rows and milliseconds of the recent
    decodes: a short caption (a thinned set, a plain view, a draft that held) made the next
    decode look cheap enough to run on a frame it then took over a FLOPs or latency target.
    Older decodes leave the memory."""
    from tinygpt_ros.runtime.streaming import (
        DECODE_ROWS_MEMORY,
        Stream,
        _expected_ms,
        _expected_rows,
    )

    s = Stream(cache=None)
    assert (_expected_rows(s), _expected_ms(s)) == (0, 0.0)  # nothing decoded yet
    s.decode_rows.extend([12, 7])
    s.decode_ms.extend([9.0, 2.5])
    assert (_expected_rows(s), _expected_ms(s)) == (12, 9.0)
    s.decode_rows.extend([5] * DECODE_ROWS_MEMORY)
    s.decode_ms.extend([1.5] * DECODE_ROWS_MEMORY)
    assert (_expected_rows(s), _expected_ms(s)) == (5, 1.5)


def test_a_whole_decode_under_a_latency_target_is_weighed_at_the_longest_recent_one(engine):
    """Where a decode is not spread over frames (beam search, a pretrained family's
    draft-checked decode), a latency target defers it on the longest of the recent decodes'
    milliseconds, not the last one's: after a long decode and a short one, a scene cut with
    room for the short one only waits a frame; once the long one has left the memory, the
    next frame decodes."""
    from tinygpt_ros.data.scenes import render_clip, split_seeds
    from tinygpt_ros.runtime.streaming import DECODE_ROWS_MEMORY

    first_seed, second_seed = split_seeds("test", 2, 11)  # a cut that re-anchors
    first = render_clip(first_seed, "still", num_frames=8).frames
    second = render_clip(second_seed, "still", num_frames=2).frames
    engine.reset()
    engine.budget.configure("latency", 10_000.0)  # the user's knobs; only the estimate decides
    engine.kernels.start_decode = None  # a backend that decodes in one call
    try:
        run(engine, list(first))
        s = engine._streams["frame"]
        s.decode_ms.extend([20_000.0, 0.1])  # a long decode, then a short one
        cut = engine.process_frame(second[0])
        s.decode_ms.extend([0.1] * DECODE_ROWS_MEMORY)
        after = engine.process_frame(second[1])
    finally:
        del engine.kernels.start_decode
        engine.budget.configure("off", 0.0)
    assert cut.record.reanchored and cut.budget["budget_level"] == 0.0
    assert cut.record.caption_reused and cut.budget["budget_deferred_decodes"] == 1
    assert not after.record.caption_reused


def test_a_spread_decode_shares_its_milliseconds_not_its_passes(engine):
    """A frame of a spread decode with room for its next pass runs at least its share of the
    decode's estimated milliseconds left, the prefill weighed at its own milliseconds
    (`_decode_ms_left`): with a prefill four steps long, the first frame of a 12-pass decode
    spread over 3 frames runs the prefill and one step (4 + 1 units, its share of the 15
    estimated), not a third of the passes (4). With the two equal, the share is a third of the
    passes. The frame's time so far is set to leave room for the prefill's estimate and no
    more, so only the share runs further passes; the unit is 2^-7 ms, far under a real pass,
    and exact in binary."""
    from tinygpt_ros.data.scenes import render_clip, split_seeds
    from tinygpt_ros.runtime.budget import BudgetController, ControllerGains

    first_seed, second_seed = split_seeds("test", 2, 11)  # a cut that re-anchors
    first = list(render_clip(first_seed, "still", num_frames=3).frames)
    cut_frame = render_clip(second_seed, "still", num_frames=1).frames[0]
    pinned = ControllerGains(gain_up=0.0, min_step_up=0.0, relax_step=0.0, gain_down=0.0,
                             split_decode_frames=3)
    unit = 2.0 ** -7
    target = 1.0
    budget = engine.budget
    advance = engine._advance_decode
    try:
        firsts = []
        for prefill in (4.0, 1.0):
            engine.budget = BudgetController("latency", target, gains=pinned)
            engine.reset()
            for f in first:
                engine.process_frame(f)
            s = engine._streams["frame"]
            while s.pending_decode is not None:  # the first scene's caption completes
                engine.process_frame(first[-1])
            s.decode_rows.clear()
            s.decode_rows.append(12)
            s.prefill_ms, s.pass_ms = prefill * unit, unit
            engine._advance_decode = (
                lambda st, spent_ms, started, room=prefill * unit:
                advance(st, target - room, started))
            cut = engine.process_frame(cut_frame)
            del engine._advance_decode
            assert cut.record.reanchored and cut.record.caption_reused
            firsts.append(cut.record.decoder_passes)
        assert firsts == [2, 4]
    finally:
        engine.budget = budget
        engine.__dict__.pop("_advance_decode", None)


def test_a_decode_under_a_latency_target_spreads_over_frames_to_the_same_caption(engine):
    """Under a latency target a caption decode runs the passes a frame affords and goes on in
    the next frames (`StreamingEngine._advance_decode`), showing the last caption until it
    completes; the caption and the decoder FLOPs over those frames are the ones a whole
    decode of the same fused set gives. Three frames' time: with room for one pass by its
    estimate (the frame's time so far set to leave that much), each frame runs at least one
    pass and the decode completes within `split_decode_frames`, on more than one frame; with
    no room at all (a target no pass fits), the frames run none and the last frame the decode
    may take runs it whole; with room for it, the decode completes in its frame. The level is
    pinned at the user's knobs."""
    from tinygpt_ros.data.scenes import render_clip, split_seeds
    from tinygpt_ros.runtime.budget import BudgetController, ControllerGains
    from tinygpt_ros.runtime.streaming import _pass_ms

    first_seed, second_seed = split_seeds("test", 2, 11)  # a cut that re-anchors
    pinned = ControllerGains(gain_up=0.0, min_step_up=0.0, relax_step=0.0, gain_down=0.0)
    frames_max = pinned.split_decode_frames
    first = list(render_clip(first_seed, "still", num_frames=6).frames)
    second = list(render_clip(second_seed, "still", num_frames=frames_max + 1).frames)
    engine.reset()
    engine.budget.configure("off", 0.0)
    whole = [engine.process_frame(f) for f in first + second]
    cut = whole[len(first)]
    assert cut.record.reanchored and not cut.record.caption_reused
    budget = engine.budget
    advance = engine._advance_decode

    def one_pass_of_room(st, spent_ms, started):
        """The frame's time so far as the target less the next pass's estimate."""
        prefill_ms, step_ms = _pass_ms(st)
        room = step_ms if st.pending_decode.passes else prefill_ms
        return advance(st, engine.budget.target - room, started)

    try:
        for case, target in (("one pass", 50.0), ("none", 1e-6), ("all", 1e6)):
            engine.budget = BudgetController("latency", target, gains=pinned)
            if case == "one pass":
                engine._advance_decode = one_pass_of_room
            engine.reset()
            shown = [engine.process_frame(f) for f in first + second]
            engine.__dict__.pop("_advance_decode", None)
            assert all(r.budget["budget_level"] == 0.0 for r in shown)
            before = len(first)
            assert [r.caption for r in shown[:before]] == [r.caption for r in whole[:before]]
            after = shown[before:]
            taken = next(i for i, r in enumerate(after) if not r.record.caption_reused) + 1
            spread, done = after[:taken], after[taken - 1]
            # until the last frame the previous scene's caption is shown
            for r in spread[:-1]:
                assert r.record.caption_reused and r.caption == whole[before - 1].caption
            passes = [r.record.decoder_passes for r in spread]
            # a frame whose passes wait is counted with the deferred decodes (wait_decode)
            waited = [r.budget["budget_deferred_decodes"]
                      - shown[before - 1].budget["budget_deferred_decodes"] for r in spread]
            if case == "one pass":
                assert 1 < taken <= frames_max and min(passes) >= 1, passes
                assert waited == [0] * taken
            elif case == "none":
                assert taken == frames_max and passes[:-1] == [0] * (frames_max - 1), passes
                assert waited == [*range(1, frames_max), frames_max - 1]
            else:
                assert taken == 1
            assert done.caption == cut.caption
            assert sum(passes) == cut.record.decoder_passes
            assert sum(r.record.flops["decoder"] for r in spread) == pytest.approx(
                cut.record.flops["decoder"])
            assert done.budget["budget_split_decodes"] == (1 if taken > 1 else 0)
    finally:
        engine.budget = budget
        engine.__dict__.pop("_advance_decode", None)


def test_a_gated_re_anchor_is_not_taken_for_a_missed_cut_on_the_next_frames(engine):
    """Past the tokens rung a re-anchor is gated: the new view's changed tokens come in a few
    at a time, and the others keep references from the old view. The missed-cut test reads
    only the tokens recomputed in the new anchor's view (`StreamingEngine._missed_cut`), so a
    still scene after a cut re-anchors once. Read on every token, the stale ones made the next
    frame look like another cut, which cleared the fusion window and restarted the caption
    decode (on the frame after this cut: 92% of the tokens)."""
    from tinygpt_ros.data.scenes import render_clip, split_seeds
    from tinygpt_ros.runtime.budget import LEVELS, BudgetController, ControllerGains

    first_seed, second_seed = split_seeds("test", 2, 11)  # a cut that re-anchors
    first = render_clip(first_seed, "still", num_frames=4).frames
    second = render_clip(second_seed, "still", num_frames=6).frames
    pinned = ControllerGains(gain_up=0.0, min_step_up=0.0, relax_step=0.0, gain_down=0.0,
                             spike_allowance=0.0)  # no allowance: no new view at the user's
    budget = engine.budget
    try:
        engine.budget = BudgetController("latency", 1e6, gains=pinned)
        engine.reset()
        for f in first:
            engine.process_frame(f)
        engine.budget._stream("frame").level = LEVELS
        # as if a new view had just run: this cut is closer than `time_view_spacing` and,
        # with no allowance, its re-anchor is gated
        engine.budget._stream("frame").since_view = 0
        after = [engine.process_frame(f) for f in second]
    finally:
        engine.budget = budget
    cut = after[0].record
    assert cut.reanchored and not cut.full_refresh and cut.tokens_recomputed <= 16
    assert [r.record.reanchored for r in after] == [True] + [False] * (len(second) - 1)


def test_a_pan_tracked_past_the_re_anchor_limit_is_not_a_new_view_and_a_cut_is(engine):
    """A camera panning at a steady pace re-anchors each time the view has moved past
    `max_compensated_motion`: those frames are the pan going on, not a new view, and stay
    with the controller's level however far back the last re-anchor and the last new view
    were. A scene cut after the pan is a new view."""
    import cv2

    from tinygpt_ros.runtime.budget import BudgetController, ControllerGains
    from tinygpt_ros.runtime.streaming import NEW_VIEW_AFTER

    rng = np.random.default_rng(21)
    noise = rng.integers(0, 255, (96, 640, 3)).astype(np.float32)
    texture = cv2.GaussianBlur(noise, (0, 0), 2.0)
    world = np.clip((texture - texture.mean()) * 6 + 128, 0, 255).astype(np.uint8)
    step = 2  # camera px a frame: past the re-anchor limit (8% of 224 model px) every few
    pan = [np.ascontiguousarray(world[:, step * i:step * i + 128]) for i in range(30)]
    stopped = [pan[-1]] * NEW_VIEW_AFTER  # the camera stops; then the scene cuts
    cut = frames("busy", 1, 7)[0]
    budget = engine.budget
    try:
        engine.budget = BudgetController("latency", 1e-6,
                                         gains=ControllerGains(spike_allowance=0.0))
        engine.reset()
        panned = [engine.process_frame(f) for f in pan + stopped]
        after = engine.process_frame(cut)
    finally:
        engine.budget = budget
    reanchors = [i for i, r in enumerate(panned) if r.record.reanchored]
    # tracked (the shift measured between re-anchors), each re-anchor far enough from the
    # last to be a new view but for what it is, and the last `time_view_spacing` frames on
    assert len(reanchors) >= 3 and min(np.diff(reanchors)) > NEW_VIEW_AFTER, reanchors
    assert any(abs(r.record.motion_dx) > step for r in panned[reanchors[0] + 1:])
    assert reanchors[-1] >= 10
    assert panned[-1].budget["budget_level"] > 0
    assert all(r.budget["budget_new_views"] == 0 for r in panned)
    assert after.record.reanchored and after.budget["budget_new_views"] == 1, reanchors
