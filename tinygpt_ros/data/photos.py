"""Real-photo camera streams: photographs bundled with scikit-image, filmed at 640x480 through
the same camera trajectories and sensor model as the generated clips (`data/camera.py`).

Why: rendered shapes on flat backgrounds are easy for motion estimation and patch embeddings;
real photographs have texture everywhere, which is where an uncompensated pan changes every
token. The streams have no caption references: they measure tokens recomputed, latency and
fidelity against a dense pass of the same frames.
"""

from __future__ import annotations

import numpy as np

from tinygpt_ros.data.camera import Camera, camera_path, canvas_size, sensor, view

# Colour photographs shipped inside the scikit-image wheel (no download needed).
PHOTOS = ("astronaut", "coffee", "chelsea", "rocket")
STREAM_SIZE = (480, 640)  # (height, width) of the streams


def load_photo(name: str) -> np.ndarray:
    """(H, W, 3) uint8 RGB photograph from `skimage.data`."""
    if name not in PHOTOS:
        raise ValueError(f"photo must be one of {PHOTOS}, got {name!r}")
    from skimage import data  # optional dependency, only needed for real-photo streams

    img = np.asarray(getattr(data, name)())
    if img.ndim == 2:
        img = np.repeat(img[..., None], 3, axis=2)
    return np.ascontiguousarray(img[..., :3], np.uint8)


def _cover(img: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
    """Resize (keeping the aspect) and centre-crop so the image exactly covers `hw`."""
    import cv2

    h, w = hw
    k = max(h / img.shape[0], w / img.shape[1])
    nh, nw = max(h, round(img.shape[0] * k)), max(w, round(img.shape[1] * k))
    interp = cv2.INTER_AREA if k < 1 else cv2.INTER_CUBIC
    big = cv2.resize(img, (nw, nh), interpolation=interp)
    y0, x0 = (nh - h) // 2, (nw - w) // 2
    return np.ascontiguousarray(big[y0:y0 + h, x0:x0 + w])


def photo_stream(name: str, camera: Camera, num_frames: int = 40, seed: int = 0,
                 size: tuple[int, int] = STREAM_SIZE) -> np.ndarray:
    """(T, H, W, 3) uint8: the photo filmed by `camera` (nothing in the scene moves)."""
    if num_frames < 1:
        raise ValueError(f"num_frames must be >= 1, got {num_frames}")
    canvas = _cover(load_photo(name), canvas_size(size))
    rng = np.random.default_rng([seed, PHOTOS.index(name)])
    path = camera_path(camera, num_frames, rng)
    frames = np.empty((num_frames, *size, 3), np.uint8)
    for f in range(num_frames):
        frames[f] = sensor(view(canvas, path, f, size), float(path.gain[f]), camera, rng)
    return frames
