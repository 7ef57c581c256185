"""Budget controller (runtime/budget.py): driven with synthetic measured costs (no timing), then
through the real engine in FLOPs mode (FLOPs are deterministic)."""

from __future__ import annotations

import dataclasses
import math

import pytest

from tinygpt_ros.runtime.budget import (
    LEVELS,
    RUNGS,
    BudgetController,
    CheapEnd,
    ControllerGains,
    knobs_at_level,
    knobs_with_rungs,
)
from tinygpt_ros.spec.config import NUM_TOKENS, Knobs
from tinygpt_ros.spec.types import ComputeRecord


def record(gflops: float) -> ComputeRecord:
    return ComputeRecord(0, "frame", NUM_TOKENS, 10, 10, "small", flops={"encoder": gflops * 1e9},
                         latency_ms={"encoder": 1.0})


def plant(level: float, scene: float) -> float:
    """Synthetic cost: a busier scene costs more; every level unit roughly halves it."""
    return scene * 2.0 ** (-level)


def timed(ms: float) -> ComputeRecord:
    """A step that took `ms` milliseconds (and no FLOPs)."""
    return dataclasses.replace(record(0.0), latency_ms={"encoder": ms})


def drive(ctl: BudgetController, scene: float, frames: int) -> list[tuple[float, float]]:
    """Run `frames` steps; returns (level used, cost) per frame (in milliseconds under a
    latency target, GFLOPs otherwise)."""
    out = []
    for _ in range(frames):
        ctl.plan("frame", Knobs())
        level = ctl.level("frame")
        cost = plant(level, scene)
        ctl.observe("frame", timed(cost) if ctl.mode == "latency" else record(cost))
        out.append((level, cost))
    return out


def settled_within(trace: list[tuple[float, float]], target: float, frames: int) -> bool:
    """From frame `frames` on, every cost is within +10% of the target and the level stays put
    (at most one probe step of movement)."""
    tail = trace[frames:]
    return (all(c <= 1.1 * target for _, c in tail)
            and max(lv for lv, _ in tail) - min(lv for lv, _ in tail) <= 0.25 + 1e-9)


def test_level_zero_is_the_users_knobs_and_every_level_stays_inside_them():
    user = Knobs(fusion_threshold=0.8, max_active_tokens=120, max_fused_tokens=40,
                 caption_reuse_threshold=0.2)
    k, bias = knobs_at_level(user, 0.0)
    assert k == user and bias == 0.0
    cheap = CheapEnd()
    prev = None
    for i in range(0, int(LEVELS * 10) + 1):
        k, bias = knobs_at_level(user, i / 10)
        assert k.caption_reuse_threshold >= user.caption_reuse_threshold
        assert k.fusion_threshold >= user.fusion_threshold
        assert cheap.squeeze_max_active_tokens <= k.max_active_tokens <= user.max_active_tokens
        assert cheap.squeeze_max_fused_tokens <= k.max_fused_tokens <= user.max_fused_tokens
        if prev is not None:  # monotone: a higher level is never more expensive
            assert k.fusion_threshold >= prev[0].fusion_threshold
            assert k.max_fused_tokens <= prev[0].max_fused_tokens
            assert k.max_active_tokens <= prev[0].max_active_tokens
            assert k.caption_reuse_threshold >= prev[0].caption_reuse_threshold
            assert bias >= prev[1]
        prev = (k, bias)


