"""What every pretrained family's kernels share (numpy, no torch): preprocessing into the
tower's input and into the motion domain, the engine's `ModelConfig` view of a vision tower,
temporal fusion that keeps a family's leading (CLS) rows apart, the tokenizer adapter and the
numpy kernel methods. GIT (`git.py`, `git_onnx.py`) and LLaVA (`llava.py`) use it, so the
families decide alike and no family copies another's code."""

from __future__ import annotations

from typing import Any

import cv2
import numpy as np

from tinygpt_ros import ops
from tinygpt_ros.hf.router import untrained_logits
from tinygpt_ros.model.weights import ModelLoadError
from tinygpt_ros.spec.config import GRID, IMAGE_SIZE, NUM_TOKENS, ModelConfig

DEFAULT_TEMPORAL_WINDOW = 2
DEFAULT_MAX_CAPTION_LEN = 20
# Token change is divided by this fraction of the tower's mean input-token norm, so the default
# fusion_threshold 0.5 recomputes a token whose input moved by more than 5 % of its norm.
CHANGE_UNIT = 0.1
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


def tower_grid(vision: dict[str, Any], family: str) -> tuple[int, int]:
    """(image size, patch size) of a ViT config dict; ModelLoadError unless it makes the
    engine's 14 x 14 token grid (e.g. 224 px / patch 16, 196 px / patch 14)."""
    size, patch = int(vision.get("image_size", 224)), int(vision.get("patch_size", 16))
    grid = size // patch
    if grid * grid != NUM_TOKENS or grid * patch != size:
        raise ModelLoadError(
            f"{family} tower makes a {size / patch:g}x{size / patch:g} token grid ({size} px, "
            f"patch {patch}); the streaming engine runs {GRID}x{GRID} grids (e.g. 224 px with "
            f"patch 16, or 196 px with patch 14)")
    return size, patch


def stream_model_config(vision: dict[str, Any], depths: tuple[int, ...], dec_dim: int,
                        dec_layers: int, dec_heads: int, vocab_size: int,
                        max_caption_len: int = DEFAULT_MAX_CAPTION_LEN,
                        temporal_window: int = DEFAULT_TEMPORAL_WINDOW,
                        grids: tuple[int, ...] = ()) -> ModelConfig:
    """The engine's `ModelConfig` view (FLOPs, window, lengths) of a tower + decoder; `grids`
    is each branch's token grid (empty: all 14 x 14)."""
    if grids and len(grids) != len(depths):
        raise ValueError(f"{len(grids)} branch grids for {len(depths)} branch depths")
    for g in grids:
        ops.grid_factor(g)
    return ModelConfig(
        branch_grids=tuple(int(g) for g in grids),
        dim=int(vision["hidden_size"]), heads=int(vision["num_attention_heads"]),
        mlp_ratio=float(vision["intermediate_size"]) / float(vision["hidden_size"]),
        branch_depths=tuple(depths), temporal_window=temporal_window,
        dec_dim=int(dec_dim), dec_layers=int(dec_layers), dec_heads=int(dec_heads),
        max_caption_len=max_caption_len, vocab_size=int(vocab_size), num_gestures=0,
    )


