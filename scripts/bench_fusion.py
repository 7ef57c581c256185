"""Cost of numpy temporal fusion on the frames that matter: per call, and against the other
stages of a reused frame (no encoder run), onnxruntime engine, the node's thread limits.

    .venv/bin/python scripts/bench_fusion.py
    # the same for another version of the package (e.g. before a change):
    git archive <commit> tinygpt_ros | tar -x -C /tmp/old
    PYTHONPATH=/tmp/old .venv/bin/python scripts/bench_fusion.py

Per-call figures are CPU time (time.process_time, one thread), min over passes, so other
processes on a shared machine disturb them less than wall time; stage figures are the engine's
own wall-clock stage timers, medians.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np  # loaded before the thread limits so they apply to its BLAS


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default=str(Path(__file__).resolve().parents[1] / "models"
                                          / "tinygpt"))
    p.add_argument("--clips", type=int, default=3, help="clips per motion level")
    p.add_argument("--frames", type=int, default=32)
    p.add_argument("--passes", type=int, default=5)
    args = p.parse_args()

    from threadpoolctl import threadpool_limits

    import tinygpt_ros
    from tinygpt_ros import ops
    from tinygpt_ros.data.scenes import render_clip, split_seeds
    from tinygpt_ros.deploy.onnx_engine import OnnxEngine

    threadpool_limits(1)
    engine = OnnxEngine.from_dir(args.model, threads=1)
    calls = []
    fuse = engine.kernels.fuse

    def spy(window, max_tokens, static_threshold):
        calls.append(window.shape[0])
        return fuse(window, max_tokens, static_threshold)

    engine.kernels.fuse = spy
    windows = []  # every frame's window, whether or not the engine fused it again
    max_tokens = engine.knobs()["max_fused_tokens"]
    stages: dict[str, list[float]] = {}
    reused = 0
    for motion in ("still", "slow", "busy"):
        for seed in split_seeds("test", args.clips, 100):
            clip = render_clip(seed, motion, args.frames, (480, 640), 8.0)
            engine.reset()
            for frame in clip.frames:
                rec = engine.process_frame(frame).record
                windows.append((np.stack(list(engine._streams["frame"].window)), max_tokens,
                                0.1))
                if rec.tokens_recomputed == 0:
                    reused += 1
                    for name, ms in rec.latency_ms.items():
                        stages.setdefault(name, []).append(ms)
    te, pw = engine.kernels.time_embed, engine.cfg.fusion_pos_weight
    full = [w for w in windows if w[0].shape[0] == te.shape[0]]
    best = float("inf")
    for _ in range(args.passes):
        t0 = time.process_time()
        for window, max_tokens, threshold in full:
            ops.temporal_fusion(window, te, max_tokens, threshold, pw)
        best = min(best, (time.process_time() - t0) / len(full) * 1e3)
    print(f"package: {Path(tinygpt_ros.__file__).parent}")
    print(f"temporal_fusion per call: {best:.3f} ms CPU (min of {args.passes} passes over "
          f"{len(full)} full windows)")
    print(f"fusion calls: {len(calls)} for {len(windows)} frames")
    medians = {k: float(np.median(v)) for k, v in stages.items()}
    print(f"reused frames ({reused}), stage medians ms: "
          + ", ".join(f"{k} {v:.3f}" for k, v in medians.items()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
