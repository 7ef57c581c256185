"""The budget benchmarks' bookkeeping (bench-budget and bench-node --budget-mode): settling,
the fixed-setting grid, the comparison at equal cost in each mode's unit, node parameters."""

from __future__ import annotations

import json

import numpy as np
import pytest

from tinygpt_ros.evaluation.budget_bench import (
    FIXED_GRID,
    FIXED_LEVELS,
    SWITCH_PATTERN,
    FixedBias,
    add_cider_intervals,
    compare_at_equal_cost,
    fixed_configurations,
    note_calibration_drift,
    same_settings,
    settling_frames,
    slow_switch_causes,
    slow_switches,
    step_response_settling,
)
from tinygpt_ros.evaluation.node_bench import (
    budget_params,
    budget_stats,
    generated_stream,
    scene_steps,
)
from tinygpt_ros.runtime.budget import RUNGS
from tinygpt_ros.spec.config import Knobs


def test_switching_streams_cover_still_slow_pan_busy_and_an_exposure_scene():
    assert {"still", "slow", "pan", "busy"} <= set(SWITCH_PATTERN)
    assert {"exposure", "flicker"} & set(SWITCH_PATTERN)


def test_settling_counts_frames_until_the_rest_of_each_scene_stays_in_budget():
    since = np.array(list(range(6)) + list(range(6)))
    cost = np.array([3, 2, 1, 1, 1, 1,  # settles after 2 frames
                     1, 1, 1, 1, 1, 1.5])  # never settles: over at the very end
    assert settling_frames(cost, since, 1.1) == [2, 6]


def test_slow_switches_name_the_scene_change_that_took_too_long():
    since = np.array(list(range(6)) * 3)
    switch = ["start -> still"] * 6 + ["still -> pan"] * 6 + ["pan -> busy"] * 6
    cost = np.array([1, 1, 1, 1, 1, 1,
                     3, 3, 3, 3, 3, 1,  # settles after 5 frames
                     3, 1, 1, 1, 1, 2])  # over at the very end: never settles
    settle = settling_frames(cost, since, 1.1)
    assert settle == [0, 5, 6]
    assert slow_switches(settle, switch, since, allowance=4) == {
        "pan -> busy": [6], "still -> pan": [5]}
    assert slow_switches(settle, switch, since, allowance=6) == {}


def test_a_slow_switch_names_its_last_frame_over_the_target_and_what_it_did():
    """The frame that made a switch late is the scene's last one over 1.1 x the target before
    it settled; the report says what it did (re-anchor, decode, tokens) and its cost, and the
    markdown prints it next to the settling frames."""
    from tinygpt_ros.evaluation.budget_bench import budget_markdown, cost_summary, frame_work
    from tinygpt_ros.spec.types import ComputeRecord

    def record(**kw) -> ComputeRecord:
        return ComputeRecord(0, "frame", 196, 10, 10, "small", **kw)

    assert frame_work(record(reanchored=True, decoder_passes=3)) == "re-anchor"
    assert frame_work(record(decoder_passes=3)) == "decode"
    assert frame_work(record()) == "tokens"

    since = np.array(list(range(12)) * 2)
    switch = ["start -> still"] * 12 + ["still -> pan"] * 12
    cost = np.array([1.0] * 12 + [3.0] + [1.0] * 9 + [2.5, 1.0])  # over at 0 and 10: 11 frames
    work = ["tokens"] * 12 + ["re-anchor"] + ["tokens"] * 9 + ["decode", "tokens"]
    acc = {"gflops": list(cost), "ms": list(cost), "since_switch": list(since),
           "states": ["holding"] * 24, "switch": switch, "frame_work": work}
    summary = cost_summary(acc, "flops", 1.0)
    assert summary["slow_switches"] == {"still -> pan": [11]}
    assert summary["slow_switch_causes"] == {"still -> pan": [
        {"settling": 11, "frame": 10, "work": "decode", "cost_vs_target": 2.5}]}
    settle = settling_frames(cost, since, 1.1)
    assert slow_switch_causes(cost, since, 1.0, settle, switch, work, allowance=11) == {}

    run = {"mode": "flops", "target": 1.0, "mean_gflops": 1.0, "p95_gflops": 2.0,
           "mean_ms": 1.0, "p95_ms": 2.0, "CIDEr": 0.5, "p95_settled_vs_target": 1.0,
           "target_met": True, "settling_frames_median": 2.5, "settling_frames_max": 12,
           "in_budget_pct": 90.0, "unreachable_frames": 0,
           "slow_switches": {"still -> pan": [12, 11]},
           "slow_switch_causes": {"still -> pan": [
               {"settling": 12, "frame": 11, "work": "decode", "cost_vs_target": 1.13},
               {"settling": 11, "frame": 10, "work": "re-anchor", "cost_vs_target": 1.71}]}}
    rep = {"streams": {"count": 1, "pattern": ["still", "pan"], "frames_per_scene": 12,
                       "split": "test", "segments": 1}, "settle_frames": 10, "seconds": 1.0,
           "runs": {"flops=1": run}, "comparison": []}
    text = budget_markdown(rep, None)
    assert ("- flops=1: still -> pan (12: frame 11, decode, 1.13 x target / "
            "11: frame 10, re-anchor, 1.71 x target)") in text
    del run["slow_switch_causes"]  # a report from before the causes were recorded
    assert "- flops=1: still -> pan (12, 11)" in budget_markdown(rep, None)
    assert "Not run twice" not in text
    rep["same_settings"] = {"fused rung alone": "fixed@1"}
    assert ("Not run twice (the same knobs and router bias as another name): fused rung "
            "alone = fixed@1.") in budget_markdown(rep, None)


