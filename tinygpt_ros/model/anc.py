"""ANC, Adaptive Neural Compression, in torch: the branch router and its training losses.

The complexity features, routing probabilities and hysteresis are numpy (`ops/routing.py`):
one implementation that both engines and training use.

A tiny MLP maps four cheap scene-complexity features to logits over the encoder branches
(small / medium / large; "reuse" is decided by STTF, not here). Training samples branches with a
straight-through Gumbel-softmax and adds an expected-FLOPs budget loss and a load-balance term;
inference takes the argmax of softmax(logits / temperature) with hysteresis so the branch does
not flap between frames.

Feature definitions (`ops/routing.py`; per frame / event window, no learned parts):

frames, `frame_complexity_features(change, threshold, gray_small)`:
  0. changed fraction: mean(change > max(threshold, CHANGE_FLOOR)); the floor keeps dense mode
     (threshold 0) from counting float noise as change.
  1. motion energy: log1p(mean(change)).
  2. event rate: 0 (no events for frames).
  3. edge density: fraction of pixels of the 56 x 56 gray thumbnail ([0, 1]) whose 3x3 Sobel
     gradient magnitude exceeds EDGE_THRESHOLD; 0 when no thumbnail is given.
events, `event_complexity_features(counts, n_events, window_us)`:
  0. active fraction: fraction of the 196 patches with at least one event.
  1. log1p(mean events per patch).
  2. log1p(event rate in events per millisecond) (window_us clamped to >= 1 us).
  3. spatial spread: count-weighted standard deviation of the active patches' (row, col)
     positions, sqrt(var_row + var_col) / GRID (about 0.41 for events spread over the whole
     sensor); 0 without events.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from tinygpt_ros.spec.config import ModelConfig


class Router(nn.Module):
    """MLP: features -> router_hidden -> one logit per encoder branch.

    Features are standardised with fixed buffers (`feature_mean`, `feature_std`, saved with
    the weights) set from training data by `fit_normalizer`. A per-sample LayerNorm is not
    used on purpose: it would erase the overall magnitude of the features, which is exactly the
    complexity signal.
    """

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        nf, nb = cfg.num_router_features, len(cfg.branch_depths)
        if nf < 1 or cfg.router_hidden < 1 or nb < 1:
            raise ValueError("ModelConfig.num_router_features, router_hidden and branch_depths "
                             "must be non-empty / positive")
        self.register_buffer("feature_mean", torch.zeros(nf))
        self.register_buffer("feature_std", torch.ones(nf))
        self.fc1 = nn.Linear(nf, cfg.router_hidden)
        self.fc2 = nn.Linear(cfg.router_hidden, nb)

    @torch.no_grad()
    def fit_normalizer(self, features: torch.Tensor) -> None:
        """Set the standardisation from a (M, num_features) sample of training features."""
        f = features.reshape(-1, self.feature_mean.numel()).float()
        self.feature_mean.copy_(f.mean(0))
        self.feature_std.copy_(f.std(0, unbiased=False).clamp_min(1e-3) if len(f) > 1
                               else torch.ones_like(self.feature_std))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """(B, F) or (F,) -> logits (B, nb) or (nb,)."""
        x = (features - self.feature_mean) / self.feature_std
        return self.fc2(F.gelu(self.fc1(x)))


def gumbel_route(
    logits: torch.Tensor,
    temperature: float = 1.0,
    hard: bool = True,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Gumbel-softmax sample (B, nb); hard: one-hot forward, straight-through soft gradient."""
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    u = torch.rand(logits.shape, generator=generator, device="cpu").to(logits)
    u = u.clamp(1e-10, 1.0 - 1e-7)
    soft = torch.softmax((logits - torch.log(-torch.log(u))) / temperature, dim=-1)
    if not hard:
        return soft
    one_hot = F.one_hot(soft.argmax(-1), soft.shape[-1]).to(soft)
    return one_hot - soft.detach() + soft


def expected_flops(probs: torch.Tensor, branch_flops: torch.Tensor) -> torch.Tensor:
    """Per-sample expected encoder FLOPs: probs (B, nb) @ branch_flops (nb,) -> (B,)."""
    return probs @ branch_flops.to(probs)


def budget_loss(
    probs: torch.Tensor, branch_flops: torch.Tensor, budget_fraction: float
) -> torch.Tensor:
    """relu(mean_b E[FLOPs_b] / max(branch_flops) - budget_fraction) ** 2.

    The budget is an average over the batch, so busy frames may spend more as long as still
    frames spend less; zero under budget, growing quadratically above it.
    """
    if not 0 <= budget_fraction <= 1:
        raise ValueError(f"budget_fraction must be in [0, 1], got {budget_fraction}")
    bf = branch_flops.to(probs)
    frac = expected_flops(probs, bf).mean() / bf.max()
    return F.relu(frac - budget_fraction) ** 2


def load_balance_loss(probs: torch.Tensor) -> torch.Tensor:
    """nb * sum_k(mean_b p_bk ** 2) - 1: 0 for uniform average use, nb - 1 for total collapse."""
    p = probs.reshape(-1, probs.shape[-1]).mean(0)
    return p.numel() * (p * p).sum() - 1.0
