"""`tinygpt-ros train-router`: self-distil the ANC router of a pretrained captioner on the
user's own unlabelled bags (no labels, the captioner's weights untouched)."""

from __future__ import annotations

import argparse

HELP = "train the ANC router of a pretrained (Hugging Face) captioner on unlabelled bags"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True,
                   help="local transformers checkpoint directory (e.g. git-base-coco)")
    p.add_argument("--bags", nargs="+", required=True, help="rosbag2 bags with camera frames")
    p.add_argument("--image-topic", default="/camera/image_raw")
    p.add_argument("--out", default=None,
                   help="router file to write (default: MODEL/tinygpt_router.json)")
    p.add_argument("--target", choices=("tokens", "caption"), default="tokens",
                   help="keep the visual tokens within --tolerance of the full tower's, or "
                        "keep the caption identical (slower: one decode per branch and frame)")
    p.add_argument("--tolerance", type=float, default=0.1,
                   help="relative token distance a cheaper branch may have (target tokens)")
    p.add_argument("--budget", type=float, default=1.0,
                   help="expected encoder FLOPs as a fraction of the full tower (1 = no budget)")
    p.add_argument("--stride", type=int, default=1, help="use every N-th frame")
    p.add_argument("--max-frames", type=int, default=0, help="per bag; 0 = all")
    p.add_argument("--device", default="cpu")


def run(args: argparse.Namespace) -> int:
    import logging
    from pathlib import Path

    from tinygpt_ros.evaluation.bag_frames import iter_bag_frames
    from tinygpt_ros.hf.engine import HfEngine
    from tinygpt_ros.hf.router import ROUTER_FILE
    from tinygpt_ros.train.router_distill import train_router

    if not 0 < args.budget <= 1:
        raise ValueError(f"--budget must be in (0, 1], got {args.budget}")
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    engine = HfEngine.from_dir(args.model, device=args.device)
    streams = (iter_bag_frames(b, args.image_topic, args.stride, args.max_frames)
               for b in args.bags)
    params = train_router(engine, streams, args.target, args.tolerance, args.budget)
    out = Path(args.out) if args.out else Path(args.model) / ROUTER_FILE
    params.info["bags"] = [str(b) for b in args.bags]
    params.save(out)
    print(f"router written to {out}: {params.info}")
    return 0
