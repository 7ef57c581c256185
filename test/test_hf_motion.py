"""Ego-motion and exposure compensation for pretrained towers (hf/): a pan on a tiny GIT
recomputes a few tokens, not the whole grid, because each frame is warped into the anchor's
coordinates (in the checkpoint's own centre-crop view) before the patch embedding. Tiny random
checkpoint, no downloads."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("transformers")
pytest.importorskip("torch")

from hf_fixtures import save_tiny_git
from test_motion_engine import MARGIN, _canvas, _view

from tinygpt_ros.deploy.factory import load_engine
from tinygpt_ros.spec.config import GRID


@pytest.fixture(scope="module")
def git_dir(tmp_path_factory):
    return save_tiny_git(tmp_path_factory.mktemp("git") / "tiny-git")


def _engine(git_dir, **knobs):
    e = load_engine(git_dir)
    settings = {"anc_enabled": False, "refresh_interval": 0, "max_compensated_motion": 0.08,
                "caption_reuse_threshold": 0.0, **knobs}
    for k, v in settings.items():
        e.set_knob(k, v)
    return e


def test_pan_on_git_recomputes_a_few_tokens_not_the_whole_grid(git_dir):
    """Content leaving on the left is reused (anchor pixels), the seam on the right and the
    warp's sub-pixel resampling residue on sharp texture recompute a handful of tokens; without
    compensation nearly every token changes."""
    canvas = _canvas(2)
    step = 6  # camera px per frame at 640 x 480 (2.8 px of GIT's 224 px crop)
    on = _engine(git_dir, motion_compensation="similarity", exposure_compensation=True)
    off = _engine(git_dir, motion_compensation="off", exposure_compensation=False)
    for i in range(4):
        frame = _view(canvas, i * step)
        r, ro = on.process_frame(frame), off.process_frame(frame)
        if i == 0:
            assert r.record.full_refresh
            continue
        assert not r.record.reanchored and r.record.motion_compensation == "similarity"
        assert abs(r.record.motion_dx + i * step) < 0.5, r.record.motion_dx
        assert r.record.tokens_recomputed <= 0.1 * GRID * GRID, np.argwhere(r.token_mask)
        assert r.token_mask.sum() == r.record.tokens_recomputed
        assert ro.record.tokens_recomputed > 0.6 * GRID * GRID  # uncompensated: most of it
    assert MARGIN >= 4 * step


def test_compensation_off_keeps_the_checkpoints_own_preprocessing(git_dir):
    """Without motion the engine embeds exactly `frame_input(frame)` (exactness vs generate)."""
    e = _engine(git_dir, motion_compensation="similarity", exposure_compensation=True)
    frame = _view(_canvas(4), 0)
    k = e.kernels
    np.testing.assert_array_equal(k.unit_input(k.frame_unit(frame)), k.frame_input(frame))
    e.process_frame(frame)
    r = e.process_frame(frame)
    assert r.record.tokens_recomputed == 0 and abs(r.record.motion_dx) < 0.1
