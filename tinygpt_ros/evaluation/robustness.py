"""STTF on a moving, real camera: every camera condition, synthetic clips and real-photo streams,
dense against STTF+ANC with and without ego-motion/exposure compensation, in one run.

Why: the held-out quality figures come from clips where the camera never moves and the sensor
has no temporal noise; robots move. Each stream is filmed through one `Camera` (data/camera.py)
and run through three engines of the same backend (onnxruntime by default, the deployment
path): dense, STTF+ANC uncompensated (`motion_compensation=off`, `exposure_compensation=false`)
and STTF+ANC with the shipped defaults (compensated). Per condition we report tokens recomputed
per frame (first frame excluded: it is always a full pass), the frame of an exposure step, wall
latency p50, fidelity against dense on the same frames (cosine of the mean-pooled encoder
output, token-wise cosine, caption agreement) and, on synthetic clips, CIDEr against the
references. Real photos have no references. The motion stage's own cost is timed separately on
640x480 frames, one OpenCV thread.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from tinygpt_ros.data.camera import Camera

SENSOR = {"read_noise": 2.0, "shot_noise": 0.2, "jpeg_quality": 85}  # every condition's sensor
STEP_FRAME = 8  # exposure steps happen on this frame
CONDITIONS: dict[str, Camera] = {
    "still": Camera(**SENSOR),
    "pan 1 px": Camera(pan_px=1, **SENSOR),
    "pan 2 px": Camera(pan_px=2, **SENSOR),
    "pan 4 px": Camera(pan_px=4, **SENSOR),
    "tilt 3 px": Camera(tilt_px=3, **SENSOR),
    "zoom 0.5%": Camera(zoom_pct=0.5, **SENSOR),
    "zoom 1%": Camera(zoom_pct=1.0, **SENSOR),
    "shake 2 px": Camera(shake_px=2, **SENSOR),
    "flicker 5%": Camera(flicker=0.05, flicker_period=5.0, **SENSOR),
    "exposure +20%": Camera(exposure_steps=((STEP_FRAME, 0.2),), **SENSOR),
    "exposure -20%": Camera(exposure_steps=((STEP_FRAME, -0.2),), **SENSOR),
}
MOVING = ("pan 1 px", "pan 2 px", "pan 4 px", "tilt 3 px", "zoom 0.5%", "zoom 1%", "shake 2 px")
PANS = ("pan 1 px", "pan 2 px", "pan 4 px")
CONFIGS: dict[str, dict[str, Any]] = {
    "dense": {"sttf_enabled": False, "anc_enabled": False},
    "STTF+ANC uncompensated": {"motion_compensation": "off", "exposure_compensation": False},
    "STTF+ANC compensated": {},  # the shipped defaults
}
FRAME_SIZE = (480, 640)


@dataclass
class Stream:
    source: str  # "synthetic" | "photo"
    name: str  # clip seed or photo name
    condition: str
    frames: np.ndarray
    clip: Any = None  # synthetic: the Clip (segments with references)


def make_streams(conditions: list[str], clips: int, photos: list[str], frames: int,
                 seed: int = 0) -> list[Stream]:
    """Held-out synthetic "slow" scenes and real photos, each filmed under every condition."""
    from tinygpt_ros.data.photos import photo_stream
    from tinygpt_ros.data.scenes import render_clip, split_seeds

    out = []
    for cond in conditions:
        cam = CONDITIONS[cond]
        for s in split_seeds("test", clips, base_seed=seed):
            clip = render_clip(s, "slow", num_frames=frames, size=FRAME_SIZE, camera=cam)
            out.append(Stream("synthetic", str(s), cond, clip.frames, clip))
        for p in photos:
            out.append(Stream("photo", p, cond, photo_stream(p, cam, frames, seed=seed)))
    return out


def _cos(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.dot(a, b) / max(float(np.linalg.norm(a) * np.linalg.norm(b)), 1e-12))


def run_stream(engine: Any, frames: np.ndarray) -> dict[str, Any]:
    """Per frame: record, caption and the encoder output the engine holds after the step."""
    engine.reset()
    recs, caps, outs = [], [], []
    for f in frames:
        r = engine.process_frame(f)
        recs.append(r.record)
        caps.append(r.caption)
        outs.append(np.array(engine._streams["frame"].last_output, np.float32))
    return {"records": recs, "captions": caps, "outputs": outs}


def measure_motion_stage(frames: np.ndarray, mode: str = "similarity", passes: int = 5) -> float:
    """p50 ms of the motion stage alone (estimate + compensate) on camera frames, one thread,
    over `passes` passes of the stream. Why several: one pass of a 16-frame stream gave p50s
    from 2.1 to 4.3 ms for the same code on this shared VM."""
    import cv2

    from tinygpt_ros import ops
    from tinygpt_ros.ops import motion as M

    threads = cv2.getNumThreads()
    cv2.setNumThreads(1)
    try:
        units = [ops.frame_to_unit(f) for f in frames]  # the resize is preprocessing
        anchor = units[0]
        anchor_gray = M.gray(anchor)
        aspect = frames.shape[1] / frames.shape[2]
        times = []
        for _ in range(passes):
            pred = None
            for unit in units[1:]:
                t0 = time.perf_counter()
                m = ops.estimate_motion(anchor_gray, M.gray(unit), mode, pred, aspect)
                ops.compensate(unit, anchor, m)
                times.append((time.perf_counter() - t0) * 1e3)
                pred = m
    finally:
        cv2.setNumThreads(threads)
    return float(np.median(times))


def run_robustness(model_dir: str | Path, backend: str = "onnxruntime", clips: int = 2,
                   photos: list[str] | None = None, frames: int = 16,
                   conditions: list[str] | None = None, threads: int = 2, seed: int = 0,
                   progress: Callable[[str], None] = lambda _m: None) -> dict[str, Any]:
    from tinygpt_ros.data.photos import PHOTOS
    from tinygpt_ros.deploy.factory import load_engine
    from tinygpt_ros.evaluation.metrics import caption_scores_many
    from tinygpt_ros.runtime.threads import DEFAULT_BLAS_THREADS, apply_thread_limits

    conditions = list(conditions or CONDITIONS)
    unknown = [c for c in conditions if c not in CONDITIONS]
    if unknown:
        raise ValueError(f"unknown conditions {unknown}; known: {list(CONDITIONS)}")
    photos = list(PHOTOS if photos is None else photos)
    if frames <= STEP_FRAME + 1:
        raise ValueError(f"frames must be > {STEP_FRAME + 1} (exposure steps at frame "
                         f"{STEP_FRAME}), got {frames}")
    options = {"threads": threads} if backend == "onnxruntime" else {}
    engines = {}
    for name, knobs in CONFIGS.items():
        e = load_engine(model_dir, backend, **options)
        for k, v in knobs.items():
            e.set_knob(k, v)
        engines[name] = e
    # as the node runs: one BLAS/OpenCV thread next to the engine's own pool; without it,
    # OpenBLAS's default pool competes with onnxruntime's for the same cores
    apply_thread_limits(DEFAULT_BLAS_THREADS, threads)
    t0 = time.perf_counter()
    streams = make_streams(conditions, clips, photos, frames, seed)
    progress(f"{len(streams)} streams of {frames} frames rendered "
             f"({time.perf_counter() - t0:.0f}s)")
    rows: dict[tuple[str, str], dict[str, list]] = {}
    hyps: dict[str, dict[str, str]] = {c: {} for c in CONFIGS}
    refs: dict[str, list[str]] = {}
    for i, st in enumerate(streams):
        runs = {name: run_stream(e, st.frames) for name, e in engines.items()}
        dense = runs["dense"]
        for name, res in runs.items():
            row = rows.setdefault((st.source, st.condition), {}).setdefault(name, {
                "recomputed": [], "step": [], "latency": [], "pooled": [], "tokenwise": [],
                "agree": [], "reanchor": []})
            recs = res["records"]
            row["recomputed"] += [r.tokens_recomputed for r in recs[1:]]
            row["step"].append(recs[STEP_FRAME].tokens_recomputed)
            row["latency"] += [r.total_latency_ms for r in recs[1:]]
            row["reanchor"] += [bool(r.reanchored) for r in recs[1:]]
            for a, b in zip(res["outputs"][1:], dense["outputs"][1:], strict=True):
                row["pooled"].append(_cos(a.mean(0), b.mean(0)))
                num = (a * b).sum(1)
                den = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1) + 1e-12
                row["tokenwise"].append(float((num / den).mean()))
            row["agree"] += [x == y for x, y in zip(res["captions"][1:], dense["captions"][1:],
                                                   strict=True)]
            if st.clip is not None:
                for si, seg in enumerate(st.clip.segments):
                    key = f"{st.condition}|{st.name}|{si}"
                    refs[key] = list(seg.captions)
                    hyps[name][key] = res["captions"][seg.end - 1] or ""
        progress(f"[{i + 1}/{len(streams)}] {st.source} {st.name} {st.condition}")
    cider: dict[str, dict[str, float]] = {}
    if refs:
        for cond in conditions:
            keys = [k for k in refs if k.startswith(cond + "|")]
            if len(keys) >= 2:
                sc = caption_scores_many({c: {k: hyps[c][k] for k in keys} for c in CONFIGS},
                                         {k: refs[k] for k in keys})
                cider[cond] = {c: sc[c]["CIDEr"] for c in CONFIGS}
        moving = [k for k in refs if k.split("|")[0] in MOVING]
        if len(moving) >= 2:
            sc = caption_scores_many({c: {k: hyps[c][k] for k in moving} for c in CONFIGS},
                                     {k: refs[k] for k in moving})
            cider["all moving"] = {c: sc[c]["CIDEr"] for c in CONFIGS}
    table = []
    for (source, cond), per in rows.items():
        for name, r in per.items():
            table.append({
                "source": source, "condition": cond, "config": name,
                "recomputed_pct": 100.0 * float(np.mean(r["recomputed"])) / 196,
                "step_frame_pct": 100.0 * float(np.mean(r["step"])) / 196,
                "latency_p50_ms": float(np.median(r["latency"])),
                "pooled_cosine": float(np.mean(r["pooled"])),
                "tokenwise_cosine": float(np.mean(r["tokenwise"])),
                "caption_agreement": float(np.mean(r["agree"])),
                "reanchor_rate": float(np.mean(r["reanchor"])),
                "frames": len(r["recomputed"]),
            })
    pan_frames = next((s.frames for s in streams if s.source == "photo"
                       and s.condition == "pan 4 px"), streams[0].frames)
    return {
        "backend": backend, "threads": threads, "frames": frames, "clips": clips,
        "photos": photos, "conditions": conditions, "frame_size": list(FRAME_SIZE),
        "step_frame": STEP_FRAME, "sensor": SENSOR, "rows": table, "cider": cider,
        "motion_stage_ms_p50": {
            "translation": measure_motion_stage(pan_frames, "translation"),
            "similarity": measure_motion_stage(pan_frames, "similarity"),
        },
        "seconds": round(time.perf_counter() - t0),
    }


def _row(rep: dict[str, Any], source: str, cond: str, config: str) -> dict[str, Any] | None:
    for r in rep["rows"]:
        if (r["source"], r["condition"], r["config"]) == (source, cond, config):
            return r
    return None


def targets(rep: dict[str, Any]) -> list[tuple[str, str, bool]]:
    """(target, measured, met) for the issue's targets that this report measures."""
    comp, dense = "STTF+ANC compensated", "dense"
    out = []
    for source in ("photo", "synthetic"):
        vals = [r["recomputed_pct"] for c in MOVING
                if (r := _row(rep, source, c, comp)) is not None]
        if vals:
            worst = max(vals)
            out.append((f"moving camera ({source}): <= 30% recomputed per frame, each condition",
                        f"worst {worst:.1f}%", worst <= 30.0))
        r = _row(rep, source, "flicker 5%", comp)
        if r:
            out.append((f"flicker +-5% ({source}): <= 10%", f"{r['recomputed_pct']:.1f}%",
                        r["recomputed_pct"] <= 10.0))
        for step in ("exposure +20%", "exposure -20%"):
            r = _row(rep, source, step, comp)
            if r:
                out.append((f"{step} ({source}): <= 10% on the step frame",
                            f"{r['step_frame_pct']:.1f}%", r["step_frame_pct"] <= 10.0))
        lat = [(_row(rep, source, c, comp), _row(rep, source, c, dense)) for c in PANS]
        lat = [(a["latency_p50_ms"], b["latency_p50_ms"]) for a, b in lat if a and b]
        if lat:
            ratio = float(np.mean([a / b for a, b in lat]))
            out.append((f"latency p50 on pans ({source}) <= 0.5 x dense",
                        f"{ratio:.2f} x dense", ratio <= 0.5))
    c = rep["cider"].get("all moving")
    if c and c.get(dense, 0) > 0:
        ratio = c[comp] / c[dense]
        out.append(("synthetic moving clips: CIDEr >= 97% of dense", f"{100 * ratio:.1f}%",
                    ratio >= 0.97))
    ms = rep["motion_stage_ms_p50"]["similarity"]
    out.append(("motion stage <= 2 ms at 640x480, one core (similarity)", f"{ms:.2f} ms",
                ms <= 2.0))
    return out


