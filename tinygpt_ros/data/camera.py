"""Camera ego-motion and sensor effects for generated clips and real-photo streams.

Why: robots move and real sensors are noisy, while the rendered scenes are perfectly still
between events. A `Camera` says what the camera does over a clip (pan, tilt, zoom, hand-held
shake, exposure steps, flicker) and how its sensor degrades each frame (Poisson-Gaussian noise,
JPEG). None of it is scene action: captions do not change when only the camera moves.

Geometry: the scene lives on a canvas that is the view plus a margin of `CANVAS_MARGIN` of the
view on every side; frame f shows the canvas through a similarity (`view_to_canvas`). Speeds are
in pixels per frame of a 640x480 view (`REFERENCE_WIDTH`), so one `Camera` means the same
motion at any rendered size. Excursions stay inside the margin (pans and tilts turn round,
zoom goes back and forth), so what is in view at the start stays in view.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

REFERENCE_WIDTH = 640  # speeds and shake are given in pixels of a view this wide
CANVAS_MARGIN = 0.1  # canvas = view + this fraction of the view on each side
MAX_EXCURSION = 0.07  # pans/tilts turn round at this fraction of the view from the centre
ZOOM_RANGE = (0.95, 1.12)  # zoom goes back and forth between these magnifications
CAMERA_KINDS = ("pan", "tilt", "zoom", "shake", "exposure", "flicker")


@dataclass(frozen=True)
class Camera:
    """What the camera and its sensor do over one clip (all zero = a still, ideal camera)."""

    pan_px: float = 0.0  # horizontal speed, px/frame at 640 px (sign = first direction)
    tilt_px: float = 0.0  # vertical speed, px/frame at 640 px width scale
    zoom_pct: float = 0.0  # magnification change, % per frame (sign = first direction)
    roll_deg: float = 0.0  # roll speed, degrees per frame (back and forth, +-2 degrees)
    shake_px: float = 0.0  # hand-held jitter: each frame offset uniform in +-shake_px
    exposure_steps: tuple[tuple[int, float], ...] = ()  # (frame, relative gain change)
    flicker: float = 0.0  # relative amplitude of exposure flicker (mains beat)
    flicker_period: float = 5.0  # frames per flicker cycle
    read_noise: float = 0.0  # Gaussian read noise sigma, DN
    shot_noise: float = 0.0  # signal-dependent noise: variance = shot_noise * signal (DN)
    jpeg_quality: int = 0  # 0 = no JPEG round trip

    @property
    def moves(self) -> bool:
        return bool(self.pan_px or self.tilt_px or self.zoom_pct or self.roll_deg
                    or self.shake_px)


def _ping_pong(n: int, speed: float, low: float, high: float, start: float = 0.0) -> np.ndarray:
    """Positions from `start` moving `speed` per frame, turning round at `low` and `high`."""
    pos = np.empty(n)
    x, v = start, speed
    for i in range(n):
        pos[i] = x
        if not low <= x + v <= high:
            v = -v
        x += v
    return pos


@dataclass
class CameraPath:
    """Per-frame geometry and exposure of one clip (geometry in fractions of the view)."""

    dx: np.ndarray  # view centre offset, fraction of the view width
    dy: np.ndarray  # fraction of the view width too (isotropic pixels)
    zoom: np.ndarray  # magnification (> 1 shows less of the canvas)
    roll: np.ndarray  # radians
    gain: np.ndarray  # exposure gain

    def view_to_canvas(self, f: int, view_hw: tuple[int, int],
                       canvas_hw: tuple[int, int]) -> np.ndarray:
        """(2, 3) affine mapping view pixel (u, v) to canvas pixel at frame f."""
        vh, vw = view_hw
        ch, cw = canvas_hw
        c = math.cos(self.roll[f]) / self.zoom[f]
        s = math.sin(self.roll[f]) / self.zoom[f]
        # canvas pixel = canvas centre + offset + R(roll)/zoom * (view pixel - view centre)
        cx = (cw - 1) / 2 + self.dx[f] * vw
        cy = (ch - 1) / 2 + self.dy[f] * vw
        ux, uy = (vw - 1) / 2, (vh - 1) / 2
        return np.array([[c, -s, cx - c * ux + s * uy],
                         [s, c, cy - s * ux - c * uy]], np.float64)


def camera_path(camera: Camera, n: int, rng: np.random.Generator) -> CameraPath:
    """The camera's trajectory over `n` frames (random parts drawn from `rng`)."""
    k = 1.0 / REFERENCE_WIDTH
    dx = _ping_pong(n, camera.pan_px * k, -MAX_EXCURSION, MAX_EXCURSION)
    dy = _ping_pong(n, camera.tilt_px * k, -MAX_EXCURSION * 0.75, MAX_EXCURSION * 0.75)
    log_zoom = _ping_pong(n, math.log1p(camera.zoom_pct / 100.0),
                          math.log(ZOOM_RANGE[0]), math.log(ZOOM_RANGE[1]))
    roll = _ping_pong(n, math.radians(camera.roll_deg), -math.radians(2), math.radians(2))
    if camera.shake_px:
        jitter = rng.uniform(-camera.shake_px, camera.shake_px, size=(2, n)) * k
        dx, dy = dx + jitter[0], dy + jitter[1]
    gain = np.ones(n)
    for frame, change in camera.exposure_steps:
        if 0 <= frame < n:
            gain[frame:] *= 1.0 + change
    gain = np.clip(gain, 0.6, 1.6)
    if camera.flicker:
        phase = rng.uniform(0, 2 * math.pi)
        gain *= 1.0 + camera.flicker * np.sin(2 * math.pi * np.arange(n)
                                              / camera.flicker_period + phase)
    return CameraPath(dx, dy, np.exp(log_zoom), roll, gain)


