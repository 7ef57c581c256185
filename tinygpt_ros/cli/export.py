"""`tinygpt-ros export`: export ONNX graphs of a model directory."""

from __future__ import annotations

import argparse

from tinygpt_ros.cli.paths import default_model_dir

HELP = "export ONNX graphs of a model directory"

def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default=str(default_model_dir()))
    p.add_argument("--opset", type=int, default=17)
    p.add_argument("--precision", nargs="+", default=["fp32", "fp16"])


def run(args: argparse.Namespace) -> int:
    from tinygpt_ros.hf.checkpoint import is_hf_checkpoint

    if is_hf_checkpoint(args.model):  # a local transformers checkpoint (GIT): fp32 graphs
        from tinygpt_ros.hf.git_export import export_git

        info = export_git(args.model, opset=args.opset)
        print(f"exported {sorted(info['verify_max_abs_diff'])} to {args.model}/tinygpt_onnx")
        return 0
    from tinygpt_ros.deploy.export import export_model

    export_model(args.model, opset=args.opset, precisions=tuple(args.precision))
    return 0
