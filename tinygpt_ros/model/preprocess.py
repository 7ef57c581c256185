"""Input conversion: camera frames and event windows -> tensors on the model's token grid.

Frames become (3, 224, 224) normalised tensors (16 px patches -> 14 x 14 tokens). Event windows
become per-polarity log-count histograms at 112 x 112 (8 px patches -> the same 14 x 14 grid) and
per-token event counts, the event-driven change signal of STTF. Every check raises ValueError
naming the offending input, so a bad message never reaches (or corrupts) the model's state.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from tinygpt_ros.ops.preprocess import events_histogram, frame_to_array
from tinygpt_ros.spec.config import EVENT_SENSOR


def frame_to_tensor(frame: np.ndarray) -> torch.Tensor:
    """HxWx3 RGB (uint8, or float in [0, 1]) of any size -> (3, 224, 224) float32, normalised."""
    return torch.from_numpy(frame_to_array(frame))


def frames_to_batch(frames: Sequence[np.ndarray] | np.ndarray) -> torch.Tensor:
    """A list of frames, or a (B, H, W, 3) array -> (B, 3, 224, 224) float32 (training helper)."""
    if isinstance(frames, np.ndarray) and frames.ndim == 4:
        frames = list(frames)
    if not isinstance(frames, Sequence) or isinstance(frames, str | bytes):
        raise ValueError(f"frames must be a sequence of frames, got {type(frames).__name__}")
    if len(frames) == 0:
        raise ValueError("frames is empty")
    out = []
    for i, f in enumerate(frames):
        try:
            out.append(frame_to_tensor(f))
        except ValueError as e:
            raise ValueError(f"frames[{i}]: {e}") from None
    return torch.stack(out)


def events_to_histogram(events: np.ndarray, sensor: int = EVENT_SENSOR) -> torch.Tensor:
    """Events -> (2, 112, 112) float32: channel = polarity (0 darker, 1 brighter), log1p(count).

    Pixel (x, y) lands in bin (y * 112 // sensor, x * 112 // sensor). No events -> zeros.
    """
    return torch.from_numpy(events_histogram(events, sensor))
