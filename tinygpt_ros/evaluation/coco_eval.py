"""`tinygpt-ros eval-coco`: caption quality of any engine on a COCO-format captions file and its
image folder (for example COCO val2017 with a local GIT checkpoint), dense against STTF+ANC.

Each image is streamed as `frames_per_image` identical camera frames (default 1: one image, one
caption; more frames let STTF's reuse and fusion act as on a camera that stands still) through
one engine per configuration, and the last frame's caption is scored with BLEU-4, METEOR,
ROUGE-L and CIDEr-D (`metrics.caption_scores_many`, all configs on the same references).
Tokens recomputed and per-frame wall time are reported next to the scores.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from tinygpt_ros.data.coco import coco_refs
from tinygpt_ros.evaluation.configs import full_knobs, parse_configs
from tinygpt_ros.runtime.threads import (
    DEFAULT_BLAS_THREADS,
    DEFAULT_INTRA_OP_THREADS,
    apply_thread_limits,
)


def load_coco(captions: str | Path, images: str | Path, limit: int = 0
              ) -> tuple[dict[int, list[str]], dict[int, Path]]:
    """(references per image id, image path per id) of the images that have captions; the
    first `limit` images by id (0 = all). ValueError names what is missing."""
    p = Path(captions)
    try:
        data = json.loads(p.read_text("utf8"))
    except FileNotFoundError:
        raise ValueError(f"captions file {str(p)!r} does not exist") from None
    except json.JSONDecodeError as exc:
        raise ValueError(f"captions file {str(p)!r} is not valid JSON: {exc}") from None
    refs = {k: v for k, v in coco_refs(data).items() if v}
    folder = Path(images)
    if not folder.is_dir():
        raise ValueError(f"image folder {str(folder)!r} does not exist")
    names = {int(im["id"]): folder / str(im["file_name"]) for im in data.get("images", [])}
    ids = sorted(refs)[: limit or None]
    missing = [str(names.get(i, i)) for i in ids if i not in names or not names[i].is_file()]
    if missing:
        raise ValueError(f"{len(missing)} image(s) of {str(p)!r} are not in {str(folder)!r}, "
                         f"e.g. {missing[:3]}")
    return {i: refs[i] for i in ids}, {i: names[i] for i in ids}


def read_rgb(path: Path) -> np.ndarray:
    img = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if img is None:
        raise ValueError(f"image {str(path)!r} cannot be decoded")
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


def run(model_dir: str | Path, captions: str | Path, images: str | Path,
        configs: Sequence[str] = ("dense", "sttf+anc"), limit: int = 0,
        frames_per_image: int = 1, backend: str = "torch", log: Any = print,
        threads: int = DEFAULT_INTRA_OP_THREADS) -> dict[str, Any]:
    """Caption every image with each config. The ms per frame are taken under the node's
    thread limits (`runtime.threads`; `threads` is the intra-op count), as the node runs."""
    from tinygpt_ros.deploy.factory import load_engine
    from tinygpt_ros.evaluation.metrics import caption_scores_many

    if frames_per_image < 1:
        raise ValueError(f"frames_per_image must be >= 1, got {frames_per_image}")
    refs, paths = load_coco(captions, images, limit)
    knobs = {name: full_knobs(over) for name, over in parse_configs(list(configs)).items()}
    engine = load_engine(model_dir, backend=backend, threads=threads)
    # after the engine is built: threadpoolctl caps only the pools already loaded
    thread_report = apply_thread_limits(DEFAULT_BLAS_THREADS, threads)
    hyps: dict[str, dict[int, str]] = {name: {} for name in knobs}
    cost: dict[str, dict[str, list[float]]] = {n: {"ms": [], "recomputed": []} for n in knobs}
    for n_done, (image_id, path) in enumerate(paths.items(), 1):
        frame = read_rgb(path)
        for name, values in knobs.items():
            for knob, value in values.items():
                engine.set_knob(knob, value)
            engine.reset()
            for _ in range(frames_per_image):
                t0 = time.perf_counter()
                result = engine.process_frame(frame)
                cost[name]["ms"].append((time.perf_counter() - t0) * 1e3)
                cost[name]["recomputed"].append(result.record.tokens_recomputed)
            hyps[name][image_id] = result.caption or ""
        if n_done % 50 == 0:
            log(f"[eval-coco] {n_done}/{len(paths)} images")
    close = getattr(engine, "close", None)
    if callable(close):
        close()
    scores = caption_scores_many(hyps, refs)
    return {
        "model": str(model_dir), "captions": str(captions), "images": str(images),
        "num_images": len(refs), "frames_per_image": frames_per_image,
        "threads": thread_report.summary(),
        "configs": {name: {"knobs": knobs[name], "scores": scores[name],
                           "ms_per_frame_mean": float(np.mean(cost[name]["ms"])),
                           "tokens_recomputed_mean": float(np.mean(cost[name]["recomputed"]))}
                    for name in knobs},
        "hypotheses": {name: {str(k): v for k, v in h.items()} for name, h in hyps.items()},
    }


def markdown(rep: dict[str, Any]) -> str:
    lines = [f"{rep['num_images']} images of {rep['captions']}, {rep['frames_per_image']} "
             "frame(s) per image", "",
             "| config | BLEU-4 | METEOR | ROUGE-L | CIDEr | ms/frame | tokens recomputed |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for name, c in rep["configs"].items():
        s = c["scores"]
        lines.append(f"| {name} | {s['BLEU-4']:.3f} | {s['METEOR']:.3f} | {s['ROUGE-L']:.3f} | "
                     f"{s['CIDEr']:.3f} | {c['ms_per_frame_mean']:.0f} | "
                     f"{c['tokens_recomputed_mean']:.0f} |")
    return "\n".join(lines) + "\n"