def test_rungs_move_in_quality_order():
    """fused tokens and frames, router, tokens (the order that gave the controller the best
    CIDEr on val clips); then the squeeze to the floor; caption reuse last (alone it cost the
    most CIDEr on val)."""
    user, cheap = Knobs(), CheapEnd()
    k, bias = knobs_at_level(user, 0.75)  # fused rung only: fused tokens and frames
    assert bias == 0.0
    assert cheap.max_fused_tokens < k.max_fused_tokens < user.max_fused_tokens
    assert 0 < k.fused_frames
    assert dataclasses.replace(k, max_fused_tokens=user.max_fused_tokens,
                               fused_frames=user.fused_frames) == user
    k, bias = knobs_at_level(user, 1.5)  # router rung, fused at its end
    assert 0 < bias < cheap.router_bias
    assert dataclasses.replace(k, max_fused_tokens=user.max_fused_tokens,
                               fused_frames=user.fused_frames) == user
    assert (k.max_fused_tokens, k.fused_frames) == (cheap.max_fused_tokens, cheap.fused_frames)
    k, bias = knobs_at_level(user, 2.5)  # tokens rung
    assert k.fusion_threshold > user.fusion_threshold
    assert cheap.max_active_tokens < k.max_active_tokens < (user.max_active_tokens or 196)
    assert (k.max_fused_tokens, k.caption_reuse_threshold) == (
        cheap.max_fused_tokens, user.caption_reuse_threshold)
    k, bias = knobs_at_level(user, 3.0)  # the first three at their ends
    assert (k.max_active_tokens, k.max_fused_tokens, bias) == (
        cheap.max_active_tokens, cheap.max_fused_tokens, cheap.router_bias)
    k, bias = knobs_at_level(user, 4.0)  # squeezed to the floor, captions untouched
    assert (k.max_active_tokens, k.max_fused_tokens, bias) == (
        cheap.squeeze_max_active_tokens, cheap.squeeze_max_fused_tokens,
        cheap.squeeze_router_bias)
    assert k.caption_reuse_threshold == user.caption_reuse_threshold
    k, _ = knobs_at_level(user, 4.5)  # caption reuse last
    assert k.caption_reuse_threshold > user.caption_reuse_threshold


def test_the_fused_rung_fuses_fewer_camera_frames_never_more_than_the_user_allows():
    """The fused rung also takes `fused_frames` from the whole window (0, or the user's value)
    down to CheapEnd.fused_frames; a user value already at or under that stays."""
    cheap = CheapEnd()
    window = 4
    frames = [knobs_at_level(Knobs(), lv / 4, window=window)[0].fused_frames
              for lv in range(0, 4 * int(LEVELS) + 1)]
    assert frames[0] == 0  # level 0: the user's value (all of the window)
    assert all(0 < f <= window for f in frames[1:] if f) and frames[4] == cheap.fused_frames
    assert all(f == cheap.fused_frames for f in frames[4:])
    assert knobs_at_level(Knobs(fused_frames=window), 1.0,
                          window=window)[0].fused_frames == cheap.fused_frames
    assert knobs_at_level(Knobs(fused_frames=1), LEVELS, window=window)[0].fused_frames == 1
    # a longer window (a pretrained captioner's setting) starts from its own length
    assert knobs_at_level(Knobs(), 0.5, window=8)[0].fused_frames == round(
        (8 + cheap.fused_frames) / 2)
    assert knobs_at_level(Knobs(), 1.0, CheapEnd(fused_frames=2),
                          window=window)[0].fused_frames == 2
    assert knobs_at_level(Knobs(sttf_enabled=False), LEVELS)[0].fused_frames == 0


def test_a_rung_alone_moves_only_its_knobs():
    user = Knobs()
    k, bias = knobs_with_rungs(user, {"caption": 1.0})
    assert k.caption_reuse_threshold == CheapEnd().caption_reuse_threshold and bias == 0.0
    assert dataclasses.replace(k, caption_reuse_threshold=user.caption_reuse_threshold) == user
    k, bias = knobs_with_rungs(user, {"router": 1.0})
    assert k == user and bias == CheapEnd().router_bias
    assert knobs_with_rungs(user, {}) == (user, 0.0)


def test_switched_off_knobs_stay_off():
    user = Knobs(sttf_enabled=False, anc_enabled=False)
    k, bias = knobs_at_level(user, LEVELS)
    assert k == user and bias == 0.0
    k, _ = knobs_at_level(Knobs(caption_reuse_threshold=0.0), LEVELS)
    assert k.caption_reuse_threshold == 0.0


def test_step_in_scene_complexity_converges_within_10_frames():
    target = 1.0
    ctl = BudgetController("flops", target)
    trace = drive(ctl, scene=0.5, frames=20)  # calm: under budget, user's knobs
    assert all(lv == 0.0 for lv, _ in trace)
    busy = drive(ctl, scene=6.0, frames=30)  # a busy scene: 6x the budget at level 0
    assert settled_within(busy, target, 10)
    assert ctl.level("frame") > 2.0
    calm = drive(ctl, scene=0.5, frames=40)  # the scene calms: quality recovers
    assert calm[-1][0] == 0.0
    assert settled_within(calm, target, 10) or calm[10][0] < busy[-1][0]


