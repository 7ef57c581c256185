"""`tinygpt-ros` command line: demo, train, quality, export, eval, bench, make-sample."""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent


def default_model_dir() -> Path:
    """The shipped model: installed share dir when the package is installed, else the repo's."""
    try:
        from ament_index_python.packages import get_package_share_directory

        share = Path(get_package_share_directory("tinygpt_ros")) / "models" / "tinygpt"
        if share.exists():
            return share
    except Exception:  # no ament index (plain checkout): fall back to the source tree
        pass
    return REPO_ROOT / "models" / "tinygpt"


def default_sample_bag() -> Path:
    return REPO_ROOT / "sample" / "sample_bag"


def _cmd_train(args: argparse.Namespace) -> int:
    from .core.train import train

    command = "tinygpt-ros " + shlex.join(sys.argv[1:])
    train(args.preset, args.out, seed=args.seed, threads=args.threads, command=command)
    return 0


def _cmd_quality(args: argparse.Namespace) -> int:
    import torch

    from .core.data.gestures import make_gesture_set
    from .core.data.scenes import make_clips
    from .core.engine import TorchEngine
    from .core.train import EVENT_WINDOW_US
    from .core.weights import add_metrics
    from .evaluation.quality import evaluate_captions, evaluate_gestures, quality_markdown

    if args.record and args.split != "test":
        raise SystemExit("--record stores held-out figures: use it with --split test only")
    torch.set_num_threads(args.threads)
    engine = TorchEngine.from_dir(args.model)
    clips = []
    for motion in ("still", "slow", "busy"):
        clips += make_clips(args.split, args.clips_per_motion, motion=motion,
                            base_seed=args.seed, num_frames=args.frames)
    cap = evaluate_captions(engine, clips, progress=lambda m: print(f"[quality] {m}"))
    ges = None
    if args.gestures_per_class > 0:
        gclips = make_gesture_set(args.split, args.gestures_per_class, base_seed=args.seed)
        ges = evaluate_gestures(engine, gclips, EVENT_WINDOW_US)
    command = "tinygpt-ros " + shlex.join(sys.argv[1:])
    md = quality_markdown(cap, ges, command)
    print(md)
    if args.markdown:
        Path(args.markdown).parent.mkdir(parents=True, exist_ok=True)
        Path(args.markdown).write_text(md)
    summary = {
        "command": command,
        "segments": cap["segments"],
        "captions": cap["scores"],
        "cider_vs_dense_interval": cap["cider_vs_dense_interval"],
        "compute": {n: {m: c.__dict__ for m, c in per.items()}
                    for n, per in cap["compute"].items()},
        "gestures": None if ges is None else {
            n: ({"accuracy": g["accuracy"], "compute": g["compute"].__dict__}
                if isinstance(g, dict) else g) for n, g in ges.items()},
    }
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(summary, indent=2))
    if args.record:
        add_metrics(args.model, {"held_out_quality": summary})
    return 0


def _cmd_make_sample(args: argparse.Namespace) -> int:
    from .bags.sample import write_sample_bag

    path = write_sample_bag(args.out, seed=args.seed, overwrite=args.overwrite)
    print(f"[make-sample] wrote {path}")
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    return run_demo(
        bag=args.bag, model_dir=args.model, rate=args.rate, backend=args.backend,
        image_transport=args.image_transport,
    )


def _cmd_export(args: argparse.Namespace) -> int:
    from .core.export import export_model

    export_model(args.model, opset=args.opset, precisions=tuple(args.precision))
    return 0


def _cmd_eval(args: argparse.Namespace) -> int:
    from .evaluation.bag_eval import main as eval_main

    return eval_main(args)


def _cmd_bench(args: argparse.Namespace) -> int:
    from .evaluation.bench import main as bench_main

    return bench_main(args)


