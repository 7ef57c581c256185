"""`tinygpt-ros bench`: peer benchmark on held-out clips (ratios, one run)."""

from __future__ import annotations

import argparse
from pathlib import Path

from tinygpt_ros.cli.paths import default_model_dir

HELP = "peer benchmark on held-out clips (ratios, one run)"


def _size(text: str) -> tuple[int, int]:
    try:
        h, w = (int(v) for v in text.lower().split("x"))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"size must be HxW, e.g. 480x640, got {text!r}") from exc
    return h, w

def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default=str(default_model_dir()))
    p.add_argument("--clips-per-motion", type=int, default=2,
                   help="short held-out clips per motion level (scene and camera levels)")
    p.add_argument("--frames", type=int, default=40, help="frames per short clip")
    p.add_argument("--long-clips", type=int, default=3,
                   help="long camera clips (drift and refresh are measured on them)")
    p.add_argument("--long-frames", type=int, default=200,
                   help="frames per long clip (> 3 x refresh_interval)")
    p.add_argument("--long-drift-only", action="store_true",
                   help="long clips feed only the drift pass, not the scored set (saves time)")
    p.add_argument("--size", type=_size, default=None,
                   help="clip frame size HxW, e.g. 480x640 (default: the renderer's)")
    p.add_argument("--bootstrap", type=int, default=100,
                   help="paired bootstrap resamples for the 95%% CIDEr intervals")
    p.add_argument("--split", choices=("test", "val"), default="test",
                   help="held-out clips to run on: test (the reported figures) or val (to tune, "
                        "or to try a model before it ships)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", default="reports/bench", help="report directory (json, plots)")
    p.add_argument("--markdown", default=None, help="also write the table here")


def run(args: argparse.Namespace) -> int:
    from tinygpt_ros.evaluation.bench import main as bench_main

    rc = bench_main(args)
    print((Path(args.out) / "bench.md").read_text(encoding="utf-8"))
    return rc
