"""Model quality on held-out generated clips: dense vs STTF vs ANC vs STTF+ANC, in one run.

Each configuration streams the same clips through the same engine frame by frame (the way the
node does), takes the caption shown at each segment's last frame as that segment's hypothesis,
and scores all segments at once with pycocoevalcap (CIDEr needs a few hundred items to be
stable). Compute is reported per motion level from the engine's own records.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from tinygpt_ros.evaluation.attributes import (
    ATTRIBUTES,
    attribute_accuracy,
    reference_ceiling,
)
from tinygpt_ros.evaluation.metrics import caption_scores_many, cider_ratio_intervals
from tinygpt_ros.spec.types import ComputeRecord, Engine

CAPTION_CONFIGS: dict[str, dict[str, bool]] = {
    "dense": {"sttf_enabled": False, "anc_enabled": False},
    "sttf": {"sttf_enabled": True, "anc_enabled": False},
    "anc": {"sttf_enabled": False, "anc_enabled": True},
    "sttf+anc": {"sttf_enabled": True, "anc_enabled": True},
}
BOOTSTRAP_RESAMPLES = 200  # clip resamples for the CIDEr-vs-dense interval (about 1 min)
GESTURE_CONFIGS: dict[str, dict[str, bool]] = {
    "dense": {"sttf_enabled": False, "anc_enabled": False},
    "sttf": {"sttf_enabled": True, "anc_enabled": False},
    "sttf+anc": {"sttf_enabled": True, "anc_enabled": True},
}


@dataclass
class ComputeSummary:
    frames: int = 0
    recomputed_pct: float = 0.0
    fused_tokens: float = 0.0
    encoder_gflops: float = 0.0
    total_gflops: float = 0.0
    measured_gflops: float = 0.0  # run-time counted (records' measured_flops); 0 = not counted
    dense_gflops: float = 0.0
    latency_ms_p50: float = 0.0
    latency_ms_p95: float = 0.0
    caption_reuse_pct: float = 0.0
    branches: dict[str, int] = field(default_factory=dict)

    @classmethod
    def of(cls, records: Sequence[ComputeRecord]) -> ComputeSummary:
        if not records:
            return cls()
        lat = np.array([r.total_latency_ms for r in records])
        branches: dict[str, int] = defaultdict(int)
        for r in records:
            branches[r.branch] += 1
        return cls(
            frames=len(records),
            recomputed_pct=100.0 * float(np.mean([r.tokens_recomputed / r.tokens_in
                                                  for r in records])),
            fused_tokens=float(np.mean([r.tokens_fused for r in records])),
            encoder_gflops=float(np.mean([r.encoder_flops for r in records])) / 1e9,
            total_gflops=float(np.mean([r.total_flops for r in records])) / 1e9,
            measured_gflops=float(np.mean([r.measured_total_flops for r in records])) / 1e9,
            dense_gflops=float(np.mean([r.dense_flops for r in records])) / 1e9,
            latency_ms_p50=float(np.percentile(lat, 50)),
            latency_ms_p95=float(np.percentile(lat, 95)),
            caption_reuse_pct=100.0 * float(np.mean([r.caption_reused for r in records])),
            branches=dict(sorted(branches.items())),
        )


BLIND = "blind"  # the row of one fixed caption for every segment


def blind_caption(n_clips: int | None = None, num_frames: int | None = None) -> str:
    """A blind captioner's answer: the most common caption of the training split (by default
    the shipped recipe's, `train.recipe.PRESETS["full"]`). The floor a captioner must beat on
    every metric before compressing it means anything."""
    from collections import Counter

    from tinygpt_ros.data.scenes import clip_segments, motion_for_seed, split_seeds

    if n_clips is None or num_frames is None:
        from tinygpt_ros.train.recipe import PRESETS

        full = PRESETS["full"]
        n_clips = full.train_clips if n_clips is None else n_clips
        num_frames = full.clip_frames if num_frames is None else num_frames
    counts: Counter[str] = Counter()
    for seed in split_seeds("train", n_clips):
        for seg in clip_segments(seed, motion_for_seed(seed), num_frames):
            counts.update(seg.captions)
    return counts.most_common(1)[0][0]


def run_caption_stream(engine: Engine, clip: Any) -> tuple[list[str], list[ComputeRecord]]:
    """Stream one clip; returns the caption shown at each segment's last frame, and records."""
    engine.reset()
    shown: list[str] = []
    records = []
    for frame, stamp in zip(clip.frames, clip.timestamps_us, strict=True):
        res = engine.process_frame(frame, int(stamp))
        shown.append(res.caption or "")
        records.append(res.record)
    return [shown[seg.end - 1] for seg in clip.segments], records


