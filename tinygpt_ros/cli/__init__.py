"""`tinygpt-ros`: the package's command line. Each command is a module here with `HELP`,
`add_arguments(parser)` and `run(args)`; this module only composes them. Commands import their
heavy dependencies (torch, rclpy) inside `run`, so `--help` and the onnxruntime-only commands stay
fast and torch-free."""

from __future__ import annotations

import argparse
import sys
from types import ModuleType

from tinygpt_ros.cli import (
    bench,
    bench_engines,
    demo,
    eval_bags,
    export,
    make_sample,
    quality,
    robustness,
    train,
)

COMMANDS: dict[str, ModuleType] = {
    "demo": demo,
    "train": train,
    "quality": quality,
    "make-sample": make_sample,
    "export": export,
    "eval": eval_bags,
    "bench": bench,
    "bench-engines": bench_engines,
    "robustness": robustness,
}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="tinygpt-ros", description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="command", required=True)
    for name, module in COMMANDS.items():
        cmd = sub.add_parser(name, help=module.HELP)
        module.add_arguments(cmd)
        cmd.set_defaults(func=module.run)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except (ValueError, FileExistsError, FileNotFoundError, RuntimeError) as exc:
        print(f"tinygpt-ros {args.command}: error: {exc}", file=sys.stderr)
        return 2


__all__ = ["COMMANDS", "build_parser", "main"]
