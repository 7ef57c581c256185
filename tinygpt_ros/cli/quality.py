"""`tinygpt-ros quality`: held-out caption/gesture quality and compute table."""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

from tinygpt_ros.cli.paths import command_line, default_model_dir

HELP = "held-out caption/gesture quality and compute table"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default=str(default_model_dir()))
    p.add_argument("--clips-per-motion", type=int, default=40)
    p.add_argument("--frames", type=int, default=40)
    p.add_argument("--gestures-per-class", type=int, default=10)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--split", choices=("test", "val"), default="test",
                   help="held-out test clips (the reported figures) or validation clips")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--beam-size", type=int, default=1,
                   help="caption decoding: 1 greedy (what the shipped figures use), more = "
                        "beam search of that width (the node's beam_size)")
    p.add_argument("--motions", nargs="+", default=["still", "slow", "busy"],
                   help="motion levels to stream: still slow busy (the README table), and the "
                        "camera levels pan tilt zoom shake exposure flicker")
    p.add_argument("--markdown", default=None, help="write the table here")
    p.add_argument("--json", default=None, help="write the figures here")
    p.add_argument("--record", action="store_true", help="store the figures in the manifest")


def run(args: argparse.Namespace) -> int:
    from tinygpt_ros.data.gestures import make_gesture_set
    from tinygpt_ros.data.scenes import make_clips
    from tinygpt_ros.evaluation.quality import (
        evaluate_captions,
        evaluate_gestures,
        quality_markdown,
    )
    from tinygpt_ros.model.weights import add_metrics
    from tinygpt_ros.runtime.threads import DEFAULT_BLAS_THREADS, apply_thread_limits
    from tinygpt_ros.runtime.torch_engine import TorchEngine
    from tinygpt_ros.train.recipe import EVENT_WINDOW_US

    if args.record and args.split != "test":
        raise SystemExit("--record stores held-out figures: use it with --split test only")
    if args.beam_size < 1:
        raise SystemExit(f"--beam-size must be at least 1, got {args.beam_size}")
    if args.record and args.beam_size != 1:
        raise SystemExit("--record stores the shipped (greedy) figures: leave --beam-size at 1")
    apply_thread_limits(DEFAULT_BLAS_THREADS, args.threads)
    engine = TorchEngine.from_dir(args.model, beam_size=args.beam_size)
    clips = []
    from tinygpt_ros.data.scenes import MOTIONS

    unknown = [m for m in args.motions if m not in MOTIONS]
    if unknown:
        raise SystemExit(f"--motions: unknown {unknown}; known: {list(MOTIONS)}")
    for motion in args.motions:
        clips += make_clips(args.split, args.clips_per_motion, motion=motion,
                            base_seed=args.seed, num_frames=args.frames)
    cap = evaluate_captions(engine, clips, progress=logging.getLogger(__name__).info)
    ges = None
    if args.gestures_per_class > 0:
        gclips = make_gesture_set(args.split, args.gestures_per_class, base_seed=args.seed)
        ges = evaluate_gestures(engine, gclips, EVENT_WINDOW_US)
    command = command_line()
    md = quality_markdown(cap, ges, command)
    print(md)
    if args.markdown:
        Path(args.markdown).parent.mkdir(parents=True, exist_ok=True)
        Path(args.markdown).write_text(md)
    summary = {
        "command": command,
        "segments": cap["segments"],
        "captions": cap["scores"],
        "cider_vs_dense_interval": cap["cider_vs_dense_interval"],
        "blind_caption": cap["blind_caption"],
        "attributes": cap["attributes"],
        "attribute_ceiling": cap["attribute_ceiling"],
        "compute": {n: {m: c.__dict__ for m, c in per.items()}
                    for n, per in cap["compute"].items()},
        "gestures": None if ges is None else {
            n: ({"accuracy": g["accuracy"], "compute": g["compute"].__dict__}
                if isinstance(g, dict) else g) for n, g in ges.items()},
    }
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(summary, indent=2))
    if args.record:
        add_metrics(args.model, {"held_out_quality": summary})
    return 0