def evaluate_captions(
    engine: Engine,
    clips: Sequence[Any],
    configs: dict[str, dict[str, bool]] | None = None,
    progress: Callable[[str], None] | None = None,
    n_boot: int = BOOTSTRAP_RESAMPLES,
) -> dict[str, Any]:
    """Every config over the clips; scores, compute by motion level, and (with a "dense"
    config) a 95% paired-bootstrap interval over clips of each config's CIDEr vs dense."""
    configs = configs or CAPTION_CONFIGS
    refs: dict[int, list[str]] = {}
    clip_of: dict[int, int] = {}  # segment -> clip, the bootstrap's resampling unit
    segments = []
    for ci, clip in enumerate(clips):
        for seg in clip.segments:
            clip_of[len(refs)] = ci
            refs[len(refs)] = list(seg.captions)
            segments.append(seg)
    hyps: dict[str, dict[int, str]] = {}
    compute: dict[str, dict[str, ComputeSummary]] = {}
    examples: dict[str, list[tuple[str, str]]] = {}
    base = engine.knobs()
    for name, knobs in configs.items():
        t0 = time.perf_counter()
        for k, v in {**base, **knobs}.items():
            engine.set_knob(k, v)
        by_motion: dict[str, list[ComputeRecord]] = defaultdict(list)
        hyps[name] = {}
        seg_id = 0
        for clip in clips:
            caps, records = run_caption_stream(engine, clip)
            by_motion[clip.motion].extend(records)
            by_motion["all"].extend(records)
            for cap in caps:
                hyps[name][seg_id] = cap
                seg_id += 1
        compute[name] = {m: ComputeSummary.of(r) for m, r in by_motion.items()}
        examples[name] = [(hyps[name][i], refs[i][0]) for i in list(refs)[:5]]
        if progress:
            progress(f"{name}: {len(clips)} clips in {time.perf_counter() - t0:.0f}s")
    for k, v in base.items():
        engine.set_knob(k, v)
    blind = blind_caption()
    scored = {**hyps, BLIND: dict.fromkeys(refs, blind)}
    scores = caption_scores_many(scored, refs)
    intervals = {}
    if "dense" in hyps and n_boot > 0:
        intervals = cider_ratio_intervals(hyps, refs, clip_of, "dense", n_boot=n_boot)
    attributes = {name: attribute_accuracy([h[i] for i in refs], segments)
                  for name, h in scored.items()}
    return {"segments": len(refs), "scores": scores, "compute": compute, "examples": examples,
            "cider_vs_dense_interval": intervals, "blind_caption": blind,
            "attributes": attributes, "attribute_ceiling": reference_ceiling(segments)}


def evaluate_gestures(
    engine: Engine,
    clips: Sequence[Any],
    window_us: int,
    configs: dict[str, dict[str, bool]] | None = None,
    warmup_windows: int = 2,
) -> dict[str, Any]:
    """Per clip: majority vote of per-window predictions after `warmup_windows`."""
    from tinygpt_ros.train.recipe import event_windows

    configs = configs or GESTURE_CONFIGS
    base = engine.knobs()
    out: dict[str, Any] = {}
    for name, knobs in configs.items():
        for k, v in {**base, **knobs}.items():
            engine.set_knob(k, v)
        correct = 0
        records = []
        for clip in clips:
            engine.reset()
            votes: dict[str, int] = defaultdict(int)
            for i, win in enumerate(event_windows(clip.events, window_us)):
                res = engine.process_events(win, int(win["t"][0]) if len(win) else None)
                records.append(res.record)
                if i >= warmup_windows and res.gesture:
                    votes[res.gesture] += 1
            pred = max(votes, key=votes.get) if votes else None
            correct += int(pred == clip.label)
        out[name] = {"accuracy": correct / max(1, len(clips)),
                     "compute": ComputeSummary.of(records)}
    for k, v in base.items():
        engine.set_knob(k, v)
    out["clips"] = len(clips)
    return out


