"""Event-camera simulator: polarity, counts, stamps, refractory period, noise, validation."""

from __future__ import annotations

import math
import time

import numpy as np
import pytest

from tinygpt_ros.data.events import EventSimulator, resize_for_sensor
from tinygpt_ros.data.scenes import render_clip
from tinygpt_ros.spec.types import EVENT_DTYPE


def stamps(n: int, dt_us: int = 10_000) -> np.ndarray:
    return np.arange(n, dtype=np.int64) * dt_us


def bar_frames(speed_px: float, n: int = 20, size: int = 48) -> np.ndarray:
    """A bright vertical bar moving right by `speed_px` per frame on a dark background."""
    frames = np.full((n, size, size), 30, np.uint8)
    for i in range(n):
        x0 = round(4 + i * speed_px)
        frames[i, :, x0 : x0 + 4] = 200
    return frames


def test_identical_frames_give_no_events():
    frames = np.full((10, 32, 32), 120, np.uint8)
    ev = EventSimulator(noise_rate_hz=0.0).simulate(frames, stamps(10))
    assert ev.dtype == EVENT_DTYPE and len(ev) == 0


def test_polarity_follows_brightness_change():
    sim = EventSimulator(noise_rate_hz=0.0)
    up = np.stack([np.full((8, 8), v, np.uint8) for v in (40, 80, 160)])
    ev = sim.simulate(up, stamps(3))
    assert len(ev) > 0 and np.all(ev["p"] == 1)
    ev = sim.simulate(up[::-1].copy(), stamps(3))
    assert len(ev) > 0 and np.all(ev["p"] == 0)


def test_counts_and_interpolated_stamps_match_threshold_crossings():
    c, eps = 0.2, 0.02
    sim = EventSimulator(contrast_threshold=c, refractory_us=0, noise_rate_hz=0.0, log_eps=eps)
    frames = np.stack([np.full((1, 1), 30, np.uint8), np.full((1, 1), 230, np.uint8)])
    ev = sim.simulate(frames, np.array([1_000, 11_000]))
    dl = math.log(230 / 255 + eps) - math.log(30 / 255 + eps)
    n = math.floor(dl / c)
    assert len(ev) == n
    expected = [1_000 + math.ceil(j * c / dl * 10_000) for j in range(1, n + 1)]
    assert np.all(np.abs(ev["t"] - np.array(expected)) <= 1)
    assert np.all(np.diff(ev["t"]) > 0)


def test_faster_motion_gives_more_events():
    sim = EventSimulator(noise_rate_hz=0.0)
    slow = sim.simulate(bar_frames(0.5), stamps(20))
    fast = sim.simulate(bar_frames(1.5), stamps(20))
    assert len(fast) > 2 * len(slow) > 0
    # the bar moves right: ON events (leading edge) lie right of OFF events (trailing edge)
    on, off = fast[fast["p"] == 1], fast[fast["p"] == 0]
    assert on["x"].mean() > off["x"].mean()


def test_deterministic_by_seed():
    frames = bar_frames(1.0)
    a = EventSimulator(noise_rate_hz=5.0, seed=3).simulate(frames, stamps(20))
    b = EventSimulator(noise_rate_hz=5.0, seed=3).simulate(frames, stamps(20))
    c = EventSimulator(noise_rate_hz=5.0, seed=4).simulate(frames, stamps(20))
    assert np.array_equal(a, b)
    assert not np.array_equal(a, c)


def test_refractory_period_is_respected():
    frames = np.stack([np.full((4, 4), v, np.uint8) for v in (10, 250, 10, 250)])
    ts = stamps(4, 20_000)
    free = EventSimulator(refractory_us=0, noise_rate_hz=0.0).simulate(frames, ts)
    r = 3_000
    ev = EventSimulator(refractory_us=r, noise_rate_hz=200.0, seed=1).simulate(frames, ts)
    assert 0 < len(ev)
    assert len(EventSimulator(refractory_us=r, noise_rate_hz=0.0).simulate(frames, ts)) \
        < len(free)
    key = ev["y"].astype(np.int64) * 4 + ev["x"]
    order = np.lexsort((ev["t"], key))
    k, t = key[order], ev["t"][order]
    same = k[1:] == k[:-1]
    assert np.all(np.diff(t)[same] >= r)