def _markdown_rows(runs: dict, frames_per_scene: int) -> dict[str, str]:
    """The main table's rows (config name -> line) of a one-stream report of `runs`."""
    from tinygpt_ros.evaluation.budget_bench import budget_markdown

    for r in runs.values():
        r["CIDEr"] = 1.0
    rep = {"streams": {"count": 1, "pattern": ["still"], "frames_per_scene": frames_per_scene,
                       "split": "test", "segments": 1}, "settle_frames": 10, "seconds": 1.0,
           "runs": runs, "comparison": []}
    return {line.split(" | ")[0][2:]: line for line in budget_markdown(rep, None).splitlines()
            if line.startswith("| ")}


def test_a_target_below_every_fixed_setting_is_named_as_such_in_the_report():
    """Each budget row carries the run's fixed setting with the lowest settled p95 in its
    unit, over its target: above 1.1, no fixed setting holds the target, and the markdown says
    the target lies below it (the issue: such a target is reported, not met)."""
    from tinygpt_ros.evaluation.budget_bench import (
        cost_summary,
        note_cheapest_fixed,
    )

    since = list(range(20))

    def acc(ms: float, gflops: float) -> dict:
        return {"gflops": [gflops] * 20, "ms": [ms] * 20, "since_switch": since,
                "states": ["holding"] * 20}

    runs = {"fixed@0": cost_summary(acc(10.0, 0.2), None, None),
            "fixed@5": cost_summary(acc(6.0, 0.05), None, None),
            "latency=5ms": cost_summary(acc(6.2, 0.05), "latency", 5.0),
            "latency=8ms": cost_summary(acc(8.0, 0.1), "latency", 8.0),
            "flops=0.1": cost_summary(acc(8.0, 0.1), "flops", 0.1)}
    note_cheapest_fixed(runs)
    assert runs["latency=5ms"]["cheapest_fixed"] == "fixed@5"
    assert runs["latency=5ms"]["cheapest_fixed_vs_target"] == pytest.approx(1.2)
    assert runs["latency=8ms"]["cheapest_fixed_vs_target"] == pytest.approx(0.75)
    assert runs["flops=0.1"]["cheapest_fixed_vs_target"] == pytest.approx(0.5)  # in GFLOPs
    assert "cheapest_fixed" not in runs["fixed@0"]
    rows = _markdown_rows(runs, frames_per_scene=20)
    assert "1.24 (missed) | 1.20 (fixed@5, target below it) |" in rows["latency=5ms"]
    assert "1.00 | 0.75 (fixed@5) |" in rows["latency=8ms"]
    assert rows["fixed@0"].count("|") == rows["latency=8ms"].count("|")


