"""`tinygpt-ros train`: the training recipe on freshly generated data, or some of its stages."""

from __future__ import annotations

import argparse

from tinygpt_ros.cli.paths import REPO_ROOT, command_line

HELP = "the training recipe on freshly generated data (or some of its stages from a trained model)"

def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--preset", default="fresh",
                   help="fresh (the shipped model: a shapes stage first, new scenes for every "
                        "caption run and every stage-1 step, the lean conv frame stem), full "
                        "(the previous weights' recipe: one pool of 400 clips, patch "
                        "projection) or tiny (tests)")
    p.add_argument("--out", default=str(REPO_ROOT / "models" / "tinygpt"))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--init", default=None, metavar="MODEL_DIR",
                   help="start from this trained model's weights (same preset and seed) and run "
                        "only --stages")
    p.add_argument("--stages", nargs="+", default=None, metavar="STAGE",
                   help="with --init: the stages to run, of shapes pretrain sttf_distill "
                        "router specialise decoder")
    p.add_argument("--steps", nargs="+", default=None, metavar="STAGE=N",
                   help="replace some of the preset's step counts (a shorter run of the same "
                        "recipe), e.g. pretrain=600 decoder=3000; keys: shapes pretrain "
                        "sttf_distill router caption gesture decoder")


def run(args: argparse.Namespace) -> int:
    from tinygpt_ros.train.recipe import train

    if args.stages and not args.init:
        raise SystemExit("--stages needs --init MODEL_DIR (a model trained with the same preset)")
    try:
        train(args.preset, args.out, seed=args.seed, threads=args.threads,
              command=command_line(), init=args.init, stages=args.stages,
              steps=_parse_steps(args.steps or []))
    except ValueError as exc:
        raise SystemExit(f"train: {exc}") from None
    return 0


def _parse_steps(items: list[str]) -> dict[str, int]:
    out: dict[str, int] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not value.strip().isdigit():
            raise SystemExit(f"train: --steps takes STAGE=N with N a whole number, got {item!r}")
        out[key.strip()] = int(value)
    return out
