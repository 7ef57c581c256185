"""`tinygpt-ros train`: three-stage training on freshly generated data."""

from __future__ import annotations

import argparse

from tinygpt_ros.cli.paths import REPO_ROOT, command_line

HELP = "three-stage training on freshly generated data"

def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--preset", default="full", help="full (shipped model) or tiny (tests)")
    p.add_argument("--out", default=str(REPO_ROOT / "models" / "tinygpt"))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=None)


def run(args: argparse.Namespace) -> int:
    from tinygpt_ros.train.recipe import train

    train(args.preset, args.out, seed=args.seed, threads=args.threads, command=command_line())
    return 0
