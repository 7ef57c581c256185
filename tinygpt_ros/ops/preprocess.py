"""Frame and event-window preprocessing in numpy: validation, resizing, normalisation, event
histograms and per-patch counts. Torch-free so the onnxruntime engine runs without torch; the
torch training code wraps these (`model/preprocess.py`)."""

from __future__ import annotations

import cv2
import numpy as np

from tinygpt_ros.spec.config import EVENT_GRID_SIZE, EVENT_SENSOR, GRID, IMAGE_SIZE, NUM_TOKENS
from tinygpt_ros.spec.types import EVENT_DTYPE

# ---------------------------------------------------------------------------- preprocessing

# Fixed normalisation (x/255 - 0.5) / 0.25: no data set statistics to ship or keep in sync.
PIXEL_MEAN = 0.5
PIXEL_STD = 0.25
SMALL_GRAY_SIZE = 56  # gray thumbnail for cheap complexity features (edge density)
_EVENT_FIELDS = ("x", "y", "t", "p")


def _check_frame(frame: object, name: str = "frame") -> np.ndarray:
    """Validate an RGB frame (HxWx3, uint8 or float in [0, 1]); returns it unchanged."""
    if not isinstance(frame, np.ndarray):
        raise ValueError(f"{name} must be a numpy.ndarray, got {type(frame).__name__}")
    if frame.ndim != 3 or frame.shape[2] != 3:
        raise ValueError(f"{name} must be HxWx3 (RGB), got shape {tuple(frame.shape)}")
    if frame.shape[0] == 0 or frame.shape[1] == 0:
        raise ValueError(f"{name} is empty: shape {tuple(frame.shape)}")
    if frame.dtype == np.uint8:
        return frame
    if frame.dtype in (np.float32, np.float64):
        if not np.isfinite(frame).all():
            raise ValueError(f"{name} contains NaN or inf values")
        lo, hi = float(frame.min()), float(frame.max())
        if lo < 0.0 or hi > 1.0:
            raise ValueError(f"{name}: float frames must lie in [0, 1], got [{lo:.3g}, {hi:.3g}]")
        return frame
    raise ValueError(f"{name} dtype must be uint8 or float32/float64 in [0, 1], got {frame.dtype}")