def test_the_report_counts_switches_settled_in_time_beside_the_cheapest_fixed_settings():
    """A target near the cheapest setting's cost: one frame over 1.1 x it, late in a scene,
    makes a switch slow for every setting, the cheapest one too. The row gives the run's
    switches settled within 10 frames and the cheapest fixed setting's count at the same
    target, so a reader tells the target's misses from the controller's."""
    from tinygpt_ros.evaluation.budget_bench import (
        cost_summary,
        note_cheapest_fixed,
    )

    since = list(range(12)) * 3  # three scenes of 12 frames

    def acc(ms: list[float]) -> dict:
        return {"gflops": [0.1] * 36, "ms": ms, "since_switch": since,
                "states": ["holding"] * 36}

    floor = [5.0] * 36
    floor[11] = floor[23] = 6.0  # the cheapest setting's own late frames, 1.2 x a 5 ms target
    ctl = [5.0] * 36
    ctl[11] = 6.0
    accs = {"fixed@0": acc([9.0] * 36), "fixed@5": acc(floor), "latency=5ms": acc(ctl)}
    runs = {"fixed@0": cost_summary(accs["fixed@0"], None, None),
            "fixed@5": cost_summary(accs["fixed@5"], None, None),
            "latency=5ms": cost_summary(accs["latency=5ms"], "latency", 5.0)}
    assert (runs["latency=5ms"]["settled_within"], runs["latency=5ms"]["switches"]) == (2, 3)
    note_cheapest_fixed(runs, accs)
    assert runs["latency=5ms"]["cheapest_fixed"] == "fixed@5"
    assert runs["latency=5ms"]["cheapest_fixed_settled_within"] == 1
    rows = _markdown_rows(runs, frames_per_scene=12)
    assert "| 2 / 3 (1) | 12 (12) |" in rows["latency=5ms"]
    assert rows["fixed@0"].count("|") == rows["latency=5ms"].count("|")


def test_the_step_response_settles_where_the_p95_over_switches_stays_in_budget():
    """`step_response_settling`: the frames after a switch until, at every later frame since
    the switch, the p95 of the cost over all switches stays within the limit. A setting with
    no transient and one late frame in twenty switches settles at once (per switch, one is
    late); a transient of three frames settles at 3, even with one switch over for longer;
    over at the scene's last frame in more than 5% of the switches, it never does."""
    since = np.array(list(range(12)) * 20)
    flat = np.full(240, 5.0)
    flat[11] = 6.0
    assert step_response_settling(flat, since, 5.5) == 0
    assert settling_frames(flat, since, 5.5).count(12) == 1
    ctl = np.full(240, 5.0)
    ctl[since < 3] = 8.0
    ctl[12 + 3:12 + 6] = 8.0
    assert step_response_settling(ctl, since, 5.5) == 3
    ctl[[11, 23]] = 8.0
    assert step_response_settling(ctl, since, 5.5) == 12