def robustness_markdown(rep: dict[str, Any], command: str) -> str:
    lines = [
        "# Robustness: STTF on a moving, real camera", "",
        f"Command: `{command}`", "",
        f"- backend {rep['backend']} ({rep['threads']} threads), {rep['frames']} frames per "
        f"stream at {rep['frame_size'][1]}x{rep['frame_size'][0]}; {rep['clips']} held-out "
        f"synthetic 'slow' clips and photos {', '.join(rep['photos'])} per condition; every "
        f"condition has sensor noise (read {rep['sensor']['read_noise']} DN, shot "
        f"{rep['sensor']['shot_noise']} DN/DN) and JPEG q{rep['sensor']['jpeg_quality']}.",
        f"- recomputed: mean tokens recomputed per frame out of 196 (first frame excluded); "
        f"step: the frame of the exposure step (frame {rep['step_frame']}); cosines and caption "
        "agreement against the dense engine on the same frames; latency: engine wall time p50 "
        f"(one run on a shared machine). Took {rep['seconds']} s.", "",
        "## Targets", "", "| target | measured | met |", "|---|---|---|",
    ]
    for t, m, ok in targets(rep):
        lines.append(f"| {t} | {m} | {'yes' if ok else '**no**'} |")
    for source in ("synthetic", "photo"):
        lines += ["", f"## {source} streams", "",
                  "| condition | config | recomputed | step frame | re-anchor rate | latency p50 "
                  "ms | pooled cos | token cos | caption agreement |",
                  "|---|---|---|---|---|---|---|---|---|"]
        for cond in rep["conditions"]:
            for config in CONFIGS:
                r = _row(rep, source, cond, config)
                if r is None:
                    continue
                lines.append(
                    f"| {cond} | {config} | {r['recomputed_pct']:.1f}% | "
                    f"{r['step_frame_pct']:.1f}% | {r['reanchor_rate']:.2f} | "
                    f"{r['latency_p50_ms']:.1f} | {r['pooled_cosine']:.3f} | "
                    f"{r['tokenwise_cosine']:.3f} | {100 * r['caption_agreement']:.0f}% |")
    if rep["cider"]:
        lines += ["", "## CIDEr on synthetic clips (references of the scene; the camera does "
                  "not change them)", "", "| condition | " + " | ".join(CONFIGS) + " |",
                  "|---|" + "---|" * len(CONFIGS)]
        for cond, c in rep["cider"].items():
            lines.append(f"| {cond} | " + " | ".join(f"{c[k]:.3f}" for k in CONFIGS) + " |")
    ms = rep["motion_stage_ms_p50"]
    lines += ["", f"Motion stage alone (estimate + compensate, one OpenCV thread, 640x480 "
              f"input, the first photo's 4 px/frame pan, 5 passes): translation "
              f"{ms['translation']:.2f} ms, similarity {ms['similarity']:.2f} ms p50.", ""]
    return "\n".join(lines)


