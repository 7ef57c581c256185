"""`tinygpt-ros robustness`: STTF on a moving, real camera (markdown + json + plot)."""

from __future__ import annotations

import argparse

from tinygpt_ros.cli.paths import command_line, default_model_dir

HELP = "camera ego-motion / exposure robustness: dense vs STTF+ANC with and without compensation"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default=str(default_model_dir()))
    p.add_argument("--backend", choices=("onnxruntime", "torch"), default="onnxruntime")
    p.add_argument("--clips", type=int, default=4,
                   help="held-out synthetic clips per camera condition")
    p.add_argument("--photos", nargs="*", default=None,
                   help="scikit-image photos to stream (default: all bundled ones we use)")
    p.add_argument("--frames", type=int, default=24, help="frames per stream")
    p.add_argument("--conditions", nargs="*", default=None,
                   help="camera conditions (default: all; see evaluation/robustness.py)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="reports/robustness", help="report directory")


def run(args: argparse.Namespace) -> int:
    from tinygpt_ros.evaluation.robustness import run_robustness, write_report

    rep = run_robustness(args.model, args.backend, args.clips, args.photos, args.frames,
                         args.conditions, args.threads, args.seed,
                         progress=lambda m: print(f"[robustness] {m}", flush=True))
    paths = write_report(rep, args.out, command_line())
    for kind, path in paths.items():
        print(f"[robustness] {kind}: {path}")
    return 0
