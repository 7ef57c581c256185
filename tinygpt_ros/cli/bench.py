"""`tinygpt-ros bench`: peer benchmark on held-out clips (ratios, one run)."""

from __future__ import annotations

import argparse
from pathlib import Path

from tinygpt_ros.cli.paths import default_model_dir

HELP = "peer benchmark on held-out clips (ratios, one run)"

def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default=str(default_model_dir()))
    p.add_argument("--clips-per-motion", type=int, default=30)
    p.add_argument("--frames", type=int, default=40)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", default="reports/bench", help="report directory (json, plots)")
    p.add_argument("--markdown", default=None, help="also write the table here")


def run(args: argparse.Namespace) -> int:
    from tinygpt_ros.evaluation.bench import main as bench_main

    rc = bench_main(args)
    print((Path(args.out) / "bench.md").read_text(encoding="utf-8"))
    return rc
