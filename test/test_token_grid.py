"""`ops.token_grid`: the 7 x 7 branch's selection, output and input against the 14 x 14 grid
the engine tracks (numpy only)."""

from __future__ import annotations

import numpy as np
import pytest

from tinygpt_ros import ops
from tinygpt_ros.spec import flops as F
from tinygpt_ros.spec.config import ModelConfig


def test_a_changed_patch_selects_the_coarse_token_covering_it():
    sel = np.zeros(196, bool)
    sel[2 * 14 + 5] = True  # row 2, column 5: coarse row 1, column 2
    coarse = ops.coarse_selection(sel, 7)
    assert coarse.shape == (49,) and np.flatnonzero(coarse).tolist() == [1 * 7 + 2]
    fine = ops.fine_selection(coarse, 7).reshape(14, 14)
    assert fine.sum() == 4 and fine[2:4, 4:6].all()


def test_coarse_rows_repeat_over_the_patches_they_cover():
    rows = np.arange(49 * 3, dtype=np.float32).reshape(49, 3)
    out = ops.expand_rows(rows, 7).reshape(14, 14, 3)
    for r, c in ((0, 0), (3, 6), (6, 1)):
        block = out[2 * r:2 * r + 2, 2 * c:2 * c + 2]
        assert (block == rows[r * 7 + c]).all()
    with pytest.raises(ValueError, match="expected 49 rows"):
        ops.expand_rows(rows[:48], 7)


def test_pooled_pixels_are_block_means_and_grids_must_divide_14():
    x = np.random.default_rng(0).normal(size=(3, 224, 224)).astype(np.float32)
    pooled = ops.pool_pixels(x, 2)
    assert pooled.shape == (3, 112, 112)
    np.testing.assert_allclose(pooled[1, 5, 9], x[1, 10:12, 18:20].mean(), rtol=1e-6)
    with pytest.raises(ValueError, match="must divide 14"):
        ops.grid_factor(5)


def test_a_coarse_branch_costs_its_own_tokens_and_patch_embedding():
    cfg = ModelConfig(dim=768, heads=12, branch_depths=(12, 9, 12), branch_grids=(7, 14, 14))
    small, medium, large = F.branch_dense_flops(cfg)
    assert small < 0.3 * large and medium == pytest.approx(0.75 * large)
    assert small > F.encoder_flops(ModelConfig(dim=768, heads=12, branch_depths=(12,)), 0, 49)
    # a gated step counts its coarse rows: 8 patches in two coarse tokens
    gated = F.encoder_flops(cfg, 0, n_selected=F.branch_rows(cfg, 0, 8))
    assert gated == F.encoder_flops(cfg, 0, n_selected=2) < small
    assert ModelConfig.from_dict(cfg.to_dict()) == cfg
    # TinyGPT (no grids of its own) writes no branch_grids key: older packages load its manifest
    tiny = ModelConfig()
    assert "branch_grids" not in tiny.to_dict()
    assert ModelConfig.from_dict(tiny.to_dict()) == tiny
