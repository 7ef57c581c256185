"""DVS128-Gesture-like event clips: a stylised person moves its arms, the simulator makes events.

Why: DVS128 Gesture cannot be downloaded here, yet gesture accuracy is one of our measures. The
person faces the camera, so its right hand is on the image's LEFT (x < centre), as in DVS128
Gesture. "cw"/"ccw" are as seen in the image (x right, y down). Hands are bright blobs, arms
thick lines, body and head dimmer, background dark; events come from `EventSimulator`, so the
side of the image, the order of ON (leading edge) and OFF (trailing edge) events and their
drift over time tell left from right and clockwise from counter-clockwise.
Subject variation from the seed: body size, position, speed, amplitude, phase, brightness, noise.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

from tinygpt_ros.data.events import EventSimulator
from tinygpt_ros.data.scenes import split_seeds
from tinygpt_ros.spec.config import EVENT_SENSOR
from tinygpt_ros.spec.types import EVENT_DTYPE

GESTURE_CLASSES = (
    "hand_clap",
    "right_hand_wave",
    "left_hand_wave",
    "right_arm_cw",
    "right_arm_ccw",
    "left_arm_cw",
    "left_arm_ccw",
    "arm_roll",
    "air_drums",
    "air_guitar",
    "other",
)
_RIGHT, _LEFT = -1.0, 1.0  # image-x side of the subject's right / left hand


@dataclass
class GestureClip:
    events: np.ndarray  # EVENT_DTYPE, sorted by t, t from 0 (first frame) in microseconds
    label: str
    label_index: int
    duration_us: int
    seed: int
    frames: np.ndarray | None = None  # (T, S, S) uint8, kept only when asked for


@dataclass(frozen=True)
class _Subject:
    cx: float  # neck x, px
    sy: float  # shoulder y, px
    b: float  # body unit, px
    period: float  # s
    amp: float
    phase: float
    bg: float
    body: float
    arm: float
    hand: float
    noise: float  # std of a fixed background texture (static: no events by itself)
    event_noise_hz: float  # the sensor's background-activity rate for this subject


def _check_label(label: str) -> int:
    if label not in GESTURE_CLASSES:
        raise ValueError(f"label: unknown gesture class {label!r}; known: "
                         f"{', '.join(GESTURE_CLASSES)}")
    return GESTURE_CLASSES.index(label)


def _subject(rng: np.random.Generator, size: int) -> _Subject:
    b = size * 0.12 * rng.uniform(0.85, 1.05)
    body = rng.uniform(50, 85)
    return _Subject(
        cx=size / 2 + rng.uniform(-0.05, 0.05) * size,
        sy=size * 0.42 + rng.uniform(-0.03, 0.03) * size,
        b=b,
        period=rng.uniform(0.45, 0.8),
        amp=rng.uniform(0.8, 1.2),
        phase=rng.uniform(0, 2 * math.pi),
        bg=rng.uniform(25, 50),
        body=body,
        arm=body + rng.uniform(15, 35),
        hand=rng.uniform(115, 190),
        noise=rng.uniform(0.0, 2.0),
        event_noise_hz=rng.uniform(0.02, 0.2),
    )


def hand_paths(label: str, seed: int, times_s: np.ndarray, size: int = EVENT_SENSOR
               ) -> np.ndarray:
    """(T, 2, 2) pixel positions of the (right, left) hands at `times_s` for a subject/seed."""
    _check_label(label)
    rng = np.random.default_rng(seed)
    s = _subject(rng, size)
    return _paths(label, s, np.asarray(times_s, float), rng)


def _paths(label: str, s: _Subject, t: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    b, a = s.b, s.amp
    ph = 2 * math.pi * t / s.period + s.phase
    zeros = np.zeros_like(t)
    sway = 0.08 * b * np.sin(2 * math.pi * t / 1.7 + s.phase)

    def rest(side: float) -> tuple[np.ndarray, np.ndarray]:
        return s.cx + side * 1.35 * b + sway, s.sy + 2.5 * b + zeros

    def circle(side: float, direction: float) -> tuple[np.ndarray, np.ndarray]:
        cxc, cyc, r = s.cx + side * 2.0 * b, s.sy + 0.3 * b, 1.0 * b * a
        th = s.phase + direction * ph  # +1: clockwise in the image (y down)
        return cxc + r * np.cos(th), cyc + r * np.sin(th)

    if label == "hand_clap":
        sep = 0.3 * b + 1.6 * b * a * (0.5 + 0.5 * np.cos(ph))
        right = (s.cx - sep, s.sy + 1.0 * b + zeros)
        left = (s.cx + sep, s.sy + 1.0 * b + zeros)
    elif label in ("right_hand_wave", "left_hand_wave"):
        side = _RIGHT if label.startswith("right") else _LEFT
        wave = (s.cx + side * 1.9 * b + 0.9 * b * a * np.sin(ph),
                s.sy - 1.7 * b + 0.2 * b * np.cos(2 * ph))
        right, left = (wave, rest(_LEFT)) if side == _RIGHT else (rest(_RIGHT), wave)
    elif label.endswith(("_cw", "_ccw")):
        side = _RIGHT if label.startswith("right") else _LEFT
        moving = circle(side, 1.0 if label.endswith("_cw") else -1.0)
        right, left = (moving, rest(_LEFT)) if side == _RIGHT else (rest(_RIGHT), moving)
    elif label == "arm_roll":
        th = 1.4 * ph
        cxc, cyc, r = s.cx, s.sy + 1.3 * b, 0.65 * b * a
        right = (cxc - r * np.cos(th), cyc - 0.8 * r * np.sin(th))
        left = (cxc + r * np.cos(th), cyc + 0.8 * r * np.sin(th))
    elif label == "air_drums":
        def hit(p: np.ndarray) -> np.ndarray:
            return (0.5 + 0.5 * np.cos(p)) ** 2

        right = (s.cx - 1.1 * b + zeros, s.sy + 1.7 * b - 1.0 * b * a * hit(ph))
        left = (s.cx + 1.1 * b + zeros, s.sy + 1.7 * b - 1.0 * b * a * hit(ph + math.pi))
    elif label == "air_guitar":
        # right hand strums by the right hip, left hand held out on the neck of the guitar
        right = (s.cx - 0.4 * b + 0.15 * b * np.sin(2 * ph),
                 s.sy + 2.1 * b + 0.6 * b * a * np.sin(2 * ph))
        left = (s.cx + 2.4 * b + 0.2 * b * np.sin(0.5 * ph), s.sy + 0.4 * b + zeros)
    else:  # other: a random mix of slow wanders per hand
        hands = []
        for side in (_RIGHT, _LEFT):
            x, y = rest(side)
            x, y = x.copy() - side * 0.3 * b, y.copy() - 1.0 * b
            for _ in range(3):
                f = rng.uniform(0.3, 2.2)
                p1, p2 = rng.uniform(0, 2 * math.pi, 2)
                ax, ay = rng.uniform(0.1, 0.6, 2) * b
                x = x + ax * np.sin(2 * math.pi * f * t + p1)
                y = y + ay * np.sin(2 * math.pi * f * t + p2)
            hands.append((x, y))
        right, left = hands
    return np.stack([np.stack(right, -1), np.stack(left, -1)], 1)


def _elbow(shoulder: np.ndarray, hand: np.ndarray, length: float, side: float) -> np.ndarray:
    """Two-link arm: elbow bends outward and down."""
    d = hand - shoulder
    dist = float(np.hypot(*d)) or 1e-6
    mid = (shoulder + hand) / 2
    bend = math.sqrt(max(length**2 - (dist / 2) ** 2, 0.0))
    n = np.array([-d[1], d[0]]) / dist
    if n[0] * side + 0.5 * n[1] < 0:
        n = -n
    return mid + bend * n


def _pt(p: np.ndarray) -> tuple[int, int]:
    return round(float(p[0]) * 16), round(float(p[1]) * 16)


def render_gesture(label: str, seed: int, num_frames: int = 48, fps: float = 60.0,
                   size: int = EVENT_SENSOR) -> np.ndarray:
    """(T, size, size) uint8 gray frames of one subject doing `label`."""
    _check_label(label)
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or seed < 0:
        raise ValueError(f"seed must be a non-negative int, got {seed!r}")
    if isinstance(num_frames, bool) or not isinstance(num_frames, int | np.integer) \
            or num_frames < 1:
        raise ValueError(f"num_frames must be an int >= 1, got {num_frames!r}")
    if not isinstance(fps, int | float) or not math.isfinite(fps) or fps <= 0:
        raise ValueError(f"fps must be a finite number > 0, got {fps!r}")
    if isinstance(size, bool) or not isinstance(size, int | np.integer) or not 32 <= size <= 1024:
        raise ValueError(f"size must be an int in 32..1024, got {size!r}")
    rng = np.random.default_rng(seed)
    s = _subject(rng, size)
    t = np.arange(num_frames) / fps
    hands = _paths(label, s, t, rng)
    texture = np.random.default_rng([seed, 1]).normal(0, s.noise, (size, size))
    base = (s.bg + texture).astype(np.float32)
    b = s.b
    shoulder_y = s.sy
    frames = np.empty((num_frames, size, size), np.uint8)
    sh, one = 4, 16
    for i in range(num_frames):
        img = base.copy()
        sway = 0.08 * b * math.sin(2 * math.pi * t[i] / 1.7 + s.phase)
        cx = s.cx + sway
        cv2.ellipse(img, _pt((cx, shoulder_y + 1.6 * b)), (round(1.05 * b * one),
                    round(1.75 * b * one)), 0, 0, 360, s.body, -1, cv2.LINE_AA, sh)
        cv2.circle(img, _pt((cx, shoulder_y - 1.25 * b)), round(0.6 * b * one), s.body + 15, -1,
                   cv2.LINE_AA, sh)
        for k, side in enumerate((_RIGHT, _LEFT)):
            shoulder = np.array([cx + side * 1.05 * b, shoulder_y + 0.15 * b])
            hand = hands[i, k]
            elbow = _elbow(shoulder, hand, 1.45 * b, side)
            thick = max(2, round(0.42 * b))
            cv2.line(img, _pt(shoulder), _pt(elbow), s.arm, thick, cv2.LINE_AA, sh)
            cv2.line(img, _pt(elbow), _pt(hand), s.arm, thick, cv2.LINE_AA, sh)
            cv2.circle(img, _pt(hand), round(0.4 * b * one), s.hand, -1, cv2.LINE_AA, sh)
        frames[i] = np.clip(np.rint(img), 0, 255).astype(np.uint8)
    return frames


def make_gesture_clip(label: str, seed: int, num_frames: int = 48, fps: float = 60.0,
                      size: int = EVENT_SENSOR, keep_frames: bool = False,
                      simulator: EventSimulator | None = None) -> GestureClip:
    """Render a gesture and turn it into events. The default simulator is seeded from `seed`
    and uses this subject's noise rate with 0.02 threshold mismatch."""
    index = _check_label(label)
    frames = render_gesture(label, seed, num_frames, fps, size)
    stamps = np.rint(np.arange(num_frames) * (1e6 / fps)).astype(np.int64)
    if simulator is None:
        subject = _subject(np.random.default_rng(seed), size)
        simulator = EventSimulator(noise_rate_hz=subject.event_noise_hz, seed=int(seed),
                                   threshold_sigma=0.02)
    sim = simulator
    events = sim.simulate(frames, stamps) if num_frames > 1 else np.empty(0, EVENT_DTYPE)
    return GestureClip(events, label, index, int(stamps[-1]), int(seed),
                       frames if keep_frames else None)


def gesture_seeds(split: str, n_per_class: int, base_seed: int = 0) -> list[tuple[str, int]]:
    """(label, seed) pairs of a split, classes interleaved; seeds are disjoint across splits."""
    seeds = split_seeds(split, n_per_class * len(GESTURE_CLASSES), base_seed)
    return [(GESTURE_CLASSES[i % len(GESTURE_CLASSES)], sd) for i, sd in enumerate(seeds)]


def make_gesture_set(split: str, n_per_class: int, base_seed: int = 0,
                     **kw) -> list[GestureClip]:
    """`n_per_class` clips of every class; extra keywords go to `make_gesture_clip`."""
    if isinstance(n_per_class, bool) or not isinstance(n_per_class, int | np.integer) \
            or n_per_class < 0:
        raise ValueError(f"n_per_class must be a non-negative int, got {n_per_class!r}")
    return [make_gesture_clip(label, seed, **kw)
            for label, seed in gesture_seeds(split, n_per_class, base_seed)]