def test_fixed_settings_are_the_ladder_each_rung_alone_and_two_dozen_grid_points():
    """Each setting runs once: a name whose knobs and bias an earlier one has is left out and
    named in `same_settings` (two runs of one setting are two draws of the machine's noise,
    and the comparison at equal cost would take the cheaper)."""
    cfgs = fixed_configurations()
    same = same_settings()
    assert same == {"fused rung alone": "fixed@1", "grid thr=0.5 fused=31 bias=0": "fixed@0",
                    "grid thr=0.5 fused=31 bias=3": "router rung alone"}
    assert not set(same) & set(cfgs) and set(same.values()) <= set(cfgs)
    settings = [json.dumps([c["knobs"], c["bias"]], sort_keys=True) for c in cfgs.values()]
    assert len(set(settings)) == len(settings)
    grid = [n for n in cfgs if n.startswith("grid")]
    alone = [n for n in cfgs if n.endswith("rung alone")]
    grid_points = int(np.prod([len(v) for v in FIXED_GRID.values()]))
    assert grid_points >= 24
    assert len(grid) == grid_points - sum(n.startswith("grid") for n in same)
    assert alone == [f"{r} rung alone" for r in RUNGS if f"{r} rung alone" not in same]
    ladder_translation = [n for n in cfgs if n.startswith("fixed@") and "motion=" in n]
    assert len(ladder_translation) == len(FIXED_LEVELS) - 1  # level 0 is the user's knobs
    assert len(cfgs) + len(same) == grid_points + 2 * len(FIXED_LEVELS) - 1 + len(RUNGS)
    assert cfgs["fixed@3 motion=translation"]["knobs"] == {
        **cfgs["fixed@3"]["knobs"], "motion_compensation": "translation"}
    assert {c["knobs"]["motion_compensation"] for n, c in cfgs.items() if n in grid} == set(
        FIXED_GRID["motion_compensation"])
    assert cfgs["fixed@0"]["knobs"] == Knobs().as_dict() and cfgs["fixed@0"]["bias"] == 0.0
    assert cfgs["fixed@2"]["bias"] > 0  # the ladder's router rung
    assert cfgs["router rung alone"]["knobs"] == Knobs().as_dict()
    assert cfgs["fixed@1"]["knobs"] != Knobs().as_dict()  # the fused rung alone
    assert cfgs["caption rung alone"]["bias"] == 0.0
    assert (cfgs["caption rung alone"]["knobs"]["caption_reuse_threshold"]
            > Knobs().caption_reuse_threshold)
    assert {c["bias"] for n, c in cfgs.items() if n in grid} == set(FIXED_GRID["router_bias"])
    ctl = FixedBias(3.0)
    assert ctl.plan("frame", Knobs()) == (Knobs(), 3.0)
    assert ctl.plan("frame", Knobs(anc_enabled=False))[1] == 0.0
    assert not ctl.active and not ctl.gates_reanchor("frame")


def test_comparison_at_equal_cost_uses_the_controllers_unit():
    runs = {
        "cheap": {"mode": None, "mean_gflops": 0.10, "mean_ms": 30.0, "CIDEr": 0.5},
        "good": {"mode": None, "mean_gflops": 0.20, "mean_ms": 10.0, "CIDEr": 0.9},
        "flops=0.15": {"mode": "flops", "mean_gflops": 0.15, "mean_ms": 20.0, "CIDEr": 0.6},
        "latency=20": {"mode": "latency", "mean_gflops": 0.15, "mean_ms": 20.0, "CIDEr": 0.6},
        "latency=5": {"mode": "latency", "mean_gflops": 0.15, "mean_ms": 5.0, "CIDEr": 0.6},
    }
    rows = {r["budget"]: r for r in compare_at_equal_cost(runs)}
    assert rows["flops=0.15"]["best_fixed"] == "cheap"
    assert rows["flops=0.15"]["cider_at_least_fixed"]
    assert rows["latency=20"]["best_fixed"] == "good"
    assert rows["latency=20"]["cider_at_least_fixed"] is False
    assert rows["latency=5"]["best_fixed"] is None


def test_comparison_can_choose_the_fixed_setting_on_val_runs():
    """Chosen on val (where "good" is the better one within the cost), scored here, where
    "cheap" happens to be better: the row compares with "good" and names "cheap" as the
    setting in hindsight."""
    test_runs = {
        "cheap": {"mode": None, "mean_gflops": 0.10, "mean_ms": 30.0, "CIDEr": 0.9},
        "good": {"mode": None, "mean_gflops": 0.12, "mean_ms": 30.0, "CIDEr": 0.5},
        "latency=31ms (0.6 x p95@0)": {"mode": "latency", "key": "latency@0.6",
                                       "mean_gflops": 0.1, "mean_ms": 30.0, "CIDEr": 0.6},
    }
    val_runs = {
        "cheap": {"mode": None, "mean_gflops": 0.10, "mean_ms": 28.0, "CIDEr": 0.4},
        "good": {"mode": None, "mean_gflops": 0.12, "mean_ms": 29.0, "CIDEr": 0.7},
        "latency=29ms (0.6 x p95@0)": {"mode": "latency", "key": "latency@0.6",
                                       "mean_gflops": 0.1, "mean_ms": 29.5, "CIDEr": 0.6},
    }
    (row,) = compare_at_equal_cost(test_runs, val_runs)
    assert row["chosen_on"] == "val"
    assert (row["best_fixed"], row["best_fixed_CIDEr"]) == ("good", 0.5)
    assert row["cider_at_least_fixed"] is True
    assert row["hindsight_fixed"] == "cheap" and row["hindsight_fixed_CIDEr"] == 0.9


