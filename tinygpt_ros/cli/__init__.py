"""`tinygpt-ros`: the package's command line. Each command is a module here with `HELP`,
`add_arguments(parser)` and `run(args)`; this module only composes them. Commands import their
heavy dependencies (torch, rclpy) inside `run`, so `--help` and the onnxruntime-only commands stay
fast and torch-free."""

from __future__ import annotations

import argparse
import logging
import sys
from types import ModuleType

from tinygpt_ros.cli import (
    bench,
    bench_budget,
    bench_engines,
    demo,
    eval_bags,
    export,
    make_sample,
    quality,
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
    "bench-budget": bench_budget,
}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="tinygpt-ros",
        description="Demo, train, evaluate, benchmark and export the STTF + ANC captioner.",
    )
    p.add_argument("-v", "--verbose", action="store_true",
                   help="debug messages from the package (default: info)")
    sub = p.add_subparsers(dest="command", required=True)
    for name, module in COMMANDS.items():
        cmd = sub.add_parser(name, help=module.HELP)
        module.add_arguments(cmd)
        cmd.set_defaults(func=module.run)
    return p


class _ShortNames(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return f"[{record.name.removeprefix('tinygpt_ros.')}] {record.getMessage()}"


def configure_logging(verbose: bool) -> None:
    """The package logs through `logging`; the command line shows it on stderr."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_ShortNames())
    tree = logging.getLogger("tinygpt_ros")
    tree.handlers[:] = [handler]
    tree.setLevel(logging.DEBUG if verbose else logging.INFO)
    tree.propagate = False


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    configure_logging(args.verbose)
    try:
        return int(args.func(args) or 0)
    except (ValueError, FileExistsError, FileNotFoundError, RuntimeError) as exc:
        print(f"tinygpt-ros {args.command}: error: {exc}", file=sys.stderr)
        return 2


__all__ = ["COMMANDS", "build_parser", "main"]
