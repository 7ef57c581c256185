"""ANC for a pretrained captioner without retraining it: self-distil the depth router on the
user's own unlabelled frames.

For every frame the frames are streamed through the real engine (STTF on, ANC off, so the
router features are exactly the ones the engine computes at run time); besides, every branch
runs densely on the frame through the kernels' own `run_encoder` (a truncated depth, or the
pooled frame's 7 x 7 grid with its rows repeated over their patches, then what the family
does after the tower: GIT's final norm and visual projection) and is compared with the full
branch:

- target "tokens": relative L2 distance of the projected visual tokens (cheap);
- target "caption": whether the branch's greedy caption equals the full tower's (slower: one
  decode per branch and frame, but it is the property a user cares about).

A frame's label is the cheapest branch that stays within `tolerance` (tokens) or keeps the
caption; the full tower when none does. The router (an MLP on the standardised features) is
fitted with cross-entropy plus `model.anc.budget_loss`, the same expected-FLOPs budget as
TinyGPT's router training, so `budget` and the run-time temperature mean what they mean there.
No labels, no gradient into the captioner.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from tinygpt_ros.hf.engine import HfEngine
from tinygpt_ros.hf.router import RouterParams
from tinygpt_ros.model.anc import budget_loss
from tinygpt_ros.spec import flops as flops_model
from tinygpt_ros.spec.config import Knobs

log = logging.getLogger(__name__)
TARGETS = ("tokens", "caption")


@dataclass
class DistillSample:
    features: np.ndarray  # (F,) as the engine computed them
    distances: np.ndarray  # (branches,) relative token distance to the full tower
    same_caption: np.ndarray  # (branches,) bool; all True when not measured


class _FeatureTap:
    """Wraps an engine's kernels to record the router features of every step."""

    def __init__(self, kernels) -> None:
        self.inner = kernels
        self.last: np.ndarray | None = None

    def __getattr__(self, name: str):
        return getattr(self.inner, name)

    def router_logits(self, features: np.ndarray) -> np.ndarray:
        self.last = np.asarray(features, np.float32).copy()
        return self.inner.router_logits(features)


@torch.no_grad()
def branch_outputs(engine: HfEngine, frame: np.ndarray) -> list[torch.Tensor]:
    """Every branch's dense output rows on `frame`, as the decoder would read them (GIT:
    1 + 196 projected tokens; LLaVA: the tower features), from the kernels' own passes."""
    k = engine.kernels
    k = getattr(k, "inner", k)
    x = k.frame_input(frame)
    emb = k.embed_frame(x)
    return [torch.from_numpy(k.run_encoder(k.new_encoder_state(), emb, None, b, pixels=x)[0])
            for b in range(len(k.depths))]


def collect(engine: HfEngine, frames: Iterable[np.ndarray], target: str = "tokens",
            knobs: Knobs | None = None) -> list[DistillSample]:
    """Stream `frames` (one continuous stream) and measure every branch against the full one."""
    if target not in TARGETS:
        raise ValueError(f"target must be one of {TARGETS}, got {target!r}")
    for name, value in (knobs or Knobs()).as_dict().items():
        engine.set_knob(name, value)
    engine.set_knob("anc_enabled", False)
    tap = _FeatureTap(engine.kernels)
    engine.kernels = tap  # type: ignore[assignment]
    samples = []
    try:
        for frame in frames:
            engine.process_frame(frame)
            outs = branch_outputs(engine, frame)
            full = outs[-1]
            scale = float(full.norm(dim=-1).mean()) + 1e-8
            dist = np.array([float((o - full).norm(dim=-1).mean()) / scale for o in outs],
                            np.float32)
            same = np.ones(len(outs), bool)
            if target == "caption":
                sizes = np.ones(full.shape[0], np.float32)
                ref = tap.inner.generate(full.numpy(), sizes)
                same = np.array([tap.inner.generate(o.numpy(), sizes) == ref for o in outs])
            samples.append(DistillSample(tap.last.copy(), dist, same))  # type: ignore[union-attr]
    finally:
        engine.kernels = tap.inner
    return samples


def labels(samples: list[DistillSample], target: str, tolerance: float) -> np.ndarray:
    """Cheapest branch that keeps the full tower's output (per `target`), else the full one."""
    out = []
    for s in samples:
        ok = s.same_caption if target == "caption" else s.distances <= tolerance
        ok = ok.copy()
        ok[-1] = True
        out.append(int(np.flatnonzero(ok)[0]))
    return np.array(out, np.int64)


def fit_router(
    samples: list[DistillSample],
    y: np.ndarray,
    branch_depths: tuple[int, ...],
    branch_grids: tuple[int, ...],
    branch_flops: list[float],
    budget: float = 1.0,
    hidden: int = 16,
    steps: int = 300,
    seed: int = 0,
) -> RouterParams:
    """Cross-entropy to the distilled labels + expected-FLOPs budget; numpy router out."""
    if not samples:
        raise ValueError("no frames to train the router on")
    torch.manual_seed(seed)
    x = torch.from_numpy(np.stack([s.features for s in samples]))
    mean = x.mean(0)
    std = x.std(0, unbiased=False).clamp_min(1e-3) if len(x) > 1 else torch.ones_like(mean)
    xs = (x - mean) / std
    nb = len(branch_depths)
    net = nn.Sequential(nn.Linear(x.shape[1], hidden), nn.ReLU(), nn.Linear(hidden, nb))
    opt = torch.optim.Adam(net.parameters(), lr=0.02)
    target = torch.from_numpy(y)
    bf = torch.tensor(branch_flops, dtype=torch.float32)
    for _ in range(steps):
        logits = net(xs)
        loss = F.cross_entropy(logits, target)
        if budget < 1.0:
            loss = loss + budget_loss(torch.softmax(logits, -1), bf, budget)
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        acc = float((net(xs).argmax(-1) == target).float().mean())
    counts = np.bincount(y, minlength=nb).tolist()
    info = {"frames": len(samples), "label_counts": counts, "train_accuracy": acc,
            "budget": budget}
    log.info("router: %d frames, labels per branch %s, train accuracy %.2f", len(samples),
             counts, acc)
    w1, w2 = net[0], net[2]
    return RouterParams(tuple(branch_depths), tuple(branch_grids), mean.numpy(), std.numpy(),
                        w1.weight.detach().numpy(), w1.bias.detach().numpy(),
                        w2.weight.detach().numpy(), w2.bias.detach().numpy(), info)


def train_router(engine: HfEngine, streams: Iterable[Iterable[np.ndarray]],
                 target: str = "tokens", tolerance: float = 0.1, budget: float = 1.0,
                 knobs: Knobs | None = None) -> RouterParams:
    """Collect samples over every stream (each a bag's frames), label them, fit the router."""
    samples: list[DistillSample] = []
    for frames in streams:
        engine.reset()
        samples += collect(engine, frames, target, knobs)
    cfg = engine.cfg
    y = labels(samples, target, tolerance)
    params = fit_router(samples, y, cfg.branch_depths, engine.kernels.grids,
                        flops_model.branch_dense_flops(cfg), budget)
    params.info.update({"target": target, "tolerance": tolerance})
    return params