def test_comparison_names_the_fixed_setting_that_holds_the_p95():
    runs = {
        "peaky": {"mode": None, "mean_gflops": 0.10, "p95_gflops": 0.30, "CIDEr": 0.9},
        "capped": {"mode": None, "mean_gflops": 0.09, "p95_gflops": 0.12, "CIDEr": 0.5},
        "flops=0.12": {"mode": "flops", "target": 0.12, "mean_gflops": 0.11,
                       "p95_gflops": 0.125, "CIDEr": 0.6},
        "flops=0.05": {"mode": "flops", "target": 0.05, "mean_gflops": 0.11,
                       "p95_gflops": 0.125, "CIDEr": 0.6},
    }
    rows = {r["budget"]: r for r in compare_at_equal_cost(runs)}
    assert rows["flops=0.12"]["best_fixed"] == "peaky"  # equal mean cost, breaks the budget
    assert rows["flops=0.12"]["p95_fixed"] == "capped"
    assert rows["flops=0.05"]["p95_fixed"] is None


def test_latency_targets_are_reported_against_the_runs_own_fixed0_p95():
    """The calibration pass set the targets at 0.6 and 0.8 x 20 ms; over the run the same
    knobs read 26 ms: the report says the targets were 0.46 and 0.62 of that, and the
    markdown warns. Within 10% it says nothing; without a calibration pass there is nothing to
    say."""
    from tinygpt_ros.evaluation.budget_bench import budget_markdown

    def runs(p95_at_0: float) -> dict:
        cost = {"mean_gflops": 0.1, "p95_gflops": 0.1, "mean_ms": 10.0, "CIDEr": 0.5}
        return {"fixed@0": {"mode": None, "target": None, **cost, "p95_ms": p95_at_0},
                "flops=0.1": {"mode": "flops", "target": 0.1, **cost, "p95_ms": 12.0},
                "latency=12ms (0.6 x p95@0)": {"mode": "latency", "target": 12.0, **cost,
                                               "p95_ms": 12.0},
                "latency=16ms (0.8 x p95@0)": {"mode": "latency", "target": 16.0, **cost,
                                               "p95_ms": 16.0}}

    drifted = runs(26.0)
    assert note_calibration_drift(drifted, 20.0) == pytest.approx(1.3)
    assert drifted["latency=12ms (0.6 x p95@0)"]["target_vs_run_p95_at_0"] == pytest.approx(
        12 / 26)
    assert "target_vs_run_p95_at_0" not in drifted["flops=0.1"]
    assert note_calibration_drift(runs(26.0), None) is None

    def header(drift_runs: dict, calibration: float) -> str:
        drift = note_calibration_drift(drift_runs, calibration)
        for r in drift_runs.values():
            r.update(p95_settled_vs_target=1.0, target_met=True, settling_frames_median=1,
                     settling_frames_max=2, in_budget_pct=90.0, unreachable_frames=0)
        for key in ("p95_settled_vs_target", "target_met"):  # a fixed setting has no target
            drift_runs["fixed@0"].pop(key)
        rep = {"streams": {"count": 1, "pattern": ["still"], "frames_per_scene": 12,
                           "split": "test", "segments": 1}, "settle_frames": 10,
               "calibration_p95_ms": calibration, "calibration_drift": drift, "seconds": 1.0,
               "runs": drift_runs, "comparison": []}
        return budget_markdown(rep, None).split("\n\n")[1]

    assert "drifted" in header(runs(26.0), 20.0) and "0.46 / 0.62" in header(runs(26.0), 20.0)
    assert "drifted" not in header(runs(21.0), 20.0)


