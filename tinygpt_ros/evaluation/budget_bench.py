"""`tinygpt-ros bench-budget`: the closed-loop budget controller against fixed knob settings.

Streams of held-out clips that switch scene (still, busy, a panning camera, slow, a flickering
exposure, ...; concatenated without resetting the engine, so the controller sees every step
change) run under every configuration, interleaved stream by stream (`run_interleaved`: the
machine's speed drifts over the minutes one configuration takes), with the node's default
knobs (motion and exposure compensation on). Configurations:

- the controller at several FLOPs targets and at several latency targets (ms; given as
  fractions of the user's-knobs p95 latency, measured by a calibration pass over the same
  streams at the start of the run, since absolute ms depend on the machine);
- fixed settings: the ladder the controller walks (`budget.knobs_at_level`, levels 0-5, with
  its router bias; levels 1-5 also with the camera-motion model a latency target runs them
  with), each rung alone at its cheap end (`budget.knobs_with_rungs`: what one rung costs in
  quality and saves in compute, which is how the ladder's order is chosen, on `val` clips),
  and a grid over fusion_threshold x max_fused_tokens x router bias x motion model
  (`FIXED_GRID`) on top of the user's other knobs; a setting two of these name runs once
  (`same_settings`).

Reported per configuration: CIDEr (all segments scored together), mean and p95 cost in GFLOPs
and ms per frame, and for the controller the p95 once settled (frames >= `SETTLE_FRAMES` after
each scene switch) against the target, the settling time after each switch and of the step
response over all switches (`step_response_settling`), and the share of frames inside the
budget. The comparison at equal mean cost takes, for each controller run, the
best-CIDEr fixed setting whose mean cost (in the controller's unit) is at most the controller's.

FLOPs are deterministic, so those figures reproduce on any machine; latency figures are one run
on whatever the machine is doing at the time, with the node's thread limits (`runtime.threads`:
one BLAS / OpenCV thread, one onnxruntime intra-op thread unless `threads` says otherwise), since
the milliseconds a target is held against are the node's. Until 2026-12-06 the engine ran at the
libraries' defaults (two threads each on two cores): on 18 val streams a stage outside the
networks (motion, fusion, change test; usually 0.2-4 ms) then took over 6 ms on 0.3-0.8% of a
configuration's frames, against 0-1 of 1728 with the node's limits.
"""

from __future__ import annotations

import itertools
import json
import math
import shlex
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from tinygpt_ros.runtime.budget import (
    RUNGS,
    BudgetController,
    CheapEnd,
    knobs_at_level,
    knobs_with_rungs,
)
from tinygpt_ros.runtime.threads import (
    DEFAULT_BLAS_THREADS,
    DEFAULT_INTRA_OP_THREADS,
    apply_thread_limits,
)
from tinygpt_ros.spec.config import Knobs

SWITCH_PATTERN = ("still", "busy", "pan", "slow", "busy", "flicker", "pan", "still")
SETTLE_FRAMES = 10  # the settling allowance after a step change
FIXED_LEVELS = tuple(float(level) for level in range(len(RUNGS) + 1))
# fusion_threshold x max_fused_tokens x router bias x camera-motion model: 24 fixed points
# off the ladder (the motion model since the controller runs the cheaper one under a latency
# target, `BudgetController._time_motion`: a fixed setting may run it too)
FIXED_GRID = {"fusion_threshold": (0.5, 1.5, 3.0), "max_fused_tokens": (31, 12),
              "router_bias": (0.0, 3.0), "motion_compensation": ("similarity", "translation")}
UNIT_KEYS = {"flops": "gflops", "latency": "ms"}


class FixedBias(BudgetController):
    """Not a controller: the user's knobs with a constant router logit bias (a fixed setting
    of the one ladder rung that is not a user knob). Reports nothing."""

    def __init__(self, bias: float) -> None:
        super().__init__()
        self.bias = float(bias)

    def plan(self, modality: str, user: Knobs, window: int = 0) -> tuple[Knobs, float]:
        return user, (self.bias if user.anc_enabled else 0.0)


def switching_streams(n_streams: int, frames_per_scene: int, seed: int = 0,
                      split: str = "test", size: tuple[int, int] | None = None) -> list[list[Any]]:
    """`n_streams` streams, each the SWITCH_PATTERN (rotated per stream) of distinct clips."""
    from tinygpt_ros.data.scenes import render_clip, split_seeds

    kw: dict[str, Any] = {"num_frames": frames_per_scene}
    if size is not None:
        kw["size"] = size
    n = len(SWITCH_PATTERN)
    seeds = split_seeds(split, n_streams * n, seed)
    streams = []
    for s in range(n_streams):
        order = SWITCH_PATTERN[s % n:] + SWITCH_PATTERN[:s % n]
        streams.append([render_clip(seeds[s * n + i], m, **kw) for i, m in enumerate(order)])
    return streams