def canvas_size(view_hw: tuple[int, int]) -> tuple[int, int]:
    """(height, width) of the canvas a view of `view_hw` is cut from."""
    vh, vw = view_hw
    pad = math.ceil(CANVAS_MARGIN * max(vh, vw))
    return vh + 2 * pad, vw + 2 * pad


def view(canvas: np.ndarray, path: CameraPath, f: int, view_hw: tuple[int, int]) -> np.ndarray:
    """Frame f of the camera: the canvas seen through the path's similarity (bilinear)."""
    m = path.view_to_canvas(f, view_hw, canvas.shape[:2])
    return cv2.warpAffine(canvas, m, (view_hw[1], view_hw[0]),
                          flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                          borderMode=cv2.BORDER_REFLECT)


def sensor(frame: np.ndarray, gain: float, camera: Camera,
           rng: np.random.Generator) -> np.ndarray:
    """Exposure gain, Poisson-Gaussian noise (Gaussian approximation) and JPEG, uint8 out."""
    if gain == 1.0 and not camera.read_noise and not camera.shot_noise \
            and not camera.jpeg_quality:
        return frame
    x = frame.astype(np.float32) * np.float32(gain)
    if camera.read_noise or camera.shot_noise:
        var = camera.shot_noise * np.clip(x, 0, None) + camera.read_noise ** 2
        x += np.sqrt(var) * rng.standard_normal(x.shape, dtype=np.float32)
    out = np.clip(np.rint(x), 0, 255).astype(np.uint8)
    if camera.jpeg_quality:
        ok, buf = cv2.imencode(".jpg", out[..., ::-1],
                               [cv2.IMWRITE_JPEG_QUALITY, int(camera.jpeg_quality)])
        if not ok:  # pragma: no cover - cv2 always encodes a valid uint8 image
            raise RuntimeError("JPEG encoding failed")
        out = np.ascontiguousarray(cv2.imdecode(buf, cv2.IMREAD_COLOR)[..., ::-1])
    return out


def random_camera(kind: str, rng: np.random.Generator, n: int) -> Camera:
    """A random camera of one ego-motion level (training and held-out camera clips).

    Every level has a real sensor: Poisson-Gaussian noise and JPEG at quality 70-92."""
    if kind not in CAMERA_KINDS:
        raise ValueError(f"camera kind must be one of {CAMERA_KINDS}, got {kind!r}")
    sign = 1.0 if rng.random() < 0.5 else -1.0
    noise = dict(read_noise=float(rng.uniform(0.8, 3.0)),
                 shot_noise=float(rng.uniform(0.05, 0.4)),
                 jpeg_quality=int(rng.integers(70, 93)))
    if kind == "pan":
        return Camera(pan_px=sign * float(rng.uniform(1, 4)), **noise)
    if kind == "tilt":
        return Camera(tilt_px=sign * float(rng.uniform(1, 4)), **noise)
    if kind == "zoom":
        return Camera(zoom_pct=sign * float(rng.uniform(0.25, 1.0)),
                      roll_deg=float(rng.choice([0.0, 0.1])), **noise)
    if kind == "shake":
        return Camera(shake_px=float(rng.uniform(0.5, 2.0)), **noise)
    if kind == "exposure":
        frames = sorted(int(f) for f in rng.choice(np.arange(2, max(3, n)),
                                                   size=min(int(rng.integers(1, 4)),
                                                            max(1, n - 2)),
                                                   replace=False))
        steps = tuple((f, float(rng.choice([-1, 1]) * rng.uniform(0.08, 0.2))) for f in frames)
        return Camera(exposure_steps=steps, **noise)
    return Camera(flicker=float(rng.uniform(0.02, 0.05)),
                  flicker_period=float(rng.uniform(3, 10)), **noise)
