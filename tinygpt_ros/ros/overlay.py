"""The `debug/overlay` picture: what the engine did to one frame or event window, drawn on it.

Why a picture: the diagnostics say how many tokens were recomputed and which branch ran, but not
*where*. The overlay shows the input with the recomputed tokens tinted, the temporal-fusion
centroids marked (bigger = more tokens merged, brighter = newer), and a text band with the caption
(or the gesture and its confidence for event windows), the branch, the step's wall time and
GFLOPs, and its FLOPs as a share of the dense model.

Pure numpy + OpenCV (no torch, no ROS): the node publishes it only while someone subscribes, and
`tinygpt-ros overlay` renders the same picture from a bag into a PNG.
"""

from __future__ import annotations

import textwrap

import cv2
import numpy as np

from tinygpt_ros import ops
from tinygpt_ros.spec.types import FrameResult

# RGB colours. Magenta tint for recomputed tokens, cyan-to-yellow for fused centroids (old-new).
RECOMPUTED_RGB = (255, 0, 200)
RECOMPUTED_ALPHA = 0.4
CENTROID_OLD_RGB = (0, 220, 255)
CENTROID_NEW_RGB = (255, 235, 0)
TEXT_RGB = (255, 255, 255)
BAND_RGB = (24, 24, 24)
FONT = cv2.FONT_HERSHEY_SIMPLEX
MIN_WIDTH = 448  # smaller inputs are upscaled so the text stays legible


def _scaled(img: np.ndarray, min_width: int, interpolation: int) -> np.ndarray:
    h, w = img.shape[:2]
    if w >= min_width:
        return np.ascontiguousarray(img)
    f = min_width / w
    return cv2.resize(img, (min_width, round(h * f)), interpolation=interpolation)