class Preprocessor:
    """The checkpoint's preprocessor_config.json: either CLIP-style (shortest edge, centre
    crop) or a fixed height x width resize without crop (SigLIP-style), then mean/std.

    Two halves, so the engine can compensate camera motion in between: `frame_unit` is the
    geometry (the tower's view of the frame as [0, 1] RGB at the engine's 224 px motion size),
    `unit_input` the tower's own size and normalisation. `frame_input` is both, and is what
    the family's own image processor makes (up to its resampling filter)."""

    def __init__(self, pp: dict[str, Any], image_size: int) -> None:
        size = pp.get("size", {"shortest_edge": image_size})
        self.squash = (isinstance(size, dict) and "height" in size and "width" in size
                       and not pp.get("do_center_crop", False))
        edge = size.get("shortest_edge", size.get("height")) if isinstance(size, dict) else size
        crop = pp.get("crop_size", {"height": image_size, "width": image_size})
        crop_hw = (crop["height"], crop["width"]) if isinstance(crop, dict) else (crop, crop)
        if not pp.get("do_center_crop", True) or self.squash:
            crop_hw = (image_size, image_size)
        if tuple(crop_hw) != (image_size, image_size):
            raise ModelLoadError(f"preprocessor crop {crop_hw} does not match the tower's "
                                 f"{image_size} px input")
        self.image_size = image_size
        self.shortest_edge = int(edge or image_size)
        self.crop = (int(crop_hw[0]), int(crop_hw[1]))
        self.mean = tuple(float(x) for x in pp.get("image_mean", CLIP_MEAN))
        self.std = tuple(float(x) for x in pp.get("image_std", CLIP_STD))

    def frame_unit(self, frame: np.ndarray) -> np.ndarray:
        """HxWx3 RGB -> (224, 224, 3) unit float: what the tower sees, at the motion size."""
        if self.squash:
            return ops.frame_to_unit(frame)
        edge = round(self.shortest_edge * IMAGE_SIZE / self.image_size)
        return ops.frame_to_pretrained_unit(frame, edge, (IMAGE_SIZE, IMAGE_SIZE))

    def unit_input(self, unit: np.ndarray) -> np.ndarray:
        """(224, 224, 3) unit float -> (3, S, S) pixel values at the tower's size S."""
        if unit.shape[0] != self.image_size:
            interp = cv2.INTER_AREA if unit.shape[0] > self.image_size else cv2.INTER_CUBIC
            unit = cv2.resize(np.ascontiguousarray(unit, np.float32),
                              (self.image_size, self.image_size), interpolation=interp)
        return ops.normalize_unit(unit, self.mean, self.std)

    def unit_aspect(self, shape: tuple[int, ...]) -> float:
        """Height / width of the camera content in `frame_unit` (1 for a square crop)."""
        return shape[0] / shape[1] if self.squash else 1.0

    def unit_scale(self, shape: tuple[int, ...]) -> tuple[float, float]:
        """Camera pixels per `frame_unit` pixel, (x, y)."""
        if self.squash:
            return shape[1] / IMAGE_SIZE, shape[0] / IMAGE_SIZE
        s = min(shape[0], shape[1]) / IMAGE_SIZE
        return s, s

    def frame_input(self, frame: np.ndarray) -> np.ndarray:
        """HxWx3 RGB -> (3, S, S) pixel values as the checkpoint's processor makes them."""
        if self.image_size == IMAGE_SIZE:
            return self.unit_input(self.frame_unit(frame))
        if self.squash:
            unit = ops.frame_to_unit_size(frame, self.image_size)
        else:
            unit = ops.frame_to_pretrained_unit(frame, self.shortest_edge, self.crop)
        return ops.normalize_unit(unit, self.mean, self.std)


def probe_frame(image_size: int) -> np.ndarray:
    """A fixed noise picture whose mean token norm sets `change_scale`."""
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, (image_size, image_size, 3)).astype(np.uint8)


def fuse_window(window: np.ndarray, max_tokens: int | None, static_threshold: float,
                cfg: ModelConfig, n_keep: int) -> ops.Fused:
    """(T, n_keep + 196, D) window -> the newest frame's `n_keep` leading rows (a CLS token,
    never fused) + the window's patch tokens fused by `ops.temporal_fusion` (pretrained towers
    have no time embedding: zeros). No fusion (`max_tokens` None) = the newest frame alone,
    exactly what the family's own generate() sees. `merge_input` counts the patch tokens that
    entered the merge loop (the kept rows never do)."""
    t = window.shape[0]
    keep = window[-1, :n_keep]
    keep_pos = np.tile(np.array([[0.5, 0.5, 1.0]], np.float32), (n_keep, 1))
    if max_tokens is None:
        pos = ops.token_positions(1, 1)[0]
        return ops.Fused(np.ascontiguousarray(window[-1]),
                         np.ones(n_keep + NUM_TOKENS, np.float32),
                         np.concatenate([keep_pos, pos]), NUM_TOKENS)
    zeros = np.zeros((max(cfg.temporal_window, t), window.shape[-1]), np.float32)
    fused = ops.temporal_fusion(window[:, n_keep:], zeros, max(1, max_tokens - n_keep),
                                static_threshold, cfg.fusion_pos_weight)
    return ops.Fused(np.concatenate([keep, fused.tokens]),
                     np.concatenate([np.ones(n_keep, np.float32), fused.sizes]),
                     np.concatenate([keep_pos, fused.positions]), fused.merge_input)


class HfTokenizer:
    """The engine's tokenizer interface (`decode`, ids) over a transformers tokenizer."""

    def __init__(self, tokenizer: Any, bos_id: int, eos_id: int) -> None:
        self.hf = tokenizer
        self.bos_id, self.eos_id = int(bos_id), int(eos_id)
        self.vocab_size = len(tokenizer)

    def decode(self, ids: list[int]) -> str:
        return self.hf.decode(list(ids), skip_special_tokens=True).strip()


