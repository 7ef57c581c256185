"""Torch kernels for the streaming controller: the reference implementation of every network.

Arrays cross the boundary as numpy (free on CPU: `torch.from_numpy` shares memory); the gated
encoder cache stays a `GatedEncoderCache` on the model's device.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, TypeVar

import numpy as np
import torch

from tinygpt_ros import ops
from tinygpt_ros.model.encoder import GatedEncoderCache
from tinygpt_ros.model.tinygpt import TinyGPT
from tinygpt_ros.runtime.torch_flops import FlopMeter
from tinygpt_ros.spec.config import ModelConfig
from tinygpt_ros.spec.tokenizer import Tokenizer


def _np(t: torch.Tensor) -> np.ndarray:
    return t.detach().cpu().numpy()


_F = TypeVar("_F", bound=Callable[..., Any])


def counted(fn: _F) -> _F:
    """Run a kernel under a `FlopMeter` when the kernels count FLOPs, and leave the
    count of that call in `self.last_flops` (every matmul and conv as it ran: beams, padding
    and fallbacks included)."""

    @functools.wraps(fn)
    def wrapper(self: TorchKernels, *args: Any, **kwargs: Any) -> Any:
        if not self.counts_flops:
            return fn(self, *args, **kwargs)
        with FlopMeter() as meter:
            out = fn(self, *args, **kwargs)
        self.last_flops = meter.total
        return out

    return wrapper  # type: ignore[return-value]


class TorchKernels:
    """`streaming.Kernels` on a `TinyGPT` module (CPU or CUDA), inference only."""

    def __init__(self, model: TinyGPT, tokenizer: Tokenizer, device: str | torch.device = "cpu",
                 beam_size: int = 1, count_flops: bool = False) -> None:
        self.model = model.to(device).eval()
        self.cfg: ModelConfig = model.cfg
        self.device = torch.device(device)
        self.tokenizer = tokenizer
        self.beam_size = beam_size
        self.counts_flops = bool(count_flops)  # read by StreamingEngine: per-stage counts
        self.last_flops = 0.0

    def _t(self, a: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(a)).to(self.device)

    @counted
    @torch.no_grad()
    def embed_frame(self, x: np.ndarray) -> np.ndarray:
        return _np(self.model.encoder.embed_frames(self._t(x)[None])[0])

    @counted
    @torch.no_grad()
    def embed_events(self, hist: np.ndarray) -> np.ndarray:
        return _np(self.model.encoder.embed_events(self._t(hist)[None])[0])

    def new_encoder_state(self) -> GatedEncoderCache:
        return GatedEncoderCache()

    @counted
    @torch.no_grad()
    def run_encoder(self, state: GatedEncoderCache, tokens: np.ndarray,
                    selected: np.ndarray | None, branch: int) -> tuple[np.ndarray, int]:
        sel = None if selected is None else self._t(selected)
        out = state.run(self.model.encoder, self._t(tokens), sel, branch)
        return _np(out), int(state.n_recomputed)

    @counted
    @torch.no_grad()
    def router_logits(self, features: np.ndarray) -> np.ndarray:
        return _np(self.model.router(self._t(features.astype(np.float32))[None])[0])

    @counted
    @torch.no_grad()
    def fuse(self, window: np.ndarray, max_tokens: int | None,
             static_threshold: float) -> ops.Fused:
        fusion = self.model.fusion
        w = self._t(window)[None]
        if max_tokens is None:
            fused, sizes, pos = fusion.dense(w)
            return ops.Fused(_np(fused[0]), _np(sizes[0]), _np(pos[0]), int(fused.shape[1]))
        if isinstance(max_tokens, bool) or int(max_tokens) < 1:
            raise ValueError(f"max_tokens must be >= 1, got {max_tokens}")
        x, size = fusion.merge_input(w, static_threshold)
        fused, sizes, pos = fusion.merge(x, size, int(max_tokens))
        return ops.Fused(_np(fused[0]), _np(sizes[0]), _np(pos[0]), int(x.shape[1]))

    @counted
    @torch.no_grad()
    def generate(self, tokens: np.ndarray, sizes: np.ndarray,
                 positions: np.ndarray | None = None) -> list[int]:
        tok = self.tokenizer
        pos = None if positions is None else self._t(positions)[None]
        return self.model.decoder.generate(
            self._t(tokens)[None], self._t(sizes)[None], tok.bos_id, tok.eos_id,
            beam_size=self.beam_size, vis_pos=pos,
        )[0]

    def start_decode(self, tokens: np.ndarray, sizes: np.ndarray,
                     positions: np.ndarray | None = None) -> ops.StepwiseGreedy | None:
        """A greedy decode the engine advances one decoder pass at a time (`ops.stepwise`),
        on the decoder's own prefill and cached step (what `generate` runs in one call); None
        with beam search. Each pass is counted like a kernel call (`last_flops`)."""
        if self.beam_size > 1:
            return None
        vis = self._t(tokens)[None]
        vis_size = self._t(sizes)[None]
        vis_pos = None if positions is None else self._t(positions)[None]
        tok = self.tokenizer
        bos = torch.full((1, 1), tok.bos_id, dtype=torch.long, device=self.device)
        return ops.StepwiseGreedy(
            lambda: self._decoder_pass(lambda: self.model.decoder.prefill(vis, vis_size, bos,
                                                                          vis_pos)),
            lambda token, _position, cache: self._decoder_pass(
                lambda: self.model.decoder.step(
                    torch.tensor([token], dtype=torch.long, device=self.device), cache)),
            tok.bos_id, tok.eos_id, self.cfg.max_caption_len)

    @counted
    @torch.no_grad()
    def _decoder_pass(self, run: Callable[[], tuple[torch.Tensor, Any]]
                      ) -> tuple[np.ndarray, Any]:
        logits, cache = run()
        return _np(logits[0].float()), cache

    @counted
    @torch.no_grad()
    def gesture_logits(self, tokens: np.ndarray, sizes: np.ndarray,
                       positions: np.ndarray) -> np.ndarray:
        return _np(self.model.gesture_head(self._t(tokens)[None], self._t(sizes)[None],
                                           self._t(positions)[None])[0])
