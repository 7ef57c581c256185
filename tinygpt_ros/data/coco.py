"""COCO caption JSON for generated clips: one COCO "image" per clip segment.

Why: pycocotools / pycocoevalcap and most captioning tools speak the COCO captions format, so
references are written in it, and real COCO-format caption files load through the same helper.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from tinygpt_ros.data.scenes import Clip, make_clips


def clips_to_coco(clips: Iterable[Clip], description: str = "tinygpt_ros generated clips"
                  ) -> dict[str, Any]:
    """COCO captions dict; image ids count from 1 over all segments in clip order."""
    images: list[dict[str, Any]] = []
    annotations: list[dict[str, Any]] = []
    for clip in clips:
        for si, seg in enumerate(clip.segments):
            image_id = len(images) + 1
            images.append({
                "id": image_id,
                "file_name": f"clip{clip.seed:08d}_seg{si:02d}_{seg.start}-{seg.end}",
                "clip_seed": int(clip.seed),
                "segment": si,
                "start": int(seg.start),
                "end": int(seg.end),
                "kind": seg.kind,
                "motion": clip.motion,
                "height": int(clip.frames.shape[1]),
                "width": int(clip.frames.shape[2]),
            })
            for cap in seg.captions:
                annotations.append({"id": len(annotations) + 1, "image_id": image_id,
                                    "caption": cap})
    return {
        "info": {"description": description, "version": "1.0"},
        "licenses": [],
        "images": images,
        "annotations": annotations,
        "type": "captions",
    }


# ARCHITECTURE.md calls it `to_coco`.
to_coco = clips_to_coco


def write_coco(path: str | Path, clips: Iterable[Clip]) -> dict[str, Any]:
    """Write the COCO captions JSON of `clips` to `path`; returns the dict."""
    data = clips_to_coco(clips)
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(json.dumps(data, indent=1) + "\n", "utf8")
    return data


def coco_refs(data: dict[str, Any]) -> dict[int, list[str]]:
    """{image_id: [caption, ...]}: the `gts` shape pycocoevalcap scorers take."""
    if not isinstance(data, dict) or "annotations" not in data:
        raise ValueError("data: not a COCO captions dict (no 'annotations')")
    refs: dict[int, list[str]] = {int(im["id"]): [] for im in data.get("images", [])}
    for ann in data["annotations"]:
        try:
            refs.setdefault(int(ann["image_id"]), []).append(str(ann["caption"]))
        except (KeyError, TypeError, ValueError):
            raise ValueError(f"annotations: malformed entry {ann!r}") from None
    return refs


def load_coco_refs(path: str | Path) -> dict[int, list[str]]:
    """References of a COCO captions JSON file (ours or real COCO)."""
    p = Path(path)
    try:
        data = json.loads(p.read_text("utf8"))
    except FileNotFoundError:
        raise ValueError(f"path {str(p)!r} does not exist") from None
    except json.JSONDecodeError as exc:
        raise ValueError(f"path {str(p)!r} is not valid JSON: {exc}") from None
    return coco_refs(data)


def make_split_coco(split: str, n: int, motion: str | None = None, base_seed: int = 0,
                    **kw) -> tuple[Sequence[Clip], dict[str, Any]]:
    """Clips of a split and their COCO captions dict."""
    clips = make_clips(split, n, motion, base_seed, **kw)
    return clips, clips_to_coco(clips)
