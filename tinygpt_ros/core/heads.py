"""Gesture classification head over the fused (size-weighted) vision tokens of an event window.

Architecture (D = cfg.dim, G = cfg.num_gestures, K fused tokens with sizes s_k, 0 = padding):

- mean pool: `m = sum_k s_k x_k / sum_k s_k` (a fused token counts as the s_k tokens it stands
  for, so fusion does not shift the average);
- attention pool: one learned query w (D,), `a = softmax_k(x_k . w / sqrt(D) + log s_k)`,
  `p = sum_k a_k x_k` (ToMe proportional attention; padding gets -inf, i.e. weight 0);
- MLP on the concatenation: `LayerNorm(2D)` -> `Linear(2D, D)` -> GELU -> `Linear(D, G)`.

Cost in multiply-adds: 3 K D (mean, scores, attention sum) + 2 D D + D G. A row whose tokens are
all padding yields zero pooled features (finite logits) instead of NaN.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .config import ModelConfig


class GestureHead(nn.Module):
    """Size-weighted mean + attention pooling, then a 2-layer MLP to gesture logits."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        if cfg.num_gestures < 1:
            raise ValueError(f"cfg.num_gestures must be >= 1, got {cfg.num_gestures}")
        d = cfg.dim
        self.dim = d
        self.query = nn.Parameter(torch.randn(d) * 0.02)
        self.norm = nn.LayerNorm(2 * d)
        self.fc1 = nn.Linear(2 * d, d)
        self.fc2 = nn.Linear(d, cfg.num_gestures)

    def pool(self, vis: torch.Tensor, vis_size: torch.Tensor) -> torch.Tensor:
        """(B,K,D), sizes (B,K) -> (B,2D) pooled features; size-0 tokens are ignored."""
        if vis.dim() != 3 or vis.shape[-1] != self.dim:
            raise ValueError(f"vis must be (B, K, {self.dim}), got {tuple(vis.shape)}")
        if vis_size.shape != vis.shape[:2]:
            raise ValueError(
                f"vis_size must be (B, K) = {tuple(vis.shape[:2])}, got {tuple(vis_size.shape)}"
            )
        w = vis_size.to(vis.dtype).clamp_min(0.0)  # (B,K)
        real = w > 0
        vis = torch.where(real[..., None], vis, 0.0)  # whatever padding holds, it stays out
        mean = (w[:, None, :] @ vis)[:, 0] / w.sum(1, keepdim=True).clamp_min(1e-6)
        scores = (vis @ self.query[:, None])[..., 0] / math.sqrt(self.dim)
        scores = torch.where(real, scores + torch.log(w.clamp_min(1e-30)), float("-inf"))
        any_real = real.any(1, keepdim=True)
        att = torch.softmax(torch.where(any_real, scores, 0.0), dim=1)
        att = torch.where(real, att, 0.0)  # all-padding rows -> zeros, not NaN
        attn_pool = (att[:, None, :] @ vis)[:, 0]
        return torch.cat([mean, attn_pool], dim=-1)

    def forward(self, vis: torch.Tensor, vis_size: torch.Tensor) -> torch.Tensor:
        """vis (B,K,D), vis_size (B,K) -> logits (B, num_gestures)."""
        h = self.norm(self.pool(vis, vis_size))
        return self.fc2(F.gelu(self.fc1(h)))
