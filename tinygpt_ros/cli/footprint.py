"""`tinygpt-ros footprint`: the node measured from outside: start-up time, RSS and libraries per
backend, and RSS over repeated lifecycle cycles."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

HELP = "node start-up time, RSS per backend, and memory over lifecycle cycles"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--backends", nargs="*", default=["onnxruntime", "torch"],
                   help="backends to start the node on (empty: skip the start-up measurement)")
    p.add_argument("--runs", type=int, default=3, help="start-ups per backend (median reported)")
    p.add_argument("--frames", type=int, default=30, help="640x480 frames after start-up")
    p.add_argument("--cycles", type=int, default=100, help="lifecycle cycles after the warm-up "
                   "(0: skip the lifecycle measurement)")
    p.add_argument("--warmup", type=int, default=5, help="lifecycle warm-up cycles")
    p.add_argument("--cycle-backend", default="onnxruntime")
    p.add_argument("--model-dir", default=None, help="model directory (default: the node's)")
    p.add_argument("--json", default=None, help="write every figure here")


def run(args: argparse.Namespace) -> int:
    import statistics

    from tinygpt_ros.evaluation import footprint

    startup = []
    for backend in args.backends:
        runs = [footprint.measure_startup(backend, args.frames, args.model_dir)
                for _ in range(max(args.runs, 1))]
        for r in runs:
            print(json.dumps(r), flush=True)
        best = dict(runs[0])
        for key, value in runs[0].items():
            if isinstance(value, float):
                best[key] = round(statistics.median(r[key] for r in runs), 2)
        best["runs"] = len(runs)
        startup.append(best)
    lifecycle = None
    if args.cycles > 0:
        def progress(i: int, active: float, cleaned: float) -> None:
            if i % 10 == 0:
                print(f"cycle {i}: RSS active {active:.1f} MiB, after cleanup {cleaned:.1f} MiB",
                      flush=True)

        lifecycle = footprint.measure_lifecycle_memory(
            args.cycles, args.warmup, args.cycle_backend, args.model_dir, progress)
    print(footprint.markdown(startup, lifecycle))
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps({"startup": startup, "lifecycle": lifecycle},
                                              indent=1))
    return 0
