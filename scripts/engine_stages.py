"""Per-stage time of the engine the node runs, in this process, on the streams bench-node sends.

Why: `tinygpt-ros bench-node` reports the engine time per frame inside the running node; this
script gives the same engine (onnxruntime, the node's default thread limits, shipped knobs) the
same 640x480 generated streams in a plain loop, with nothing else in the process, so the two
can be compared: the difference is what the node's other threads and processes cost the engine.

    .venv/bin/python scripts/engine_stages.py --streams still slow pan busy

Wall-clock medians over the frames after the first 10 (the stream loops twice); stage figures
are the engine's own stage timers.
"""

from __future__ import annotations

import argparse
import time

import numpy as np  # loaded before the thread limits so they apply to its BLAS
from node_engine import DEFAULT_MODEL, node_engine  # scripts/, next to this file


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default=DEFAULT_MODEL)
    p.add_argument("--streams", nargs="+", default=["still", "slow", "pan", "busy"])
    args = p.parse_args()

    from tinygpt_ros.evaluation.node_bench import CAMERA_HZ, generated_stream
    from tinygpt_ros.spec.types import STAGES

    engine = node_engine(args.model)
    period_us = round(1e6 / CAMERA_HZ)
    print("| stream | frame p50 ms | tokens recomputed | caption reused | "
          + " | ".join(STAGES) + " |")
    print("|---" * (4 + len(STAGES)) + "|")
    for name in args.streams:
        stream = generated_stream(name)
        engine.reset()
        walls, records = [], []
        for k, frame in enumerate(stream.frames * 2):
            t0 = time.perf_counter()
            result = engine.process_frame(frame, k * period_us)
            walls.append((time.perf_counter() - t0) * 1e3)
            records.append(result.record)
        walls, records = walls[10:], records[10:]
        stages = [float(np.median([r.latency_ms.get(s, 0.0) for r in records])) for s in STAGES]
        print(f"| {name} | {np.median(walls):.1f} | "
              f"{np.mean([r.tokens_recomputed for r in records]):.1f} | "
              f"{np.mean([r.caption_reused for r in records]):.0%} | "
              + " | ".join(f"{v:.2f}" for v in stages) + " |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
