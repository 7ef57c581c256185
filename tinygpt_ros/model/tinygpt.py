"""TinyGPT: the visual encoder with ANC branches, STTF temporal fusion, router, decoder and heads.

The module only assembles parts; the streaming logic (gating, caches, hysteresis, caption reuse)
lives in `engine.py` and the training losses in `train.py`.
"""

from __future__ import annotations

import torch
from torch import nn

from tinygpt_ros.model.anc import Router
from tinygpt_ros.model.decoder import TinyGPTDecoder
from tinygpt_ros.model.encoder import VisualEncoder
from tinygpt_ros.model.heads import GestureHead
from tinygpt_ros.model.sttf import TemporalFusion
from tinygpt_ros.spec.config import ModelConfig


class TinyGPT(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        if cfg.vocab_size <= 0:
            raise ValueError("ModelConfig.vocab_size must be set from the tokenizer (> 0)")
        self.cfg = cfg
        self.encoder = VisualEncoder(cfg)
        self.fusion = TemporalFusion(cfg)
        self.router = Router(cfg)
        self.decoder = TinyGPTDecoder(cfg)
        self.gesture_head = GestureHead(cfg)

    @property
    def num_branches(self) -> int:
        return len(self.cfg.branch_depths)

    @property
    def largest_branch(self) -> int:
        return self.num_branches - 1

    def parameter_count(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def fuse(
        self, window: torch.Tensor, max_tokens: int | None, static_threshold: float = 0.1
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Window (B,T,N,D) -> (tokens, sizes, (x, y, t) centroids); `max_tokens=None` is the
        dense (unfused) path."""
        if max_tokens is None:
            return self.fusion.dense(window)
        return self.fusion(window, max_tokens, static_threshold)
