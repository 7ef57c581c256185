"""`tinygpt-ros eval-coco`: caption scores on a COCO-format captions file + image folder."""

from __future__ import annotations

import argparse

from tinygpt_ros.cli.paths import default_model_dir
from tinygpt_ros.runtime.threads import DEFAULT_INTRA_OP_THREADS

HELP = "score captions on a COCO-format captions file and image folder (e.g. COCO val2017)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default=str(default_model_dir()),
                   help="TinyGPT model directory or local transformers checkpoint")
    p.add_argument("--captions", required=True, help="COCO captions JSON (images, annotations)")
    p.add_argument("--images", required=True, help="folder holding the images' file_name")
    p.add_argument("--configs", nargs="+", default=["dense", "sttf+anc"],
                   help="configs as for `tinygpt-ros eval` (names or knob sweeps)")
    p.add_argument("--limit", type=int, default=0, help="first N images by id; 0 = all")
    p.add_argument("--frames-per-image", type=int, default=1,
                   help="stream each image as N identical frames (STTF reuse acts from frame 2)")
    p.add_argument("--backend", default="torch", choices=["torch", "onnxruntime"])
    p.add_argument("--threads", type=int, default=DEFAULT_INTRA_OP_THREADS,
                   help="intra-op threads (the node's intra_op_threads; BLAS and OpenCV get "
                   "the node's blas_threads default)")
    p.add_argument("--out", default=None, help="write the JSON report here")


def run(args: argparse.Namespace) -> int:
    import json
    from pathlib import Path

    from tinygpt_ros.evaluation.coco_eval import markdown
    from tinygpt_ros.evaluation.coco_eval import run as evaluate

    rep = evaluate(args.model, args.captions, args.images, args.configs, args.limit,
                   args.frames_per_image, args.backend, threads=args.threads)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(rep, indent=1) + "\n")
    print(markdown(rep))
    return 0