def run_stream(engine: Any, clips: list[Any]) -> dict[str, Any]:
    """One switching stream through `engine` (reset once at the start): the caption shown at
    each segment's last frame, per-frame GFLOPs and ms, and frames since the last switch."""
    engine.reset()
    out: dict[str, list[Any]] = {"shown": [], "gflops": [], "ms": [], "since_switch": [],
                                 "states": [], "switch": [], "frame_work": []}
    previous = "start"
    offset_us = 0
    for clip in clips:
        last = {seg.end - 1 for seg in clip.segments}
        for i, (frame, stamp) in enumerate(zip(clip.frames, clip.timestamps_us, strict=True)):
            res = engine.process_frame(frame, int(stamp) + offset_us)
            out["gflops"].append(res.record.total_flops / 1e9)
            out["ms"].append(res.record.total_latency_ms)
            out["since_switch"].append(i)
            out["switch"].append(f"{previous} -> {clip.motion}")
            out["states"].append(res.budget["budget_state"] if res.budget else "off")
            out["frame_work"].append(frame_work(res.record))
            if i in last:
                out["shown"].append(res.caption or "")
        previous = clip.motion
        offset_us += int(clip.timestamps_us[-1]) + 33_333
    return out


def frame_work(record: Any) -> str:
    """What made a frame expensive, for the slow-switch report: `re-anchor` (the motion stage
    recomputed the view), `decode` (a caption was decoded), else `tokens` (the encoder on the
    tokens that changed)."""
    if record.reanchored:
        return "re-anchor"
    if record.decoder_passes > 0:
        return "decode"
    return "tokens"


def fixed_configurations() -> dict[str, dict[str, Any]]:
    """name -> {"knobs", "bias", "mode": None, "target": None}: the ladder and the grid, each
    setting once (`same_settings` names the ones left out)."""
    return {name: cfg for name, cfg in _fixed_settings().items() if "same_as" not in cfg}


def same_settings() -> dict[str, str]:
    """The fixed settings not run because another name runs the same knobs and router bias
    (name -> the name that runs them): the fused rung alone is the ladder's level 1, the
    grid's point at the user's threshold and 31 tokens is fixed@0 without a bias and the
    router rung alone with one.

    Why not run them twice: the comparison at equal cost picks, on val, the best fixed setting
    whose mean milliseconds are at most the controller's, and two runs of the same setting are
    two draws of the machine's noise for it (on the 11:13 val run of 2026-12-06, fixed@0 and
    its grid twin read 6.58 and 5.64 ms a frame at the same CIDEr): the cheaper draw decided
    which setting the test run compared with."""
    return {name: cfg["same_as"] for name, cfg in _fixed_settings().items() if "same_as" in cfg}


def _fixed_settings() -> dict[str, dict[str, Any]]:
    """Every fixed setting by name; one whose knobs and bias an earlier name has carries
    `same_as`: that name."""
    user = Knobs()
    cheap_motion = CheapEnd().time_motion_compensation
    out: dict[str, dict[str, Any]] = {}
    first: dict[str, str] = {}  # the settings, as json, -> the first name with them

    def add(name: str, k: Knobs, bias: float) -> None:
        out[name] = {"knobs": k.as_dict(), "bias": bias, "mode": None, "target": None}
        key = json.dumps([out[name]["knobs"], bias], sort_keys=True)
        if key in first:
            out[name]["same_as"] = first[key]
        first.setdefault(key, name)

    for level in FIXED_LEVELS:
        k, bias = knobs_at_level(user, level)
        add(f"fixed@{level:g}", k, bias)
    for level in FIXED_LEVELS[1:]:  # the ladder as a latency target runs it
        k, bias = knobs_at_level(user, level)
        add(f"fixed@{level:g} motion={cheap_motion}",
            replace(k, motion_compensation=cheap_motion), bias)
    for rung in RUNGS:
        k, bias = knobs_with_rungs(user, {rung: 1.0})
        add(f"{rung} rung alone", k, bias)
    for thr, fused, bias, motion in itertools.product(*FIXED_GRID.values()):
        k = Knobs(fusion_threshold=thr, max_fused_tokens=fused, motion_compensation=motion)
        suffix = "" if motion == user.motion_compensation else f" motion={motion}"
        add(f"grid thr={thr:g} fused={fused} bias={bias:g}{suffix}", k, bias)
    return out


def _budget_of(cfg: dict[str, Any]) -> BudgetController:
    """The controller a configuration runs with: a fixed router bias, or the real controller."""
    if cfg["mode"] is None:
        return FixedBias(cfg["bias"])
    return BudgetController(cfg["mode"], cfg["target"])


