"""Recognise and check a local Hugging Face transformers checkpoint directory (no torch, no
network).

A user downloads a captioner on a connected machine (`hf download microsoft/git-base-coco
--local-dir DIR`) and points `model_dir` at DIR. This module decides
whether a path is such a directory, which family it is, and what is missing, so the factory
can dispatch and every entry point (node, CLI) fails with one clear message instead of a
transformers traceback or a download attempt. Loading the weights is `hf.engine`'s job.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tinygpt_ros.model.weights import ModelLoadError

CONFIG_FILE = "config.json"
PREPROCESSOR_FILE = "preprocessor_config.json"
# transformers >= 5 saves a multimodal processor's image settings inside this file instead
PROCESSOR_FILE = "processor_config.json"
WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin")
TOKENIZER_FILES = ("tokenizer.json", "vocab.txt")  # fast tokenizer, or a WordPiece vocab (GIT)
# model_type in config.json -> (family name, the checkpoint users download for it)
FAMILIES: dict[str, tuple[str, str]] = {
    "git": ("git", "microsoft/git-base-coco"),
    "llava": ("llava", "llava-hf/llava-interleave-qwen-0.5b-hf"),
}
SUPPORTED = ("GitForCausalLM (e.g. microsoft/git-base-coco), LlavaForConditionalGeneration "
             "with a CLIP or SigLIP tower (e.g. llava-hf/llava-interleave-qwen-0.5b-hf)")
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


def force_offline() -> None:
    """Tell huggingface_hub and transformers never to reach the network (set before import)."""
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["TRANSFORMERS_OFFLINE"] = "1"


def download_hint(hub_id: str = "microsoft/git-base-coco", target: str = "DIR") -> str:
    return (f"download it on a connected machine with `hf download {hub_id} --local-dir "
            f"{target}` (huggingface_hub; older versions: `huggingface-cli download ...`), copy "
            f"{target} to the robot and pass its path; this package never downloads")


@dataclass
class HfCheckpoint:
    """A checked checkpoint directory: its family and parsed config.json."""

    path: Path
    family: str
    config: dict[str, Any]
    files: list[str] = field(default_factory=list)


def is_hf_checkpoint(path: str | os.PathLike[str]) -> bool:
    """True for a directory holding config.json and no TinyGPT manifest.json."""
    d = Path(path)
    return d.is_dir() and (d / CONFIG_FILE).is_file() and not (d / "manifest.json").is_file()


def looks_like_hub_id(text: str) -> bool:
    """"owner/name" that is not an existing path: what users paste from the hub."""
    return bool(_HUB_ID.match(str(text))) and not Path(text).exists()


def check_checkpoint(path: str | os.PathLike[str]) -> HfCheckpoint:
    """Parse and check a checkpoint directory; ModelLoadError names what is missing and how to
    get it."""
    d = Path(path)
    if looks_like_hub_id(str(path)):
        raise ModelLoadError(
            f"model_dir {str(path)!r} looks like a Hugging Face hub id, not a local directory: "
            + download_hint(str(path))
        )
    if not d.is_dir():
        raise ModelLoadError(f"model directory {d}: does not exist or is not a directory; "
                             + download_hint())
    try:
        config = json.loads((d / CONFIG_FILE).read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise ModelLoadError(f"checkpoint {d}: no {CONFIG_FILE}; " + download_hint()) from exc
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelLoadError(f"checkpoint {d}: {CONFIG_FILE} is unreadable ({exc})") from exc
    if not isinstance(config, dict):
        raise ModelLoadError(f"checkpoint {d}: {CONFIG_FILE} is not a JSON object")
    model_type = str(config.get("model_type", ""))
    if model_type not in FAMILIES:
        archs = config.get("architectures")
        raise ModelLoadError(
            f"checkpoint {d}: model_type {model_type!r} (architectures {archs}) is not supported; "
            f"supported: {sorted(FAMILIES)}: {SUPPORTED}"
        )
    family, hub_id = FAMILIES[model_type]
    present = sorted(p.name for p in d.iterdir())
    missing = []
    if not any(name in present for name in WEIGHT_FILES):
        missing.append(f"weights (one of {list(WEIGHT_FILES)})")
    if not any(name in present for name in TOKENIZER_FILES):
        missing.append(f"tokenizer (one of {list(TOKENIZER_FILES)})")
    if PREPROCESSOR_FILE not in present and PROCESSOR_FILE not in present:
        missing.append(f"image processor ({PREPROCESSOR_FILE} or {PROCESSOR_FILE})")
    index = d / "model.safetensors.index.json"
    if index.is_file():
        try:
            shards = set(json.loads(index.read_text())["weight_map"].values())
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ModelLoadError(f"checkpoint {d}: {index.name} is unreadable ({exc})") from exc
        absent = sorted(s for s in shards if s not in present)
        if absent:
            missing.append(f"weight shards {absent}")
    if missing:
        raise ModelLoadError(
            f"checkpoint {d} ({family}): missing {'; '.join(missing)} (directory holds "
            f"{present[:12]}); " + download_hint(hub_id, str(d))
        )
    return HfCheckpoint(d, family, config, present)


def read_preprocessor(ckpt: HfCheckpoint) -> dict[str, Any]:
    """The image processor's settings as a dict: preprocessor_config.json, or the
    "image_processor" entry of processor_config.json (ModelLoadError when unreadable)."""
    p = ckpt.path / PREPROCESSOR_FILE
    nested = not p.is_file()
    if nested:
        p = ckpt.path / PROCESSOR_FILE
    try:
        cfg = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelLoadError(f"checkpoint {ckpt.path}: {p.name} is unreadable ({exc})") from exc
    if nested and isinstance(cfg, dict):
        cfg = cfg.get("image_processor")
    if not isinstance(cfg, dict):
        raise ModelLoadError(f"checkpoint {ckpt.path}: {p.name} holds no image processor "
                             "settings")
    return cfg
