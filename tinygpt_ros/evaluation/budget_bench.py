"""`tinygpt-ros bench-budget`: the closed-loop budget controller against fixed knob settings.

Streams of held-out clips that switch scene (still -> busy -> slow -> busy -> still ...,
concatenated without resetting the engine, so the controller sees every step change) run once
per configuration: the controller at several FLOPs targets, and a grid of fixed settings along
the same knob ladder the controller walks (`budget.knobs_at_level`, with no router bias, since
the bias is not a user knob) plus the user's defaults. Reported per configuration: CIDEr (all
segments scored together), mean and p95 GFLOPs per frame, and for the controller the p95 once
settled (frames >= `SETTLE_FRAMES` after each scene switch) against the target, and the share
of frames inside the budget. The comparison at equal mean cost takes, for each controller run,
the best-CIDEr fixed setting whose mean cost is at most the controller's.

FLOPs mode only: FLOPs are deterministic, so the figures reproduce on any machine; latency on
this shared 2-core box would mostly measure the neighbours.
"""

from __future__ import annotations

import json
import shlex
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from tinygpt_ros.runtime.budget import knobs_at_level
from tinygpt_ros.spec.config import Knobs

SWITCH_PATTERN = ("still", "busy", "slow", "busy", "still", "slow")
SETTLE_FRAMES = 10  # the settling allowance after a step change
FIXED_LEVELS = (0.0, 1.0, 2.0, 3.0, 4.0)


def switching_streams(n_streams: int, frames_per_scene: int, seed: int = 0,
                      split: str = "test", size: tuple[int, int] | None = None) -> list[list[Any]]:
    """`n_streams` streams, each the SWITCH_PATTERN (rotated per stream) of distinct clips."""
    from tinygpt_ros.data.scenes import render_clip, split_seeds

    kw: dict[str, Any] = {"num_frames": frames_per_scene}
    if size is not None:
        kw["size"] = size
    seeds = split_seeds(split, n_streams * len(SWITCH_PATTERN), seed)
    streams = []
    for s in range(n_streams):
        order = SWITCH_PATTERN[s % len(SWITCH_PATTERN):] + SWITCH_PATTERN[:s % len(SWITCH_PATTERN)]
        streams.append([render_clip(seeds[s * len(SWITCH_PATTERN) + i], m, **kw)
                        for i, m in enumerate(order)])
    return streams


def run_stream(engine: Any, clips: list[Any]) -> dict[str, Any]:
    """One switching stream through `engine` (reset once at the start): the caption shown at
    each segment's last frame, per-frame GFLOPs, and frames since the last scene switch."""
    engine.reset()
    shown: list[str] = []
    gflops: list[float] = []
    since_switch: list[int] = []
    states: list[str] = []
    offset_us = 0
    for clip in clips:
        last = {seg.end - 1 for seg in clip.segments}
        for i, (frame, stamp) in enumerate(zip(clip.frames, clip.timestamps_us, strict=True)):
            res = engine.process_frame(frame, int(stamp) + offset_us)
            gflops.append(res.record.total_flops / 1e9)
            since_switch.append(i)
            states.append(res.budget["budget_state"] if res.budget else "off")
            if i in last:
                shown.append(res.caption or "")
        offset_us += int(clip.timestamps_us[-1]) + 33_333
    return {"shown": shown, "gflops": gflops, "since_switch": since_switch, "states": states}


def configurations(targets: list[float]) -> dict[str, dict[str, Any]]:
    """name -> {"knobs": full knob dict, "target": GFLOPs or None (fixed)}."""
    user = Knobs()
    out: dict[str, dict[str, Any]] = {}
    for level in FIXED_LEVELS:
        k, _ = knobs_at_level(user, level)
        out[f"fixed@{level:g}"] = {"knobs": k.as_dict(), "target": None}
    for t in targets:
        out[f"budget={t:g}"] = {"knobs": user.as_dict(), "target": float(t)}
    return out


def run_budget_bench(model_dir: str | Path, targets: list[float], n_streams: int = 4,
                     frames_per_scene: int = 24, seed: int = 0, backend: str = "onnxruntime",
                     size: tuple[int, int] | None = None,
                     progress: Any = None) -> dict[str, Any]:
    from tinygpt_ros.deploy.factory import load_engine
    from tinygpt_ros.evaluation.metrics import caption_scores_many
    from tinygpt_ros.evaluation.provenance import machine_info, model_identity

    streams = switching_streams(n_streams, frames_per_scene, seed, size=size)
    refs: dict[int, list[str]] = {}
    for clips in streams:
        for clip in clips:
            for seg in clip.segments:
                refs[len(refs)] = list(seg.captions)
    engine = load_engine(model_dir, backend=backend)
    hyps: dict[str, dict[int, str]] = {}
    runs: dict[str, dict[str, Any]] = {}
    t_start = time.perf_counter()
    for name, cfg in configurations(targets).items():
        t0 = time.perf_counter()
        for k, v in cfg["knobs"].items():
            engine.set_knob(k, v)
        if cfg["target"] is None:
            engine.budget.configure("off", 0.0)
        else:
            engine.budget.configure("flops", cfg["target"])
        shown: list[str] = []
        gflops: list[float] = []
        since: list[int] = []
        states: list[str] = []
        for clips in streams:
            r = run_stream(engine, clips)
            shown += r["shown"]
            gflops += r["gflops"]
            since += r["since_switch"]
            states += r["states"]
        hyps[name] = dict(enumerate(shown))
        runs[name] = _cost_summary(np.array(gflops), np.array(since), states, cfg["target"])
        if progress:
            progress(f"{name}: mean {runs[name]['mean_gflops']:.3f} GFLOPs, "
                     f"{time.perf_counter() - t0:.0f}s")
    engine.budget.configure("off", 0.0)
    scores = caption_scores_many(hyps, refs)
    for name in runs:
        runs[name]["CIDEr"] = scores[name]["CIDEr"]
        runs[name]["scores"] = scores[name]
    return {
        "format": "tinygpt_ros bench-budget report v1",
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "model": model_identity(model_dir, backend),
        "machine": machine_info(),
        "streams": {"count": n_streams, "frames_per_scene": frames_per_scene, "seed": seed,
                    "pattern": list(SWITCH_PATTERN), "segments": len(refs), "split": "test",
                    "size": list(size) if size else None},
        "settle_frames": SETTLE_FRAMES,
        "seconds": round(time.perf_counter() - t_start, 1),
        "runs": runs,
        "comparison": compare_at_equal_cost(runs),
    }


