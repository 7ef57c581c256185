"""Event-camera simulator: frames in, DVS-style events (x, y, t, polarity) out.

Why: no DVS recordings can be downloaded, so gesture events are made from rendered frames the
way ESIM / v2e do it. Each pixel keeps a reference log intensity; between two frames its log
intensity is interpolated linearly in time, and every crossing of reference +- contrast threshold
emits one event stamped (to the microsecond) where the line crosses that level, then moves the
reference by one threshold. A pixel is blind for `refractory_us` after each event: events it
would emit meanwhile are dropped and their change is lost (a held-in-reset DVS pixel also loses
it). Poisson background-activity noise is added per pixel; noise events obey the refractory
period but do not move the reference.
"""

from __future__ import annotations

import math

import cv2
import numpy as np

from tinygpt_ros.spec.config import EVENT_SENSOR
from tinygpt_ros.spec.types import EVENT_DTYPE

_LUMA = np.array([0.299, 0.587, 0.114])
_NEVER = np.int64(-(2**62))


def to_gray(frames: np.ndarray) -> np.ndarray:
    """(T,H,W) or (T,H,W,3) uint8 -> (T,H,W) float64 luminance in [0, 255]."""
    if frames.ndim == 4:
        return frames.astype(np.float64) @ _LUMA
    return frames.astype(np.float64)


