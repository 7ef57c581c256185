"""`tinygpt-ros bench-budget`: the budget controller vs fixed knob settings on switching scenes."""

from __future__ import annotations

import argparse

from tinygpt_ros.cli.paths import default_model_dir
from tinygpt_ros.runtime.threads import DEFAULT_INTRA_OP_THREADS

HELP = "budget controller vs fixed knobs on scene-switching clips (FLOPs and latency targets)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default=str(default_model_dir()))
    p.add_argument("--backend", default="onnxruntime", choices=("torch", "onnxruntime"))
    p.add_argument("--targets", type=float, nargs="+", default=[0.05, 0.08, 0.12],
                   help="budget_target_gflops values to run the controller at")
    p.add_argument("--latency-fractions", type=float, nargs="*", default=[0.6, 0.7, 0.8],
                   help="latency targets as fractions of the user's-knobs p95 ms measured in "
                   "the same run (none: FLOPs targets only)")
    p.add_argument("--streams", type=int, default=4, help="scene-switching streams")
    p.add_argument("--frames-per-scene", type=int, default=24)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--split", default="test", choices=("val", "test"),
                   help="clips to run: test for the reported figures, val to tune the ladder")
    p.add_argument("--select-fixed-on", default=None, metavar="VAL_REPORT",
                   help="budget.json of a --split val run: the fixed setting each controller "
                   "run is compared with is chosen there, not on the clips being scored")
    p.add_argument("--size", type=int, nargs=2, default=None, metavar=("H", "W"),
                   help="clip size (default: the generator's)")
    p.add_argument("--threads", type=int, default=DEFAULT_INTRA_OP_THREADS,
                   help="onnxruntime / torch intra-op threads (the node's intra_op_threads; "
                   "BLAS and OpenCV get the node's blas_threads default)")
    p.add_argument("--out", default="reports/bench_budget", help="report directory")
    p.add_argument("--markdown", default=None,
                   help="also write the 'budget' section of this file (docs/benchmarks.md)")


def run(args: argparse.Namespace) -> int:
    from tinygpt_ros.evaluation.budget_bench import main

    return main(args)
