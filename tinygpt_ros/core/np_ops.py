"""Torch-free (numpy + cv2) pieces of the pipeline, shared by both engines and by training.

Why here: the onnxruntime engine must run without torch, and the streaming controller must take
the same decisions whatever the backend. So everything data-dependent that is not a neural
network lives in numpy: input conversion and validation (moved from `preprocess.py`, which
re-exports it), the ANC complexity features and branch hysteresis (moved from `anc.py`), STTF
change detection, token selection and references, the stacked gated-encoder cache used with
ONNX graphs, and temporal fusion (the ToMe loop runs a data-dependent number of times, so it is
not an ONNX graph). The torch versions in `sttf.py` stay for training (batched, differentiable);
`test_onnx_engine.py` checks the two agree.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import cv2
import numpy as np

from .config import EVENT_GRID_SIZE, EVENT_SENSOR, GRID, IMAGE_SIZE, NUM_TOKENS
from .types import EVENT_DTYPE

# ---------------------------------------------------------------------------- preprocessing

# Fixed normalisation (x/255 - 0.5) / 0.25: no data set statistics to ship or keep in sync.
PIXEL_MEAN = 0.5
PIXEL_STD = 0.25
SMALL_GRAY_SIZE = 56  # gray thumbnail for cheap complexity features (edge density)
_EVENT_FIELDS = ("x", "y", "t", "p")


def _check_frame(frame: object, name: str = "frame") -> np.ndarray:
    """Validate an RGB frame (HxWx3, uint8 or float in [0, 1]); returns it unchanged."""
    if not isinstance(frame, np.ndarray):
        raise ValueError(f"{name} must be a numpy.ndarray, got {type(frame).__name__}")
    if frame.ndim != 3 or frame.shape[2] != 3:
        raise ValueError(f"{name} must be HxWx3 (RGB), got shape {tuple(frame.shape)}")
    if frame.shape[0] == 0 or frame.shape[1] == 0:
        raise ValueError(f"{name} is empty: shape {tuple(frame.shape)}")
    if frame.dtype == np.uint8:
        return frame
    if frame.dtype in (np.float32, np.float64):
        if not np.isfinite(frame).all():
            raise ValueError(f"{name} contains NaN or inf values")
        lo, hi = float(frame.min()), float(frame.max())
        if lo < 0.0 or hi > 1.0:
            raise ValueError(f"{name}: float frames must lie in [0, 1], got [{lo:.3g}, {hi:.3g}]")
        return frame
    raise ValueError(f"{name} dtype must be uint8 or float32/float64 in [0, 1], got {frame.dtype}")


def _resize(img: np.ndarray, size: int) -> np.ndarray:
    h, w = img.shape[:2]
    if (h, w) == (size, size):
        return img
    k = min(h // size, w // size)
    if k >= 2:
        # Integer-factor box filter first: cv2's INTER_AREA is fast only for integer ratios
        # (1080p -> 224: ~3 ms instead of ~14 ms). Up to k - 1 edge rows/columns are cropped.
        h, w = h // k, w // k
        img = cv2.resize(np.ascontiguousarray(img[: h * k, : w * k]), (w, h),
                         interpolation=cv2.INTER_AREA)
    # INTER_AREA averages when shrinking (no aliasing); it is only defined well for shrinking.
    interp = cv2.INTER_AREA if h >= size and w >= size else cv2.INTER_LINEAR
    return cv2.resize(np.ascontiguousarray(img), (size, size), interpolation=interp)


def _resized_unit(frame: object, size: int) -> np.ndarray:
    """Validate, resize to size x size and scale to float32 [0, 1].

    uint8 frames that shrink are resized before the float conversion (cv2's uint8 area kernels
    are much faster on large camera frames; the fixed-point rounding costs <= 1/255).
    """
    img = _check_frame(frame)
    shrink = img.shape[0] >= size and img.shape[1] >= size
    if img.dtype == np.uint8 and shrink:
        return _resize(img, size).astype(np.float32) * np.float32(1.0 / 255.0)
    if img.dtype == np.uint8:
        img = img.astype(np.float32) * np.float32(1.0 / 255.0)
    return _resize(img.astype(np.float32, copy=False), size)


def frame_to_array(frame: np.ndarray) -> np.ndarray:
    """HxWx3 RGB (uint8, or float in [0, 1]) of any size -> (3, 224, 224) float32, normalised."""
    img = (_resized_unit(frame, IMAGE_SIZE) - PIXEL_MEAN) / PIXEL_STD
    return np.ascontiguousarray(img.transpose(2, 0, 1), dtype=np.float32)


def small_gray(frame: np.ndarray) -> np.ndarray:
    """56 x 56 float32 gray in [0, 1] (BT.601 luma), for cheap complexity features."""
    img = _resized_unit(frame, SMALL_GRAY_SIZE)
    return np.ascontiguousarray(img @ np.array([0.299, 0.587, 0.114], np.float32))


def validate_events(events: object, sensor: int = EVENT_SENSOR) -> np.ndarray:
    """Check an event window and return it as a 1-D `EVENT_DTYPE` array.

    Accepts `EVENT_DTYPE` or any 1-D structured array with integer fields x, y, t, p.
    Requires 0 <= x, y < sensor, t sorted ascending (ties allowed) and polarity p in {0, 1}.
    An empty window is valid (nothing changed).
    """
    if not isinstance(events, np.ndarray):
        raise ValueError(f"events must be a numpy structured array, got {type(events).__name__}")
    names = events.dtype.names
    if names is None or not set(_EVENT_FIELDS) <= set(names):
        raise ValueError(
            f"events dtype must be EVENT_DTYPE (fields x, y, t, p), got {events.dtype}"
        )
    for f in _EVENT_FIELDS:
        kind = events.dtype[f].kind
        if kind not in "iub":
            raise ValueError(f"events field {f!r} must be an integer type, got {events.dtype[f]}")
    if events.ndim != 1:
        raise ValueError(f"events must be 1-D, got shape {events.shape}")
    if events.size == 0:
        return np.zeros(0, EVENT_DTYPE)
    for f in ("x", "y"):
        v = events[f]
        lo, hi = int(v.min()), int(v.max())
        if lo < 0 or hi >= sensor:
            raise ValueError(
                f"events field {f!r} outside the {sensor}x{sensor} sensor: range [{lo}, {hi}]"
            )
    t = events["t"].astype(np.int64)
    if t.size > 1 and bool((np.diff(t) < 0).any()):
        bad = int(np.argmax(np.diff(t) < 0))
        raise ValueError(f"events field 't' must be sorted ascending (t[{bad + 1}] < t[{bad}])")
    p = events["p"]
    if not bool(np.isin(p, (0, 1)).all()):
        raise ValueError(f"events field 'p' (polarity) must be 0 or 1, got {np.unique(p)[:8]}")
    if events.dtype == EVENT_DTYPE:
        return events
    out = np.empty(events.shape, EVENT_DTYPE)
    for f in _EVENT_FIELDS:
        out[f] = events[f]
    return out


def events_histogram(events: np.ndarray, sensor: int = EVENT_SENSOR) -> np.ndarray:
    """Events -> (2, 112, 112) float32: channel = polarity (0 darker, 1 brighter), log1p(count).

    Pixel (x, y) lands in bin (y * 112 // sensor, x * 112 // sensor). No events -> zeros.
    """
    ev = validate_events(events, sensor)
    g = EVENT_GRID_SIZE
    hist = np.zeros(2 * g * g, np.float32)
    if ev.size:
        bx = ev["x"].astype(np.int64) * g // sensor
        by = ev["y"].astype(np.int64) * g // sensor
        idx = ev["p"].astype(np.int64) * (g * g) + by * g + bx
        hist += np.bincount(idx, minlength=2 * g * g).astype(np.float32)
    return np.log1p(hist).reshape(2, g, g)


def events_per_patch(events: np.ndarray, sensor: int = EVENT_SENSOR) -> np.ndarray:
    """Events per token, (196,) float32, row-major (row = y) like the patch embedding's flatten.

    Token of pixel (x, y) = (y * 14 // sensor) * 14 + x * 14 // sensor, which is the same 8 px
    patch the histogram bin of that pixel falls in (floor division nests).
    """
    ev = validate_events(events, sensor)
    if ev.size == 0:
        return np.zeros(NUM_TOKENS, np.float32)
    col = ev["x"].astype(np.int64) * GRID // sensor
    row = ev["y"].astype(np.int64) * GRID // sensor
    return np.bincount(row * GRID + col, minlength=NUM_TOKENS).astype(np.float32)


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


# ---------------------------------------------------------------------------- STTF gating


def token_change(embed: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """Per-token L2 norm of `embed - reference`: (N, D), (N, D) -> (N,) float32."""
    if embed.shape != reference.shape:
        raise ValueError(f"embed {tuple(embed.shape)} and reference {tuple(reference.shape)} "
                         "must have the same shape")
    diff = np.asarray(embed, np.float32) - np.asarray(reference, np.float32)
    return np.sqrt(np.einsum("nd,nd->n", diff, diff)).astype(np.float32)


def select_tokens(change: np.ndarray, threshold: float, max_active: int = 0) -> np.ndarray:
    """Tokens to recompute, (N,) bool; the same rule as `sttf.select_tokens`.

    threshold == 0: every token (the cap only budgets gated frames). Otherwise `change >
    threshold`, and with `max_active > 0` the `max_active` largest changes among those (ties:
    lower index first).
    """
    if threshold < 0:
        raise ValueError(f"threshold must be >= 0, got {threshold}")
    if max_active < 0:
        raise ValueError(f"max_active must be >= 0, got {max_active}")
    change = np.asarray(change, np.float32)
    if change.ndim != 1:
        raise ValueError(f"change must be 1-D (N,), got shape {tuple(change.shape)}")
    if threshold == 0:
        return np.ones(change.shape, bool)
    sel = change > threshold
    if 0 < max_active < int(sel.sum()):
        masked = np.where(sel, change, -np.inf)
        top = np.argsort(-masked, kind="stable")[:max_active]
        sel = np.zeros_like(sel)
        sel[top] = True
    return sel


class TokenReference:
    """Per-token reference embeddings of one stream (the value each token had when last run)."""

    def __init__(self) -> None:
        self.value: np.ndarray | None = None

    @property
    def is_empty(self) -> bool:
        return self.value is None

    def reset(self) -> None:
        self.value = None

    def update(self, embed: np.ndarray, selected: np.ndarray | None = None) -> None:
        """Copy the selected rows of `embed` (N, D); all rows when empty or `selected` is None."""
        if self.value is None or selected is None or self.value.shape != embed.shape:
            self.value = np.array(embed, np.float32, copy=True)
            return
        if selected.shape != embed.shape[:1] or selected.dtype != bool:
            raise ValueError(f"selected must be a ({embed.shape[0]},) bool array, got "
                             f"{tuple(selected.shape)} {selected.dtype}")
        self.value[selected] = embed[selected]


# One gated step of an encoder branch: (tokens (N,D), idx (n,) int64, k, v (L,H,N,hd), y (L,N,D))
# -> (branch output (N,D), k, v, y), as exported by `export.py` (`encoder_b{i}`).
EncoderStep = Callable[
    [np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray],
    tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray],
]


class StackedEncoderCache:
    """`encoder.GatedEncoderCache` semantics on stacked numpy caches, for graph backends.

    Holds per block the keys and values (L, H, N, hd) and outputs (L, N, D) of the last pass;
    valid for the first L blocks. `run` is dense (all rows, zero caches in) when `selected` is
    None or all True, the cache is empty, N changed or the branch is deeper than what is cached;
    otherwise it passes only the selected rows' indices and the caches cut to the branch depth.
    """

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.k: np.ndarray | None = None
        self.v: np.ndarray | None = None
        self.y: np.ndarray | None = None
        self.n_recomputed = 0
        self.last_dense = False

    @property
    def is_empty(self) -> bool:
        return self.y is None

    @property
    def depth(self) -> int:
        return 0 if self.y is None else int(self.y.shape[0])

    def run(
        self,
        step: EncoderStep,
        tokens: np.ndarray,
        selected: np.ndarray | None,
        depth: int,
        heads: int,
    ) -> np.ndarray:
        n, d = tokens.shape
        if selected is not None and (selected.shape != (n,) or selected.dtype != bool):
            raise ValueError(f"selected must be a ({n},) bool array, got "
                             f"{tuple(selected.shape)} {selected.dtype}")
        dense = (
            selected is None
            or bool(selected.all())
            or self.is_empty
            or depth > self.depth
            or self.y.shape[1] != n  # type: ignore[union-attr]
        )
        if dense:
            idx = np.arange(n, dtype=np.int64)
            k = np.zeros((depth, heads, n, d // heads), np.float32)
            v = np.zeros_like(k)
            y = np.zeros((depth, n, d), np.float32)
        else:
            idx = np.flatnonzero(selected).astype(np.int64)
            k, v, y = self.k[:depth], self.v[:depth], self.y[:depth]  # type: ignore[index]
        out, self.k, self.v, self.y = step(
            np.ascontiguousarray(tokens, np.float32), idx, np.ascontiguousarray(k),
            np.ascontiguousarray(v), np.ascontiguousarray(y),
        )
        self.n_recomputed = int(idx.size)
        self.last_dense = bool(dense)
        return out


# ---------------------------------------------------------------------------- fusion

_EPS = 1e-12


def compact(x: np.ndarray, size: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Real tokens (size > 0) first, in order, padding cut (at least one row kept)."""
    real = size > 0
    k = max(int(real.sum()), 1)
    order = np.argsort(~real, kind="stable")[:k]
    return x[order], size[order]


# ToMe match scores are rounded to this step before the argmax and the ordering: a uniform
# background makes exact ties, and without rounding the ~1e-6 differences between backends (or
# sensor noise) decided them, so torch and onnxruntime fused differently.
MERGE_SCORE_QUANTUM = 1.0 / 1024.0


def token_positions(t: int, temporal_window: int) -> np.ndarray:
    """(t, N, 3) float32 (x, y, time) of every token of a window's last t slots, in [0, 1]:
    x = (col + 0.5) / GRID, y = (row + 0.5) / GRID, time = slot / (temporal_window - 1) with
    the newest frame in the last slot (0 when the window holds one frame)."""
    if not 1 <= t <= temporal_window:
        raise ValueError(f"t must be in [1, {temporal_window}], got {t}")
    rows, cols = np.divmod(np.arange(NUM_TOKENS), GRID)
    xy = np.stack([(cols + 0.5) / GRID, (rows + 0.5) / GRID], -1)
    slots = np.arange(temporal_window - t, temporal_window) / max(temporal_window - 1, 1)
    pos = np.concatenate([np.broadcast_to(xy, (t, NUM_TOKENS, 2)),
                          np.broadcast_to(slots[:, None, None], (t, NUM_TOKENS, 1))], -1)
    return pos.astype(np.float32)


def bipartite_merge(x: np.ndarray, size: np.ndarray, r: int, d: int | None = None,
                    pos_weight: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """ToMe bipartite soft matching on one row, (N, C), (N,) -> N - r tokens; the same rule as
    `sttf.bipartite_merge` (A = even, B = odd indices; padding A merged first, never into
    padding B; the r best-matched A tokens are size-weighted into their B match). Channels
    `d:` are positions: excluded from the cosine metric, and with `pos_weight` > 0 their
    squared distance is subtracted from it. Scores are rounded to MERGE_SCORE_QUANTUM."""
    n = x.shape[0]
    r = min(int(r), n // 2)
    if r <= 0:
        return x, size
    d = x.shape[1] if d is None else d
    m = x[:, :d] / np.maximum(np.linalg.norm(x[:, :d], axis=-1, keepdims=True), 1e-6)
    a_m, b_m = m[::2], m[1::2]
    a_x, b_x = x[::2], x[1::2]
    a_s, b_s = size[::2], size[1::2]
    scores = (a_m @ b_m.T).astype(np.float32)
    if pos_weight > 0 and d < x.shape[1]:
        diff = a_x[:, None, d:] - b_x[None, :, d:]
        scores = scores - np.float32(pos_weight) * (diff * diff).sum(-1).astype(np.float32)
    q = np.float32(1.0 / MERGE_SCORE_QUANTUM)
    scores = np.round(scores * q) / q
    scores[:, b_s <= 0] = -np.inf
    scores[a_s <= 0, :] = np.inf
    best_idx = scores.argmax(-1)
    best = scores[np.arange(scores.shape[0]), best_idx]
    order = np.argsort(-best, kind="stable")
    src_idx, unm_idx = order[:r], order[r:]
    dst_idx = best_idx[src_idx]
    src_x, src_s = a_x[src_idx], a_s[src_idx]
    num = b_x * b_s[:, None]
    np.add.at(num, dst_idx, src_x * src_s[:, None])
    den = b_s.copy()
    np.add.at(den, dst_idx, src_s)
    merged = np.where(den[:, None] > 0, num / np.maximum(den, _EPS)[:, None], b_x)
    return (np.concatenate([a_x[unm_idx], merged]).astype(np.float32),
            np.concatenate([a_s[unm_idx], den]).astype(np.float32))


def static_mask(window: np.ndarray, static_threshold: float) -> np.ndarray:
    """(T, N, D) -> (N,) bool: positions that stayed within the threshold of their mean."""
    mean = window.mean(0, keepdims=True)
    dev = np.linalg.norm(window - mean, axis=-1).max(0)
    return dev <= static_threshold * np.linalg.norm(mean[0], axis=-1)


def temporal_fusion(
    window: np.ndarray,
    time_embed: np.ndarray,
    max_tokens: int | None,
    static_threshold: float = 0.1,
    pos_weight: float = 0.0,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """`sttf.TemporalFusion` for one window (T, N, D) -> tokens (K, D), sizes (K,), size-weighted
    (x, y, t) centroids (K, 3). `max_tokens=None` is the dense path (time embedding only, T*N
    tokens of size 1 at their own positions)."""
    window = np.asarray(window, np.float32)
    if window.ndim != 3 or window.shape[-1] != time_embed.shape[-1]:
        raise ValueError(f"window must be (T, N, {time_embed.shape[-1]}), got {window.shape}")
    t, n, d = window.shape
    if not 1 <= t <= time_embed.shape[0]:
        raise ValueError(f"window has T={t} frames; must be in [1, {time_embed.shape[0]}]")
    x = window + time_embed[-t:][:, None, :]
    pos = token_positions(t, time_embed.shape[0])
    if max_tokens is None:
        return x.reshape(t * n, d), np.ones(t * n, np.float32), pos.reshape(t * n, 3)
    if isinstance(max_tokens, bool) or int(max_tokens) < 1:
        raise ValueError(f"max_tokens must be >= 1, got {max_tokens}")
    max_tokens = int(max_tokens)
    x = np.concatenate([x, pos], -1)  # positions are averaged exactly like the tokens
    size = np.ones((t, n), np.float32)
    if t > 1 and static_threshold > 0:
        static = static_mask(window, static_threshold)
        last = np.where(static[:, None], x.mean(0), x[-1])
        x = np.concatenate([x[:-1] * (~static)[None, :, None], last[None]], 0)
        older = np.broadcast_to((~static).astype(np.float32)[None], (t - 1, n))
        size = np.concatenate([older, np.where(static, float(t), 1.0)[None]], 0)
        size = size.astype(np.float32)
    x, size = compact(x.reshape(t * n, d + 3), size.reshape(t * n))
    while x.shape[0] > max_tokens:
        x, size = bipartite_merge(x, size, x.shape[0] - max_tokens, d, pos_weight)
        x, size = compact(x, size)
    return x[:, :d], size, x[:, d:]


def fused_set_movement(current: np.ndarray, previous: np.ndarray) -> float:
    """How far the fused token set moved: the largest distance from a current token to its
    nearest previous token, relative to the previous tokens' mean norm.

    A max over tokens, not a mean: one small object moving changes a few fused tokens a lot
    and the set's average hardly at all, and that object is what the caption is about.
    """
    if len(current) == 0 or len(previous) == 0:
        return float("inf")
    d2 = ((current[:, None, :] - previous[None, :, :]) ** 2).sum(-1)
    nearest = np.sqrt(d2.min(axis=1))
    scale = float(np.linalg.norm(previous, axis=1).mean()) + 1e-8
    return float(nearest.max() / scale)