class HfKernelsCommon:
    """The numpy kernel methods every pretrained family shares; a subclass sets `cfg`,
    `depths`, `router`, `family`, `pre` (a `Preprocessor`) and `n_keep` (leading rows of
    `run_encoder`'s output that fusion keeps apart: 1 for a CLS token, else 0)."""

    cfg: ModelConfig
    depths: tuple[int, ...]
    router: Any
    family: str
    pre: Preprocessor
    image_size: int
    n_keep: int = 1

    @property
    def grids(self) -> tuple[int, ...]:
        """Token grid side of every ANC branch (from `cfg`, which the kernels built)."""
        return tuple(self.cfg.branch_grid(b) for b in range(len(self.cfg.branch_depths)))

    def embed_frame(self, x: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def embed_grid(self, pooled: np.ndarray, grid: int) -> np.ndarray:
        """(3, S / f, S / f) pooled input -> (grid * grid, D) layer-0 tokens of a coarse
        branch (patch conv + interpolated position embedding + the pre-norm)."""
        raise NotImplementedError

    def branch_input(self, tokens: np.ndarray, selected: np.ndarray | None, branch: int,
                     pixels: np.ndarray | None) -> tuple[np.ndarray, np.ndarray | None, int]:
        """(layer-0 patch rows, their selection, grid) of `branch`: the frame's 196 tokens
        as embedded, or for a coarse-grid branch the pooled frame's tokens, a coarse token
        selected when any patch it covers is (`ops.token_grid`)."""
        grid = self.cfg.branch_grid(branch)
        if grid == GRID:
            return tokens, selected, grid
        if pixels is None:
            raise ValueError(f"branch {branch} runs a {grid}x{grid} token grid: it needs the "
                             "frame's pixels (run_encoder(..., pixels=x))")
        rows = self.embed_grid(ops.pool_pixels(pixels, ops.grid_factor(grid)), grid)
        sel = None if selected is None else ops.coarse_selection(selected, grid)
        return rows, sel, grid

    def branch_output(self, out: np.ndarray, grid: int, n: int) -> tuple[np.ndarray, int]:
        """A branch's (n_keep + grid * grid, D) output and recomputed rows -> the engine's
        (n_keep + 196, D) rows (coarse rows repeated over their patches) and patches."""
        if grid == GRID:
            return out.copy(), n
        f = ops.grid_factor(grid)
        keep = out[: self.n_keep]
        return (np.concatenate([keep, ops.expand_rows(out[self.n_keep:], grid)]),
                n * f * f)

    def measure_change_scale(self) -> float:
        """CHANGE_UNIT x the mean token norm of a fixed noise picture, so `fusion_threshold`
        is relative to this tower's token scale whatever the family or backend."""
        probe = self.frame_input(probe_frame(self.image_size))
        return float(CHANGE_UNIT * np.linalg.norm(self.embed_frame(probe), axis=1).mean())

    def frame_input(self, frame: np.ndarray) -> np.ndarray:
        return self.pre.frame_input(frame)

    def frame_unit(self, frame: np.ndarray) -> np.ndarray:
        return self.pre.frame_unit(frame)

    def unit_input(self, unit: np.ndarray) -> np.ndarray:
        return self.pre.unit_input(unit)

    def unit_aspect(self, shape: tuple[int, ...]) -> float:
        return self.pre.unit_aspect(shape)

    def unit_scale(self, shape: tuple[int, ...]) -> tuple[float, float]:
        return self.pre.unit_scale(shape)

    def router_logits(self, features: np.ndarray) -> np.ndarray:
        if self.router is None:
            return untrained_logits(len(self.depths))
        return self.router.logits(features)

    def fuse(self, window: np.ndarray, max_tokens: int | None,
             static_threshold: float) -> ops.Fused:
        return fuse_window(window, max_tokens, static_threshold, self.cfg, self.n_keep)

    def embed_events(self, hist: np.ndarray) -> np.ndarray:
        raise ValueError(f"this {self.family} captioner has no event-camera input; use a "
                         "TinyGPT model for event windows")

    def gesture_logits(self, tokens: np.ndarray, sizes: np.ndarray,
                       positions: np.ndarray) -> np.ndarray:
        raise ValueError(f"this {self.family} captioner has no gesture head")
