"""Ego-motion and exposure compensation for pretrained towers (hf/): a pan on a tiny GIT
recomputes the border band the content left, not the whole grid, because each frame is warped
into the anchor's coordinates (in the checkpoint's own centre-crop view) before the patch
embedding. Tiny random checkpoint, no downloads."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("transformers")
pytest.importorskip("torch")

from hf_fixtures import save_tiny_git
from test_motion_engine import MARGIN, W, _canvas, _view

from tinygpt_ros.deploy.factory import load_engine
from tinygpt_ros.spec.config import GRID, IMAGE_SIZE

H = 480


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


def test_pan_on_git_recomputes_a_border_band_not_the_whole_grid(git_dir):
    canvas = _canvas(2)
    step = 6  # camera px per frame at 640 x 480
    on = _engine(git_dir, motion_compensation="similarity", exposure_compensation=True)
    off = _engine(git_dir, motion_compensation="off", exposure_compensation=False)
    px = min(W, H) / IMAGE_SIZE  # GIT's crop: the 480 px side becomes 224 px
    for i in range(5):
        frame = _view(canvas, i * step)
        r, ro = on.process_frame(frame), off.process_frame(frame)
        if i == 0:
            assert r.record.full_refresh
            continue
        assert not r.record.reanchored and r.record.motion_compensation == "similarity"
        assert abs(r.record.motion_dx + i * step) < 0.5, r.record.motion_dx
        band = int(np.ceil(i * step / px / (IMAGE_SIZE / GRID))) + 1
        allowed = np.zeros((GRID, GRID), bool)
        allowed[:, GRID - band:] = True  # anchor pixels that left the view, and the seam
        extra = r.token_mask & ~allowed
        assert not extra.any(), f"frame {i}: recomputed outside the band: {np.argwhere(extra)}"
        assert 0 < r.record.tokens_recomputed <= band * GRID
        assert ro.record.tokens_recomputed > 0.6 * GRID * GRID  # uncompensated: most of it
    assert MARGIN >= 5 * step


def test_compensation_off_keeps_the_checkpoints_own_preprocessing(git_dir):
    """Without motion the engine embeds exactly `frame_input(frame)` (exactness vs generate)."""
    e = _engine(git_dir, motion_compensation="similarity", exposure_compensation=True)
    frame = _view(_canvas(4), 0)
    k = e.kernels
    np.testing.assert_array_equal(k.unit_input(k.frame_unit(frame)), k.frame_input(frame))
    e.process_frame(frame)
    r = e.process_frame(frame)
    assert r.record.tokens_recomputed == 0 and abs(r.record.motion_dx) < 0.1
