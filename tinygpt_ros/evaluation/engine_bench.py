"""`tinygpt-ros bench-engines`: onnxruntime vs torch engine, per frame, on CPU (ratios, one run).

Both engines stream the same held-out clips at each motion level (still / slow / busy) with the
default knobs; the engines alternate clip by clip so background load hits both alike. Reported:
wall time per frame (p50, mean) and its ratio, per-stage time ratios, and how often the two
engines agree (caption, branch, tokens recomputed). Absolute times depend on the machine; the
ratios are the result. Needs the ONNX export (`tinygpt-ros export`); an fp16 export, when
present, is measured too (fp16 on a CPU is not what it is for: informative only).
"""

from __future__ import annotations

import argparse
import json
import logging
import platform
import shlex
import time
from pathlib import Path
from typing import Any

import numpy as np

from tinygpt_ros.runtime.threads import DEFAULT_BLAS_THREADS, apply_thread_limits
from tinygpt_ros.spec.types import STAGES

logger = logging.getLogger(__name__)

MOTIONS = ("still", "slow", "busy")


def _stream(engine: Any, clip: Any) -> tuple[list[float], list[Any]]:
    engine.reset()
    wall, results = [], []
    for frame, stamp in zip(clip.frames, clip.timestamps_us, strict=True):
        t0 = time.perf_counter()
        res = engine.process_frame(frame, int(stamp))
        wall.append((time.perf_counter() - t0) * 1e3)
        results.append(res)
    return wall, results


def _summary(wall: list[float], results: list[Any]) -> dict[str, Any]:
    stages = {s: float(np.mean([r.record.latency_ms.get(s, 0.0) for r in results]))
              for s in STAGES}
    return {
        "frames": len(wall),
        "ms_p50": float(np.percentile(wall, 50)),
        "ms_p95": float(np.percentile(wall, 95)),
        "ms_mean": float(np.mean(wall)),
        "stage_ms_mean": {k: v for k, v in stages.items() if v > 0},
        "gflops_mean": float(np.mean([r.record.total_flops for r in results])) / 1e9,
        "recomputed_pct": 100.0 * float(np.mean([r.record.tokens_recomputed / r.record.tokens_in
                                                 for r in results])),
    }


def run(model_dir: str | Path, clips_per_motion: int = 4, frames: int = 40, threads: int = 2,
        seed: int = 0, log: Any = None) -> dict[str, Any]:
    import torch

    from tinygpt_ros.data.scenes import make_clips
    from tinygpt_ros.deploy.graphs import graph_file
    from tinygpt_ros.deploy.onnx_engine import OnnxEngine
    from tinygpt_ros.model.weights import load_manifest
    from tinygpt_ros.runtime.torch_engine import TorchEngine

    if clips_per_motion < 1 or frames < 1:
        raise ValueError(f"clips_per_motion and frames must be >= 1, got {clips_per_motion}, "
                         f"{frames}")
    apply_thread_limits(DEFAULT_BLAS_THREADS, threads)  # torch's intra-op pool, BLAS, OpenCV
    engines: dict[str, Any] = {"torch": TorchEngine.from_dir(model_dir),
                               "onnxruntime": OnnxEngine.from_dir(model_dir, threads=threads)}
    if graph_file("router", "fp16") in load_manifest(model_dir)["files"]:
        engines["onnxruntime-fp16"] = OnnxEngine.from_dir(model_dir, precision="fp16",
                                                          threads=threads)
    warm = make_clips("test", 1, motion="slow", base_seed=seed + 1, num_frames=4)[0]
    for e in engines.values():
        _stream(e, warm)
    per_motion: dict[str, Any] = {}
    for motion in MOTIONS:
        clips = make_clips("test", clips_per_motion, motion=motion, base_seed=seed,
                           num_frames=frames)
        wall: dict[str, list[float]] = {n: [] for n in engines}
        res: dict[str, list[Any]] = {n: [] for n in engines}
        for i, clip in enumerate(clips):
            order = list(engines) if i % 2 == 0 else list(reversed(engines))
            for name in order:
                w, r = _stream(engines[name], clip)
                wall[name] += w
                res[name] += r
        row: dict[str, Any] = {n: _summary(wall[n], res[n]) for n in engines}
        ref = row["torch"]
        for name in engines:
            if name == "torch":
                continue
            pairs = list(zip(res["torch"], res[name], strict=True))
            row[name]["ratio_vs_torch"] = {
                "ms_mean": row[name]["ms_mean"] / ref["ms_mean"],
                "ms_p50": row[name]["ms_p50"] / ref["ms_p50"],
                "stages": {s: row[name]["stage_ms_mean"].get(s, 0.0) / v
                           for s, v in ref["stage_ms_mean"].items() if v > 0},
            }
            row[name]["agreement_vs_torch"] = {
                "caption": float(np.mean([x.caption == y.caption for x, y in pairs])),
                "branch": float(np.mean([x.record.branch == y.record.branch for x, y in pairs])),
                "tokens_recomputed": float(np.mean([
                    x.record.tokens_recomputed == y.record.tokens_recomputed for x, y in pairs])),
            }
        per_motion[motion] = row
        (log or logger.info)(f"{motion}: " + ", ".join(
            f"{n} {row[n]['ms_mean']:.2f} ms" for n in engines))
    return {
        "model": str(model_dir),
        "clips_per_motion": clips_per_motion,
        "frames_per_clip": frames,
        "threads": threads,
        "engines": list(engines),
        "providers": {n: getattr(e, "providers", ["torch-cpu"]) for n, e in engines.items()},
        "machine": {"python": platform.python_version(), "processor": platform.machine(),
                    "torch": torch.__version__, "onnxruntime": _ort_version()},
        "motions": per_motion,
    }


