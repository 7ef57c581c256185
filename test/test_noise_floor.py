"""Sensor noise and the STTF change test (knob `noise_floor`), on the shipped model through the
onnxruntime engine: a still but noisy camera stops recomputing, a real change under the same
noise is still recomputed, and the noise estimate itself."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from tinygpt_ros import ops
from tinygpt_ros.data.camera import Camera, sensor
from tinygpt_ros.deploy.factory import load_engine
from tinygpt_ros.spec.config import GRID, IMAGE_SIZE, Knobs

MODEL = Path(__file__).resolve().parent.parent / "models" / "tinygpt"
NOISY = Camera(read_noise=2.0, shot_noise=0.2)  # a few levels, as the held-out camera clips
PATCH = IMAGE_SIZE // GRID


@pytest.fixture(scope="module")
def engine():
    e = load_engine(MODEL, "onnxruntime", threads=1)
    yield e
    e.close()


def _scene(seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    img = np.zeros((IMAGE_SIZE, IMAGE_SIZE, 3), np.float32)
    for cells in (4, 9, 23):
        grid = rng.uniform(0, 1, (cells, cells, 3)).astype(np.float32)
        img += cv2.resize(grid, (IMAGE_SIZE, IMAGE_SIZE), interpolation=cv2.INTER_CUBIC) / 3
    return (30 + np.clip(img, 0, 1) * 185).astype(np.uint8)


def _recomputed(engine, frames, **knobs) -> list[int]:
    for k, v in {"refresh_interval": 0, **knobs}.items():
        engine.set_knob(k, v)
    engine.reset()
    out = [engine.process_frame(f, i * 33_333).record.tokens_recomputed
           for i, f in enumerate(frames)]
    for k, v in Knobs().as_dict().items():
        engine.set_knob(k, v)
    return out


def test_noisy_still_camera_recomputes_little_with_the_floor(engine):
    rng = np.random.default_rng(1)
    frames = [sensor(_scene(), 1.0, NOISY, rng) for _ in range(12)]
    assert Knobs().noise_floor > 0  # on by default
    with_floor = _recomputed(engine, frames)[3:]
    without = _recomputed(engine, frames, noise_floor=0.0)[3:]
    # the noise alone makes many tokens recompute (how many depends on the frame stem: the
    # patch projection passes all of it, a conv stem averages some away); the floor removes
    # most of them
    assert np.mean(without) > 0.1 * 196
    assert np.mean(with_floor) < 0.1 * 196
    assert np.mean(with_floor) < 0.5 * np.mean(without)


def test_real_change_under_noise_is_still_recomputed(engine):
    rng = np.random.default_rng(2)
    scene = _scene(3)
    changed = scene.copy()
    y0, x0 = 5 * PATCH, 6 * PATCH  # a 3 x 3 patch object appears, aligned to the grid
    changed[y0:y0 + 3 * PATCH, x0:x0 + 3 * PATCH] = (240, 20, 20)
    frames = [sensor(scene, 1.0, NOISY, rng) for _ in range(8)]
    frames += [sensor(changed, 1.0, NOISY, rng)]
    engine.set_knob("refresh_interval", 0)
    engine.reset()
    records = [engine.process_frame(f, i * 33_333).record for i, f in enumerate(frames)]
    last = records[-1]
    assert last.tokens_recomputed >= 9  # the object's nine patches at least
    assert last.tokens_recomputed < 40  # and not the noisy rest of the view
    engine.reset()


def test_frame_noise_measures_the_difference_spread():
    rng = np.random.default_rng(0)
    base = np.full((IMAGE_SIZE, IMAGE_SIZE, 3), 0.5, np.float32)
    sigma = 0.01
    a = base + sigma * rng.standard_normal(base.shape).astype(np.float32)
    b = base + sigma * rng.standard_normal(base.shape).astype(np.float32)
    got = ops.frame_noise(a, b)
    # a low quantile over the patches: a little under the true spread, never over it
    assert 0.88 * np.sqrt(2) * sigma < got <= np.sqrt(2) * sigma
    # a large change over a third of the view does not move the estimate much
    b[:, : IMAGE_SIZE // 3] += rng.uniform(-0.3, 0.3, b[:, : IMAGE_SIZE // 3].shape)
    assert abs(ops.frame_noise(a, b) - got) < 0.1 * got
    assert ops.frame_noise(a, a) == 0.0


def test_frame_noise_does_not_read_an_unaligned_pan_as_noise():
    """No compensation, a sharp texture panning 2 px/frame and no noise at all: the difference
    is large, the noise estimate stays near zero (else the floor would hide the pan)."""
    from test_motion_engine import _canvas, _view

    canvas = _canvas(2)
    a, b = (ops.frame_to_unit(_view(canvas, x)) for x in (0, 2))
    plain = float(np.std(b - a))
    assert plain > 0.01
    assert ops.frame_noise(b, a) < 0.2 * plain


def test_remove_noise_takes_the_floor_out_in_quadrature():
    change = np.array([0.0, 0.3, 0.5, 1.3, np.inf], np.float32)
    out = ops.remove_noise(change, 0.5)
    np.testing.assert_allclose(out[:4], [0.0, 0.0, 0.0, 1.2], atol=1e-6)
    assert np.isinf(out[4])
    assert ops.remove_noise(change, 0.0) is not None
    np.testing.assert_array_equal(ops.remove_noise(change, 0.0), change)