def robustness_plot(rep: dict[str, Any], path: str | Path) -> None:
    """Bar chart: tokens recomputed per condition, per config, synthetic and photo panels."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    conds = rep["conditions"]
    fig, axes = plt.subplots(2, 1, figsize=(11, 7), sharex=True)
    width = 0.8 / len(CONFIGS)
    for ax, source in zip(axes, ("synthetic", "photo"), strict=True):
        for i, config in enumerate(CONFIGS):
            vals = [(_row(rep, source, c, config) or {}).get("recomputed_pct", 0.0)
                    for c in conds]
            ax.bar(np.arange(len(conds)) + (i - 1) * width, vals, width, label=config)
        ax.axhline(30, color="grey", ls="--", lw=0.8)
        ax.set_ylabel("% tokens recomputed")
        ax.set_title(f"{source} streams")
        ax.set_ylim(0, 105)
    axes[0].legend(fontsize=8)
    axes[1].set_xticks(np.arange(len(conds)), conds, rotation=30, ha="right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_report(rep: dict[str, Any], out_dir: str | Path, command: str) -> dict[str, Path]:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"markdown": out / "robustness.md", "json": out / "robustness.json",
             "plot": out / "robustness.png"}
    paths["markdown"].write_text(robustness_markdown(rep, command))
    paths["json"].write_text(json.dumps(rep, indent=1))
    robustness_plot(rep, paths["plot"])
    return paths
