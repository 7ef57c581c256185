"""`tinygpt-ros eval`: replay rosbags through the engine and score them."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from tinygpt_ros.cli.paths import command_line, default_model_dir

HELP = "replay rosbags through the engine and score them"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("bags", nargs="+", help="bag directories or files (mcap or sqlite3)")
    p.add_argument("--refs", action="append", default=None, metavar="JSON",
                   help="references JSON: once for all bags, or repeated once per bag in the "
                        "order of the bags (default: refs.json inside each bag directory)")
    p.add_argument("--model", default=str(default_model_dir()))
    p.add_argument("--backend", default="torch", choices=("torch", "onnxruntime"))
    p.add_argument("--configs", nargs="+", default=["dense", "sttf", "anc", "sttf+anc"],
                   help="named configs and/or sweeps like fusion_threshold=0.2,0.5,1.0")
    p.add_argument("--image-topic", default="/camera/image_raw")
    p.add_argument("--events-topic", default="/events")
    p.add_argument("--out", default="reports/eval", help="report directory")
    p.add_argument("--overwrite", action="store_true", help="replace an existing report")
    p.add_argument("--workers", type=int, default=1, help="bags evaluated in parallel")
    p.add_argument("--live", action="store_true",
                   help="also run the ROS nodes on the bag and compare with offline output")
    p.add_argument("--max-frames", type=int, default=None,
                   help="evaluate only the first N camera frames of each bag (and the events "
                        "before the next frame)")
    p.add_argument("--threads", type=int, default=None, help="torch threads per worker")
    p.add_argument("--ray", default=None, metavar="ADDRESS",
                   help="replay the bags on a Ray cluster, one task per bag: 'auto' (the "
                        "cluster this machine joined), an address (host:6379, ray://host:10001) "
                        "or 'local' (a private instance with --workers CPUs); needs "
                        "requirements-ray.txt")
    p.add_argument("--no-progress", dest="progress", action="store_false",
                   help="no progress bar on stderr")


def run(args: argparse.Namespace) -> int:
    from tinygpt_ros.evaluation.runner import failures, run_eval

    report = run_eval(
        args.bags, args.model, args.out, refs=args.refs, configs=args.configs,
        backend=args.backend, image_topic=args.image_topic, events_topic=args.events_topic,
        overwrite=args.overwrite, workers=args.workers, live=args.live,
        max_frames=args.max_frames, threads=args.threads, progress=args.progress,
        command=command_line(), ray=args.ray,
    )
    out = Path(args.out)
    print(f"[eval] report: {out / 'report.md'} ({out / 'report.json'})")
    for i in report["issues"]:
        print(f"[eval] {i['severity']}: {i['bag']}: {i['kind']}: {i['message']}"
              + (f" (x{i['count']})" if i["count"] > 1 else ""), file=sys.stderr)
    if report["live"] is not None and not report["live"].get("equal", True):
        print("[eval] live output differs from offline output: see the report", file=sys.stderr)
    why = failures(report)
    for reason in why:
        print(f"[eval] error: {reason}", file=sys.stderr)
    return 1 if why else 0