def test_step_in_target_converges_within_10_frames_and_does_not_oscillate():
    ctl = BudgetController("flops", 4.0)
    trace = drive(ctl, scene=3.0, frames=10)
    assert all(lv == 0.0 for lv, _ in trace)
    ctl.configure("flops", 0.5)  # target step down
    trace = drive(ctl, scene=3.0, frames=40)
    assert settled_within(trace, 0.5, 10)
    levels = [lv for lv, _ in trace[10:]]
    assert len(set(levels)) == 1  # no limit cycle, no drift
    ctl.configure("flops", 1.5)  # step up: relaxes into the dead band, then holds
    trace = drive(ctl, scene=3.0, frames=60)
    assert settled_within(trace, 1.5, 10)
    assert all(c >= 0.7 * 1.5 for _, c in trace[10:])  # spends the budget it was given
    assert trace[-1][0] < levels[-1]
    probes = [i for i in range(31, 60) if trace[i][0] != trace[i - 1][0]]
    assert len(probes) <= 2  # probing backs off instead of cycling


def test_unreachable_target_is_reported():
    ctl = BudgetController("flops", 0.01)
    trace = drive(ctl, scene=6.0, frames=15)
    assert trace[-1][0] == LEVELS  # clamped at the cheapest setting (anti-windup)
    diag = ctl.observe("frame", record(plant(LEVELS, 6.0)))
    assert diag is not None
    assert diag["budget_state"] == "unreachable" and diag["budget_unreachable"] is True
    assert diag["budget_in_budget"] is False
    # and it comes back as soon as the target is reachable again
    ctl.configure("flops", 1.0)
    drive(ctl, scene=6.0, frames=15)
    assert ctl.diagnostics("frame")["budget_state"] != "unreachable"


def test_configure_validates_and_keeps_old_values():
    ctl = BudgetController("flops", 1.0)
    for mode, target in (("watts", 1.0), ("flops", 0.0), ("latency", math.nan)):
        with pytest.raises(ValueError):
            ctl.configure(mode, target)
        assert (ctl.mode, ctl.target) == ("flops", 1.0)
    off = BudgetController()
    assert off.plan("frame", Knobs()) == (Knobs(), 0.0)
    assert off.observe("frame", record(1.0)) is None


def test_power_mode_uses_frame_rate_and_measured_energy():
    ctl = BudgetController("power", 1000.0, j_per_gflop=0.1)
    for i in range(3):  # 0.2 GFLOPs x 0.1 J/GFLOP = 20 mJ per frame at 10 Hz -> 200 mW
        ctl.plan("frame", Knobs())
        d = ctl.observe("frame", record(0.2), stamp_us=i * 100_000)
    assert d is not None and d["budget_unit"] == "mW"
    assert abs(d["budget_cost"] - 200.0) < 1e-6
    saved = d["budget_credit"]
    ctl.note_energy("frame", 150.0)  # the rails said 150 mJ: 1500 mW, over the target
    ctl.plan("frame", Knobs())
    assert ctl.level("frame") > 0
    diag = ctl.diagnostics("frame")
    assert diag["budget_measured"] == pytest.approx(1500.0)
    # what the frame saved for new views is rebooked on the rails' figure
    assert diag["budget_credit"] == pytest.approx(saved + (200.0 - 1500.0) / 1000.0)


def test_eval_configs_accept_budget_sweeps():
    from tinygpt_ros.evaluation.configs import full_knobs, parse_configs

    cfgs = parse_configs(["budget_target_gflops=0.1,0.2", "sttf+anc"])
    assert cfgs["budget_target_gflops=0.1"]["budget_mode"] == "flops"
    assert cfgs["budget_target_gflops=0.2"]["budget_target_gflops"] == 0.2
    full = full_knobs(cfgs["budget_target_gflops=0.1"])
    assert full["fusion_threshold"] == Knobs().fusion_threshold and full["budget_mode"] == "flops"
    ctl = BudgetController()
    ctl.configure_from(full)
    assert (ctl.mode, ctl.target) == ("flops", 0.1)
    with pytest.raises(ValueError, match="budget_target_ms"):
        parse_configs(["budget_target_ms=-1"])


