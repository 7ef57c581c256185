"""DVS128-Gesture-like clips: classes, determinism, side and rotation visible in the events."""

from __future__ import annotations

import numpy as np
import pytest

from tinygpt_ros.data.gestures import (
    GESTURE_CLASSES,
    gesture_seeds,
    hand_paths,
    make_gesture_clip,
    make_gesture_set,
    render_gesture,
)
from tinygpt_ros.spec.types import EVENT_DTYPE


def test_eleven_dvs128_classes():
    assert len(GESTURE_CLASSES) == 11 == len(set(GESTURE_CLASSES))
    assert GESTURE_CLASSES[0] == "hand_clap" and GESTURE_CLASSES[-1] == "other"
    assert {"right_arm_cw", "left_arm_ccw", "air_drums", "air_guitar", "arm_roll"} \
        <= set(GESTURE_CLASSES)


def test_render_is_deterministic_and_varies_by_seed():
    a = render_gesture("air_drums", 5, num_frames=12)
    assert a.shape == (12, 128, 128) and a.dtype == np.uint8
    assert np.array_equal(a, render_gesture("air_drums", 5, num_frames=12))
    assert not np.array_equal(a, render_gesture("air_drums", 6, num_frames=12))
    assert render_gesture("hand_clap", 1, num_frames=2, size=64).shape == (2, 64, 64)


@pytest.mark.parametrize("label", GESTURE_CLASSES)
def test_every_class_makes_sorted_events(label):
    clip = make_gesture_clip(label, 21)
    ev = clip.events
    assert ev.dtype == EVENT_DTYPE and len(ev) > 2000
    assert np.all(np.diff(ev["t"]) >= 0) and ev["t"][0] > 0 and ev["t"][-1] <= clip.duration_us
    assert ev["x"].max() < 128 and ev["y"].max() < 128
    assert 0.3 < ev["p"].mean() < 0.7
    assert clip.label == label and GESTURE_CLASSES[clip.label_index] == label
    assert clip.frames is None
    again = make_gesture_clip(label, 21, keep_frames=True)
    assert np.array_equal(again.events, ev) and again.frames.shape == (48, 128, 128)


def _spin(ev: np.ndarray, left_half: bool) -> float:
    """Signed angular momentum of the motion on one half of the image (+ = clockwise in the
    image, y down). Motion direction per 20 ms = ON centroid minus OFF centroid."""
    x, y = ev["x"].astype(float), ev["y"].astype(float)
    m = x < 64 if left_half else x >= 64
    x, y, t, p = x[m], y[m], ev["t"][m], ev["p"][m]
    cx, cy = x.mean(), y.mean()
    total = 0.0
    for t0 in range(0, int(t.max()), 20_000):
        s = (t >= t0) & (t < t0 + 20_000)
        on, off = s & (p == 1), s & (p == 0)
        if on.sum() < 20 or off.sum() < 20:
            continue
        vx, vy = x[on].mean() - x[off].mean(), y[on].mean() - y[off].mean()
        rx, ry = x[s].mean() - cx, y[s].mean() - cy
        total += rx * vy - ry * vx
    return total


def test_left_right_and_rotation_are_visible_in_events():
    for seed in (1, 2, 3):
        # the subject faces the camera: its right hand is on the image's left
        right = make_gesture_clip("right_hand_wave", seed).events["x"].mean()
        left = make_gesture_clip("left_hand_wave", seed).events["x"].mean()
        assert right < 60 < 68 < left
        for side in ("right", "left"):
            cw = make_gesture_clip(f"{side}_arm_cw", seed).events
            ccw = make_gesture_clip(f"{side}_arm_ccw", seed).events
            assert _spin(cw, side == "right") > 0 > _spin(ccw, side == "right")


def test_hand_paths_rotate_the_named_way():
    t = np.linspace(0, 0.3, 61)
    for label, sign in (("right_arm_cw", 1), ("right_arm_ccw", -1)):
        hand = hand_paths(label, 4, t)[:, 0]  # (T, 2) right hand
        c = hand.mean(0)
        r, v = hand[:-1] - c, np.diff(hand, axis=0)
        assert np.sign(np.sum(r[:, 0] * v[:, 1] - r[:, 1] * v[:, 0])) == sign


def test_gesture_set_splits_are_disjoint():
    pairs = {s: gesture_seeds(s, 3) for s in ("train", "val", "test")}
    seeds = {s: {sd for _, sd in p} for s, p in pairs.items()}
    assert all(len(v) == 33 for v in seeds.values())
    assert not (seeds["train"] & seeds["val"] or seeds["train"] & seeds["test"]
                or seeds["val"] & seeds["test"])
    clips = make_gesture_set("val", 1, num_frames=6)
    assert [c.label for c in clips] == list(GESTURE_CLASSES)
    assert [c.seed for c in clips] == [sd for _, sd in pairs["val"][:11]]


def test_unknown_class_and_bad_params_raise():
    with pytest.raises(ValueError, match="thumbs_up"):
        render_gesture("thumbs_up", 0)
    with pytest.raises(ValueError, match="thumbs_up"):
        make_gesture_clip("thumbs_up", 0)
    with pytest.raises(ValueError, match="num_frames"):
        render_gesture("hand_clap", 0, num_frames=0)
    with pytest.raises(ValueError, match="fps"):
        render_gesture("hand_clap", 0, fps=0.0)
    with pytest.raises(ValueError, match="size"):
        render_gesture("hand_clap", 0, size=8)
    with pytest.raises(ValueError, match="n_per_class"):
        make_gesture_set("train", -1)
    with pytest.raises(ValueError, match="split"):
        make_gesture_set("dev", 1)
