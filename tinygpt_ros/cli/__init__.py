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
    bench_codecs,
    bench_engines,
    bench_hf,
    bench_node,
    demo,
    eval_bags,
    eval_coco,
    export,
    footprint,
    make_sample,
    overlay,
    probe,
    quality,
    robustness,
    soak,
    train,
    train_router,
)

COMMANDS: dict[str, ModuleType] = {
    "demo": demo,
    "train": train,
    "train-router": train_router,
    "quality": quality,
    "make-sample": make_sample,
    "export": export,
    "eval": eval_bags,
    "eval-coco": eval_coco,
    "bench": bench,
    "bench-engines": bench_engines,
    "bench-node": bench_node,
    "overlay": overlay,
    "soak": soak,
    "footprint": footprint,
    "bench-hf": bench_hf,
    "bench-budget": bench_budget,
    "robustness": robustness,
    "bench-codecs": bench_codecs,
    "probe": probe,
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


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever sys.stderr is at the time of the message (redirections and test
    captures that replace it after the first command still get the lines)."""

    @property  # type: ignore[override]
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, _value) -> None:
        pass


def configure_logging(verbose: bool = False) -> None:
    """The package's log messages (progress, findings) on stderr; the command's results go to
    stdout. A handler already installed (by an embedding program or an earlier call) is kept."""
    pkg = logging.getLogger("tinygpt_ros")
    pkg.setLevel(logging.DEBUG if verbose else logging.INFO)
    if not pkg.handlers:
        handler = _StderrHandler()
        handler.setFormatter(logging.Formatter("[%(name)s] %(levelname)s: %(message)s"))
        pkg.addHandler(handler)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    configure_logging(args.verbose)
    try:
        return int(args.func(args) or 0)
    except (ValueError, FileExistsError, FileNotFoundError, RuntimeError) as exc:
        print(f"tinygpt-ros {args.command}: error: {exc}", file=sys.stderr)
        return 2


__all__ = ["COMMANDS", "build_parser", "main"]