def run_interleaved(engine: Any, streams: list[list[Any]], cfgs: dict[str, dict[str, Any]],
                    progress: Any = None) -> dict[str, dict[str, list[Any]]]:
    """Every configuration over every stream, interleaved stream by stream (stream 1 under each
    configuration, then stream 2, ...), so each one's milliseconds are taken under the same
    machine conditions. Run one after the other, a configuration's ~20 streams take about a
    minute and the machine's speed drifts between them: in one sequential run two names for the
    same knob values read 10.9 and 13.0 ms a frame. The order of the configurations rotates
    from stream to stream, so none always runs first or last in a round. The engine is reset at
    each stream's start (`run_stream`), and each configuration keeps its own controller, so the
    per-frame FLOPs and captions are those of running it alone."""
    budgets = {name: _budget_of(cfg) for name, cfg in cfgs.items()}
    acc: dict[str, dict[str, list[Any]]] = {name: {} for name in cfgs}
    names = list(cfgs)
    try:
        for i, clips in enumerate(streams):
            t0 = time.perf_counter()
            shift = i % len(names)
            for name in names[shift:] + names[:shift]:
                cfg = cfgs[name]
                for k, v in cfg["knobs"].items():
                    engine.set_knob(k, v)
                engine.budget = budgets[name]
                for key, vals in run_stream(engine, clips).items():
                    acc[name].setdefault(key, []).extend(vals)
            if progress:
                progress(f"stream {i + 1}/{len(streams)} under {len(cfgs)} configurations: "
                         f"{time.perf_counter() - t0:.0f}s")
    finally:
        engine.budget = BudgetController()
    return acc


def run_budget_bench(model_dir: str | Path, targets: list[float], n_streams: int = 4,
                     frames_per_scene: int = 24, seed: int = 0, backend: str = "onnxruntime",
                     size: tuple[int, int] | None = None, progress: Any = None,
                     latency_fractions: list[float] | None = None,
                     split: str = "test",
                     select: dict[str, dict[str, Any]] | None = None,
                     threads: int = DEFAULT_INTRA_OP_THREADS) -> dict[str, Any]:
    from tinygpt_ros.deploy.factory import load_engine
    from tinygpt_ros.evaluation.metrics import caption_scores_many
    from tinygpt_ros.evaluation.provenance import machine_info, model_identity

    streams = switching_streams(n_streams, frames_per_scene, seed, split=split, size=size)
    refs: dict[int, list[str]] = {}
    clip_of: dict[int, int] = {}  # segment -> scene clip, the bootstrap's resampling unit
    for ci, clip in enumerate(c for clips in streams for c in clips):
        for seg in clip.segments:
            clip_of[len(refs)] = ci
            refs[len(refs)] = list(seg.captions)
    engine = load_engine(model_dir, backend=backend, threads=threads)
    # after the engine is built: threadpoolctl caps only the pools already loaded
    thread_report = apply_thread_limits(DEFAULT_BLAS_THREADS, threads)
    hyps: dict[str, dict[int, str]] = {}
    runs: dict[str, dict[str, Any]] = {}
    t_start = time.perf_counter()

    # the latency targets are fractions of the user's knobs' p95, so those knobs run once
    # first (a calibration pass); every configuration, fixed@0 again among them, then runs
    # interleaved with the others
    fixed = fixed_configurations()
    user = Knobs().as_dict()
    cfgs = dict(fixed)
    for t in targets:
        cfgs[f"flops={t:g}"] = {"knobs": user, "mode": "flops", "target": float(t)}
    calibration_p95_ms = None
    if latency_fractions:
        t0 = time.perf_counter()
        # warm-up, not measured: a fresh engine's first frames run slower (onnxruntime's first
        # calls, allocations), and a p95 over a few hundred frames would count them
        run_interleaved(engine, streams[:1], {"fixed@0": fixed["fixed@0"]})
        cal = run_interleaved(engine, streams, {"fixed@0": fixed["fixed@0"]})["fixed@0"]
        calibration_p95_ms = float(np.percentile(cal["ms"], 95))
        if progress:
            progress(f"calibration (fixed@0): p95 {calibration_p95_ms:.1f} ms, "
                     f"{time.perf_counter() - t0:.0f}s")
        for f in latency_fractions:
            t = round(f * calibration_p95_ms, 2)
            cfgs[f"latency={t:g}ms ({f:g} x p95@0)"] = {
                "knobs": user, "mode": "latency", "target": t, "key": f"latency@{f:g}"}
    accs = run_interleaved(engine, streams, cfgs, progress)
    for name, acc in accs.items():
        cfg = cfgs[name]
        hyps[name] = dict(enumerate(acc["shown"]))
        runs[name] = cost_summary(acc, cfg["mode"], cfg["target"])
        runs[name]["router_bias"] = cfg.get("bias")
        runs[name]["key"] = cfg.get("key", name)
    scores = caption_scores_many(hyps, refs)
    for name in runs:
        runs[name]["CIDEr"] = scores[name]["CIDEr"]
        runs[name]["scores"] = scores[name]
    drift = note_calibration_drift(runs, calibration_p95_ms)
    note_cheapest_fixed(runs, accs)
    comparison = compare_at_equal_cost(runs, select)
    add_cider_intervals(comparison, hyps, refs, clip_of)
    return {
        "format": "tinygpt_ros bench-budget report v2",
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "model": model_identity(model_dir, backend),
        "machine": machine_info(),
        "threads": thread_report.summary(),
        "streams": {"count": n_streams, "frames_per_scene": frames_per_scene, "seed": seed,
                    "pattern": list(SWITCH_PATTERN), "segments": len(refs), "split": split,
                    "size": list(size) if size else None,
                    "knobs": {k: user[k] for k in ("motion_compensation", "exposure_compensation",
                                                   "refresh_interval")}},
        "settle_frames": SETTLE_FRAMES,
        "interleaved": "stream by stream",
        "calibration_p95_ms": calibration_p95_ms,
        "calibration_drift": drift,
        "seconds": round(time.perf_counter() - t_start, 1),
        "runs": runs,
        "captions": {name: [h[i] for i in refs] for name, h in hyps.items()},
        "comparison": comparison,
        "fixed_chosen_on": "val" if select is not None else split,
        "same_settings": same_settings(),
    }