def _cmd_bench_engines(args: argparse.Namespace) -> int:
    from .evaluation.engine_bench import main as engine_bench_main

    return engine_bench_main(args)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="tinygpt-ros", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)

    d = sub.add_parser("demo", help="bring the node graph up and play the sample bag into it")
    d.add_argument("--bag", default=str(default_sample_bag()))
    d.add_argument("--model", default=str(default_model_dir()))
    d.add_argument("--rate", type=float, default=0.0,
                   help="playback rate (1 = original timing, 0 = as fast as the node keeps up)")
    d.add_argument("--backend", default="onnxruntime", choices=("torch", "onnxruntime"))
    d.add_argument("--image-transport", default="raw", choices=("raw", "compressed"))
    d.set_defaults(func=_cmd_demo)

    t = sub.add_parser("train", help="three-stage training on freshly generated data")
    t.add_argument("--preset", default="full", help="full (shipped model) or tiny (tests)")
    t.add_argument("--out", default=str(REPO_ROOT / "models" / "tinygpt"))
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--threads", type=int, default=None)
    t.set_defaults(func=_cmd_train)

    q = sub.add_parser("quality", help="held-out caption/gesture quality and compute table")
    q.add_argument("--model", default=str(default_model_dir()))
    q.add_argument("--clips-per-motion", type=int, default=40)
    q.add_argument("--frames", type=int, default=40)
    q.add_argument("--gestures-per-class", type=int, default=10)
    q.add_argument("--seed", type=int, default=0)
    q.add_argument("--split", choices=("test", "val"), default="test",
                   help="held-out test clips (the reported figures) or validation clips")
    q.add_argument("--threads", type=int, default=2)
    q.add_argument("--markdown", default=None, help="write the table here")
    q.add_argument("--json", default=None, help="write the figures here")
    q.add_argument("--record", action="store_true", help="store the figures in the manifest")
    q.set_defaults(func=_cmd_quality)

    s = sub.add_parser("make-sample", help="write the sample bag (mcap) and its references")
    s.add_argument("--out", default=str(default_sample_bag()))
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--overwrite", action="store_true")
    s.set_defaults(func=_cmd_make_sample)

    e = sub.add_parser("export", help="export ONNX graphs of a model directory")
    e.add_argument("--model", default=str(default_model_dir()))
    e.add_argument("--opset", type=int, default=17)
    e.add_argument("--precision", nargs="+", default=["fp32", "fp16"])
    e.set_defaults(func=_cmd_export)

    v = sub.add_parser("eval", help="replay rosbags through the engine and score them")
    v.add_argument("bags", nargs="+", help="bag directories or files (mcap or sqlite3)")
    v.add_argument("--refs", default=None,
                   help="references JSON (default: refs.json inside each bag directory)")
    v.add_argument("--model", default=str(default_model_dir()))
    v.add_argument("--backend", default="torch", choices=("torch", "onnxruntime"))
    v.add_argument("--configs", nargs="+", default=["dense", "sttf", "anc", "sttf+anc"],
                   help="named configs and/or sweeps like fusion_threshold=0.2,0.5,1.0")
    v.add_argument("--image-topic", default="/camera/image_raw")
    v.add_argument("--events-topic", default="/events")
    v.add_argument("--out", default="reports/eval", help="report directory")
    v.add_argument("--overwrite", action="store_true", help="replace an existing report")
    v.add_argument("--workers", type=int, default=1, help="bags evaluated in parallel")
    v.add_argument("--live", action="store_true",
                   help="also run the ROS nodes on the bag and compare with offline output")
    v.add_argument("--max-frames", type=int, default=None,
                   help="evaluate only the first N camera frames of each bag")
    v.add_argument("--threads", type=int, default=None, help="torch threads per worker")
    v.add_argument("--no-progress", dest="progress", action="store_false",
                   help="no progress bar on stderr")
    v.set_defaults(func=_cmd_eval)

    b = sub.add_parser("bench", help="peer benchmark on held-out clips (ratios, one run)")
    b.add_argument("--model", default=str(default_model_dir()))
    b.add_argument("--clips-per-motion", type=int, default=30)
    b.add_argument("--frames", type=int, default=40)
    b.add_argument("--seed", type=int, default=0)
    b.add_argument("--threads", type=int, default=2)
    b.add_argument("--out", default="reports/bench", help="report directory (json, plots)")
    b.add_argument("--markdown", default=None, help="also write the table here")
    b.set_defaults(func=_cmd_bench)

    g = sub.add_parser("bench-engines", help="onnxruntime vs torch engine per frame (ratios)")
    g.add_argument("--model", default=str(default_model_dir()))
    g.add_argument("--clips-per-motion", type=int, default=4)
    g.add_argument("--frames", type=int, default=40)
    g.add_argument("--threads", type=int, default=2)
    g.add_argument("--out", default="reports/engines", help="report directory")
    g.add_argument("--markdown", default=None, help="also write the table here")
    g.set_defaults(func=_cmd_bench_engines)

    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except (ValueError, FileExistsError, FileNotFoundError, RuntimeError) as exc:
        print(f"tinygpt-ros {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
