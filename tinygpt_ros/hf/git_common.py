"""The GIT family's backend-independent parts (numpy, no torch): its `ModelConfig` view and
its kernel base (a CLS row kept apart from fusion). Shared by the torch kernels (`git.py`) and
the onnxruntime kernels (`git_onnx.py`) so both decide alike; what every family shares lives
in `hf.common`."""

from __future__ import annotations

from typing import Any

from tinygpt_ros.hf.common import (
    CHANGE_UNIT,
    DEFAULT_MAX_CAPTION_LEN,
    DEFAULT_TEMPORAL_WINDOW,
    HfKernelsCommon,
    HfTokenizer,
    Preprocessor,
    probe_frame,
    stream_model_config,
    tower_grid,
)
from tinygpt_ros.model.weights import ModelLoadError
from tinygpt_ros.spec.config import ModelConfig

__all__ = ["CHANGE_UNIT", "DEFAULT_MAX_CAPTION_LEN", "DEFAULT_TEMPORAL_WINDOW",
           "GitKernelsCommon", "HfTokenizer", "Preprocessor", "git_model_config", "probe_frame"]


def git_model_config(conf: dict[str, Any], depths: tuple[int, ...],
                     max_caption_len: int = DEFAULT_MAX_CAPTION_LEN,
                     temporal_window: int = DEFAULT_TEMPORAL_WINDOW) -> ModelConfig:
    """The engine's `ModelConfig` view of a GIT config.json dict (FLOPs, window, lengths);
    ModelLoadError for towers the engine cannot stream."""
    v = conf["vision_config"]
    if conf.get("num_image_with_embedding"):
        raise ModelLoadError("GIT video checkpoints (num_image_with_embedding set) are not "
                             "supported: the engine streams single frames")
    tower_grid(v, "GIT")
    return stream_model_config(v, depths, conf["hidden_size"], conf["num_hidden_layers"],
                               conf["num_attention_heads"], conf["vocab_size"],
                               max_caption_len, temporal_window)


class GitKernelsCommon(HfKernelsCommon):
    """The kernel methods the torch and onnxruntime GIT kernels share: GIT keeps its CLS row
    (row 0 of every vision step) apart from fusion."""

    family = "git"
    n_keep = 1