def note_calibration_drift(runs: dict[str, dict[str, Any]],
                           calibration_p95_ms: float | None) -> float | None:
    """The run's own fixed@0 p95 ms over the calibration pass's (the same knobs on the same
    streams), and each latency run's target as a fraction of the run's own fixed@0 p95
    (`target_vs_run_p95_at_0`). None without a calibration pass.

    Why: the targets are set from the calibration pass, before the run; when the machine's
    speed drifts after it (one run: calibration 21.0 ms, fixed@0 over the run 27.5 ms), a
    target named 0.6 x p95 was 0.46 x what the user's knobs cost during the run, and the row
    reads as the controller missing a target it was never given. The report says so."""
    if not calibration_p95_ms or "fixed@0" not in runs:
        return None
    run_p95 = runs["fixed@0"]["p95_ms"]
    for r in runs.values():
        if r["mode"] == "latency":
            r["target_vs_run_p95_at_0"] = r["target"] / run_p95
    return run_p95 / calibration_p95_ms


def note_cheapest_fixed(runs: dict[str, dict[str, Any]],
                        accs: dict[str, dict[str, list[Any]]] | None = None) -> None:
    """For each budget run: the fixed setting of this run with the lowest settled p95 in the
    budget's unit (`cheapest_fixed`), and that p95 over the target (`cheapest_fixed_vs_target`);
    with the runs' per-frame costs (`accs`, `run_interleaved`'s), also how many of its scene
    switches settle within `SETTLE_FRAMES` against the same target
    (`cheapest_fixed_settled_within`, of the run's `switches`).

    Why: the issue asks that a target below the cheapest setting be reported, not met; a row
    that misses its p95 is a controller that failed only when some fixed setting held it. Over
    1.1, no fixed setting of the run holds the target, and the row's miss is the target's. The
    same holds for settling: on a target near the cheapest setting's cost a single frame over
    1.1 x, late in a 12-frame scene, makes a switch slow, and the cheapest setting has such
    frames too (machine noise, a heavy pan); its count says how many switches no setting of
    the ladder settles."""
    fixed = {name: r for name, r in runs.items() if r["mode"] is None}
    for r in runs.values():
        if r["mode"] not in ("latency", "flops") or not r.get("target"):
            continue
        key = "p95_settled_ms" if r["mode"] == "latency" else "p95_settled_gflops"
        have = {name: f[key] for name, f in fixed.items() if key in f}
        if not have:
            continue
        name = min(have, key=lambda n: have[n])
        r["cheapest_fixed"] = name
        r["cheapest_fixed_vs_target"] = have[name] / r["target"]
        if accs is not None and name in accs:
            cost = np.array(accs[name][UNIT_KEYS[r["mode"]]])
            since = np.array(accs[name]["since_switch"])
            settle = settling_frames(cost, since, 1.1 * r["target"])
            r["cheapest_fixed_settled_within"] = sum(f <= SETTLE_FRAMES for f in settle)
            r["cheapest_fixed_step_settling_frames"] = step_response_settling(
                cost, since, 1.1 * r["target"])


def slow_switches(settle: list[int], switch: list[str], since: np.ndarray,
                  allowance: int = SETTLE_FRAMES) -> dict[str, list[int]]:
    """The switches that took longer than `allowance` frames to settle, by "from -> to" scene
    (`run_stream`'s per-frame `switch`): which step changes the controller is slow on, not
    only how slow the slowest was."""
    out: dict[str, list[int]] = {}
    for a, frames in _late_switches(settle, since, allowance):
        out.setdefault(switch[a], []).append(frames)
    return dict(sorted(out.items()))


