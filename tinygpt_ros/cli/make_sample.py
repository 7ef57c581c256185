"""`tinygpt-ros make-sample`: write the sample bag (mcap) and its references."""

from __future__ import annotations

import argparse

from tinygpt_ros.cli.paths import default_sample_bag

HELP = "write the sample bag (mcap) and its references"

def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", default=str(default_sample_bag()))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--overwrite", action="store_true")


def run(args: argparse.Namespace) -> int:
    from tinygpt_ros.bags.sample import write_sample_bag

    path = write_sample_bag(args.out, seed=args.seed, overwrite=args.overwrite)
    print(f"[make-sample] wrote {path}")
    return 0