def _resize(img: np.ndarray, size: int) -> np.ndarray:
    """Resize to size x size: a box filter by each axis's integer factor, then bilinear.

    Why two stages: cv2's INTER_AREA averages without aliasing but is fast only for integer
    ratios (1080p -> 224 in one non-integer step: ~14 ms). The box stage takes each axis down
    by its own integer factor (up to factor - 1 edge rows or columns are cropped), which
    leaves a factor under 2 per axis, where bilinear interpolation aliases little. An
    INTER_AREA second stage cost 0.45 ms of a 640x480 frame's 0.58 (320x240 -> 224; bilinear
    0.08), and on 40 val streams rendered at 480x640 (2026-12-05, the user's knobs) CIDEr
    was 1.686 with it and 1.732 with bilinear, 85% of segments showing the same caption."""
    h, w = img.shape[:2]
    if (h, w) == (size, size):
        return img
    ky, kx = max(1, h // size), max(1, w // size)
    if ky >= 2 or kx >= 2:
        h, w = h // ky, w // kx
        img = cv2.resize(np.ascontiguousarray(img[: h * ky, : w * kx]), (w, h),
                         interpolation=cv2.INTER_AREA)
    return cv2.resize(np.ascontiguousarray(img), (size, size), interpolation=cv2.INTER_LINEAR)


def _resized_unit(frame: object, size: int) -> np.ndarray:
    """Validate, resize to size x size and scale to float32 [0, 1].

    uint8 frames that shrink are resized before the float conversion (cv2's uint8 area kernels
    are much faster on large camera frames; the fixed-point rounding costs <= 1/255).
    """
    img = _check_frame(frame)
    shrink = img.shape[0] >= size and img.shape[1] >= size
    if img.dtype == np.uint8 and shrink:
        unit = _resize(img, size).astype(np.float32)
        unit *= np.float32(1.0 / 255.0)  # in place: one 600 KB array a frame, not two
        return unit
    if img.dtype == np.uint8:
        img = img.astype(np.float32) * np.float32(1.0 / 255.0)
    return _resize(img.astype(np.float32, copy=False), size)


def frame_to_array(frame: np.ndarray) -> np.ndarray:
    """HxWx3 RGB (uint8, or float in [0, 1]) of any size -> (3, 224, 224) float32, normalised."""
    return unit_to_array(frame_to_unit(frame))


def frame_to_unit(frame: np.ndarray) -> np.ndarray:
    """HxWx3 RGB of any size -> (224, 224, 3) float32 in [0, 1] (validated; the model input
    before normalisation, where motion compensation works)."""
    return _resized_unit(frame, IMAGE_SIZE)


def unit_to_array(unit: np.ndarray) -> np.ndarray:
    """(224, 224, 3) unit-float image -> (3, 224, 224) float32, normalised.

    Written into one output array (the subtraction reads the image channel-first, the
    division runs in place): at a camera's rate each frame starts with caches the pause
    between frames emptied, and every extra 600 KB temporary costs a pass over cold memory."""
    out = np.empty((unit.shape[2], *unit.shape[:2]), np.float32)
    np.subtract(unit.transpose(2, 0, 1), np.float32(PIXEL_MEAN), out=out)
    out /= np.float32(PIXEL_STD)
    return out


def small_gray(frame: np.ndarray) -> np.ndarray:
    """56 x 56 float32 gray in [0, 1] (BT.601 luma), for cheap complexity features."""
    return _gray(_resized_unit(frame, SMALL_GRAY_SIZE))


def unit_small_gray(unit: np.ndarray) -> np.ndarray:
    """`small_gray` of a unit image `frame_to_unit` made: the same thumbnail without checking
    again what that check passed (a NaN test and a min and max over 600 KB every frame)."""
    return _gray(_resize(unit, SMALL_GRAY_SIZE))


def _gray(img: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(img @ np.array([0.299, 0.587, 0.114], np.float32))


def validate_events(events: object, sensor: int = EVENT_SENSOR) -> np.ndarray:
    """Check an event window and return it as a 1-D `EVENT_DTYPE` array.

    Accepts `EVENT_DTYPE` or any 1-D structured array with integer fields x, y, t, p.
    Requires 0 <= x, y < sensor, t sorted ascending (ties allowed) and polarity p in {0, 1}.
    An empty window is valid (nothing changed).
    """
    if not isinstance(events, np.ndarray):
        raise ValueError(f"events must be a numpy structured array, got {type(events).__name__}")
    names = events.dtype.names
    if names is None or not set(_EVENT_FIELDS) <= set(names):
        raise ValueError(
            f"events dtype must be EVENT_DTYPE (fields x, y, t, p), got {events.dtype}"
        )
    for f in _EVENT_FIELDS:
        kind = events.dtype[f].kind
        if kind not in "iub":
            raise ValueError(f"events field {f!r} must be an integer type, got {events.dtype[f]}")
    if events.ndim != 1:
        raise ValueError(f"events must be 1-D, got shape {events.shape}")
    if events.size == 0:
        return np.zeros(0, EVENT_DTYPE)
    for f in ("x", "y"):
        v = events[f]
        lo, hi = int(v.min()), int(v.max())
        if lo < 0 or hi >= sensor:
            raise ValueError(
                f"events field {f!r} outside the {sensor}x{sensor} sensor: range [{lo}, {hi}]"
            )
    t = events["t"].astype(np.int64)
    if t.size > 1 and bool((np.diff(t) < 0).any()):
        bad = int(np.argmax(np.diff(t) < 0))
        raise ValueError(f"events field 't' must be sorted ascending (t[{bad + 1}] < t[{bad}])")
    p = events["p"]
    if not bool(np.isin(p, (0, 1)).all()):
        raise ValueError(f"events field 'p' (polarity) must be 0 or 1, got {np.unique(p)[:8]}")
    if events.dtype == EVENT_DTYPE:
        return events
    out = np.empty(events.shape, EVENT_DTYPE)
    for f in _EVENT_FIELDS:
        out[f] = events[f]
    return out


def events_histogram(events: np.ndarray, sensor: int = EVENT_SENSOR) -> np.ndarray:
    """Events -> (2, 112, 112) float32: channel = polarity (0 darker, 1 brighter), log1p(count).

    Pixel (x, y) lands in bin (y * 112 // sensor, x * 112 // sensor). No events -> zeros.
    """
    ev = validate_events(events, sensor)
    g = EVENT_GRID_SIZE
    hist = np.zeros(2 * g * g, np.float32)
    if ev.size:
        bx = ev["x"].astype(np.int64) * g // sensor
        by = ev["y"].astype(np.int64) * g // sensor
        idx = ev["p"].astype(np.int64) * (g * g) + by * g + bx
        hist += np.bincount(idx, minlength=2 * g * g).astype(np.float32)
    return np.log1p(hist).reshape(2, g, g)


def events_per_patch(events: np.ndarray, sensor: int = EVENT_SENSOR) -> np.ndarray:
    """Events per token, (196,) float32, row-major (row = y) like the patch embedding's flatten.

    Token of pixel (x, y) = (y * 14 // sensor) * 14 + x * 14 // sensor, which is the same 8 px
    patch the histogram bin of that pixel falls in (floor division nests).
    """
    ev = validate_events(events, sensor)
    if ev.size == 0:
        return np.zeros(NUM_TOKENS, np.float32)
    col = ev["x"].astype(np.int64) * GRID // sensor
    row = ev["y"].astype(np.int64) * GRID // sensor
    return np.bincount(row * GRID + col, minlength=NUM_TOKENS).astype(np.float32)


def frame_to_pretrained_unit(frame: np.ndarray, shortest_edge: int,
                             crop: tuple[int, int]) -> np.ndarray:
    """HxWx3 RGB frame -> (crop_h, crop_w, 3) float32 in [0, 1], the geometry of a CLIP-style
    image processor: shortest edge resized to `shortest_edge` (area filter when shrinking, so
    a 640x480 camera frame does not alias), then a centre crop."""
    img = _check_frame(frame)
    h, w = img.shape[:2]
    scale = shortest_edge / min(h, w)
    nh, nw = max(crop[0], round(h * scale)), max(crop[1], round(w * scale))
    interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_CUBIC
    img = cv2.resize(np.ascontiguousarray(img), (nw, nh), interpolation=interp)
    top, left = (nh - crop[0]) // 2, (nw - crop[1]) // 2
    img = img[top:top + crop[0], left:left + crop[1]]
    if img.dtype == np.uint8:
        img = img.astype(np.float32) * np.float32(1.0 / 255.0)
    return np.clip(img.astype(np.float32), 0.0, 1.0)


def frame_to_unit_size(frame: np.ndarray, size: int) -> np.ndarray:
    """HxWx3 RGB of any size -> (size, size, 3) float32 in [0, 1] (squashed, no crop)."""
    return _resized_unit(frame, size)


def normalize_unit(unit: np.ndarray, mean: tuple[float, float, float],
                   std: tuple[float, float, float]) -> np.ndarray:
    """(H, W, 3) unit float -> (3, H, W) float32 with per-channel mean/std."""
    img = (unit - np.asarray(mean, np.float32)) / np.asarray(std, np.float32)
    return np.ascontiguousarray(img.transpose(2, 0, 1), dtype=np.float32)


def frame_to_pretrained_input(
    frame: np.ndarray,
    shortest_edge: int,
    crop: tuple[int, int],
    mean: tuple[float, float, float],
    std: tuple[float, float, float],
) -> np.ndarray:
    """HxWx3 RGB frame -> (3, crop_h, crop_w) float32 the way a CLIP-style image processor
    prepares it: `frame_to_pretrained_unit`, then per-channel mean/std."""
    return normalize_unit(frame_to_pretrained_unit(frame, shortest_edge, crop), mean, std)