def test_noise_rate_and_sorted_output():
    frames = np.full((11, 32, 32), 100, np.uint8)
    ev = EventSimulator(noise_rate_hz=1.0, refractory_us=0, seed=7).simulate(
        frames, stamps(11, 1_000_000))  # 10 s
    expected = 32 * 32 * 10
    assert abs(len(ev) - expected) < 0.06 * expected
    assert 0.4 < ev["p"].mean() < 0.6
    assert np.all(np.diff(ev["t"]) >= 0)
    assert ev["x"].max() < 32 and ev["y"].max() < 32 and ev["t"].min() > 0


def test_rgb_uses_luminance():
    clip = render_clip(5, "busy", num_frames=12, size=(32, 32))
    gray = np.rint(clip.frames.astype(float) @ [0.299, 0.587, 0.114]).astype(np.uint8)
    sim = EventSimulator(noise_rate_hz=0.0)
    a = sim.simulate(clip.frames, clip.timestamps_us)
    b = sim.simulate(gray, clip.timestamps_us)
    assert len(a) > 0 and abs(len(a) - len(b)) < 0.05 * len(a)


def test_sensor_sized_clip_is_fast():
    clip = render_clip(2, "busy", num_frames=40, size=(128, 128))
    t0 = time.perf_counter()
    ev = EventSimulator().simulate(clip.frames, clip.timestamps_us)
    assert time.perf_counter() - t0 < 5.0  # typically ~20 ms; loose for a shared machine
    assert len(ev) > 0


@pytest.mark.parametrize(
    ("frames", "ts", "match"),
    [
        (np.zeros((4, 8), np.uint8), stamps(4), "frames"),
        (np.zeros((4, 8, 8, 2), np.uint8), stamps(4), "frames"),
        (np.zeros((4, 8, 8), np.float32), stamps(4), "dtype"),
        (np.zeros((4, 8, 8), np.uint8), stamps(3), "timestamps_us"),
        (np.zeros((4, 8, 8), np.uint8), np.array([0, 10, 10, 20]), "strictly increasing"),
        (np.zeros((4, 8, 8), np.uint8), np.array([0, 30, 20, 40]), "strictly increasing"),
        (np.zeros((4, 8, 8), np.uint8), np.arange(4) * 1.5, "timestamps_us"),
    ],
)
def test_bad_input_raises(frames, ts, match):
    with pytest.raises(ValueError, match=match):
        EventSimulator().simulate(frames, ts)


@pytest.mark.parametrize(
    "kwargs",
    [{"contrast_threshold": 0.0}, {"refractory_us": -1}, {"noise_rate_hz": -0.1},
     {"log_eps": 0.0}, {"seed": -2}, {"threshold_sigma": 0.5}],
)
def test_bad_parameters_raise(kwargs):
    with pytest.raises(ValueError, match=next(iter(kwargs))):
        EventSimulator(**kwargs)


def test_resize_for_sensor():
    clip = render_clip(1, "still", num_frames=3, size=(224, 224))
    small = resize_for_sensor(clip.frames)
    assert small.shape == (3, 128, 128, 3) and small.dtype == np.uint8
    gray = resize_for_sensor(clip.frames[..., 0], sensor=64)
    assert gray.shape == (3, 64, 64)
    with pytest.raises(ValueError, match="sensor"):
        resize_for_sensor(clip.frames, sensor=0)
    with pytest.raises(ValueError, match="frames"):
        resize_for_sensor(clip.frames.astype(np.float32))
