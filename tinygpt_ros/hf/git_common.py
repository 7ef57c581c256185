"""The GIT family's backend-independent parts (numpy, no torch): its `ModelConfig` view and
its kernel base (a CLS row kept apart from fusion). Shared by the torch kernels (`git.py`) and
the onnxruntime kernels (`git_onnx.py`) so both decide alike; what every family shares lives
in `hf.common`."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from tinygpt_ros import ops
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
                     temporal_window: int = DEFAULT_TEMPORAL_WINDOW,
                     grids: tuple[int, ...] = ()) -> ModelConfig:
    """The engine's `ModelConfig` view of a GIT config.json dict (FLOPs, window, lengths);
    ModelLoadError for towers the engine cannot stream."""
    v = conf["vision_config"]
    if conf.get("num_image_with_embedding"):
        raise ModelLoadError("GIT video checkpoints (num_image_with_embedding set) are not "
                             "supported: the engine streams single frames")
    tower_grid(v, "GIT")
    return stream_model_config(v, depths, conf["hidden_size"], conf["num_hidden_layers"],
                               conf["num_attention_heads"], conf["vocab_size"],
                               max_caption_len, temporal_window, grids)


class GitKernelsCommon(HfKernelsCommon):
    """The kernel methods the torch and onnxruntime GIT kernels share: GIT keeps its CLS row
    (row 0 of every vision step) apart from fusion."""

    family = "git"
    n_keep = 1
    eos_ids: set[int]
    bos_id: int

    def first_pass(self, vis: np.ndarray, log_size: np.ndarray, ids: np.ndarray,
                   position: np.ndarray) -> tuple[Any, ...]:
        """`git_decoder.TextPrefill` on this backend: (logits, keys, values, key bias)."""
        raise NotImplementedError

    def next_pass(self, ids: np.ndarray, position: np.ndarray, past_k: Any, past_v: Any,
                  key_bias: Any) -> tuple[Any, ...]:
        """`git_decoder.TextStep` on this backend, on the arrays the last pass returned."""
        raise NotImplementedError

    def generate(self, tokens: np.ndarray, sizes: np.ndarray,
                 positions: np.ndarray | None = None) -> list[int]:
        return self.decode(tokens, sizes).ids

    def decode(self, tokens: np.ndarray, sizes: np.ndarray,
               drafts: Sequence[Sequence[int]] = (),
               positions: np.ndarray | None = None) -> ops.Decoded:
        """`ops.greedy_decode` through the backend's two passes over a KV cache whose image
        rows come first; `drafts` (recent captions' ids) let one pass check several tokens
        (see `ops.drafting`). The cache is the backend's own arrays (torch tensors or numpy).
        `positions` (the tokens' centroids) is accepted and unused: GIT's tower embeds where
        each patch is itself."""
        vis = np.ascontiguousarray(tokens, np.float32)
        log_size = np.log(np.maximum(np.asarray(sizes, np.float32), 1e-6)).astype(np.float32)
        cache: dict[str, Any] = {}

        def run(ids: list[int], start: int) -> list[int]:
            t = np.array(ids, np.int64)
            pos = np.arange(start, start + len(ids), dtype=np.int64)
            if start == 0:  # the image rows run with the first text rows
                out = self.first_pass(vis, log_size, t, pos)
            else:
                out = self.next_pass(t, pos, cache["k"], cache["v"], cache["bias"])
            logits, cache["k"], cache["v"], cache["bias"] = out
            return logits.argmax(-1).tolist()

        def rewind(n_text: int) -> None:
            keep = len(vis) + n_text
            cache["k"], cache["v"] = cache["k"][:, :, :keep], cache["v"][:, :, :keep]
            cache["bias"] = cache["bias"][:keep]

        return ops.greedy_decode(run, rewind, self.bos_id, self.eos_ids,
                                 self.cfg.max_caption_len, drafts)
