"""Pick `noise_floor` on validation clips: STTF+ANC at several values against dense, captions
scored with pycocoevalcap, tokens recomputed per motion level. Tune here, never on test.

    .venv/bin/python scripts/sweep_noise_floor.py --clips-per-motion 4 --values 0 2 3

onnxruntime engine, the node's thread limits; the other knobs are the shipped defaults.
"""

from __future__ import annotations

import argparse

import numpy  # noqa: F401  (loaded before the thread limits so they apply to its BLAS)
from node_engine import DEFAULT_MODEL, node_engine  # scripts/, next to this file

MOTIONS = ("still", "slow", "pan", "tilt", "zoom", "shake", "exposure", "flicker")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default=DEFAULT_MODEL)
    p.add_argument("--clips-per-motion", type=int, default=4)
    p.add_argument("--frames", type=int, default=40)
    p.add_argument("--motions", nargs="+", default=list(MOTIONS))
    p.add_argument("--values", nargs="+", type=float, default=[0.0, 2.0, 3.0])
    args = p.parse_args()

    from tinygpt_ros.data.scenes import make_clips
    from tinygpt_ros.evaluation.quality import evaluate_captions

    engine = node_engine(args.model)
    clips = [c for m in args.motions
             for c in make_clips("val", args.clips_per_motion, motion=m, num_frames=args.frames)]
    configs: dict[str, dict] = {"dense": {"sttf_enabled": False, "anc_enabled": False}}
    for v in args.values:
        configs[f"sttf+anc noise_floor={v:g}"] = {"sttf_enabled": True, "anc_enabled": True,
                                                 "noise_floor": v}
    res = evaluate_captions(engine, clips, configs, progress=print)
    dense = res["scores"]["dense"]["CIDEr"]
    print(f"\n{res['segments']} validation segments\n")
    print("| config | CIDEr | vs dense (95% interval) | tokens recomputed: "
          + " / ".join(args.motions) + " | GFLOPs per frame |")
    print("|---|---|---|---|---|")
    for name in configs:
        cider = res["scores"][name]["CIDEr"]
        lo, hi = res["cider_vs_dense_interval"].get(name, (1.0, 1.0))
        comp = res["compute"][name]
        rec = " / ".join(f"{comp[m].recomputed_pct:.1f}%" for m in args.motions)
        print(f"| {name} | {cider:.3f} | {cider / dense:.1%} ({lo:.1%}-{hi:.1%}) | {rec} | "
              f"{comp['all'].total_gflops:.3f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