def test_reanchors_are_gated_from_the_tokens_rung_on():
    """At the user's knobs (level 0) and on the fused and router rungs a camera re-anchor
    recomputes every token as they say; once the tokens rung is engaged, the re-anchor goes
    through the selection (else no rung bounds it)."""
    ctl = BudgetController("flops", 1.0)
    assert not ctl.gates_reanchor("frame")
    drive(ctl, scene=0.5, frames=3)  # under the target: level 0, the user's refresh
    assert ctl.level("frame") == 0.0 and not ctl.gates_reanchor("frame")
    drive(ctl, scene=1.2, frames=2)  # a little over: the router rung, not yet gated
    assert 0.0 < ctl.level("frame") <= RUNGS.index("tokens") and not ctl.gates_reanchor("frame")
    drive(ctl, scene=30.0, frames=8)  # far over: on into the tokens rung
    assert ctl.level("frame") > RUNGS.index("tokens") and ctl.gates_reanchor("frame")
    assert not ctl.gates_reanchor("events")  # per stream
    assert not BudgetController().gates_reanchor("frame")  # off: never


def test_a_latency_target_runs_the_cheaper_motion_model_once_engaged():
    """Under a latency target the step's camera-motion model is the cheap end's (translation)
    once the level leaves 0; at level 0 it is the user's. A user's model that is already as
    cheap or cheaper stays, and no other target touches it (its cost is milliseconds, and
    under a FLOPs target a zoom the shift cannot undo recomputes more tokens)."""
    ctl = BudgetController("latency", 10.0)
    assert ctl.plan("frame", Knobs())[0].motion_compensation == "similarity"  # level 0
    ctl._stream("frame").level = 0.5
    assert ctl.plan("frame", Knobs())[0].motion_compensation == "translation"
    for mine in ("translation", "off"):
        assert ctl.plan("frame", Knobs(motion_compensation=mine))[0].motion_compensation == mine
    for mode, target in (("flops", 0.1), ("power", 100.0)):
        other = BudgetController(mode, target)
        other._stream("frame").level = 3.0
        assert other.plan("frame", Knobs())[0].motion_compensation == "similarity", mode
    kept = BudgetController("latency", 10.0,
                            cheap=CheapEnd(time_motion_compensation="similarity"))
    kept._stream("frame").level = 3.0
    assert kept.plan("frame", Knobs())[0].motion_compensation == "similarity"


def test_an_isolated_frame_over_the_target_is_let_through_and_counted():
    """The target is a p95: a one-off spike (a scene cut) does not move the level, a second
    one before the 4% allowance refills does, and each let-through frame is counted."""
    ctl = BudgetController("flops", 1.0)
    drive(ctl, scene=0.5, frames=30)  # calm long enough to save up one frame
    for cost in (3.0, 0.5, 0.5):  # one spike, then calm again
        ctl.plan("frame", Knobs())
        diag = ctl.observe("frame", record(cost))
    ctl.plan("frame", Knobs())
    assert ctl.level("frame") == 0.0
    assert diag is not None and diag["budget_let_through"] == 1
    for _ in range(2):  # a second spike right after: the allowance is spent, it tightens
        ctl.observe("frame", record(3.0))
        ctl.plan("frame", Knobs())
    assert ctl.level("frame") > 0.0
    assert ctl.diagnostics("frame")["budget_let_through"] == 1
    # with no allowance every frame over the target is answered
    strict = BudgetController("flops", 1.0, gains=ControllerGains(spike_allowance=0.0))
    drive(strict, scene=0.5, frames=30)
    strict.observe("frame", record(3.0))
    strict.plan("frame", Knobs())
    assert strict.level("frame") > 0.0


