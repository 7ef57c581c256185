"""`tinygpt-ros bench-hf`: a pretrained-scale captioner (GIT-base architecture) through the
streaming engine, STTF against dense, on still/slow/busy/panning streams (ratios, one run)."""

from __future__ import annotations

import argparse

HELP = ("latency of a GIT-base- or small-LLaVA-scale captioner through the engine, STTF vs "
        "dense (one run)")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default=None,
                   help="local GIT checkpoint; default: random weights of GIT-base's shape")
    p.add_argument("--family", choices=["git", "llava"], default="git",
                   help="random-weight architecture without --model: GIT-base, or "
                        "llava-interleave-qwen-0.5b (SigLIP-so400m tower at 196 px + "
                        "Qwen2-0.5B)")
    p.add_argument("--backend", choices=["torch", "onnxruntime"], default="torch",
                   help="onnxruntime (GIT only): the graphs of `tinygpt-ros export`; the random "
                        "GIT-base is saved and exported to a temporary checkpoint first")
    p.add_argument("--motion-compensation", choices=["off", "translation", "similarity"],
                   default="off", help="the STTF engine's ego-motion (and exposure) "
                                       "compensation")
    p.add_argument("--frames", type=int, default=12, help="frames per stream")
    p.add_argument("--pan-px", type=int, default=8, help="panning speed, pixels per frame")
    p.add_argument("--streams", nargs="+", default=["still", "slow", "busy", "panning"])
    p.add_argument("--threads", type=int, default=0,
                   help="intra-op threads, as the node's intra_op_threads sets them (torch's "
                        "process-wide, onnxruntime's per session); 0: the libraries' defaults")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=None, help="write the report as JSON here")
    p.add_argument("--markdown", default=None, help="also write the table into this file")


def run(args: argparse.Namespace) -> int:
    from tinygpt_ros.evaluation.hf_bench import main

    return main(args)