def quality_markdown(cap: dict[str, Any], ges: dict[str, Any] | None, command: str) -> str:
    lines = [
        "## Caption quality and compute (held-out clips)",
        "",
        f"{cap['segments']} held-out segments, scored together with pycocoevalcap. "
        f"Reproduce: `{command}`",
        "",
        "| config | BLEU-4 | METEOR | ROUGE-L | CIDEr | CIDEr vs dense | 95% interval* |",
        "|---|---|---|---|---|---|---|",
    ]
    dense_cider = cap["scores"].get("dense", {}).get("CIDEr") or float("nan")
    intervals = cap.get("cider_vs_dense_interval") or {}
    for name, s in cap["scores"].items():
        iv = intervals.get(name)
        iv_text = f"{100 * iv[0]:.1f}% – {100 * iv[1]:.1f}%" if iv else "–"
        lines.append(
            f"| {name} | {s['BLEU-4']:.3f} | {s['METEOR']:.3f} | {s['ROUGE-L']:.3f} | "
            f"{s['CIDEr']:.3f} | {100 * s['CIDEr'] / dense_cider:.1f}% | {iv_text} |"
        )
    if intervals:
        lines += ["", "\\* CIDEr vs dense over paired bootstrap resamples of whole clips "
                  f"({BOOTSTRAP_RESAMPLES} resamples, same clips for every config)."]
    if cap.get("blind_caption"):
        lines += ["", f"`{BLIND}` is one fixed caption for every segment, the most common of "
                  f"the training split: \"{cap['blind_caption']}\"."]
    if cap.get("attributes"):
        lines += ["", "What the captions state right (`evaluation/attributes.py`; background "
                  "on still segments only; an attribute not stated counts as wrong; "
                  "`references` is the segments' own references, the ceiling):", "",
                  "| config | " + " | ".join(ATTRIBUTES) + " |",
                  "|---|" + "---|" * len(ATTRIBUTES)]
        rows = {**cap["attributes"], "references": cap["attribute_ceiling"]}
        for name, acc in rows.items():
            lines.append(f"| {name} | " + " | ".join(
                f"{100 * acc[a]['accuracy']:.1f}%" for a in ATTRIBUTES) + " |")
    lines += [
        "",
        "Per frame, by motion level (tokens recomputed of 196; encoder and total GFLOPs "
        "against the dense model's):",
        "",
        "| config | motion | frames | recomputed | fused tokens | encoder GFLOPs | "
        "total GFLOPs | dense GFLOPs | encoder vs dense | caption reuse | branches |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    dense_enc = {m: c.encoder_gflops for m, c in cap["compute"].get("dense", {}).items()}
    for name, per in cap["compute"].items():
        for motion in ("still", "slow", "busy", "all"):
            c = per.get(motion)
            if c is None:
                continue
            ref = dense_enc.get(motion) or float("nan")
            br = ", ".join(f"{k}:{v}" for k, v in c.branches.items())
            lines.append(
                f"| {name} | {motion} | {c.frames} | {c.recomputed_pct:.1f}% | "
                f"{c.fused_tokens:.0f} | {c.encoder_gflops:.4f} | {c.total_gflops:.4f} | "
                f"{c.dense_gflops:.4f} | {100 * c.encoder_gflops / ref:.1f}% | "
                f"{c.caption_reuse_pct:.0f}% | {br} |"
            )
    if ges:
        lines += [
            "",
            f"## Gesture accuracy ({ges['clips']} held-out event clips)",
            "",
            "| config | accuracy | tokens recomputed / window | tokens fused | token reduction "
            "vs 196 |",
            "|---|---|---|---|---|",
        ]
        for name, g in ges.items():
            if name == "clips":
                continue
            c = g["compute"]
            lines.append(
                f"| {name} | {100 * g['accuracy']:.1f}% | {c.recomputed_pct * 1.96:.1f} | "
                f"{c.fused_tokens:.1f} | {100 * (1 - c.fused_tokens / 196):.1f}% |"
            )
    return "\n".join(lines) + "\n"