def test_a_new_view_under_a_flops_target_is_paid_from_what_calm_frames_saved():
    """Under a FLOPs target a new view runs at the user's knobs when the frames under the
    target saved at least one frame's worth of it: refused at level 0 and in debt, granted
    again once the frames after it repaid its excess. The saving is capped and reported."""
    ctl = BudgetController("flops", 1.0)
    drive(ctl, scene=8.0, frames=30)  # busy: the level climbs and holds the target
    assert ctl.level("frame") > 0.0
    credit = ctl.diagnostics("frame")["budget_credit"]
    assert credit < 1.0 and not ctl.spend_on_new_view("frame")
    # inside the dead band above the probe line: holds this level and saves 0.03 a frame
    drive(ctl, scene=plant(-ctl.level("frame"), 0.97), frames=150)
    level = ctl.level("frame")
    assert level > 0.0 and ctl.diagnostics("frame")["budget_credit"] == pytest.approx(2.0)
    ctl.plan("frame", Knobs())
    assert ctl.spend_on_new_view("frame")
    ctl.observe("frame", record(3.5))  # the new view at the user's knobs: 2.5 over
    ctl.plan("frame", Knobs())
    assert ctl.level("frame") == level  # paid for: not answered
    diag = ctl.diagnostics("frame")
    assert diag["budget_new_views"] == 1 and diag["budget_credit"] == pytest.approx(-0.5)
    assert not ctl.spend_on_new_view("frame")  # in debt
    for _ in range(55):  # -0.5 + 55 x 0.03
        ctl.observe("frame", record(0.97))
        ctl.plan("frame", Knobs())
    assert ctl.level("frame") > 0.0 and ctl.spend_on_new_view("frame")
    assert BudgetController("latency", 8.0).diagnostics("frame")["budget_credit"] == 0.0
    # a target that cannot be met runs up a debt, bounded: new views come back soon after
    drive(ctl, scene=1e6, frames=30)
    assert ctl.diagnostics("frame")["budget_state"] == "unreachable"
    assert ctl.diagnostics("frame")["budget_credit"] == pytest.approx(-2.0)


def test_a_new_view_under_a_latency_target_runs_when_spaced_else_from_the_allowance():
    """Milliseconds are not saved up: under a latency target a new view runs when the last one
    it ran is `time_view_spacing` frames back (a step in the scene, inside the settling the
    target leaves out of its p95), and a closer one is paid from the p95 allowance. Refused at
    level 0 (the user's knobs run anyway) and, when close, while the allowance holds less than
    a frame; granted, the frame over the target moves nothing, and it is counted."""
    ctl = BudgetController("latency", 1.0)
    spacing = ctl.gains.time_view_spacing
    assert spacing == 10
    drive(ctl, scene=0.5, frames=30)
    assert ctl.level("frame") == 0.0 and not ctl.spend_on_new_view("frame")
    drive(ctl, scene=8.0, frames=30)  # busy: the level climbs and holds the target
    # inside the dead band above the probe line: holds this level and saves up
    drive(ctl, scene=plant(-ctl.level("frame"), 0.97), frames=30)
    level = ctl.level("frame")
    assert level > 0.0

    def new_view() -> bool:
        ctl.plan("frame", Knobs())
        granted = ctl.spend_on_new_view("frame")
        ctl.observe("frame", timed(3.0 if granted else 0.97))  # at the user's knobs: far over
        return granted

    s = ctl._stream("frame")
    let_through = ctl.diagnostics("frame")["budget_let_through"]
    allowance = s.allowance
    assert allowance >= 1.0
    assert new_view() and s.allowance >= allowance  # spaced: the allowance is not drawn
    assert new_view() and s.allowance < 1.0  # one frame later: the allowance pays
    assert not new_view()  # and it is spent
    drive(ctl, scene=plant(-level, 0.97), frames=spacing - 2)
    assert not new_view()  # still closer than the spacing to the last one that ran
    assert new_view()  # `spacing` frames after it
    ctl.plan("frame", Knobs())
    assert ctl.level("frame") == level
    diag = ctl.diagnostics("frame")
    assert diag["budget_new_views"] == 3 and diag["budget_let_through"] == let_through