def _ort_version() -> str:
    import onnxruntime

    return onnxruntime.__version__


def markdown(report: dict[str, Any], command: str) -> str:
    others = [n for n in report["engines"] if n != "torch"]
    lines = [
        "## onnxruntime vs torch engine (CPU, per frame)",
        "",
        f"{report['clips_per_motion']} held-out clips x {report['frames_per_clip']} frames per "
        f"motion level, {report['threads']} thread(s), default knobs, one run; engines "
        f"alternate clip by clip. Ratios < 1: onnxruntime is faster. Reproduce: `{command}`",
        "",
        "| motion | engine | ms/frame p50 | ms/frame mean | ratio vs torch (mean) | "
        "encoder ratio | decoder ratio | caption agree | branch agree |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for motion, row in report["motions"].items():
        t = row["torch"]
        lines.append(f"| {motion} | torch | {t['ms_p50']:.2f} | {t['ms_mean']:.2f} | 1.00 | "
                     "1.00 | 1.00 | - | - |")
        for n in others:
            r = row[n]
            rat = r["ratio_vs_torch"]
            ag = r["agreement_vs_torch"]
            enc = rat["stages"].get("encoder", float("nan"))
            dec = rat["stages"].get("decoder", float("nan"))
            lines.append(
                f"| {motion} | {n} | {r['ms_p50']:.2f} | {r['ms_mean']:.2f} | "
                f"{rat['ms_mean']:.2f} | {enc:.2f} | {dec:.2f} | {100 * ag['caption']:.0f}% | "
                f"{100 * ag['branch']:.0f}% |"
            )
    lines.append("")
    return "\n".join(lines)


def main(args: argparse.Namespace) -> int:
    command = shlex.join(["tinygpt-ros", "bench-engines", "--model", str(args.model),
                          "--clips-per-motion", str(args.clips_per_motion), "--frames",
                          str(args.frames), "--threads", str(args.threads), "--out",
                          str(args.out)])
    report = run(args.model, args.clips_per_motion, args.frames, args.threads)
    report["command"] = command
    md = markdown(report, command)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)  # the command owns this directory: overwritten
    (out / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    (out / "report.md").write_text(md)
    if getattr(args, "markdown", None):
        from tinygpt_ros.evaluation.bench import write_markdown_section

        write_markdown_section(args.markdown, md, name="bench-engines")
    return 0
