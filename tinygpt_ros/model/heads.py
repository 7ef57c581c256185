"""Gesture classification head over the fused vision tokens of an event-window stack.

Why a grid: a gesture is *where* activity happens and *how it moves*, and pooling a bag of
tokens (mean or attention) loses that; trained on CPU budgets it stayed near chance. Temporal
fusion tracks each fused token's size-weighted (x, y, t) centroid, so the head can lay the
tokens back onto a coarse space-time grid whatever fusion merged.

Architecture (D = cfg.dim, C = CHANNELS, S = SPACE_CELLS, T = cfg.temporal_window cells in time,
G = cfg.num_gestures, K fused tokens with sizes s_k (0 = padding) and centroids p_k in [0, 1]^3):

- per token: `h_k = [GELU(Linear(D, C)(LayerNorm(x_k))), 1]` (the constant channel counts mass);
- splat: `cell_c = sum_k s_k w_kc h_k / sum_k s_k`, with w_kc the trilinear (tent) weights of
  p_k on an S x S x T lattice whose nodes span [0, 1] on each axis (each token touches <= 8 cells
  and its weights sum to 1, so a fused token counts as the s_k tokens it stands for);
- MLP: `LayerNorm(S*S*T*(C+1))` -> `Linear(., HIDDEN)` -> GELU -> `Linear(HIDDEN, G)`.

Cost in multiply-adds: K D C (projection) + S S T K (C+1) (splat, a matmul) + F HIDDEN +
HIDDEN G with F = S S T (C+1). An all-padding row gives zero cells and finite logits.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from tinygpt_ros.spec.config import GESTURE_CHANNELS as CHANNELS
from tinygpt_ros.spec.config import GESTURE_HIDDEN as HIDDEN
from tinygpt_ros.spec.config import GESTURE_SPACE_CELLS as SPACE_CELLS
from tinygpt_ros.spec.config import ModelConfig, gesture_head_features


def tent_weights(coord: torch.Tensor, cells: int) -> torch.Tensor:
    """(...,) coordinates in [0, 1] -> (..., cells) linear-interpolation weights on `cells`
    lattice nodes at 0, 1/(cells-1), ..., 1 (one node: all weight on it). Rows sum to 1."""
    if cells == 1:
        return torch.ones(*coord.shape, 1, dtype=coord.dtype, device=coord.device)
    u = (coord * (cells - 1)).clamp(0, cells - 1)
    nodes = torch.arange(cells, dtype=coord.dtype, device=coord.device)
    return F.relu(1.0 - (u[..., None] - nodes).abs())


class GestureHead(nn.Module):
    """Project tokens, splat them on a space-time lattice by their centroids, classify."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        if cfg.num_gestures < 1:
            raise ValueError(f"cfg.num_gestures must be >= 1, got {cfg.num_gestures}")
        self.dim = cfg.dim
        self.time_cells = cfg.temporal_window
        self.norm_in = nn.LayerNorm(cfg.dim)
        self.proj = nn.Linear(cfg.dim, CHANNELS)
        self.norm = nn.LayerNorm(gesture_head_features(cfg.temporal_window))
        self.fc1 = nn.Linear(gesture_head_features(cfg.temporal_window), HIDDEN)
        self.fc2 = nn.Linear(HIDDEN, cfg.num_gestures)
        self.drop = nn.Dropout(0.1)

    def splat(self, vis: torch.Tensor, vis_size: torch.Tensor,
              vis_pos: torch.Tensor) -> torch.Tensor:
        """(B,K,D), (B,K), (B,K,3) -> (B, S*S*T*(C+1)) lattice features; size-0 tokens ignored."""
        if vis.dim() != 3 or vis.shape[-1] != self.dim:
            raise ValueError(f"vis must be (B, K, {self.dim}), got {tuple(vis.shape)}")
        b, k = vis.shape[:2]
        if vis_size.shape != (b, k):
            raise ValueError(f"vis_size must be (B, K) = {(b, k)}, got {tuple(vis_size.shape)}")
        if vis_pos.shape != (b, k, 3):
            raise ValueError(f"vis_pos must be (B, K, 3) = {(b, k, 3)}, got "
                             f"{tuple(vis_pos.shape)}")
        w = vis_size.to(vis.dtype).clamp_min(0.0)
        h = F.gelu(self.proj(self.norm_in(vis)))
        h = torch.cat([h, torch.ones_like(h[..., :1])], -1) * w[..., None]  # (B,K,C+1)
        wx = tent_weights(vis_pos[..., 0], SPACE_CELLS)
        wy = tent_weights(vis_pos[..., 1], SPACE_CELLS)
        wt = tent_weights(vis_pos[..., 2], self.time_cells)
        lattice = (wt[..., :, None, None] * wy[..., None, :, None] * wx[..., None, None, :])
        lattice = lattice.reshape(b, k, -1)  # (B,K,cells) in (t, y, x) order
        cells = lattice.transpose(1, 2) @ h  # (B, cells, C+1)
        return cells.flatten(1) / w.sum(1, keepdim=True).clamp_min(1e-6)

    def forward(self, vis: torch.Tensor, vis_size: torch.Tensor,
                vis_pos: torch.Tensor) -> torch.Tensor:
        """vis (B,K,D), vis_size (B,K), vis_pos (B,K,3) -> logits (B, num_gestures)."""
        z = self.norm(self.splat(vis, vis_size, vis_pos))
        return self.fc2(self.drop(F.gelu(self.fc1(z))))
