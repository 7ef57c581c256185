"""Frame and event conversion: shapes, normalisation, binning, and clear errors on bad input."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tinygpt_ros import ops
from tinygpt_ros.model.encoder import VisualEncoder
from tinygpt_ros.model.preprocess import events_to_histogram, frame_to_tensor, frames_to_batch
from tinygpt_ros.ops import events_per_patch, small_gray, validate_events
from tinygpt_ros.spec.config import ModelConfig
from tinygpt_ros.spec.types import EVENT_DTYPE


def _events(xs, ys, ts, ps) -> np.ndarray:
    ev = np.zeros(len(xs), EVENT_DTYPE)
    ev["x"], ev["y"], ev["t"], ev["p"] = xs, ys, ts, ps
    return ev


@pytest.mark.parametrize("shape", [(224, 224, 3), (480, 640, 3), (50, 90, 3), (300, 100, 3)])
def test_frame_to_tensor_shapes_and_range(shape):
    rng = np.random.default_rng(0)
    frame = rng.integers(0, 256, shape, dtype=np.uint8)
    x = frame_to_tensor(frame)
    assert x.shape == (3, 224, 224) and x.dtype == torch.float32
    assert float(x.min()) >= -2.0 - 1e-6 and float(x.max()) <= 2.0 + 1e-6


def test_frame_normalisation_and_channel_order():
    frame = np.zeros((224, 224, 3), np.uint8)
    frame[..., 0] = 255  # pure red
    x = frame_to_tensor(frame)
    assert torch.allclose(x[0], torch.full((224, 224), 2.0))
    assert torch.allclose(x[1:], torch.full((2, 224, 224), -2.0))


@pytest.mark.parametrize(("shape", "atol"), [((224, 224, 3), 1e-5), ((120, 160, 3), 1e-5),
                                             ((480, 640, 3), 0.02), ((1080, 1920, 3), 0.02)])
def test_float_frames_match_uint8(shape, atol):
    # shrinking uint8 frames are resized in uint8: <= 1 level of rounding (1/255/0.25 = 0.016)
    rng = np.random.default_rng(1)
    frame = rng.integers(0, 256, shape, dtype=np.uint8)
    a = frame_to_tensor(frame)
    b = frame_to_tensor(frame.astype(np.float64) / 255.0)
    c = frame_to_tensor((frame / 255.0).astype(np.float32))
    assert torch.allclose(a, b, atol=atol) and torch.allclose(a, c, atol=atol)


@pytest.mark.parametrize("shape", [(480, 640, 3), (720, 1280, 3), (1080, 1920, 3),
                                   (448, 1792, 3)])
def test_pixel_noise_shrinks_as_an_area_average_would(shape):
    # the box stage takes each axis down by its own integer factor, so the bilinear stage
    # after it never skips pixels: pixel noise keeps at most the spread an exact area average
    # leaves (one factor for both axes left 1792 -> 896 for bilinear: 1.41 x; bilinear alone
    # 1.65-4.3 x)
    frame = np.random.default_rng(3).integers(0, 256, shape, dtype=np.uint8)
    unit = ops.frame_to_unit(frame)
    area_std = float((frame / 255.0).std()) * 224 / np.sqrt(shape[0] * shape[1])
    assert unit.shape == (224, 224, 3)
    assert float(unit.std()) <= 1.05 * area_std


@pytest.mark.parametrize(
    ("bad", "match"),
    [
        ([[1, 2, 3]], "numpy.ndarray"),
        (np.zeros((224, 224), np.uint8), "HxWx3"),
        (np.zeros((224, 224, 4), np.uint8), "HxWx3"),
        (np.zeros((1, 224, 224, 3), np.uint8), "HxWx3"),
        (np.zeros((0, 10, 3), np.uint8), "empty"),
        (np.zeros((10, 0, 3), np.uint8), "empty"),
        (np.zeros((8, 8, 3), np.int16), "dtype"),
        (np.zeros((8, 8, 3), bool), "dtype"),
        (np.full((8, 8, 3), np.nan, np.float32), "NaN or inf"),
        (np.full((8, 8, 3), np.inf, np.float64), "NaN or inf"),
        (np.full((8, 8, 3), 2.0, np.float32), r"\[0, 1\]"),
    ],
)
def test_bad_frames_raise(bad, match):
    with pytest.raises(ValueError, match=match):
        frame_to_tensor(bad)


def test_frames_to_batch():
    rng = np.random.default_rng(2)
    frames = rng.integers(0, 256, (3, 64, 80, 3), dtype=np.uint8)
    b = frames_to_batch(frames)
    assert b.shape == (3, 3, 224, 224)
    assert torch.equal(b[1], frame_to_tensor(frames[1]))
    assert frames_to_batch(list(frames)).shape == (3, 3, 224, 224)
    with pytest.raises(ValueError, match=r"frames\[1\]"):
        frames_to_batch([frames[0], np.zeros((4, 4), np.uint8)])
    with pytest.raises(ValueError, match="empty"):
        frames_to_batch([])


def test_small_gray():
    frame = np.full((100, 200, 3), 255, np.uint8)
    g = small_gray(frame)
    assert g.shape == (56, 56) and g.dtype == np.float32
    assert np.allclose(g, 1.0, atol=1e-5)
    with pytest.raises(ValueError, match="NaN"):
        small_gray(np.full((8, 8, 3), np.nan, np.float32))
    # the engine's unchecked thumbnail of its own unit image is the checked one
    unit = ops.frame_to_unit(np.random.default_rng(2).integers(0, 256, (480, 640, 3), np.uint8))
    assert np.array_equal(ops.unit_small_gray(unit), small_gray(unit))


def test_unit_to_array_is_the_normalised_image_channel_first():
    unit = np.random.default_rng(4).random((224, 224, 3), dtype=np.float32)
    x = ops.unit_to_array(unit)
    assert x.shape == (3, 224, 224) and x.dtype == np.float32 and x.flags.c_contiguous
    assert np.array_equal(x, ((unit - 0.5) / 0.25).transpose(2, 0, 1))


def test_validate_events_accepts_good_and_other_structured():
    ev = _events([0, 127, 5], [0, 127, 9], [10, 10, 20], [0, 1, 1])
    assert validate_events(ev) is ev
    other = np.zeros(3, [("t", "<i4"), ("x", "<i4"), ("y", "<i4"), ("p", "<i4"), ("z", "f4")])
    other["x"], other["y"], other["t"], other["p"] = [1, 2, 3], [4, 5, 6], [1, 2, 3], [0, 1, 0]
    out = validate_events(other)
    assert out.dtype == EVENT_DTYPE and out["x"].tolist() == [1, 2, 3]
    assert validate_events(np.zeros(0, EVENT_DTYPE)).size == 0


@pytest.mark.parametrize(
    ("bad", "match"),
    [
        ([1, 2], "structured"),
        (np.zeros(3, np.int64), "EVENT_DTYPE"),
        (np.zeros(3, [("x", "<u2"), ("y", "<u2"), ("t", "<i8")]), "EVENT_DTYPE"),
        (np.zeros(3, [("x", "<f4"), ("y", "<u2"), ("t", "<i8"), ("p", "u1")]), "'x'.*integer"),
        (_events([128], [0], [0], [0]), "'x' outside"),
        (_events([0], [200], [0], [0]), "'y' outside"),
        (_events([0, 1], [0, 1], [5, 4], [0, 0]), "'t' must be sorted"),
        (_events([0], [0], [0], [2]), "polarity"),
        (np.zeros((2, 2), EVENT_DTYPE), "1-D"),
    ],
)
def test_bad_events_raise(bad, match):
    with pytest.raises(ValueError, match=match):
        validate_events(bad)
    if isinstance(bad, np.ndarray) and bad.dtype == EVENT_DTYPE and bad.ndim == 1:
        with pytest.raises(ValueError):
            events_to_histogram(bad)
        with pytest.raises(ValueError):
            events_per_patch(bad)


def test_negative_coordinates_rejected():
    ev = np.zeros(1, [("x", "<i4"), ("y", "<i4"), ("t", "<i8"), ("p", "u1")])
    ev["x"] = -1
    with pytest.raises(ValueError, match="'x' outside"):
        validate_events(ev)


def test_histogram_binning_and_empty():
    assert torch.equal(events_to_histogram(np.zeros(0, EVENT_DTYPE)), torch.zeros(2, 112, 112))
    ev = _events([127, 127, 127, 0], [0, 0, 0, 64], [1, 2, 3, 4], [1, 1, 1, 0])
    h = events_to_histogram(ev)
    assert h.shape == (2, 112, 112) and h.dtype == torch.float32
    assert h[1, 0, 111] == pytest.approx(np.log1p(3.0))
    assert h[0, 56, 0] == pytest.approx(np.log1p(1.0))
    assert float(h.sum()) == pytest.approx(np.log1p(3.0) + np.log1p(1.0))


def test_events_per_patch_matches_histogram_patches():
    rng = np.random.default_rng(3)
    n = 2000
    ev = _events(rng.integers(0, 128, n), rng.integers(0, 128, n), np.arange(n),
                 rng.integers(0, 2, n))
    counts = events_per_patch(ev)
    assert counts.shape == (196,) and counts.dtype == np.float32
    assert counts.sum() == n
    per_bin = torch.expm1(events_to_histogram(ev)).sum(0)  # (112, 112) counts
    pooled = per_bin.reshape(14, 8, 14, 8).sum((1, 3)).reshape(-1)
    assert np.allclose(pooled.numpy(), counts, atol=1e-3)
    assert events_per_patch(np.zeros(0, EVENT_DTYPE)).sum() == 0


def test_events_per_patch_uses_the_encoder_token_order():
    """Tokens with events are exactly the tokens whose event embedding differs from empty."""
    torch.manual_seed(0)
    enc = VisualEncoder(ModelConfig(dim=16, heads=2, branch_depths=(1,)))
    ev = _events([3, 100, 60], [120, 10, 64], [0, 1, 2], [1, 0, 1])
    counts = events_per_patch(ev)
    with torch.no_grad():
        empty = enc.embed_events(events_to_histogram(np.zeros(0, EVENT_DTYPE))[None])[0]
        full = enc.embed_events(events_to_histogram(ev)[None])[0]
    changed = (full - empty).abs().sum(-1) > 0
    assert torch.equal(changed, torch.from_numpy(counts > 0))
    assert counts[(120 * 14 // 128) * 14 + 3 * 14 // 128] == 1