def _late_switches(settle: list[int], since: np.ndarray,
                   allowance: int) -> list[tuple[int, int]]:
    """(first frame, settling frames) of each switch that took longer than `allowance`."""
    return [(int(a), int(frames)) for a, frames in zip(np.flatnonzero(since == 0), settle,
                                                          strict=True) if frames > allowance]


def slow_switch_causes(cost: np.ndarray, since: np.ndarray, target: float, settle: list[int],
                       switch: list[str], work: list[str],
                       allowance: int = SETTLE_FRAMES) -> dict[str, list[dict[str, Any]]]:
    """For each switch slower than `allowance`: its settling frames, the last frame of the
    scene over 1.1 x `target` before it settled (the one that made it late), its cost against
    the target and what it did (`frame_work`). Why: a late frame over the target is a
    re-anchor of the motion stage, a caption decode or a burst of changed tokens, and each has
    another fix."""
    out: dict[str, list[dict[str, Any]]] = {}
    for a, frames in _late_switches(settle, since, allowance):
        over = np.flatnonzero(cost[a:a + frames] > 1.1 * target)
        late = int(over[-1]) if len(over) else frames - 1
        out.setdefault(switch[a], []).append(
            {"settling": frames, "frame": late, "work": work[a + late],
             "cost_vs_target": float(cost[a + late] / target)})
    return dict(sorted(out.items()))


def settling_frames(cost: np.ndarray, since: np.ndarray, limit: float) -> list[int]:
    """Per scene switch: frames until the rest of the scene stays within `limit` (at most 5%
    of its remaining frames over, as a p95 allows); the scene's length when it never does."""
    starts = [*list(np.flatnonzero(since == 0)), len(cost)]
    out = []
    for a, b in itertools.pairwise(starts):
        seg = cost[a:b]
        settle = len(seg)
        for i in range(len(seg)):
            rest = seg[i:]
            if (rest > limit).sum() <= 0.05 * len(rest):
                settle = i
                break
        out.append(int(settle))
    return out


def step_response_settling(cost: np.ndarray, since: np.ndarray, limit: float,
                           share: float = 0.95) -> int:
    """Frames after a switch until the step response settles: from then on, at every frame
    since the switch, the `share` quantile of the cost over all switches stays within `limit`
    (frames since a switch that fewer than half the switches reach are left out). The scene's
    length when its last frame is still over.

    Why beside the per-switch count (`settling_frames`): the issue reads the cost once
    settled as a p95 and asks that settling take at most 10 frames. Per switch, a 12-frame
    scene leaves two frames to judge, its "5% over" allowance none, so one frame over 1.1 x
    the target at frame 10 or 11 makes a switch late; a p95 at the target leaves 5% of frames
    over it, and some of those over 1.1 x. A fixed setting, which has no transient at all,
    then counts late switches too. Across switches the p95 at each frame since the switch is
    the transient itself: how long the frames after a step stay over, read as a p95."""
    cost, since = np.asarray(cost, float), np.asarray(since)
    switches = int((since == 0).sum())
    over = 0
    for k in range(int(since.max()) + 1 if len(since) else 0):
        at = cost[since == k]
        if len(at) < 0.5 * switches:
            break
        if np.percentile(at, 100.0 * share) > limit:
            over = k + 1
    return over


def cost_summary(acc: dict[str, list[Any]], mode: str | None,
                 target: float | None) -> dict[str, Any]:
    gflops, ms = np.array(acc["gflops"]), np.array(acc["ms"])
    since = np.array(acc["since_switch"])
    out: dict[str, Any] = {
        "frames": len(gflops),
        "mean_gflops": float(gflops.mean()),
        "p95_gflops": float(np.percentile(gflops, 95)),
        "mean_ms": float(ms.mean()),
        "p95_ms": float(np.percentile(ms, 95)),
        "mode": mode,
        "target": target,
    }
    calm = since >= SETTLE_FRAMES
    if calm.any():  # every configuration's, so a target can be held against the fixed ones'
        out["p95_settled_gflops"] = float(np.percentile(gflops[calm], 95))
        out["p95_settled_ms"] = float(np.percentile(ms[calm], 95))
    if mode is not None and target is not None:
        cost = gflops if mode == "flops" else ms
        settled = cost[calm]
        p95_settled = float(np.percentile(settled, 95)) if len(settled) else float("nan")
        settle = settling_frames(cost, since, 1.1 * target)
        slow = slow_switches(settle, acc["switch"], since) if "switch" in acc else {}
        causes = (slow_switch_causes(cost, since, target, settle, acc["switch"],
                                     acc["frame_work"]) if "frame_work" in acc else {})
        out.update({
            "p95_settled": p95_settled,
            "p95_settled_vs_target": p95_settled / target,
            "settling_frames_median": float(np.median(settle)),
            "settling_frames_max": int(max(settle)),
            "switches": len(settle),
            "settled_within": sum(f <= SETTLE_FRAMES for f in settle),
            "step_settling_frames": step_response_settling(cost, since, 1.1 * target),
            "slow_switches": slow,
            "slow_switch_causes": causes,
            "in_budget_pct": 100.0 * float((cost <= target).mean()),
            "in_budget_settled_pct": 100.0 * float((settled <= target).mean()),
            "unreachable_frames": int(sum(s == "unreachable" for s in acc["states"])),
            "target_met": bool(p95_settled <= 1.1 * target),
        })
    return out