def _tint_tokens(img: np.ndarray, mask: np.ndarray | None) -> None:
    """Blend the recomputed tokens' cells with RECOMPUTED_RGB and outline them (in place).
    Pixel row y belongs to token row y * grid // height (the engine's stretch onto the grid)."""
    if mask is None or not np.any(mask):
        return
    mask = np.asarray(mask, bool)
    grid_h, grid_w = mask.shape
    h, w = img.shape[:2]
    cell = mask[(np.arange(h) * grid_h) // h][:, (np.arange(w) * grid_w) // w]
    color = np.empty_like(img)
    color[:] = RECOMPUTED_RGB
    blended = cv2.addWeighted(img, 1.0 - RECOMPUTED_ALPHA, color, RECOMPUTED_ALPHA, 0.0)
    np.copyto(img, blended, where=cell[..., None])
    ys = -(-np.arange(grid_h + 1) * h // grid_h)  # first pixel row of each token row
    xs = -(-np.arange(grid_w + 1) * w // grid_w)
    for r, c in zip(*np.nonzero(mask), strict=True):
        cv2.rectangle(img, (int(xs[c]), int(ys[r])), (int(xs[c + 1]) - 1, int(ys[r + 1]) - 1),
                      RECOMPUTED_RGB, 1)


def _mark_centroids(img: np.ndarray, centroids: np.ndarray | None,
                    sizes: np.ndarray | None) -> None:
    """A ring per fused token at its (x, y) centroid; radius grows with the tokens it merged,
    colour goes from CENTROID_OLD_RGB (oldest slot) to CENTROID_NEW_RGB (this step)."""
    if centroids is None or len(centroids) == 0:
        return
    h, w = img.shape[:2]
    sizes = np.ones(len(centroids)) if sizes is None else np.asarray(sizes, np.float64)
    unit = max(2.0, min(h, w) / 160.0)
    largest = max(3, int(min(h, w) / 28))  # half a token cell: big merges stay readable
    old, new = np.array(CENTROID_OLD_RGB, float), np.array(CENTROID_NEW_RGB, float)
    for (x, y, t), size in zip(np.asarray(centroids, np.float64), sizes, strict=True):
        if size <= 0:
            continue
        center = (int(x * w + 0.5), int(y * h + 0.5))
        radius = min(largest, int(unit * (1.0 + np.sqrt(size)) + 0.5))
        color = tuple(int(v) for v in old + (new - old) * float(np.clip(t, 0.0, 1.0)))
        cv2.circle(img, center, radius + 1, (0, 0, 0), 2, cv2.LINE_AA)
        cv2.circle(img, center, radius, color, 2, cv2.LINE_AA)
        cv2.circle(img, center, 2, color, -1, cv2.LINE_AA)


def info_lines(result: FrameResult) -> list[str]:
    """The text of the band below the picture (also what tests check)."""
    rec = result.record
    ratio = rec.total_flops / rec.dense_flops if rec.dense_flops > 0 else 1.0
    if rec.modality == "events":
        head = f"gesture: {result.gesture or '-'} ({100.0 * result.gesture_confidence:.0f}%)"
    else:
        reused = " (reused)" if rec.caption_reused else ""
        head = f"caption{reused}: {result.caption or '-'}"
    return [
        head,
        f"branch {rec.branch} | {rec.total_latency_ms:.1f} ms | "
        f"{rec.total_flops / 1e9:.3f} GFLOPs = {100.0 * ratio:.1f}% of dense",
        f"recomputed {rec.tokens_recomputed}/{rec.tokens_in} tokens (tinted) | "
        f"{rec.tokens_fused} fused tokens (rings, yellow = this step)",
    ]


def _wrap(line: str, width: int, scale: float) -> list[str]:
    """Split `line` into pieces that fit `width` pixels, at " | " first, else at spaces."""
    def fits(text: str) -> bool:
        return cv2.getTextSize(text, FONT, scale, 1)[0][0] <= width

    out: list[str] = []
    for part in line.split(" | "):
        if out and fits(out[-1] + " | " + part):
            out[-1] += " | " + part
        elif fits(part):
            out.append(part)
        else:
            chars = max(10, int(len(part) * width / cv2.getTextSize(part, FONT, scale, 1)[0][0]))
            out += textwrap.wrap(part, chars)
    return out or [""]


def _text_band(width: int, lines: list[str]) -> np.ndarray:
    scale = max(0.45, min(0.8, width / 1000.0))
    wrapped = [piece for line in lines for piece in _wrap(line, width - 16, scale)]
    line_h = int(28 * scale / 0.6 + 0.5)
    band = np.full((line_h * len(wrapped) + 12, width, 3), BAND_RGB, np.uint8)
    for i, line in enumerate(wrapped):
        cv2.putText(band, line, (8, 6 + line_h * (i + 1) - line_h // 4), FONT, scale, TEXT_RGB,
                    1, cv2.LINE_AA)
    return band


def events_image(events: np.ndarray) -> np.ndarray:
    """Event window -> RGB (112, 112, 3) uint8 histogram: brighter events blue, darker red."""
    hist = ops.events_histogram(events)  # (2, g, g) log1p counts, channel = polarity
    busy = hist[hist > 0]
    peak = float(np.percentile(busy, 90)) if busy.size else 1.0  # sparse pixels stay visible
    img = np.full((*hist.shape[1:], 3), 16, np.float32)
    img[..., 0] += 239 * np.minimum(hist[0] / peak, 1.0)  # darker: red
    img[..., 2] += 239 * np.minimum(hist[1] / peak, 1.0)  # brighter: blue
    img[..., 1] += 120 * np.minimum(np.minimum(hist[0], hist[1]) / peak, 1.0)
    return np.clip(img, 0, 255).astype(np.uint8)


def render(rgb: np.ndarray, result: FrameResult, min_width: int = MIN_WIDTH,
           interpolation: int = cv2.INTER_LINEAR) -> np.ndarray:
    """Picture of one step: `rgb` (HxWx3 uint8) with the tokens and centroids drawn, text below."""
    img = _scaled(np.asarray(rgb, np.uint8), min_width, interpolation).copy()
    _tint_tokens(img, result.token_mask)
    _mark_centroids(img, result.fused_centroids, result.fused_sizes)
    return np.concatenate([img, _text_band(img.shape[1], info_lines(result))], 0)


def render_frame(frame: np.ndarray, result: FrameResult) -> np.ndarray:
    """Overlay for a camera frame (RGB, any size; the engine stretches it onto the token grid)."""
    return render(frame, result)


def render_events(events: np.ndarray, result: FrameResult) -> np.ndarray:
    """Overlay for an event window: its polarity histogram, the gesture and its confidence."""
    return render(events_image(events), result, interpolation=cv2.INTER_NEAREST)
