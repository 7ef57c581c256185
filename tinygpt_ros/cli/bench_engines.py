"""`tinygpt-ros bench-engines`: onnxruntime vs torch engine per frame (ratios)."""

from __future__ import annotations

import argparse
from pathlib import Path

from tinygpt_ros.cli.paths import default_model_dir

HELP = "onnxruntime vs torch engine per frame (ratios)"

def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default=str(default_model_dir()))
    p.add_argument("--clips-per-motion", type=int, default=4)
    p.add_argument("--frames", type=int, default=40)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", default="reports/engines", help="report directory")
    p.add_argument("--markdown", default=None, help="also write the table here")


def run(args: argparse.Namespace) -> int:
    from tinygpt_ros.evaluation.engine_bench import main as engine_bench_main

    rc = engine_bench_main(args)
    print((Path(args.out) / "report.md").read_text(encoding="utf-8"))
    return rc