def compare_at_equal_cost(runs: dict[str, dict[str, Any]],
                          select: dict[str, dict[str, Any]] | None = None) -> list[dict[str, Any]]:
    """For each controller run: the best-CIDEr fixed setting costing at most its mean, in the
    controller's unit (GFLOPs for flops targets, ms for latency targets).

    With `select` (the runs of the same benchmark on `val` clips) the fixed setting is chosen
    there, from the val costs and CIDEr, and then compared on these clips: picking the best of
    nearly forty fixed settings on the clips it is scored on would hand the fixed side
    the maximum of nearly forty noisy scores. The setting picked in hindsight is reported too."""
    fixed = {n: r for n, r in runs.items() if r["mode"] is None}
    by_key = {r.get("key", n): r for n, r in (select or {}).items()}
    rows = []
    for name, r in runs.items():
        if r["mode"] is None:
            continue
        key = f"mean_{UNIT_KEYS[r['mode']]}"
        p95_key = f"p95_{UNIT_KEYS[r['mode']]}"
        hindsight = _best_fixed(fixed, r[key], key)
        chosen = hindsight
        held = _best_fixed(fixed, 1.1 * r.get("target", -math.inf), p95_key)
        if select is not None:
            val_run = by_key.get(r.get("key", name))
            val_fixed = {n: f for n, f in select.items() if f["mode"] is None and n in fixed}
            chosen = held = None
            if val_run is not None:
                chosen = _best_fixed(val_fixed, val_run[key], key)
                held = _best_fixed(val_fixed, 1.1 * val_run.get("target", -math.inf), p95_key)
        rows.append({
            "budget": name,
            "unit": UNIT_KEYS[r["mode"]],
            "mean_cost": r[key],
            "CIDEr": r["CIDEr"],
            "chosen_on": "val" if select is not None else "these clips",
            "best_fixed": chosen,
            "best_fixed_mean_cost": fixed[chosen][key] if chosen else None,
            "best_fixed_CIDEr": fixed[chosen]["CIDEr"] if chosen else None,
            "cider_at_least_fixed": (r["CIDEr"] >= fixed[chosen]["CIDEr"]) if chosen else None,
            "hindsight_fixed": hindsight,
            "hindsight_fixed_CIDEr": fixed[hindsight]["CIDEr"] if hindsight else None,
            # the budget is about p95: the best fixed setting that also holds it (p95 within
            # +10% of the target over the whole run), None when no fixed setting does
            "p95_fixed": held,
            "p95_fixed_CIDEr": fixed[held]["CIDEr"] if held else None,
            "p95_fixed_p95": fixed[held][p95_key] if held else None,
        })
    return rows


def add_cider_intervals(comparison: list[dict[str, Any]], hyps: dict[str, dict[int, str]],
                        refs: dict[int, list[str]], clip_of: dict[int, int],
                        n_boot: int = 200) -> None:
    """Each row's 95% paired-bootstrap interval (whole scene clips resampled) of the
    controller's CIDEr over its fixed setting's: a hundred segments leave CIDEr differences of
    a few percent inside the noise, and the row should say so."""
    from tinygpt_ros.evaluation.metrics import cider_ratio_intervals

    for row in comparison:
        fixed = row.get("best_fixed")
        row["cider_vs_fixed_interval"] = None
        if fixed is None:
            continue
        pair = {row["budget"]: hyps[row["budget"]], fixed: hyps[fixed]}
        iv = cider_ratio_intervals(pair, refs, clip_of, fixed, n_boot=n_boot)[row["budget"]]
        row["cider_vs_fixed_interval"] = [float(iv[0]), float(iv[1])]


def _best_fixed(fixed: dict[str, dict[str, Any]], budget: float, key: str) -> str | None:
    """The best-CIDEr fixed run whose cost under `key` (a mean, or a p95) is at most `budget`."""
    cheaper = {n: f for n, f in fixed.items() if f.get(key, math.inf) <= budget}
    return max(cheaper, key=lambda n: cheaper[n]["CIDEr"]) if cheaper else None