def test_a_decode_that_may_wait_no_longer_reads_the_most_tokens_that_fit():
    """After `defer_decode_max` deferrals the decode runs; when its whole fused set would still
    take the frame over a FLOPs target, `thin_decode` names the largest token count whose
    decode fits (else the ladder's floor), counts it, and the level is decided on what the
    whole set would have cost. A decode that fits, or one that may still wait, is not
    thinned; nor is one in latency mode, where the count hardly moves the milliseconds."""
    per_token = 0.01e9  # the decode's FLOPs per token it reads, in this made-up frame
    ctl = BudgetController("flops", 1.0, gains=ControllerGains(defer_decode_max=1))
    ctl.plan("frame", Knobs())
    assert not ctl.defer_decode("frame", 0.9e9, 5.0)  # fits
    assert ctl.thin_decode("frame", 0.78e9, 5.0, lambda n: n * per_token, 12) is None
    assert ctl.defer_decode("frame", 0.9e9 + 0.12e9, 5.0)  # over: waits a frame
    assert ctl.thin_decode("frame", 0.9e9, 5.0, lambda n: n * per_token, 12) is None
    assert not ctl.defer_decode("frame", 0.9e9 + 0.12e9, 5.0)  # may wait no longer
    assert ctl.thin_decode("frame", 0.9e9, 5.0, lambda n: n * per_token, 12) == 10
    assert ctl.diagnostics("frame")["budget_thinned_decodes"] == 1
    ctl.observe("frame", record(1.0))  # what it cost with 10 tokens: on the target
    ctl.plan("frame", Knobs())
    assert ctl.diagnostics("frame")["budget_measured"] == pytest.approx(1.02)
    assert ctl.level("frame") > 0.0
    # nothing down to the floor fits: the floor (CheapEnd.thin_max_fused_tokens)
    assert ctl.defer_decode("frame", 1.5e9, 5.0)
    assert not ctl.defer_decode("frame", 1.5e9, 5.0)
    floor = CheapEnd().thin_max_fused_tokens
    assert ctl.thin_decode("frame", 1.2e9, 5.0, lambda n: n * per_token, 12) == floor
    # a set already at the floor stays as it is
    assert ctl.defer_decode("frame", 1.5e9, 5.0)
    assert not ctl.defer_decode("frame", 1.5e9, 5.0)
    assert ctl.thin_decode("frame", 1.2e9, 5.0, lambda n: n * per_token, floor) is None
    lat = BudgetController("latency", 5.0, gains=ControllerGains(defer_decode_max=0))
    lat.plan("frame", Knobs())
    assert not lat.defer_decode("frame", 0.0, 9.0)
    assert lat.thin_decode("frame", 0.0, 7.0, lambda n: n * per_token, 12) is None
    # power mode weighs the same FLOPs as energy over the frame period (no stamps: the run
    # time, here 1 s, so mW = GFLOPs x 0.1 J/GFLOP x 1000)
    power = BudgetController("power", 100.0, gains=ControllerGains(defer_decode_max=0))
    power.plan("frame", Knobs())
    assert not power.defer_decode("frame", 1.02e9, 1000.0)
    assert power.thin_decode("frame", 0.9e9, 1000.0, lambda n: n * per_token, 12) == 10


def test_a_decode_that_would_take_its_frame_over_the_target_waits_a_frame():
    """The engine asks before each caption decode with the frame's cost so far plus the
    decode's estimate: over the target, the decode waits, at most `defer_decode_max` frames in
    a row, and each wait is counted. Latency mode weighs milliseconds; a new view (paid for in
    advance), gpu_share mode and a switched-off budget never wait."""
    ctl = BudgetController("flops", 1.0, gains=ControllerGains(defer_decode_max=1))
    ctl.plan("frame", Knobs())
    assert not ctl.defer_decode("frame", 0.9e9, 50.0)  # fits: decode now
    assert ctl.defer_decode("frame", 1.2e9, 5.0)  # would go over: wait
    assert not ctl.defer_decode("frame", 1.2e9, 5.0)  # one frame at most: decode
    assert ctl.defer_decode("frame", 1.2e9, 5.0)  # after a decode it may wait again
    assert ctl.diagnostics("frame")["budget_deferred_decodes"] == 2
    # the frame then costs what it costs, but the level is decided on what it would have
    # cost with the decode: the decode only moved to the next frame
    diag = ctl.observe("frame", record(0.6))
    assert diag is not None and diag["budget_cost"] == pytest.approx(0.6)
    ctl.plan("frame", Knobs())
    assert ctl.level("frame") > 0.0 and ctl.diagnostics("frame")["budget_measured"] == 1.2
    two = BudgetController("flops", 1.0)  # the default: two frames
    assert [two.defer_decode("frame", 2e9, 0.0) for _ in range(3)] == [True, True, False]
    never = BudgetController("flops", 1.0, gains=ControllerGains(defer_decode_max=0))
    assert not never.defer_decode("frame", 2e9, 0.0)
    latency = BudgetController("latency", 10.0)
    assert not latency.defer_decode("frame", 1e12, 9.0)
    assert latency.defer_decode("frame", 0.0, 11.0)
    assert ControllerGains().defer_decode_max == 2
    assert not BudgetController().defer_decode("frame", 1e12, 1e3)
    # a new view's decode is what the saving paid for
    ctl = BudgetController("flops", 1.0)
    drive(ctl, scene=8.0, frames=30)
    drive(ctl, scene=plant(-ctl.level("frame"), 0.97), frames=100)
    ctl.plan("frame", Knobs())
    assert ctl.spend_on_new_view("frame")
    assert not ctl.defer_decode("frame", 3e9, 0.0)