def _cost_summary(gflops: np.ndarray, since: np.ndarray, states: list[str],
                  target: float | None) -> dict[str, Any]:
    out: dict[str, Any] = {
        "frames": len(gflops),
        "mean_gflops": float(gflops.mean()),
        "p95_gflops": float(np.percentile(gflops, 95)),
        "target": target,
    }
    if target is not None:
        settled = gflops[since >= SETTLE_FRAMES]
        p95_settled = float(np.percentile(settled, 95)) if len(settled) else float("nan")
        out.update({
            "p95_settled_gflops": p95_settled,
            "p95_settled_vs_target": p95_settled / target,
            "in_budget_pct": 100.0 * float((gflops <= target).mean()),
            "in_budget_settled_pct": 100.0 * float((settled <= target).mean()),
            "unreachable_frames": int(sum(s == "unreachable" for s in states)),
            "target_met": bool(p95_settled <= 1.1 * target),
        })
    return out


def compare_at_equal_cost(runs: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """For each controller run: the best-CIDEr fixed setting costing at most its mean."""
    fixed = {n: r for n, r in runs.items() if r["target"] is None}
    rows = []
    for name, r in runs.items():
        if r["target"] is None:
            continue
        cheaper = {n: f for n, f in fixed.items() if f["mean_gflops"] <= r["mean_gflops"]}
        best = max(cheaper, key=lambda n: cheaper[n]["CIDEr"]) if cheaper else None
        rows.append({
            "budget": name,
            "mean_gflops": r["mean_gflops"],
            "CIDEr": r["CIDEr"],
            "best_fixed": best,
            "best_fixed_mean_gflops": cheaper[best]["mean_gflops"] if best else None,
            "best_fixed_CIDEr": cheaper[best]["CIDEr"] if best else None,
            "cider_at_least_fixed": (r["CIDEr"] >= cheaper[best]["CIDEr"]) if best else None,
        })
    return rows


def budget_markdown(rep: dict[str, Any], command: str | None) -> str:
    st = rep["streams"]
    lines = [
        "## Compute budget controller (bench-budget)",
        "",
        f"{st['count']} streams x {len(st['pattern'])} scenes x {st['frames_per_scene']} frames "
        f"(held-out `{st['split']}` clips, scenes switch {' -> '.join(st['pattern'])} without "
        f"a reset), {st['segments']} caption segments; FLOPs mode; settled = "
        f">= {rep['settle_frames']} frames after a switch; {rep['seconds']:.0f} s.",
        "",
        "| config | target GFLOPs | mean GFLOPs | p95 GFLOPs | settled p95 / target | "
        "frames in budget | unreachable frames | CIDEr |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, r in rep["runs"].items():
        t = r["target"]
        lines.append(
            f"| {name} | {t if t is not None else '-'} | {r['mean_gflops']:.3f} | "
            f"{r['p95_gflops']:.3f} | "
            + (f"{r['p95_settled_vs_target']:.2f}"
               f"{'' if r['target_met'] else ' (missed)'} | {r['in_budget_pct']:.0f}% | "
               f"{r['unreachable_frames']} | "
               if t is not None else "- | - | - | ")
            + f"{r['CIDEr']:.3f} |")
    lines += ["", "At equal mean cost (best fixed setting costing at most the controller's "
              "mean):", "", "| budget | mean GFLOPs | CIDEr | best fixed | its mean GFLOPs | "
              "its CIDEr | controller >= fixed |", "|---|---|---|---|---|---|---|"]
    for c in rep["comparison"]:
        if c["best_fixed"] is None:
            lines.append(f"| {c['budget']} | {c['mean_gflops']:.3f} | {c['CIDEr']:.3f} | "
                         "none as cheap | - | - | - |")
            continue
        lines.append(
            f"| {c['budget']} | {c['mean_gflops']:.3f} | {c['CIDEr']:.3f} | {c['best_fixed']} | "
            f"{c['best_fixed_mean_gflops']:.3f} | {c['best_fixed_CIDEr']:.3f} | "
            f"{'yes' if c['cider_at_least_fixed'] else 'no'} |")
    if command:
        lines += ["", f"Command: `{command}`"]
    return "\n".join(lines) + "\n"


def main(args: Any) -> int:
    """Entry point of `tinygpt-ros bench-budget`."""
    command = "tinygpt-ros " + shlex.join(sys.argv[1:]) if sys.argv[1:] else None
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    size = tuple(args.size) if args.size else None
    rep = run_budget_bench(args.model, args.targets, args.streams, args.frames_per_scene,
                           args.seed, args.backend, size,
                           progress=lambda m: print(f"[bench-budget] {m}", file=sys.stderr))
    rep["command"] = command
    (out / "budget.json").write_text(json.dumps(rep, indent=1) + "\n")
    md = budget_markdown(rep, command)
    (out / "budget.md").write_text(md)
    print(md)
    return 0

