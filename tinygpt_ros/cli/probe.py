"""`tinygpt-ros probe`: linear probes of the encoder's tokens (shape, colour, background) on
held-out val clips; see `tinygpt_ros.evaluation.token_probe`."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

HELP = "what the encoder's tokens carry: held-out linear probes per branch (val clips)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default="models/tinygpt", help="model directory")
    p.add_argument("--fit-clips", type=int, default=60, help="val clips the probes are fitted on")
    p.add_argument("--score-clips", type=int, default=30,
                   help="further val clips the probes are scored on")
    p.add_argument("--steps", type=int, default=300, help="optimiser steps per probe")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    p.add_argument("--json", default=None, help="write the report here")


def run(args: argparse.Namespace) -> int:
    from tinygpt_ros.evaluation import token_probe

    if args.fit_clips < 1 or args.score_clips < 1 or args.steps < 1:
        raise SystemExit("--fit-clips, --score-clips and --steps must be at least 1")
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    report = token_probe.run_probe(args.model, args.fit_clips, args.score_clips, args.steps)
    print(token_probe.markdown(report), end="")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(report, indent=1))
    return 0