def budget_markdown(rep: dict[str, Any], command: str | None) -> str:
    st = rep["streams"]
    lines = [
        "## Compute budget controller (bench-budget)",
        "",
        f"{st['count']} streams x {len(st['pattern'])} scenes x {st['frames_per_scene']} frames "
        f"(`{st['split']}` clips, scenes switch {' -> '.join(st['pattern'])} without "
        f"a reset; knobs as the node's defaults: {st.get('knobs', {})}), {st['segments']} "
        f"caption segments; settled = >= {rep['settle_frames']} frames after a switch; "
        f"settling = frames after a switch until the rest of the scene stays within 1.1 x "
        f"target (<= 5% over); step response settling = frames after a switch until, at "
        f"every later frame since the switch, the p95 over all switches stays within 1.1 x "
        f"target; configurations interleaved stream by stream"
        + (f", latency targets from a calibration pass at the user's knobs (p95 "
           f"{rep['calibration_p95_ms']:.1f} ms)" if rep.get("calibration_p95_ms") else "")
        + (f"; threads {rep['threads']}" if rep.get("threads") else "")
        + f"; {rep['seconds']:.0f} s." + _drift_sentence(rep),
        "",
        "| config | target | mean GFLOPs | p95 GFLOPs | mean ms | p95 ms | settled p95 / target "
        "| cheapest fixed setting's settled p95 / target | settling median / max "
        f"| switches settled within {rep['settle_frames']} (cheapest fixed setting's) "
        "| step response settling, p95 over switches (cheapest fixed setting's) "
        "| frames in budget | unreachable frames | CIDEr |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, r in rep["runs"].items():
        t = r["target"]
        unit = "GFLOPs" if r["mode"] == "flops" else "ms"
        floor = r.get("cheapest_fixed_vs_target")
        below = floor is not None and floor > 1.1
        lines.append(
            f"| {name} | {f'{t:g} {unit}' if t is not None else '-'} | {r['mean_gflops']:.3f} | "
            f"{r['p95_gflops']:.3f} | {r['mean_ms']:.1f} | {r['p95_ms']:.1f} | "
            + (f"{r['p95_settled_vs_target']:.2f}"
               f"{'' if r['target_met'] else ' (missed)'} | "
               + (f"{floor:.2f} ({r['cheapest_fixed']}{', target below it' if below else ''}) | "
                  if floor is not None else "- | ")
               + f"{r['settling_frames_median']:g} / {r['settling_frames_max']} | "
               + _within_text(r) + _step_text(r)
               + f"{r['in_budget_pct']:.0f}% | {r['unreachable_frames']} | "
               if t is not None else "- | - | - | - | - | - | - | ")
            + f"{r['CIDEr']:.3f} |")
    slow = {name: r["slow_switches"] for name, r in rep["runs"].items()
            if r.get("slow_switches")}
    if slow:
        lines += ["", f"Switches that took more than {rep['settle_frames']} frames to settle "
                  "(from -> to scene: settling frames of each; where the report has it, the "
                  "scene's last frame over 1.1 x the target, counted from 0 at the switch, its "
                  "cost and what it did):", ""]
        for name, sw_frames in slow.items():
            causes = rep["runs"][name].get("slow_switch_causes", {})
            lines.append(f"- {name}: " + "; ".join(
                f"{sw} ({_slow_text(f, causes.get(sw))})" for sw, f in sw_frames.items()))
    same = rep.get("same_settings")
    if same:
        lines += ["", "Not run twice (the same knobs and router bias as another name): "
                  + "; ".join(f"{name} = {kept}" for name, kept in same.items()) + "."]
    chosen_on = rep.get("fixed_chosen_on", st["split"])
    lines += ["", "At equal mean cost: the best-CIDEr fixed setting whose mean cost, in the "
              f"controller's unit, is at most the controller's, chosen on `{chosen_on}` clips"
              + (" (its figures here are on these clips); the last columns name the setting "
                 "picked in hindsight on these clips" if chosen_on != st["split"] else "")
              + ":", "",
              "| budget | mean cost | CIDEr | best fixed | its mean cost | its CIDEr "
              "| controller >= fixed | controller / fixed [95%] | in hindsight | its CIDEr |",
              "|---|---|---|---|---|---|---|---|---|---|"]
    for c in rep["comparison"]:
        hind = c.get("hindsight_fixed")
        tail = (f"{hind} | {c['hindsight_fixed_CIDEr']:.3f} |" if hind else "- | - |")
        if c["best_fixed"] is None:
            lines.append(f"| {c['budget']} | {c['mean_cost']:.3f} {c['unit']} | "
                         f"{c['CIDEr']:.3f} | none as cheap | - | - | - | - | {tail}")
            continue
        iv = c.get("cider_vs_fixed_interval")
        ratio = c["CIDEr"] / c["best_fixed_CIDEr"] if c["best_fixed_CIDEr"] else float("nan")
        iv_text = (f"{100 * ratio:.1f}% [{100 * iv[0]:.1f}-{100 * iv[1]:.1f}]" if iv
                   else f"{100 * ratio:.1f}%")
        lines.append(
            f"| {c['budget']} | {c['mean_cost']:.3f} {c['unit']} | {c['CIDEr']:.3f} | "
            f"{c['best_fixed']} | {c['best_fixed_mean_cost']:.3f} | "
            f"{c['best_fixed_CIDEr']:.3f} | {'yes' if c['cider_at_least_fixed'] else 'no'} | "
            f"{iv_text} | {tail}")
    lines += ["", "The budget is a p95 target, and a fixed setting that matches the controller's "
              "mean cost may break it (a fixed setting has no way to cap its peaks). The best "
              f"fixed setting (chosen on `{chosen_on}`) whose p95 over the whole run stays "
              "within 1.1 x the target:", "",
              "| budget | controller CIDEr | fixed setting holding the p95 | its p95 | its CIDEr |",
              "|---|---|---|---|---|"]
    for c in rep["comparison"]:
        held = c.get("p95_fixed")
        lines.append(f"| {c['budget']} | {c['CIDEr']:.3f} | "
                     + (f"{held} | {c['p95_fixed_p95']:.3f} | {c['p95_fixed_CIDEr']:.3f} |"
                        if held else "none holds it | - | - |"))
    if command:
        lines += ["", f"Command: `{command}`"]
    return "\n".join(lines) + "\n"


def _within_text(r: dict[str, Any]) -> str:
    """`133 / 144 (130) | `: the run's switches settled in time, the cheapest fixed setting's."""
    if "settled_within" not in r:
        return "- | "
    return _beside_floor(f"{r['settled_within']} / {r['switches']}",
                         r.get("cheapest_fixed_settled_within"))


def _step_text(r: dict[str, Any]) -> str:
    """`3 (0) | `: the step response's settling frames, the cheapest fixed setting's."""
    if "step_settling_frames" not in r:  # a report from before it was recorded
        return "- | "
    return _beside_floor(f"{r['step_settling_frames']}",
                         r.get("cheapest_fixed_step_settling_frames"))


def _beside_floor(value: str, floor: Any) -> str:
    """A table cell: the run's figure, the cheapest fixed setting's in brackets when known."""
    return value + (f" ({floor})" if floor is not None else "") + " | "


def _slow_text(frames: list[int], causes: list[dict[str, Any]] | None) -> str:
    """`12, 11` or, with causes, `12: frame 11, decode, 1.13 x target / 11: ...`."""
    if not causes or len(causes) != len(frames):
        return ", ".join(map(str, frames))
    return " / ".join(f"{c['settling']}: frame {c['frame']}, {c['work']}, "
                     f"{c['cost_vs_target']:.2f} x target" for c in causes)


def _drift_sentence(rep: dict[str, Any]) -> str:
    """How far the machine's speed moved between the calibration pass and the run, when it
    moved more than 10%: the latency targets as fractions of the run's own fixed@0 p95."""
    drift = rep.get("calibration_drift")
    if drift is None or abs(drift - 1.0) <= 0.1:
        return ""
    fractions = " / ".join(f"{r['target_vs_run_p95_at_0']:.2f}" for r in rep["runs"].values()
                           if r["mode"] == "latency")
    return (f" **The machine's speed drifted after the calibration pass:** the user's knobs "
            f"(fixed@0) read p95 {rep['runs']['fixed@0']['p95_ms']:.1f} ms over the run, "
            f"{drift:.2f} x the calibration, so the latency targets were {fractions} x the "
            "run's own fixed@0 p95, not the fractions they name.")


def _val_runs(path: str | None) -> dict[str, dict[str, Any]] | None:
    """The runs of a bench-budget report made with `--split val` (to choose fixed settings)."""
    if not path:
        return None
    rep = json.loads(Path(path).read_text())
    if rep.get("streams", {}).get("split") != "val":
        raise SystemExit(f"{path}: --select-fixed-on needs a report made with --split val")
    return rep["runs"]


def main(args: Any) -> int:
    """Entry point of `tinygpt-ros bench-budget`."""
    command = "tinygpt-ros " + shlex.join(sys.argv[1:]) if sys.argv[1:] else None
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    size = tuple(args.size) if args.size else None
    rep = run_budget_bench(args.model, args.targets, args.streams, args.frames_per_scene,
                           args.seed, args.backend, size,
                           progress=lambda m: print(f"[bench-budget] {m}", file=sys.stderr),
                           latency_fractions=args.latency_fractions,
                           split=getattr(args, "split", "test"),
                           select=_val_runs(getattr(args, "select_fixed_on", None)),
                           threads=getattr(args, "threads", DEFAULT_INTRA_OP_THREADS))
    rep["command"] = command
    (out / "budget.json").write_text(json.dumps(rep, indent=1) + "\n")
    md = budget_markdown(rep, command)
    (out / "budget.md").write_text(md)
    if getattr(args, "markdown", None):
        from tinygpt_ros.evaluation.bench import write_markdown_section

        write_markdown_section(args.markdown, md, name="budget")
    print(md)
    return 0

