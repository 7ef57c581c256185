"""`tinygpt-ros demo`: bring the node graph up and play the sample bag into it."""

from __future__ import annotations

import argparse

from tinygpt_ros.cli.paths import default_model_dir, default_sample_bag

HELP = "bring the node graph up and play the sample bag into it"

def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--bag", default=str(default_sample_bag()))
    p.add_argument("--model", default=str(default_model_dir()))
    p.add_argument("--rate", type=float, default=0.0,
                   help="playback rate (1 = original timing, 0 = as fast as the node keeps up)")
    p.add_argument("--backend", default="onnxruntime", choices=("torch", "onnxruntime"))
    p.add_argument("--image-transport", default="raw", choices=("raw", "compressed"))


def run(args: argparse.Namespace) -> int:
    from tinygpt_ros.demo import run_demo

    return run_demo(
        bag=args.bag, model_dir=args.model, rate=args.rate, backend=args.backend,
        image_transport=args.image_transport,
    )