def test_node_bench_budget_parameters_and_stats():
    assert budget_params(None, None) == {}
    assert budget_params("latency", 40) == {"budget_mode": "latency", "budget_target_ms": 40.0}
    assert budget_params("gpu_share", 25) == {"budget_mode": "gpu_share",
                                              "budget_target_gpu_pct": 25.0}
    with pytest.raises(ValueError, match="budget-target"):
        budget_params("flops", None)
    assert budget_stats([{"latency_ms_total": "3"}]) is None
    # 12 at frame 2 is the one frame over in the remaining 21 (<= 5%): settled from frame 2
    frames = [{"budget_cost": str(c), "budget_target": "10", "budget_mode": "latency",
               "budget_unit": "ms", "budget_state": "holding", "budget_level": "1.5"}
              for c in [30, 20, 12] + [9] * 20]
    b = budget_stats(frames)
    assert b is not None and b["settling_frames"] == 2 and b["frames"] == 23
    assert b["settled_p95_vs_target"] == pytest.approx(0.9)
    assert b["in_budget_pct"] == pytest.approx(100 * 20 / 23)
    assert b["let_through"] == 0 and b["new_views"] == 0  # not reported: none
    assert b["deferred_decodes"] == 0 and b["thinned_decodes"] == 0
    assert b["filled_tokens"] == 0 and b["trimmed_frames"] == 0
    # a step inside the stream (the scene moved again): its first frames settle, not count
    again = frames + [dict(frames[0], budget_cost=str(c)) for c in [30, 20, 12] + [9] * 20]
    flags = [i in (0, 23) for i in range(len(again))]
    b = budget_stats(again, flags)
    assert b is not None and b["steps"] == 2 and b["settling_frames"] == 2
    assert b["steps_settled_in_time"] == 2
    assert b["settled_p95_vs_target"] == pytest.approx(0.9)
    assert b["p95_from_frame_10_vs_target"] > 1.1  # the second step's frames, counted
    with pytest.raises(ValueError, match="steps"):
        budget_stats(again, flags[:-1])
    from tinygpt_ros.evaluation.node_bench import budget_markdown as node_budget_markdown

    rep = {"runs": [{"qos": "reliable", "transport": "raw", "config": "sttf+anc",
                     "streams": {"still": {"budget": b}}}]}
    row = node_budget_markdown(rep)[-1]
    cells = [c.strip() for c in row.split("|")]
    assert cells[4:7] == ["still", "46", "2"]  # frames, steps
    assert cells[8] == "0.90" and cells[10] == "2; 2 of 2"  # settled p95, settling
    assert float(cells[9]) > 1.1  # from frame 10, the second step's frames in it
    frames[-1].update(budget_let_through="2", budget_new_views="1", budget_deferred_decodes="3",
                      budget_thinned_decodes="1", budget_filled_tokens="40",
                      budget_trimmed_frames="2")
    b = budget_stats(frames)
    assert b is not None and b["let_through"] == 2 and b["new_views"] == 1
    assert b["deferred_decodes"] == 3 and b["thinned_decodes"] == 1
    assert b["filled_tokens"] == 40 and b["trimmed_frames"] == 2


def test_the_node_bench_finds_the_steps_in_its_looped_scenes():
    still, moved = np.zeros((4, 4, 3), np.uint8), np.full((4, 4, 3), 9, np.uint8)
    # 12 still frames, 3 moving ones, 5 still at the new place: the motion's start is a step,
    # and so is the wrap back to the first frame, unless the loop is seamless
    frames = [still] * 12 + [moved + k for k in range(3)] + [moved + 2] * 5
    assert scene_steps(frames, wrap_is_cut=True) == {0, 12}
    assert scene_steps(frames, wrap_is_cut=False) == {12}
    # motion again after fewer than 10 still frames continues the scene's stretch
    assert scene_steps(frames + [moved + 3] + [moved + 3] * 4, wrap_is_cut=False) == {12}
    assert scene_steps([still] * 8, wrap_is_cut=True) == set()  # nothing ever changes
    # the node bench's streams: the still scene's object starts moving at frame 29
    assert generated_stream("still").steps == {0, 29}
    assert generated_stream("busy").steps == {0}  # never still for 10 frames: one stretch


