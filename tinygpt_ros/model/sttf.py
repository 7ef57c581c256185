"""STTF temporal fusion in torch: batched and differentiable, for training.

Static positions are averaged over the window (HoliTom-style), then ToMe bipartite soft matching
with size-weighted averaging merges the rest down to a token budget. Sizes travel with the tokens
(the decoder adds log(size) to its attention logits); size 0 marks padding so batches keep one
shape. The engines run the numpy implementation (`ops/fusion.py`) and take the same decisions
(`test_onnx_engine.py` checks they agree); change detection and token selection exist only in
numpy (`ops/gating.py`).
"""

from __future__ import annotations

import torch
from torch import nn

from tinygpt_ros import ops
from tinygpt_ros.spec.config import ModelConfig

_EPS = 1e-12


def _size_weighted_scatter(
    x: torch.Tensor,
    size: torch.Tensor,
    keep_x: torch.Tensor,
    keep_size: torch.Tensor,
    src_x: torch.Tensor,
    src_size: torch.Tensor,
    dst_idx: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Merge src tokens into keep tokens at `dst_idx` by size-weighted averaging.

    keep_* (B, M, ...), src_* (B, R, ...), dst_idx (B, R) indexes keep. A destination whose
    total size is 0 (padding merged with padding) keeps its old value.
    """
    d = x.shape[-1]
    num = keep_x * keep_size[..., None]
    num = num.scatter_add(1, dst_idx[..., None].expand(-1, -1, d), src_x * src_size[..., None])
    den = keep_size.scatter_add(1, dst_idx, src_size)
    merged = torch.where(den[..., None] > 0, num / den.clamp_min(_EPS)[..., None], keep_x)
    return merged, den


def bipartite_merge(
    x: torch.Tensor,
    size: torch.Tensor,
    r: int,
    metric: torch.Tensor | None = None,
    pos: torch.Tensor | None = None,
    pos_weight: float = 0.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """ToMe bipartite soft matching: (B, N, D), (B, N) sizes -> N - r tokens and their sizes.

    Tokens alternate into sets A (even indices) and B (odd). Each A token finds its most similar
    B token (cosine similarity of `metric`, default `x`); the r A tokens with the best matches are
    merged into their B match by size-weighted averaging (sizes add), which keeps
    sum(size * x) and sum(size) exactly. With `pos` (B, N, P) and `pos_weight` w > 0 the
    match score is cosine similarity - w * squared centroid distance, so merges stay local.
    Scores are rounded to `ops.MERGE_SCORE_QUANTUM` so float noise cannot break ties.
    Padding (size 0): a padding A token is merged first
    (similarity +inf: it changes nothing), and a real A token never picks a padding B token
    (similarity -inf), so padding never alters a real token. Output order: unmerged A, then B.
    Differentiable in x (the matching itself is not).
    """
    if x.ndim != 3 or size.shape != x.shape[:2]:
        raise ValueError(f"x must be (B, N, D) and size (B, N), got {tuple(x.shape)}, "
                         f"{tuple(size.shape)}")
    n = x.shape[1]
    r = min(int(r), n // 2)
    if r <= 0:
        return x, size
    m = x if metric is None else metric
    m = m / m.norm(dim=-1, keepdim=True).clamp_min(1e-6)
    a_m, b_m = m[:, ::2], m[:, 1::2]
    a_x, b_x = x[:, ::2], x[:, 1::2]
    a_s, b_s = size[:, ::2], size[:, 1::2]
    with torch.no_grad():
        scores = (a_m @ b_m.transpose(-2, -1)).float()  # (B, Na, Nb)
        if pos is not None and pos_weight > 0:
            scores = scores - pos_weight * _sq_dist(pos[:, ::2], pos[:, 1::2])
        q = 1.0 / ops.MERGE_SCORE_QUANTUM  # near-ties stay ties, broken by index
        scores = torch.round(scores * q) / q
        scores = scores.masked_fill((b_s <= 0)[:, None, :], -float("inf"))
        scores = scores.masked_fill((a_s <= 0)[:, :, None], float("inf"))
        best, best_idx = scores.max(dim=-1)  # (B, Na)
        order = best.argsort(dim=-1, descending=True, stable=True)
        src_idx, unm_idx = order[:, :r], order[:, r:]
        dst_idx = best_idx.gather(1, src_idx)
    d = x.shape[-1]
    unm_x = a_x.gather(1, unm_idx[..., None].expand(-1, -1, d))
    unm_s = a_s.gather(1, unm_idx)
    src_x = a_x.gather(1, src_idx[..., None].expand(-1, -1, d))
    src_s = a_s.gather(1, src_idx)
    b_x, b_s = _size_weighted_scatter(x, size, b_x, b_s, src_x, src_s, dst_idx)
    return torch.cat([unm_x, b_x], 1), torch.cat([unm_s, b_s], 1)


def _sq_dist(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """(B, Na, P), (B, Nb, P) -> (B, Na, Nb) squared Euclidean distances (exact, no cdist
    matmul trick, so the numpy twin agrees to rounding)."""
    return ((a[:, :, None, :] - b[:, None, :, :]) ** 2).sum(-1).float()


def token_positions(t: int, temporal_window: int) -> torch.Tensor:
    """(t, N, 3) normalised (x, y, time) of every token of a window's last t slots."""
    return torch.from_numpy(ops.token_positions(t, temporal_window))


def compact(x: torch.Tensor, size: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Move real tokens (size > 0) to the front of each row, keeping their order, and cut the
    padding columns every row has. At least one column is kept."""
    real = size > 0
    k = max(int(real.sum(1).max()), 1) if size.numel() else 1
    order = (~real).to(torch.int8).argsort(dim=1, stable=True)[:, :k]
    xs = x.gather(1, order[..., None].expand(-1, -1, x.shape[-1]))
    return xs, size.gather(1, order)


class TemporalFusion(nn.Module):
    """Fuse a window of T frames' encoder tokens into at most `max_tokens` sized tokens.

    1. A learned time embedding (cfg.temporal_window, D) is added; the most recent frame uses
       the last slot, so a short window (start of a stream) uses the last T slots.
    2. Static averaging (HoliTom-like): a position whose raw token (before the time embedding)
       stays within `static_threshold` of its window mean (relative L2: ||x_t - mean|| <=
       thr * ||mean|| for every t) becomes one token, the mean over time of the embedded
       tokens, with size T. The other T - 1 slots of that position become padding.
    3. Padding is compacted away and ToMe bipartite merging is repeated until the row length
       (hence the real count) is at most `max_tokens`; with cfg.fusion_pos_weight > 0 the match
       score penalises distance between token centroids (merges stay local in space-time).
    Every token carries its size-weighted (x, y, t) centroid in [0, 1] (see
    `ops.token_positions`), averaged exactly like the tokens; the gesture head reads them.
    Returns (tokens (B, K, D), sizes (B, K), positions (B, K, 3)), K <= max_tokens, size 0 =
    padding; sizes sum to T * N per row and the size-weighted mean of the tokens equals the
    mean of the embedded input.
    """

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        if cfg.temporal_window < 1:
            raise ValueError(f"ModelConfig.temporal_window must be >= 1, got "
                             f"{cfg.temporal_window}")
        self.cfg = cfg
        self.time_embed = nn.Parameter(torch.zeros(cfg.temporal_window, cfg.dim))
        nn.init.trunc_normal_(self.time_embed, std=0.02)

    def _embed_time(self, window: torch.Tensor) -> torch.Tensor:
        if window.ndim != 4 or window.shape[-1] != self.cfg.dim:
            raise ValueError(f"window must be (B, T, N, {self.cfg.dim}), got "
                             f"{tuple(window.shape)}")
        t = window.shape[1]
        if not 1 <= t <= self.cfg.temporal_window:
            raise ValueError(f"window has T={t} frames; must be in [1, "
                             f"{self.cfg.temporal_window}] (cfg.temporal_window)")
        return window + self.time_embed[-t:][None, :, None, :]

    def _positions(self, b: int, t: int, like: torch.Tensor) -> torch.Tensor:
        pos = token_positions(t, self.cfg.temporal_window).to(like)
        return pos[None].expand(b, -1, -1, -1)

    def dense(
        self, window: torch.Tensor, positions: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """No fusion (the dense baseline): (B, T*N, D) time-embedded tokens, sizes all 1, and
        their positions: the 14 x 14 grid's, or `positions` (T, N, 3) for another layout."""
        x = self._embed_time(window)
        b, t, n, d = x.shape
        if positions is None:
            pos = self._positions(b, t, x).reshape(b, t * n, 3)
        else:
            if positions.shape != (t, n, 3):
                raise ValueError(f"positions must be ({t}, {n}, 3), got "
                                 f"{tuple(positions.shape)}")
            pos = positions.to(x)[None].expand(b, -1, -1, -1).reshape(b, t * n, 3)
        return x.reshape(b, t * n, d), x.new_ones(b, t * n), pos

    @staticmethod
    def static_mask(window: torch.Tensor, static_threshold: float) -> torch.Tensor:
        """(B, T, N, D) -> (B, N) bool: positions that stayed put over the whole window."""
        with torch.no_grad():
            mean = window.mean(1, keepdim=True)
            dev = (window - mean).norm(dim=-1).amax(1)  # (B, N)
            return dev <= static_threshold * mean[:, 0].norm(dim=-1)

    def forward(
        self, window: torch.Tensor, max_tokens: int, static_threshold: float = 0.1
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        if isinstance(max_tokens, bool) or int(max_tokens) < 1:
            raise ValueError(f"max_tokens must be >= 1, got {max_tokens}")
        x, size = self.merge_input(window, static_threshold)
        return self.merge(x, size, int(max_tokens))

    def merge_input(
        self, window: torch.Tensor, static_threshold: float = 0.1
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Steps 1-2 and the compaction: (B, T, N, D) -> what enters the merge loop, rows
        (B, M, D + 3) of token and centroid and their sizes (B, M). The streaming engine
        reads M: the loop's cost follows it, not the window's T * N."""
        if static_threshold < 0:
            raise ValueError(f"static_threshold must be >= 0, got {static_threshold}")
        x = self._embed_time(window)
        b, t, n, d = x.shape
        # positions ride along as 3 extra channels: every average below applies to them too
        x = torch.cat([x, self._positions(b, t, x)], -1)
        size = x.new_ones(b, t, n)
        if t > 1 and static_threshold > 0:
            static = self.static_mask(window, static_threshold)  # (B, N)
            # the latest slot of a static position holds the mean with size T; older slots pad
            mean_tok = x.mean(1)
            last = torch.where(static[..., None], mean_tok, x[:, -1])
            x = torch.cat([x[:, :-1] * (~static)[:, None, :, None], last[:, None]], 1)
            older = (~static).to(size.dtype)[:, None].expand(b, t - 1, n)
            size = torch.cat([older, torch.where(static, float(t), 1.0)[:, None].to(size)], 1)
        return compact(x.reshape(b, t * n, d + 3), size.reshape(b, t * n))

    def merge(
        self, x: torch.Tensor, size: torch.Tensor, max_tokens: int
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Step 3 on `merge_input`'s rows: bipartite merging until at most `max_tokens` remain
        -> (tokens, sizes, positions)."""
        d = self.cfg.dim
        w = float(self.cfg.fusion_pos_weight)
        while x.shape[1] > max_tokens:
            x, size = bipartite_merge(x, size, x.shape[1] - max_tokens, metric=x[..., :d],
                                      pos=x[..., d:], pos_weight=w)
            x, size = compact(x, size)
        return x[..., :d], size, x[..., d:]


# ------------------------------------------------------- compression-aware pre-training