def _check_frames(frames: np.ndarray, timestamps_us: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    frames = np.asarray(frames)
    if frames.dtype != np.uint8:
        raise ValueError(f"frames must be uint8, got dtype {frames.dtype}")
    if not (frames.ndim == 3 or (frames.ndim == 4 and frames.shape[-1] == 3)):
        raise ValueError(f"frames must be (T,H,W) gray or (T,H,W,3) RGB, got shape {frames.shape}")
    if frames.shape[0] < 1 or frames.shape[1] < 1 or frames.shape[2] < 1:
        raise ValueError(f"frames must not be empty, got shape {frames.shape}")
    if frames.shape[1] > 65535 or frames.shape[2] > 65535:
        raise ValueError(f"frames are too large for uint16 event coordinates: {frames.shape}")
    ts = np.asarray(timestamps_us)
    if ts.ndim != 1 or len(ts) != len(frames):
        raise ValueError(f"timestamps_us must be 1-D with one stamp per frame ({len(frames)}), "
                         f"got shape {ts.shape}")
    if not np.issubdtype(ts.dtype, np.integer):
        raise ValueError(f"timestamps_us must be integers (microseconds), got dtype {ts.dtype}")
    ts = ts.astype(np.int64)
    if len(ts) > 1 and np.any(np.diff(ts) <= 0):
        raise ValueError("timestamps_us must be strictly increasing")
    return frames, ts


class EventSimulator:
    """Stateless between calls: every `simulate` starts a fresh sensor seeded with `seed`."""

    def __init__(self, contrast_threshold: float = 0.2, refractory_us: int = 1000,
                 noise_rate_hz: float = 0.05, log_eps: float = 0.02, seed: int = 0,
                 threshold_sigma: float = 0.0) -> None:
        """
        contrast_threshold: log-intensity step per event (ON and OFF).
        refractory_us: dead time of a pixel after each of its events.
        noise_rate_hz: background-activity noise events per pixel per second.
        log_eps: the sensor sees log(intensity / 255 + log_eps); keeps black pixels finite and
            makes dark pixels less twitchy, like a real photoreceptor's dark current.
        threshold_sigma: per-pixel spread of the thresholds (fixed-pattern mismatch).
        """
        checks = (
            ("contrast_threshold", contrast_threshold,
             contrast_threshold > 0 and math.isfinite(contrast_threshold)),
            ("refractory_us", refractory_us, refractory_us >= 0),
            ("noise_rate_hz", noise_rate_hz, noise_rate_hz >= 0 and math.isfinite(noise_rate_hz)),
            ("log_eps", log_eps, log_eps > 0 and math.isfinite(log_eps)),
            ("seed", seed, isinstance(seed, int | np.integer) and seed >= 0),
            ("threshold_sigma", threshold_sigma, 0 <= threshold_sigma < contrast_threshold),
        )
        for name, value, ok in checks:
            if not ok:
                raise ValueError(f"{name} is out of range: {value!r}")
        self.contrast_threshold = float(contrast_threshold)
        self.refractory_us = int(refractory_us)
        self.noise_rate_hz = float(noise_rate_hz)
        self.log_eps = float(log_eps)
        self.seed = int(seed)
        self.threshold_sigma = float(threshold_sigma)

    def _log(self, gray: np.ndarray) -> np.ndarray:
        return np.log(gray.ravel() / 255.0 + self.log_eps)

    def simulate(self, frames: np.ndarray, timestamps_us: np.ndarray) -> np.ndarray:
        """Events between the first and last frame, sorted by t (EVENT_DTYPE)."""
        frames, ts = _check_frames(frames, timestamps_us)
        _, h, w = frames.shape[:3]
        npix = h * w
        rng = np.random.default_rng(self.seed)
        c = self.contrast_threshold
        if self.threshold_sigma > 0:
            lo = c / 4
            c_on = np.clip(rng.normal(c, self.threshold_sigma, npix), lo, None)
            c_off = np.clip(rng.normal(c, self.threshold_sigma, npix), lo, None)
        else:
            c_on = c_off = np.full(npix, c)
        ref = self._log(to_gray(frames[:1])[0])
        last = np.full(npix, _NEVER, np.int64)
        out: list[np.ndarray] = []
        l_prev = ref.copy()
        for k in range(1, len(frames)):
            l_cur = self._log(to_gray(frames[k : k + 1])[0])
            t0, t1 = int(ts[k - 1]), int(ts[k])
            pix, t, pol = self._crossings(ref, l_prev, l_cur, c_on, c_off, t0, t1)
            if self.noise_rate_hz > 0:
                m = int(rng.poisson(self.noise_rate_hz * npix * (t1 - t0) * 1e-6))
                if m:
                    pix = np.concatenate([pix, rng.integers(0, npix, m)])
                    t = np.concatenate([t, rng.integers(t0 + 1, t1 + 1, m)])
                    pol = np.concatenate([pol, rng.integers(0, 2, m).astype(np.uint8)])
            if len(pix):
                keep = self._refractory(pix, t, last)
                pix, t, pol = pix[keep], t[keep], pol[keep]
                order = np.lexsort((pix, t))
                ev = np.empty(len(order), EVENT_DTYPE)
                ev["x"] = pix[order] % w
                ev["y"] = pix[order] // w
                ev["t"] = t[order]
                ev["p"] = pol[order]
                out.append(ev)
            l_prev = l_cur
        if not out:
            return np.empty(0, EVENT_DTYPE)
        return np.concatenate(out)

    @staticmethod
    def _crossings(ref: np.ndarray, l_prev: np.ndarray, l_cur: np.ndarray, c_on: np.ndarray,
                   c_off: np.ndarray, t0: int, t1: int
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Threshold crossings in (t0, t1]; moves `ref` in place. Returns (pixel, t, polarity)."""
        diff = l_cur - ref
        n_on = np.where(diff >= c_on, np.floor(diff / c_on), 0).astype(np.int64)
        n_off = np.where(-diff >= c_off, np.floor(-diff / c_off), 0).astype(np.int64)
        n = n_on + n_off
        idx = np.flatnonzero(n)
        if not len(idx):
            return np.empty(0, np.int64), np.empty(0, np.int64), np.empty(0, np.uint8)
        cnt = n[idx]
        on = n_on[idx] > 0
        step = np.where(on, c_on[idx], -c_off[idx])
        pix = np.repeat(idx, cnt)
        # j-th crossing (1-based) of each pixel
        j = np.arange(len(pix)) - np.repeat(np.cumsum(cnt) - cnt, cnt) + 1
        level = ref[pix] + j * np.repeat(step, cnt)
        lp = l_prev[pix]
        slope = l_cur[pix] - lp
        with np.errstate(divide="ignore", invalid="ignore"):
            frac = np.where(slope != 0, (level - lp) / slope, 1.0)
        frac = np.clip(frac, 0.0, 1.0)
        t = t0 + np.ceil(frac * (t1 - t0)).astype(np.int64)
        t = np.clip(t, t0 + 1, t1)
        ref[idx] += cnt * step
        pol = np.repeat(on, cnt).astype(np.uint8)
        return pix, t, pol

    def _refractory(self, pix: np.ndarray, t: np.ndarray, last: np.ndarray) -> np.ndarray:
        """Greedy per-pixel dead time; updates `last` (last kept stamp per pixel) in place."""
        r = self.refractory_us
        order = np.lexsort((t, pix))
        ps, ts_ = pix[order], t[order]
        keep_sorted = np.zeros(len(ps), bool)
        first = np.r_[True, ps[1:] != ps[:-1]]
        starts = np.flatnonzero(first)
        counts = np.diff(np.r_[starts, len(ps)])
        upix = ps[starts]
        prev = last[upix].copy()
        for col in range(int(counts.max())):
            rows = np.flatnonzero(counts > col)
            at = starts[rows] + col
            ok = ts_[at] - prev[rows] >= r if r > 0 else np.ones(len(rows), bool)
            keep_sorted[at[ok]] = True
            prev[rows[ok]] = ts_[at[ok]]
        last[upix] = prev
        keep = np.empty(len(ps), bool)
        keep[order] = keep_sorted
        return keep


def resize_for_sensor(frames: np.ndarray, sensor: int = EVENT_SENSOR) -> np.ndarray:
    """Area-resize (T,H,W) or (T,H,W,3) uint8 frames to sensor x sensor pixels."""
    frames = np.asarray(frames)
    if frames.dtype != np.uint8 or frames.ndim not in (3, 4):
        raise ValueError(f"frames must be (T,H,W[,3]) uint8, got {frames.shape} {frames.dtype}")
    if isinstance(sensor, bool) or not isinstance(sensor, int | np.integer) or sensor < 1:
        raise ValueError(f"sensor must be a positive int, got {sensor!r}")
    if frames.shape[1:3] == (sensor, sensor):
        return frames.copy()
    return np.stack([cv2.resize(f, (sensor, sensor), interpolation=cv2.INTER_AREA)
                     for f in frames])