def test_each_comparison_row_gets_a_bootstrap_interval_of_controller_over_fixed():
    refs = {i: [f"a red circle moves {d}", f"the red circle goes {d}"]
            for i, d in enumerate(["left", "right", "up", "down"] * 5)}
    clip_of = {i: i // 2 for i in refs}
    hyps = {"ctl": {i: r[0] for i, r in refs.items()},  # right on every segment
            "fix": {i: (r[0] if i % 2 else "a blue star") for i, r in refs.items()}}
    rows = [{"budget": "ctl", "best_fixed": "fix"}, {"budget": "ctl", "best_fixed": None}]
    add_cider_intervals(rows, hyps, refs, clip_of, n_boot=50)
    lo, hi = rows[0]["cider_vs_fixed_interval"]
    assert 1.0 < lo <= hi
    assert rows[1]["cider_vs_fixed_interval"] is None


def test_interleaved_configurations_compute_what_each_computes_alone():
    """bench-budget runs its configurations stream by stream so that their milliseconds share
    the machine's conditions; each must still see only its own knobs and its own controller."""
    from pathlib import Path

    from tinygpt_ros.deploy.factory import load_engine
    from tinygpt_ros.evaluation.budget_bench import run_interleaved, run_stream, switching_streams
    from tinygpt_ros.runtime.budget import BudgetController

    model_dir = str(Path(__file__).resolve().parent.parent / "models" / "tinygpt")
    engine = load_engine(model_dir, backend="onnxruntime")
    streams = switching_streams(2, 4, split="val")
    user = Knobs().as_dict()
    cfgs = {"fixed@5": fixed_configurations()["fixed@5"],
            "flops=0.07": {"knobs": user, "mode": "flops", "target": 0.07},
            "fixed@0": fixed_configurations()["fixed@0"]}
    together = run_interleaved(engine, streams, cfgs)
    for name, cfg in cfgs.items():  # each alone, set up by hand on a fresh engine
        alone = load_engine(model_dir, backend="onnxruntime")
        for k, v in cfg["knobs"].items():
            alone.set_knob(k, v)
        alone.budget = (FixedBias(cfg["bias"]) if cfg["mode"] is None
                        else BudgetController(cfg["mode"], cfg["target"]))
        runs = [run_stream(alone, clips) for clips in streams]
        for key in ("gflops", "shown", "states"):
            assert together[name][key] == [v for r in runs for v in r[key]], (name, key)
    # the three differ, so a knob or a controller leaking from one to the next would show
    assert together["fixed@5"]["gflops"] != together["fixed@0"]["gflops"]
    assert any(s != "idle" for s in together["flops=0.07"]["states"])


def test_bench_budget_runs_the_engine_under_the_nodes_thread_limits(monkeypatch):
    """The milliseconds a latency target is held against are the node's, and the node caps
    BLAS, OpenCV and onnxruntime at one thread each (`runtime.threads`); at the libraries'
    defaults the fixed stages stalled now and then, which no knob of the controller moves."""
    from pathlib import Path

    import cv2

    from tinygpt_ros.deploy import factory
    from tinygpt_ros.evaluation import budget_bench

    built = []
    real_load_engine = factory.load_engine

    def load_engine(*args, **kw):
        built.append(real_load_engine(*args, **kw))
        return built[-1]

    cv2.setNumThreads(2)  # as a fresh process has it on two cores
    monkeypatch.setattr(factory, "load_engine", load_engine)
    monkeypatch.setattr(budget_bench, "fixed_configurations",
                        lambda: {"fixed@0": fixed_configurations()["fixed@0"]})
    model_dir = Path(__file__).resolve().parent.parent / "models" / "tinygpt"
    rep = budget_bench.run_budget_bench(model_dir, [], n_streams=1, frames_per_scene=2,
                                        split="val", latency_fractions=None)
    assert built[0].intra_op_threads == 1
    assert cv2.getNumThreads() == 1
    assert "intra_op_threads=1" in rep["threads"] and "opencv 1" in rep["threads"]
    assert rep["runs"]["fixed@0"]["frames"] == 2 * len(SWITCH_PATTERN)
