"""Coarse token grids for ANC's resolution branch of a pretrained tower, in numpy.

A tower streams a 14 x 14 patch grid. Its cheap branch runs the same tower on the frame
area-averaged by `GRID // grid` (224 px -> 112 px: a 7 x 7 grid, a quarter of the tokens),
with the position embedding interpolated as the family's own `interpolate_pos_encoding` does.
The engine around it keeps thinking in the 14 x 14 grid (the change test, the references, the
window, fusion), so this module maps between the two:

- a coarse token is recomputed when any patch it covers changed (`coarse_selection`), and then
  every patch it covers counts as recomputed (`fine_selection`);
- the coarse branch's output rows are repeated over the patches they cover (`expand_rows`).
  To the decoder, k copies of a key with attention bias log(s) attend exactly like one key
  with bias log(k s), so the repeated rows are the coarse token with size 4, and fusion
  (size-weighted averages) merges identical copies into that very token.
"""

from __future__ import annotations

import numpy as np

from tinygpt_ros.spec.config import GRID, NUM_TOKENS


def grid_factor(grid: int) -> int:
    """Patches per coarse token along each axis; ValueError unless `grid` divides the grid."""
    if not 1 <= grid <= GRID or GRID % grid:
        raise ValueError(f"token grid must divide {GRID}, got {grid}")
    return GRID // grid


def coarse_selection(selected: np.ndarray, grid: int) -> np.ndarray:
    """(196,) bool per patch -> (grid * grid,) bool: a coarse token covering a changed patch."""
    f = grid_factor(grid)
    sel = np.asarray(selected, bool)
    if sel.shape != (NUM_TOKENS,):
        raise ValueError(f"selected must have shape ({NUM_TOKENS},), got {sel.shape}")
    return sel.reshape(grid, f, grid, f).any(axis=(1, 3)).reshape(-1)


def fine_selection(coarse: np.ndarray, grid: int) -> np.ndarray:
    """(grid * grid,) bool -> (196,) bool: every patch a selected coarse token covers."""
    f = grid_factor(grid)
    c = np.asarray(coarse, bool).reshape(grid, 1, grid, 1)
    return np.broadcast_to(c, (grid, f, grid, f)).reshape(-1).copy()


def expand_rows(rows: np.ndarray, grid: int) -> np.ndarray:
    """(grid * grid, D) coarse rows -> (196, D), each repeated over the patches it covers."""
    f = grid_factor(grid)
    r = np.asarray(rows)
    if r.shape[0] != grid * grid:
        raise ValueError(f"expected {grid * grid} rows for a {grid}x{grid} grid, got "
                         f"{r.shape[0]}")
    d = r.shape[1]
    out = np.broadcast_to(r.reshape(grid, 1, grid, 1, d), (grid, f, grid, f, d))
    return np.ascontiguousarray(out.reshape(NUM_TOKENS, d))


def pool_pixels(pixels: np.ndarray, factor: int) -> np.ndarray:
    """(C, S, S) normalised pixels -> (C, S / factor, S / factor), the mean of each block.
    Normalisation is a per-channel affine map, so this equals normalising the area-resized
    image: the frame a camera of `factor` times lower resolution would give."""
    x = np.asarray(pixels, np.float32)
    c, h, w = x.shape
    if h % factor or w % factor:
        raise ValueError(f"a {h}x{w} input does not pool by {factor}")
    return np.ascontiguousarray(
        x.reshape(c, h // factor, factor, w // factor, factor).mean(axis=(2, 4)))
