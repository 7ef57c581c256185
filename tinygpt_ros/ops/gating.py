"""STTF gating in numpy: per-token change test, token selection (threshold / top-k), the
references the change is measured against, and the stacked gated-encoder cache the ONNX
encoder steps run with."""

from __future__ import annotations

from collections.abc import Callable

import cv2
import numpy as np

from tinygpt_ros.spec.config import GRID

# ---------------------------------------------------------------------------- STTF gating


def token_change(embed: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """Per-token L2 norm of `embed - reference`: (N, D), (N, D) -> (N,) float32."""
    if embed.shape != reference.shape:
        raise ValueError(f"embed {tuple(embed.shape)} and reference {tuple(reference.shape)} "
                         "must have the same shape")
    diff = np.asarray(embed, np.float32) - np.asarray(reference, np.float32)
    return np.sqrt(np.einsum("nd,nd->n", diff, diff)).astype(np.float32)


def patch_means(unit: np.ndarray) -> np.ndarray:
    """(224, 224, 3) unit-float image -> (196, 3) per-patch channel means, row-major tokens."""
    return cv2.resize(np.ascontiguousarray(unit, np.float32), (GRID, GRID),
                      interpolation=cv2.INTER_AREA).reshape(GRID * GRID, 3)


def token_change_dc_tolerant(embed: np.ndarray, reference: np.ndarray, means: np.ndarray,
                             reference_means: np.ndarray, dc_basis: np.ndarray,
                             dc_tolerance: float) -> np.ndarray:
    """Per-token change that tolerates small uniform brightness shifts, (N,) float32.

    Why: the patch embedding is linear, and a uniform 1-level (1/255) brightness shift moves
    every token by more than the default threshold, so residual exposure errors and JPEG
    block-mean noise would recompute everything. The change is split into its per-patch mean
    (DC) part, `(means - reference_means) @ dc_basis` with `dc_basis` (3, D) = the embedding of
    a unit step per channel, and the rest; a token whose channel means moved by at most
    `dc_tolerance` reports only the rest, any other token its full change."""
    delta = np.asarray(embed, np.float32) - np.asarray(reference, np.float32)
    dm = np.asarray(means, np.float32) - np.asarray(reference_means, np.float32)
    full = np.sqrt(np.einsum("nd,nd->n", delta, delta))
    ac = delta - dm @ np.asarray(dc_basis, np.float32)
    rest = np.sqrt(np.einsum("nd,nd->n", ac, ac))
    return np.where(np.abs(dm).max(axis=1) <= dc_tolerance, rest, full).astype(np.float32)


# Second-difference kernel: blind to constant and linear intensity (what a slightly shifted or
# re-lit smooth area leaves in a frame difference), and for white noise of std s its response
# has std 6 s (the kernel's L2 norm).
_NOISE_KERNEL = np.array([[1, -2, 1], [-2, 4, -2], [1, -2, 1]], np.float32)
_NOISE_KERNEL_NORM = 6.0


def frame_noise(current: np.ndarray, previous: np.ndarray, quantile: float = 0.3) -> float:
    """Temporal noise of a pair of (224, 224, 3) unit-float frames: the std of the noise in
    their pixel difference, measured in each 16 x 16 patch and read at a low `quantile` over
    the patches.

    Why this shape: the difference of two frames holds the noise of both, the scene's changes
    and whatever motion compensation did not align. It is binned 2 x 2 (JPEG leaves a camera's
    noise correlated over a few pixels: binning keeps it, and white noise's std halves, which is
    undone), then the second-difference filter keeps the noise and drops most of a misaligned
    or changed smooth area. Patches where an edge moved or the scene changed still spread more
    and fall in the upper quantiles, while the still patches, the majority, give the noise. An
    estimate that swallowed motion would raise the floor and hide real changes: on a 2 px/frame
    pan of a sharp texture with no compensation this reads 0.002 where the plain std of the
    difference reads 0.014. A per-pixel median would snap to the 1/255 steps of 8-bit frames."""
    d = np.asarray(current, np.float32) - np.asarray(previous, np.float32)
    half = cv2.resize(d, (d.shape[1] // 2, d.shape[0] // 2), interpolation=cv2.INTER_AREA)
    white = cv2.filter2D(half, -1, _NOISE_KERNEL, borderType=cv2.BORDER_REFLECT)
    p = min(half.shape[0], half.shape[1]) // GRID
    blocks = white[: GRID * p, : GRID * p].reshape(GRID, p, GRID, p, -1)
    spread = np.sqrt((blocks * blocks).mean(axis=(1, 3, 4))).ravel()
    k = int(quantile * (spread.size - 1))
    return float(np.partition(spread, k)[k]) * 2.0 / _NOISE_KERNEL_NORM


def remove_noise(change: np.ndarray, floor: float) -> np.ndarray:
    """Token change with the expected change of sensor noise taken out in quadrature:
    sqrt(max(change^2 - floor^2, 0)). Noise adds to a real change in energy (they are
    independent), so this keeps a real change's size while a noise-only token goes to 0."""
    change = np.asarray(change, np.float32)
    if floor <= 0:
        return change
    return np.sqrt(np.maximum(change * change - np.float32(floor * floor), 0.0)).astype(
        np.float32)


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
