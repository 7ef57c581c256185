"""ANC, Adaptive Neural Compression: complexity features, the branch router and its losses.

A tiny MLP maps four cheap scene-complexity features to logits over the encoder branches
(small / medium / large; "reuse" is decided by STTF, not here). Training samples branches with a
straight-through Gumbel-softmax and adds an expected-FLOPs budget loss and a load-balance term;
inference takes the argmax of softmax(logits / temperature) with hysteresis so the branch does
not flap between frames.

Feature definitions (all computed per frame / event window, no learned parts):

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

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .config import GRID, NUM_TOKENS, ModelConfig

# Torch-free pieces live in np_ops (the onnxruntime engine runs without torch); re-exported.
# np_ops also has numpy twins of the two feature functions below, which both engines use;
# test_onnx_engine.py checks they agree with these (training keeps the torch versions).
from .np_ops import (  # noqa: F401
    CHANGE_FLOOR,
    EDGE_THRESHOLD,
    NUM_FEATURES,
    BranchSelector,
    edge_density,
)


def _as_vector(v: torch.Tensor | np.ndarray, name: str, n: int = NUM_TOKENS) -> torch.Tensor:
    t = torch.as_tensor(np.asarray(v) if isinstance(v, np.ndarray) else v).detach()
    t = t.to("cpu", torch.float32).reshape(-1)
    if t.numel() != n:
        raise ValueError(f"{name} must have {n} entries, got {t.numel()}")
    if not torch.isfinite(t).all():
        raise ValueError(f"{name} contains NaN or inf values")
    return t


def frame_complexity_features(
    change: torch.Tensor | np.ndarray, threshold: float, gray_small: np.ndarray | None
) -> torch.Tensor:
    """(196,) per-token change (finite) -> (4,) float32 features; see the module docstring."""
    c = _as_vector(change, "change")
    thr = max(float(threshold), CHANGE_FLOOR)
    return torch.tensor(
        [
            float((c > thr).float().mean()),
            math.log1p(float(c.clamp_min(0).mean())),
            0.0,
            edge_density(gray_small) if gray_small is not None else 0.0,
        ],
        dtype=torch.float32,
    )


def event_complexity_features(
    counts: torch.Tensor | np.ndarray, n_events: int, window_us: int
) -> torch.Tensor:
    """(196,) events per patch -> (4,) float32 features; see the module docstring."""
    c = _as_vector(counts, "counts").clamp_min(0)
    if n_events < 0:
        raise ValueError(f"n_events must be >= 0, got {n_events}")
    if window_us < 0:
        raise ValueError(f"window_us must be >= 0, got {window_us}")
    rate_per_ms = n_events / (max(int(window_us), 1) / 1000.0)
    total = float(c.sum())
    spread = 0.0
    if total > 0:
        rows = torch.arange(NUM_TOKENS, dtype=torch.float32) // GRID
        cols = torch.arange(NUM_TOKENS, dtype=torch.float32) % GRID
        w = c / total
        var = sum(float((w * (p - (w * p).sum()) ** 2).sum()) for p in (rows, cols))
        spread = math.sqrt(var) / GRID
    return torch.tensor(
        [float((c > 0).float().mean()), math.log1p(float(c.mean())), math.log1p(rate_per_ms),
         spread],
        dtype=torch.float32,
    )


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


def routing_probs(logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """softmax(logits / temperature) over the last dim; higher temperature = flatter."""
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    return torch.softmax(logits / temperature, dim=-1)


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
