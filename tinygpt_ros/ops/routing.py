"""ANC in numpy: the router's cheap complexity features, routing probabilities and the
branch selector's hysteresis. The one implementation both engines and training use."""

from __future__ import annotations

import math
from typing import Any

import cv2
import numpy as np

from tinygpt_ros.spec.config import GRID, NUM_TOKENS

# ---------------------------------------------------------------------------- ANC features

CHANGE_FLOOR = 0.05  # minimum change that counts as "changed" for the feature (embedding L2)
EDGE_THRESHOLD = 0.5  # Sobel magnitude on [0, 1] gray; a 1/8 intensity step gives ~0.5
NUM_FEATURES = 4


def _np(v: Any) -> np.ndarray:
    """numpy view of an array-like (torch tensors included, without importing torch)."""
    if hasattr(v, "detach"):
        v = v.detach().cpu().numpy()
    return np.asarray(v)


def as_vector(v: Any, name: str, n: int = NUM_TOKENS) -> np.ndarray:
    """(n,) float32 copy of `v`; ValueError naming `name` if the size is wrong or not finite."""
    t = _np(v).astype(np.float32).reshape(-1)
    if t.size != n:
        raise ValueError(f"{name} must have {n} entries, got {t.size}")
    if not np.isfinite(t).all():
        raise ValueError(f"{name} contains NaN or inf values")
    return t


def edge_density(gray_small: np.ndarray) -> float:
    """Fraction of pixels whose Sobel gradient magnitude exceeds EDGE_THRESHOLD."""
    g = np.asarray(gray_small, np.float32)
    if g.ndim != 2 or g.size == 0:
        raise ValueError(f"gray_small must be a non-empty 2-D array, got shape {g.shape}")
    gx = cv2.Sobel(g, cv2.CV_32F, 1, 0, ksize=3)
    gy = cv2.Sobel(g, cv2.CV_32F, 0, 1, ksize=3)
    return float((np.sqrt(gx * gx + gy * gy) > EDGE_THRESHOLD).mean())


def frame_complexity_features(
    change: Any, threshold: float, gray_small: np.ndarray | None
) -> np.ndarray:
    """(196,) per-token change (finite) -> (4,) float32 features; see `anc`'s docstring."""
    c = as_vector(change, "change")
    thr = max(float(threshold), CHANGE_FLOOR)
    return np.array(
        [
            float((c > thr).astype(np.float32).mean()),
            math.log1p(float(np.maximum(c, 0).mean(dtype=np.float32))),
            0.0,
            edge_density(gray_small) if gray_small is not None else 0.0,
        ],
        dtype=np.float32,
    )


def event_complexity_features(counts: Any, n_events: int, window_us: int) -> np.ndarray:
    """(196,) events per patch -> (4,) float32 features; see `anc`'s docstring."""
    c = np.maximum(as_vector(counts, "counts"), 0)
    if n_events < 0:
        raise ValueError(f"n_events must be >= 0, got {n_events}")
    if window_us < 0:
        raise ValueError(f"window_us must be >= 0, got {window_us}")
    rate_per_ms = n_events / (max(int(window_us), 1) / 1000.0)
    total = float(c.sum(dtype=np.float32))
    spread = 0.0
    if total > 0:
        rows = (np.arange(NUM_TOKENS) // GRID).astype(np.float32)
        cols = (np.arange(NUM_TOKENS) % GRID).astype(np.float32)
        w = c / np.float32(total)
        var = sum(float((w * (p - (w * p).sum()) ** 2).sum()) for p in (rows, cols))
        spread = math.sqrt(var) / GRID
    return np.array(
        [float((c > 0).astype(np.float32).mean()), math.log1p(float(c.mean(dtype=np.float32))),
         math.log1p(rate_per_ms), spread],
        dtype=np.float32,
    )


def softmax(x: np.ndarray, axis: int = -1) -> np.ndarray:
    x = np.asarray(x, np.float32)
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def routing_probs(logits: np.ndarray, temperature: float) -> np.ndarray:
    """softmax(logits / temperature) over the last dim; higher temperature = flatter."""
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    return softmax(np.asarray(logits, np.float32) / np.float32(temperature))


class BranchSelector:
    """Argmax with hysteresis: switch only when another branch beats the current one by more
    than `hysteresis` (in probability). hysteresis 0 = plain argmax (ties keep the current)."""

    def __init__(self, hysteresis: float = 0.0) -> None:
        self.hysteresis = hysteresis
        self.current: int | None = None

    @property
    def hysteresis(self) -> float:
        return self._hysteresis

    @hysteresis.setter
    def hysteresis(self, value: float) -> None:
        v = float(value)
        if not 0 <= v <= 1:
            raise ValueError(f"hysteresis must be in [0, 1], got {value}")
        self._hysteresis = v

    def reset(self) -> None:
        self.current = None

    def choose(self, probs: Any) -> int:
        p = _np(probs).astype(np.float32).reshape(-1)
        if p.size == 0 or not np.isfinite(p).all():
            raise ValueError(f"probs must be a non-empty finite vector, got {p.tolist()}")
        best = int(p.argmax())
        cur = self.current
        if cur is None or cur >= p.size or float(p[best] - p[cur]) > self.hysteresis:
            self.current = best
        return self.current