def test_a_frame_whose_fusion_would_take_it_over_a_time_target_keeps_the_last_fused_set():
    """Under a latency target the engine asks before fusing, with the frame's milliseconds so
    far and what its last fusion took: over the target, the frame keeps the last fused set, at
    most `hold_fusion_max` frames in a row, each counted; the level is decided on what the
    frame would have cost with the fusion. FLOPs targets (whose costs are known before a stage
    runs), a new view and a switched-off budget always fuse."""
    ctl = BudgetController("latency", 10.0)
    assert ControllerGains().hold_fusion_max == 1
    ctl.plan("frame", Knobs())
    assert not ctl.hold_fusion("frame", 8.0, 1.5)  # fits: fuse
    assert ctl.hold_fusion("frame", 9.0, 1.5)  # would go over: keep the last set
    # the frame costs what it cost without the fusion; the level follows the cost with it
    diag = ctl.observe("frame", timed(9.2))
    assert diag is not None and diag["budget_cost"] == pytest.approx(9.2)
    assert diag["budget_held_fusions"] == 1
    ctl.plan("frame", Knobs())
    assert ctl.diagnostics("frame")["budget_measured"] == pytest.approx(10.5)
    assert ctl.level("frame") > 0.0
    assert not ctl.hold_fusion("frame", 9.0, 1.5)  # one frame in a row at most: fuse
    assert ctl.hold_fusion("frame", 9.0, 1.5)  # after a fusion it may hold again
    two = BudgetController("latency", 10.0, gains=ControllerGains(hold_fusion_max=2))
    assert [two.hold_fusion("frame", 9.5, 1.0) for _ in range(3)] == [True, True, False]
    never = BudgetController("latency", 10.0, gains=ControllerGains(hold_fusion_max=0))
    assert not never.hold_fusion("frame", 20.0, 1.0)
    assert not BudgetController("flops", 1e-9).hold_fusion("frame", 20.0, 1.0)
    assert not BudgetController().hold_fusion("frame", 20.0, 1.0)
    # a new view runs whole at the user's knobs: the allowance paid for its fusion too
    view = BudgetController("latency", 1.0)
    drive(view, scene=8.0, frames=30)
    view.plan("frame", Knobs())
    assert view.spend_on_new_view("frame")
    assert not view.hold_fusion("frame", 20.0, 1.0)


