"""The GIT family's backend-independent parts (numpy, no torch): its `ModelConfig` view,
preprocessing, temporal fusion with the CLS token, the tokenizer adapter. Shared by the torch
kernels (`git.py`) and the onnxruntime kernels (`git_onnx.py`) so both decide alike."""

from __future__ import annotations

from typing import Any

import numpy as np

from tinygpt_ros import ops
from tinygpt_ros.hf.router import untrained_logits
from tinygpt_ros.model.weights import ModelLoadError
from tinygpt_ros.spec.config import GRID, NUM_TOKENS, ModelConfig

DEFAULT_TEMPORAL_WINDOW = 2
DEFAULT_MAX_CAPTION_LEN = 20
# Token change is divided by this fraction of the tower's mean input-token norm, so the default
# fusion_threshold 0.5 recomputes a token whose input moved by more than 5 % of its norm.
CHANGE_UNIT = 0.1
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


def git_model_config(conf: dict[str, Any], depths: tuple[int, ...],
                     max_caption_len: int = DEFAULT_MAX_CAPTION_LEN,
                     temporal_window: int = DEFAULT_TEMPORAL_WINDOW) -> ModelConfig:
    """The engine's `ModelConfig` view of a GIT config.json dict (FLOPs, window, lengths);
    ModelLoadError for towers the engine cannot stream."""
    v = conf["vision_config"]
    if conf.get("num_image_with_embedding"):
        raise ModelLoadError("GIT video checkpoints (num_image_with_embedding set) are not "
                             "supported: the engine streams single frames")
    size, patch = int(v.get("image_size", 224)), int(v.get("patch_size", 16))
    grid = size // patch
    if grid * grid != NUM_TOKENS:
        raise ModelLoadError(
            f"GIT tower makes a {grid}x{grid} token grid ({size} px, patch {patch}); the "
            f"streaming engine runs {GRID}x{GRID} grids (e.g. git-base: 224 px, patch 16)")
    return ModelConfig(
        dim=int(v["hidden_size"]), heads=int(v["num_attention_heads"]),
        mlp_ratio=float(v["intermediate_size"]) / float(v["hidden_size"]),
        branch_depths=tuple(depths), temporal_window=temporal_window,
        dec_dim=int(conf["hidden_size"]), dec_layers=int(conf["num_hidden_layers"]),
        dec_heads=int(conf["num_attention_heads"]), max_caption_len=max_caption_len,
        vocab_size=int(conf["vocab_size"]), num_gestures=0,
    )


class Preprocessor:
    """The checkpoint's preprocessor_config.json (shortest edge, centre crop, mean/std)."""

    def __init__(self, pp: dict[str, Any], image_size: int) -> None:
        size = pp.get("size", {"shortest_edge": image_size})
        edge = size.get("shortest_edge", size.get("height")) if isinstance(size, dict) else size
        crop = pp.get("crop_size", {"height": image_size, "width": image_size})
        crop_hw = (crop["height"], crop["width"]) if isinstance(crop, dict) else (crop, crop)
        if not pp.get("do_center_crop", True):
            crop_hw = (image_size, image_size)
        if tuple(crop_hw) != (image_size, image_size):
            raise ModelLoadError(f"preprocessor crop {crop_hw} does not match the tower's "
                                 f"{image_size} px input")
        self.shortest_edge = int(edge or image_size)
        self.crop = (int(crop_hw[0]), int(crop_hw[1]))
        self.mean = tuple(float(x) for x in pp.get("image_mean", CLIP_MEAN))
        self.std = tuple(float(x) for x in pp.get("image_std", CLIP_STD))

    def frame_input(self, frame: np.ndarray) -> np.ndarray:
        """HxWx3 RGB -> (3, 224, 224) pixel values as the checkpoint's processor makes them."""
        return ops.frame_to_pretrained_input(frame, self.shortest_edge, self.crop, self.mean,
                                             self.std)


def probe_frame(image_size: int) -> np.ndarray:
    """A fixed noise picture whose mean token norm sets `change_scale`."""
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, (image_size, image_size, 3)).astype(np.uint8)


def fuse_window(window: np.ndarray, max_tokens: int | None, static_threshold: float,
                cfg: ModelConfig) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(T, 197, H) window -> newest CLS + fused patch tokens. No fusion (`max_tokens` None) =
    the newest frame alone, exactly what GIT's own generate() sees. GIT has no time embedding:
    the fusion gets zeros."""
    t = window.shape[0]
    cls = window[-1, :1]
    cls_pos = np.array([[0.5, 0.5, 1.0]], np.float32)
    if max_tokens is None:
        pos = ops.token_positions(1, 1)[0]
        return (np.ascontiguousarray(window[-1]), np.ones(1 + NUM_TOKENS, np.float32),
                np.concatenate([cls_pos, pos]))
    zeros = np.zeros((max(cfg.temporal_window, t), window.shape[-1]), np.float32)
    fused, sizes, pos = ops.temporal_fusion(window[:, 1:], zeros, max(1, max_tokens - 1),
                                            static_threshold, cfg.fusion_pos_weight)
    return (np.concatenate([cls, fused]), np.concatenate([np.ones(1, np.float32), sizes]),
            np.concatenate([cls_pos, pos]))


class HfTokenizer:
    """The engine's tokenizer interface (`decode`, ids) over a transformers tokenizer."""

    def __init__(self, tokenizer: Any, bos_id: int, eos_id: int) -> None:
        self.hf = tokenizer
        self.bos_id, self.eos_id = int(bos_id), int(eos_id)
        self.vocab_size = len(tokenizer)

    def decode(self, ids: list[int]) -> str:
        return self.hf.decode(list(ids), skip_special_tokens=True).strip()


class GitKernelsCommon:
    """The kernel methods the torch and onnxruntime GIT kernels share (numpy only); a subclass
    sets `cfg`, `depths` and `router`."""

    cfg: ModelConfig
    depths: tuple[int, ...]
    router: Any

    def router_logits(self, features: np.ndarray) -> np.ndarray:
        if self.router is None:
            return untrained_logits(len(self.depths))
        return self.router.logits(features)

    def fuse(self, window: np.ndarray, max_tokens: int | None,
             static_threshold: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        return fuse_window(window, max_tokens, static_threshold, self.cfg)

    def gesture_logits(self, tokens: np.ndarray, sizes: np.ndarray,
                       positions: np.ndarray) -> np.ndarray:
        raise ValueError("this GIT captioner has no gesture head")
