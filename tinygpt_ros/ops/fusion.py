"""STTF temporal fusion in numpy: static-token averaging and size-weighted bipartite soft
matching (ToMe) with centroid tracking, and the fused set's movement for caption reuse. The
ToMe loop runs a data-dependent number of times, so it is not an ONNX graph."""

from __future__ import annotations

import functools
from typing import NamedTuple

import numpy as np

from tinygpt_ros.spec.config import GRID, NUM_TOKENS

# ---------------------------------------------------------------------------- fusion

_EPS = 1e-12


def compact(x: np.ndarray, size: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Real tokens (size > 0) first, in order, padding cut (at least one row kept)."""
    real = np.flatnonzero(size > 0)
    if real.size == len(size):
        return x, size  # nothing to cut (the common case: no copy)
    if real.size == 0:
        real = np.zeros(1, np.intp)
    return x[real], size[real]


# ToMe match scores are rounded to this step before the argmax and the ordering: a uniform
# background makes exact ties, and without rounding the ~1e-6 differences between backends (or
# sensor noise) decided them, so torch and onnxruntime fused differently.
MERGE_SCORE_QUANTUM = 1.0 / 1024.0


def token_positions(t: int, temporal_window: int) -> np.ndarray:
    """(t, N, 3) float32 (x, y, time) of every token of a window's last t slots, in [0, 1]:
    x = (col + 0.5) / GRID, y = (row + 0.5) / GRID, time = slot / (temporal_window - 1) with
    the newest frame in the last slot (0 when the window holds one frame)."""
    return _token_positions(int(t), int(temporal_window)).copy()


@functools.lru_cache(maxsize=64)
def _token_positions(t: int, temporal_window: int) -> np.ndarray:
    """`token_positions`, computed once per (t, window): every frame needs the same table.
    Read-only so a caller cannot change the cached copy."""
    if not 1 <= t <= temporal_window:
        raise ValueError(f"t must be in [1, {temporal_window}], got {t}")
    rows, cols = np.divmod(np.arange(NUM_TOKENS), GRID)
    xy = np.stack([(cols + 0.5) / GRID, (rows + 0.5) / GRID], -1)
    slots = np.arange(temporal_window - t, temporal_window) / max(temporal_window - 1, 1)
    pos = np.concatenate([np.broadcast_to(xy, (t, NUM_TOKENS, 2)),
                          np.broadcast_to(slots[:, None, None], (t, NUM_TOKENS, 1))], -1)
    pos = pos.astype(np.float32)
    pos.flags.writeable = False
    return pos


def bipartite_merge(x: np.ndarray, size: np.ndarray, r: int, d: int | None = None,
                    pos_weight: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """ToMe bipartite soft matching on one row, (N, C), (N,) -> N - r tokens; the same rule as
    `sttf.bipartite_merge` (A = even, B = odd indices; padding A merged first, never into
    padding B; the r best-matched A tokens are size-weighted into their B match). Channels
    `d:` are positions: excluded from the cosine metric, and with `pos_weight` > 0 their
    squared distance is subtracted from it. Scores are rounded to MERGE_SCORE_QUANTUM.

    Written for speed on the per-frame path without changing a single bit of the result
    (checked against the plain formulation in test_fusion_fast): the squared distance is
    summed channel by channel in (N/2, N/2) planes instead of over an (N/2, N/2, P) block
    (the same additions in the same order), and the size-weighted scatter adds into the
    flattened token array (numpy's fast one-dimensional `add.at`, same order of additions).
    The planes are built from contiguous copies of the position columns (broadcasting a
    column strided by the token width was 70% of the first merge of a 784-token window)
    and the score arithmetic runs in place (each fresh 600 KB plane costs page faults). On a
    random 4-frame window fused to 31 tokens (2026-12-05) a fusion went 4.4 -> 3.4 ms; it is
    the frames that fuse a whole new window (a refresh, a scene cut) that gain, since the
    merges of a few hundred tokens cost numpy's per-call overhead more than arithmetic."""
    n, c = x.shape
    r = min(int(r), n // 2)
    if r <= 0:
        return x, size
    d = c if d is None else d
    feats = x[:, :d]
    # np.linalg.norm's own arithmetic for a real axis, without its per-call checks
    m = feats / np.maximum(np.sqrt(np.add.reduce(feats * feats, axis=-1, keepdims=True)), 1e-6)
    a_x, b_x = x[::2], x[1::2]
    a_s, b_s = size[::2], size[1::2]
    scores = (m[::2] @ m[1::2].T).astype(np.float32, copy=False)
    if pos_weight > 0 and d < c:
        dist = _squared_distance(a_x[:, d:], b_x[:, d:])
        dist *= np.float32(pos_weight)
        scores -= dist
    q = np.float32(1.0 / MERGE_SCORE_QUANTUM)
    scores *= q
    np.round(scores, out=scores)
    scores /= q
    a_pad, b_pad = a_s <= 0, b_s <= 0
    if b_pad.any():  # padding only comes from a caller's input: compact() drops it after
        scores[:, b_pad] = -np.inf
    if a_pad.any():
        scores[a_pad, :] = np.inf
    best_idx = scores.argmax(-1)
    best = scores[np.arange(len(best_idx)), best_idx]
    order = np.argsort(-best, kind="stable")
    src_idx, unm_idx = order[:r], order[r:]
    dst_idx = best_idx[src_idx]
    src_s = a_s[src_idx]
    num = b_x * b_s[:, None]
    flat = (dst_idx[:, None] * c + np.arange(c)).reshape(-1)
    np.add.at(num.reshape(-1), flat, (a_x[src_idx] * src_s[:, None]).reshape(-1))
    den = b_s.copy()
    np.add.at(den, dst_idx, src_s)
    merged = num / np.maximum(den, _EPS)[:, None]
    if b_pad.any():  # a padding B token nothing merged into stays as it was
        merged = np.where(den[:, None] > 0, merged, b_x)
    return (np.concatenate([a_x[unm_idx], merged]).astype(np.float32, copy=False),
            np.concatenate([a_s[unm_idx], den]).astype(np.float32, copy=False))


def _squared_distance(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(M, P), (K, P) -> (M, K) float32 squared distances, summed over P as ((p0^2 + p1^2) +
    p2^2), the order `.sum(-1)` over an (M, K, P) block adds in, in one output plane and one
    scratch plane."""
    a_cols, b_cols = np.ascontiguousarray(a.T), np.ascontiguousarray(b.T)
    out = np.subtract(a_cols[0][:, None], b_cols[0][None, :])
    out *= out
    plane = np.empty_like(out)
    for ak, bk in zip(a_cols[1:], b_cols[1:], strict=True):
        np.subtract(ak[:, None], bk[None, :], out=plane)
        plane *= plane
        out += plane
    return out


def static_mask(window: np.ndarray, static_threshold: float) -> np.ndarray:
    """(T, N, D) -> (N,) bool: positions that stayed within the threshold of their mean."""
    mean = window.mean(0, keepdims=True)
    dev = np.linalg.norm(window - mean, axis=-1).max(0)
    return dev <= static_threshold * np.linalg.norm(mean[0], axis=-1)


class Fused(NamedTuple):
    """One window's fusion result. `merge_input` is how many tokens entered the ToMe merge
    loop after static averaging: the loop's cost (`spec.flops.fusion_flops`) follows it, and
    on a scene that holds still it is far below the window's T * N."""

    tokens: np.ndarray  # (K, D)
    sizes: np.ndarray  # (K,), 0 = padding
    positions: np.ndarray  # (K, 3) size-weighted (x, y, t) centroids
    merge_input: int


def temporal_fusion(
    window: np.ndarray,
    time_embed: np.ndarray,
    max_tokens: int | None,
    static_threshold: float = 0.1,
    pos_weight: float = 0.0,
) -> Fused:
    """`sttf.TemporalFusion` for one window (T, N, D) -> tokens (K, D), sizes (K,), size-weighted
    (x, y, t) centroids (K, 3) and the merge loop's input count. `max_tokens=None` is the dense
    path (time embedding only, T*N tokens of size 1 at their own positions, no merge)."""
    window = np.asarray(window, np.float32)
    if window.ndim != 3 or window.shape[-1] != time_embed.shape[-1]:
        raise ValueError(f"window must be (T, N, {time_embed.shape[-1]}), got {window.shape}")
    t, n, d = window.shape
    if not 1 <= t <= time_embed.shape[0]:
        raise ValueError(f"window has T={t} frames; must be in [1, {time_embed.shape[0]}]")
    embed = time_embed[-t:].astype(np.float32, copy=False)[:, None, :]
    if max_tokens is None:
        return Fused((window + embed).reshape(t * n, d), np.ones(t * n, np.float32),
                     token_positions(t, time_embed.shape[0]).reshape(t * n, 3), t * n)
    if isinstance(max_tokens, bool) or int(max_tokens) < 1:
        raise ValueError(f"max_tokens must be >= 1, got {max_tokens}")
    max_tokens = int(max_tokens)
    pos = _token_positions(t, time_embed.shape[0])  # read-only: only copied out of below
    # Each token row carries its (x, y, t) position: positions are averaged like the tokens.
    if t > 1 and static_threshold > 0:
        # A static position becomes one token of size t (its mean over the window) in the
        # newest slot, and leaves the older slots; what moved keeps one token per slot. The
        # tokens come out already compacted: moving ones of the older slots in slot order,
        # then the newest slot. Only those rows are built (the whole (T, N, D + 3) window
        # with its positions was two 400 KB arrays a frame, mostly thrown away).
        static = static_mask(window, static_threshold)
        moving = np.flatnonzero(~static)
        n_older = (t - 1) * len(moving)
        x = np.empty((n_older + n, d + 3), np.float32)
        older = x[:n_older].reshape(t - 1, len(moving), d + 3)
        np.add(window[:-1, moving], embed[:-1], out=older[..., :d])
        older[..., d:] = pos[:-1, moving]
        last = x[n_older:]
        np.add(window[-1], embed[-1], out=last[:, :d])
        last[:, d:] = pos[-1]
        if static.any():
            still = np.flatnonzero(static)
            last[still, :d] = (window[:, still] + embed).mean(0)
            last[still, d:] = pos[:, still].mean(0)
        size = np.concatenate([np.ones(n_older, np.float32),
                               np.where(static, np.float32(t), np.float32(1.0))])
    else:
        x = np.concatenate([window + embed, pos], -1).reshape(t * n, d + 3)
        size = np.ones(t * n, np.float32)
    merge_input = x.shape[0]
    x, size = _merge_down(x, size, max_tokens, d, pos_weight)
    return Fused(x[:, :d], size, x[:, d:], merge_input)


def _merge_down(x: np.ndarray, size: np.ndarray, max_tokens: int, d: int,
                pos_weight: float) -> tuple[np.ndarray, np.ndarray]:
    """The merge loop: bipartite merges of (n, d + 3) tokens-with-positions until at most
    `max_tokens` real ones are left."""
    while x.shape[0] > max_tokens:
        x, size = bipartite_merge(x, size, x.shape[0] - max_tokens, d, pos_weight)
        x, size = compact(x, size)
    return x, size


def merge_fused(tokens: np.ndarray, sizes: np.ndarray, positions: np.ndarray,
                max_tokens: int, pos_weight: float = 0.0) -> Fused:
    """A fused set's real tokens (sizes > 0) merged on down to `max_tokens` by the same loop
    as `temporal_fusion` (its `merge_input` is the count that entered).

    Why: a caption decode that the budget has already made wait as long as it may, and whose
    whole set would still take its frame over a FLOPs target, reads a thinner set instead
    (`StreamingEngine._caption`). Merging on from the fused set costs a few small similarity
    matmuls, where fusing the window again would cost the whole loop once more."""
    if isinstance(max_tokens, bool) or int(max_tokens) < 1:
        raise ValueError(f"max_tokens must be >= 1, got {max_tokens}")
    real = np.asarray(sizes) > 0
    d = tokens.shape[1]
    x = np.concatenate([np.asarray(tokens, np.float32)[real],
                        np.asarray(positions, np.float32)[real]], -1)
    x, size = _merge_down(x, np.asarray(sizes, np.float32)[real], int(max_tokens), d,
                          pos_weight)
    return Fused(x[:, :d], size, x[:, d:], int(real.sum()))


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