def test_a_frame_recomputes_the_changed_tokens_that_fit_and_the_level_ignores_the_fit():
    """`fit_tokens` names how many of a frame's changed tokens (largest change first) fit a
    FLOPs target: more than the step's knobs selected when the frame has room, fewer when
    they would take it over. It leaves room for a decode only when that decode may wait no
    longer, counts what it did, and the level is decided on the step's own selection. At
    level 0 (the user's knobs), in latency mode and on a new view it does nothing."""
    per_token = 0.01e9
    frame = lambda n: 0.3e9 + n * per_token  # noqa: E731 - embedding plus n tokens
    ctl = BudgetController("flops", 1.0, gains=ControllerGains(defer_decode_max=1))
    ctl.plan("frame", Knobs())
    assert ctl.fit_tokens("frame", frame, 0.2e9, 196, 16, 5.0) is None  # level 0
    ctl._stream("frame").level = 3.5  # engaged (as after a busy scene)
    assert ctl.fit_tokens("frame", frame, 0.2e9, 196, 16, 5.0) == 70  # 0.3 + 0.7 fits
    assert ctl.fit_tokens("frame", frame, 0.2e9, 40, 16, 5.0) == 40  # all the candidates
    assert ctl.fit_tokens("frame", frame, 0.2e9, 196, 70, 5.0) is None  # as selected
    assert ctl.fit_tokens("frame", frame, 0.2e9, 196, 120, 5.0) == 70  # cut back
    diag = ctl.diagnostics("frame")
    assert (diag["budget_filled_tokens"], diag["budget_trimmed_frames"]) == (54 + 24, 1)
    # the level is decided on what the step's selection (120 tokens) would have cost
    ctl.observe("frame", record(1.0))
    ctl.plan("frame", Knobs())
    assert ctl.diagnostics("frame")["budget_measured"] == pytest.approx(1.5)
    # the next frame's decode may wait no longer (it waited once, the most here): its room
    # is kept free (the engine asks fit_tokens before the decode)
    assert ctl.defer_decode("frame", 1.2e9, 5.0)
    assert ctl.fit_tokens("frame", frame, 0.2e9, 196, 16, 5.0) == 50
    # never cut below the ladder's floor (CheapEnd.squeeze_max_active_tokens)
    over = lambda n: 2e9 + n * per_token  # noqa: E731 - nothing fits
    floor = CheapEnd().squeeze_max_active_tokens
    assert ctl.fit_tokens("frame", over, 0.0, 196, 120, 5.0) == floor
    assert ctl.fit_tokens("frame", over, 0.0, 196, floor - 4, 5.0) is None
    lat = BudgetController("latency", 5.0)
    lat._stream("frame").level = 3.5
    assert lat.fit_tokens("frame", frame, 0.2e9, 196, 16, 5.0) is None
    # power weighs the same FLOPs as energy over the frame period (no stamps: the run time,
    # here 1 s, so mW = GFLOPs x 0.1 J/GFLOP x 1000): 100 mW is the 1 GFLOP above
    power = BudgetController("power", 100.0)
    power._stream("frame").level = 3.5
    assert power.fit_tokens("frame", frame, 0.2e9, 196, 16, 1000.0) == 70


def test_a_spread_decode_whose_passes_wait_is_weighed_with_its_share():
    """A frame of a spread decode with no room for its next pass runs none and tells the
    controller what it would have cost with its share (`wait_decode`): counted with the
    deferred decodes, and the level is decided on that cost. Frames that fit only without
    the decode then tighten instead of holding in the dead band until the decode's last frame
    runs every pass left."""
    ctl = BudgetController("latency", 10.0)
    for _ in range(6):  # inside the dead band: level 0 holds
        ctl.plan("frame", Knobs())
        ctl.observe("frame", timed(9.5))
    ctl.plan("frame", Knobs())
    assert ctl.level("frame") == 0.0
    ctl.wait_decode("frame", 11.5)
    diag = ctl.observe("frame", timed(9.5))
    assert diag is not None and diag["budget_cost"] == pytest.approx(9.5)
    assert diag["budget_deferred_decodes"] == 1
    ctl.plan("frame", Knobs())
    assert ctl.diagnostics("frame")["budget_measured"] == pytest.approx(11.5)
    assert ctl.level("frame") > 0.0
    # the frame after it runs its passes: its own cost is what counts again
    ctl.observe("frame", timed(9.0))
    ctl.plan("frame", Knobs())
    assert ctl.diagnostics("frame")["budget_measured"] == pytest.approx(9.0)


def test_only_a_latency_target_spreads_a_decode_and_not_a_new_views():
    """`decode_deadline`: a latency target is the milliseconds a frame's decoder passes may
    reach; FLOPs, power and no target decode whole (deferred and thinned as before), and so
    does a new view. Spread decodes are counted."""
    lat = BudgetController("latency", 8.0)
    lat.plan("frame", Knobs())
    assert lat.decode_deadline("frame") == 8.0
    lat.note_split_decode("frame")
    assert lat.diagnostics("frame")["budget_split_decodes"] == 1
    for mode, target in (("flops", 0.1), ("power", 100.0), ("off", 0.0)):
        assert BudgetController(mode, target).decode_deadline("frame") is None
    view = BudgetController("latency", 8.0)
    # frames over the target raise the level; then frames just under it (the dead band, no
    # probe) hold it while the p95 allowance fills up
    for ms in [12.0] * 3 + [7.8] * 30:
        view.plan("frame", Knobs())
        view.observe("frame", timed(ms))
    view.plan("frame", Knobs())
    assert view.level("frame") > 0 and view.spend_on_new_view("frame")
    assert view.decode_deadline("frame") is None
