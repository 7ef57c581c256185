"""Global camera motion and exposure between a frame and its STTF anchor, in numpy + OpenCV.

Why: STTF compares each token with the one it replaced; a camera that moves by one pixel or an
auto-exposure step changes nearly every patch embedding, so without compensation a moving robot
recomputes the whole frame. We estimate, per frame, the similarity (or translation) that maps the
anchor frame's pixels onto the current frame and the gain between their exposures, then
warp and normalise the current frame into the anchor's coordinates and exposure before the
change test (`compensate`), so only what really changed differs.

Estimation runs on a 112 x 112 grey thumbnail of the model input (the squashed frame the encoder
sees), tracking against the anchor, not frame to frame, so errors do not accumulate. The
previous estimate predicts the current one; phase correlation (our own, on cv2.dft: a
Gaussian-weighted cross-power spectrum whose peak is Gaussian, so a log-parabola gives the
sub-pixel shift) of the whole image (translation) or of 2 x 2 blocks (similarity) measures the
residual, and a weighted least-squares fit (outlier blocks dropped) gives translation or
similarity. Similarity is fitted in isotropic coordinates (the frame's own aspect), so zoom and
roll stay a similarity of the camera image. A residual that phase correlation cannot trust keeps
the prediction. The best of these candidates is refined by one robust Gauss-Newton step that
leaves out what moves on its own, and kept only if it leaves fewer tokens changed than a still
camera would. Matrices are returned in model-input pixels (224 x 224).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

from tinygpt_ros.spec.config import GRID, IMAGE_SIZE, MOTION_MODES

LUMA = np.array([0.299, 0.587, 0.114], np.float32)
ESTIMATE_SIZE = IMAGE_SIZE // 2  # grey thumbnail the motion is measured on
_K = IMAGE_SIZE / ESTIMATE_SIZE
# thumbnail pixel i covers model pixels [K i, K i + K): model = K * thumbnail + (K - 1) / 2
_TO_MODEL = np.array([[_K, 0.0, (_K - 1) / 2], [0.0, _K, (_K - 1) / 2], [0.0, 0.0, 1.0]])
_TO_THUMB = np.linalg.inv(_TO_MODEL)
LOWPASS_SIGMA = 0.12  # cycles/pixel: Gaussian weight of the cross-power spectrum
MIN_RESPONSE = 0.1  # phase-correlation peak below this (1 = perfect): the shift is not trusted
OUTLIER_PX = 0.5  # a block this far off the fit (thumbnail px) is dropped and the fit redone
DEADBAND_PX = 0.1  # motion below this everywhere (model px) counts as none: no warp at all
DEADBAND_GAIN = 0.004  # |gain - 1| and |offset| (unit intensity) below this: no normalisation
_SAT_LOW, _SAT_HIGH = 0.02, 0.98  # pixels near black or white say nothing about the gain
_GAIN_MIN_LEVEL = 0.05  # anchor pixels darker than this give noisy gain ratios
# A brightening gain is refitted this many times without the anchor pixels the last fit takes
# within this margin of the clip level (val exposure clips: 10.1 -> 9.8% recomputed; one
# refit without a margin had made them worse, 10.4%).
GAIN_REFITS = 2
GAIN_CLIP_MARGIN = 0.05
_RING = np.ones((3, 3), np.uint8)  # the neighbours of a clipped pixel (`_keep_clipped`)
_BLOCKS = 2  # blocks per side for the similarity fit
# Largest residual shift searched (thumbnail px, after the prediction): about 17 px per frame
# at 640 px. Keeps periodic textures (stripes, tiles) from locking onto the wrong period.
MAX_RESIDUAL_PX = 3
RESIDUAL_BLUR = 1.5  # thumbnail px: Gaussian sigma before candidate residuals
# Gauss-Newton steps that refine the picked motion on the blurred thumbnails (a second step
# changed nothing on the val clips), and the cut (in median absolute residuals) beyond which a
# pixel is taken for a moving object and left out
REFINE_STEPS = 1
REFINE_CUT = 4.0
PREFER_MEASURED = 1.25  # keep the measurement unless its residual is 25% above the best
IDENTITY_MARGIN = 1.02  # ...but a still camera that explains the frame within 2% wins
# Camera motion is only believed where texture across the view can confirm it: with fewer
# than this many of the TEXTURE_GRID x TEXTURE_GRID anchor blocks textured, a shift that
# follows the one object on a flat background explains the frame as well as a moving object.
TEXTURE_GRID = 4
MIN_TEXTURED_BLOCKS = 6
TEXTURE_STD = 0.02  # unit intensity: a blurred block with this much spread is textured
# Candidates, the refinement and the gain are evaluated on every SAMPLE_STRIDE-th pixel of the
# blurred thumbnail (56 x 56): the blur (RESIDUAL_BLUR) already removed what a denser grid would
# add, and the stage's cost is per pixel and per numpy call (budget: 2 ms).
SAMPLE_STRIDE = 2
_SUB_COLUMNS = np.array([SAMPLE_STRIDE, SAMPLE_STRIDE, 1.0])  # sample grid -> thumbnail px
# A token's patch counts as changed under a motion when its mean absolute residual (blurred
# thumbnail, unit intensity, in the anchor's exposure) is above this; a picked camera motion
# that leaves more patches changed than the still camera does is not believed
# (`_changed_patches`, `_track`). Chosen on val clips (tokens recomputed a frame at the
# user's knobs, 10 clips x 24 frames per motion level, and the photographs): 0.0025 lowered
# busy 13.22 -> 12.24 and exposure 23.53 -> 22.77 and changed no other level; 0.0015 also
# tilt 31.38 -> 30.75 but zoom 23.66 -> 24.62; 0.005 only busy (13.01); 0.01 tilt 30.53, shake
# 31.96 -> 32.06, busy unchanged.
PATCH_RESIDUAL = 0.0025
_PATCH_SAMPLES = IMAGE_SIZE // GRID // int(_K) // SAMPLE_STRIDE  # a token's side in samples


@dataclass
class Motion:
    """Anchor -> current mapping in model-input pixels, plus the exposure change.

    `matrix` (2, 3) maps an anchor pixel (x, y) to where it is in the current frame; the
    current frame's intensities are about `gain * anchor + offset` (unit intensities)."""

    matrix: np.ndarray
    gain: float = 1.0
    offset: float = 0.0
    response: float = 1.0  # weakest trusted block's phase-correlation peak (0 = none trusted)

    @staticmethod
    def identity() -> Motion:
        return Motion(np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]))

    @property
    def translation(self) -> tuple[float, float]:
        """Displacement of the image centre, model px (x, y)."""
        c = (IMAGE_SIZE - 1) / 2
        x, y = self.matrix @ np.array([c, c, 1.0])
        return float(x - c), float(y - c)

    def scale_rotation(self, aspect: float = 1.0) -> tuple[float, float]:
        """(scale, rotation in degrees) of the camera image (`aspect` = frame height / width)."""
        iso = _to_iso(self.matrix, aspect)
        a, b = iso[0, 0], iso[1, 0]
        return float(math.hypot(a, b)), float(math.degrees(math.atan2(b, a)))

    def max_displacement(self) -> float:
        """Largest displacement of a model-input corner, model px."""
        e = IMAGE_SIZE - 1
        corners = np.array([[0, 0, 1], [e, 0, 1], [0, e, 1], [e, e, 1]], np.float64)
        moved = corners @ self.matrix.T
        return float(np.abs(moved - corners[:, :2]).max())

    def zoom_roll_px(self) -> float:
        """A bound on how far the scale and rotation alone move a model-input corner about
        the centre (what a shift leaves out), model px."""
        return float(np.abs(self.matrix[:, :2] - np.eye(2)).max() * (IMAGE_SIZE - 1))

    @property
    def is_identity(self) -> bool:
        return self.max_displacement() < DEADBAND_PX

    @property
    def is_unit_exposure(self) -> bool:
        return abs(self.gain - 1.0) < DEADBAND_GAIN and abs(self.offset) < DEADBAND_GAIN


def gray(unit_rgb: np.ndarray) -> np.ndarray:
    """(224, 224, 3) float32 model input in [0, 1] -> (112, 112) float32 luma thumbnail."""
    g = np.ascontiguousarray(unit_rgb @ LUMA)
    return cv2.resize(g, (ESTIMATE_SIZE, ESTIMATE_SIZE), interpolation=cv2.INTER_AREA)


def _to_iso(m: np.ndarray, aspect: float) -> np.ndarray:
    """An affine in isotropic coordinates (y scaled by the frame's aspect): S m S^-1 with
    S = diag(1, aspect, 1), written out."""
    iso = np.array(m, np.float64)
    iso[0, 1] /= aspect
    iso[1, 0] *= aspect
    iso[1, 2] *= aspect
    return iso


def _from_iso(m: np.ndarray, aspect: float) -> np.ndarray:
    """The inverse of `_to_iso`: S^-1 m S."""
    out = np.array(m, np.float64)
    out[0, 1] *= aspect
    out[1, 0] /= aspect
    out[1, 2] /= aspect
    return out


def _h(m: np.ndarray) -> np.ndarray:
    """A (2, 3) affine as a (3, 3) homogeneous matrix."""
    out = np.empty((3, 3))
    out[:2] = m
    out[2] = (0.0, 0.0, 1.0)
    return out


_IDENTITY = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
# a grey image warped into the anchor's coordinates, and where it was seen (None: everywhere)
_View = tuple[np.ndarray, "np.ndarray | None"]

@dataclass(frozen=True)
class _Plan:
    """What a phase correlation of one block shape needs besides the two blocks.

    The spectra are OpenCV's packed real DFT (CCS: the non-redundant half of a real image's
    conjugate-symmetric spectrum, one float per slot, real and imaginary parts of a frequency
    in neighbouring slots). Why: with the full complex output the transforms cost 3-5 times as
    much at these sizes, and the phase correlations were a third of the motion stage."""

    window: np.ndarray  # Hanning window
    lowpass: np.ndarray  # Gaussian weight of each CCS slot's frequency
    lowpass_mean: float  # its mean over the full spectrum: a perfect match's peak height
    search: np.ndarray  # uint8 mask of the shifts within MAX_RESIDUAL_PX
    pairs: tuple[tuple[tuple[slice, ...], tuple[slice, ...]], ...]  # (real, imaginary) slots


_PLANS: dict[tuple[int, int], _Plan] = {}


def _plan(shape: tuple[int, int]) -> _Plan:
    plan = _PLANS.get(shape)
    if plan is None:
        h, w = shape
        fy, fx = _ccs_frequencies(shape)
        lp = np.exp(-(fx ** 2 + fy ** 2) / (2 * LOWPASS_SIGMA ** 2)).astype(np.float32)
        full_y, full_x = np.fft.fftfreq(h)[:, None], np.fft.fftfreq(w)[None, :]
        lp_mean = float(np.exp(-(full_x ** 2 + full_y ** 2) / (2 * LOWPASS_SIGMA ** 2)).mean())
        dy = np.abs(np.fft.fftfreq(h) * h)[:, None]
        dx = np.abs(np.fft.fftfreq(w) * w)[None, :]
        search = ((dx <= MAX_RESIDUAL_PX) & (dy <= MAX_RESIDUAL_PX)).astype(np.uint8)
        window = cv2.createHanningWindow((w, h), cv2.CV_32F)
        plan = _PLANS[shape] = _Plan(window, lp, lp_mean, search, _ccs_pairs(shape))
    return plan


def _ccs_pairs(shape: tuple[int, int]) -> tuple[tuple[tuple[slice, ...], tuple[slice, ...]], ...]:
    """The (real, imaginary) slot pairs of a CCS spectrum; the slots in none of them (the
    zero and, for even sizes, the Nyquist frequencies of the first and last columns) are real.
    Interior columns pair along each row; the first column (and the last, for an even width)
    holds the real transform of that column, pairing down it."""
    h, w = shape
    end_x = w - 1 if w % 2 == 0 else w
    end_y = h - 1 if h % 2 == 0 else h
    edge_columns = slice(0, w, w - 1) if w % 2 == 0 and w > 1 else slice(0, 1)
    return ((np.s_[:, 1:end_x:2], np.s_[:, 2:end_x:2]),
            (np.s_[1:end_y:2, edge_columns], np.s_[2:end_y:2, edge_columns]))


def _ccs_frequencies(shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """(fy, fx) in cycles/pixel of the frequency each CCS slot holds a part of."""
    h, w = shape
    rows, cols = np.fft.fftfreq(h), np.fft.fftfreq(w)
    fy, fx = np.empty(shape), np.empty(shape)
    fy[:] = rows[:, None]
    fx[:, 1:] = cols[(np.arange(1, w) + 1) // 2][None, :]  # interior slot j: column (j + 1) // 2
    edges = [0, w - 1] if w % 2 == 0 and w > 1 else [0]
    for col in edges:
        fx[:, col] = cols[0 if col == 0 else w // 2]
        fy[:, col] = rows[(np.arange(h) + 1) // 2]  # down an edge column: row (i + 1) // 2
    return fy, fx


def _log_peak(m: float, c: float, p: float) -> float:
    """Sub-pixel offset of a Gaussian peak from three samples (parabola through the logs)."""
    m, c, p = (math.log(max(v, 1e-12)) for v in (m, c, p))
    d = m - 2 * c + p
    return 0.5 * (m - p) / d if d < 0 else 0.0


def _spectrum(a: np.ndarray) -> np.ndarray:
    """Windowed, mean-free CCS spectrum of a block: one side of a phase correlation."""
    # OpenCV's own element-wise calls: numpy's mean alone cost as much as the transform
    return cv2.dft(cv2.multiply(cv2.subtract(a, cv2.mean(a)[0]), _plan(a.shape).window))


class _AnchorCache:
    """What is derived from an anchor thumbnail alone (its blurred copy, the spectra of its
    blocks), kept while the anchor stays the same array. Why: the anchor changes only at a
    re-anchor, and recomputing these on every frame was half of the motion stage. Anchors are
    never modified in place (the engine replaces the array), so identity is the key; a few
    entries cover several streams in one process."""

    ENTRIES = 4

    def __init__(self) -> None:
        self._entries: list[tuple[np.ndarray, dict[object, np.ndarray]]] = []

    def derived(self, anchor: np.ndarray) -> dict[object, np.ndarray]:
        for array, values in self._entries:
            if array is anchor:
                return values
        values: dict[object, np.ndarray] = {}
        self._entries = [*self._entries[-(self.ENTRIES - 1):], (anchor, values)]
        return values

    def smooth(self, anchor: np.ndarray) -> np.ndarray:
        values = self.derived(anchor)
        if "smooth" not in values:
            values["smooth"] = _smooth(anchor)
        return values["smooth"]

    def textured_blocks(self, anchor: np.ndarray) -> int:
        values = self.derived(anchor)
        if "textured" not in values:
            g = TEXTURE_GRID
            h, w = anchor.shape
            blocks = self.smooth(anchor)[: h - h % g, : w - w % g].reshape(g, h // g, g, w // g)
            values["textured"] = np.array(int((blocks.std(axis=(1, 3)) > TEXTURE_STD).sum()))
        return int(values["textured"])

    def sampled(self, anchor: np.ndarray) -> np.ndarray:
        """The blurred anchor at the sample grid (`_sample`)."""
        values = self.derived(anchor)
        if "sampled" not in values:
            values["sampled"] = _sample(self.smooth(anchor))
        return values["sampled"]

    def gradients(self, anchor: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(d/dx, d/dy) of the blurred anchor thumbnail (central differences, per thumbnail
        pixel) at the sample grid."""
        values = self.derived(anchor)
        if "grad" not in values:
            gy, gx = np.gradient(self.smooth(anchor))
            values["grad"] = np.stack([_sample(gx), _sample(gy)]).astype(np.float32)
        return values["grad"][0], values["grad"][1]

    @staticmethod
    def grid(shape: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
        """(x, y) thumbnail coordinates of the sample grid of a thumbnail, float32."""
        grid = _GRIDS.get(shape)
        if grid is None:
            ys, xs = np.mgrid[0:shape[0], 0:shape[1]].astype(np.float32)
            grid = _GRIDS[shape] = (_sample(xs), _sample(ys))
        return grid

    def spectrum(self, anchor: np.ndarray, block: tuple[slice, slice]) -> np.ndarray:
        values = self.derived(anchor)
        key = (block[0].start, block[0].stop, block[1].start, block[1].stop)
        if key not in values:
            values[key] = _spectrum(anchor[block])
        return values[key]


_GRIDS: dict[tuple[int, ...], tuple[np.ndarray, np.ndarray]] = {}
_ANCHORS = _AnchorCache()


def _shift(a: np.ndarray, b: np.ndarray, fa: np.ndarray | None = None
           ) -> tuple[float, float, float]:
    """(dx, dy, response): b(x + d) ~ a(x); response 1 = identical up to the shift. `fa`: the
    spectrum of `a` when the caller has it already.

    cv2.phaseCorrelate is not used: in OpenCV 5.0.0 it is off by half a pixel on even sizes."""
    plan = _plan(a.shape)
    fa = _spectrum(a) if fa is None else fa
    fb = _spectrum(b)
    cross = cv2.mulSpectrums(fb, fa, 0, conjB=True)
    # every slot divided by the magnitude of the frequency it belongs to: the phase alone
    magnitude = cv2.multiply(cross, cross)
    for re, im in plan.pairs:
        magnitude[re] += magnitude[im]
        magnitude[im] = magnitude[re]
    cv2.sqrt(magnitude, magnitude)
    cross *= plan.lowpass / (magnitude + np.float32(1e-9))
    r = cv2.idft(cross, flags=cv2.DFT_SCALE | cv2.DFT_REAL_OUTPUT)
    h, w = a.shape
    _, peak, _, (x, y) = cv2.minMaxLoc(r, plan.search)
    dx = x + _log_peak(r[y, (x - 1) % w], r[y, x], r[y, (x + 1) % w])
    dy = y + _log_peak(r[(y - 1) % h, x], r[y, x], r[(y + 1) % h, x])
    dx = dx - w if dx > w / 2 else dx
    dy = dy - h if dy > h / 2 else dy
    return float(dx), float(dy), float(peak / plan.lowpass_mean)


def _fit(points: np.ndarray, moved: np.ndarray, weights: np.ndarray, mode: str,
         aspect: float) -> np.ndarray:
    """Weighted least-squares translation or similarity (thumbnail px) from point pairs.

    The similarity x' = a x - b y + tx, y' = b x + a y + ty in closed form (about the weighted
    centroids, a and b are the weighted dot and cross products over the spread): the same
    solution as a least-squares solver, without its call overhead (a tenth of the stage)."""
    wsum = weights.sum()
    if mode == "translation":
        d = weights @ (moved - points) / wsum
        return np.array([[1.0, 0.0, d[0]], [0.0, 1.0, d[1]]])
    p = points * [1.0, aspect]
    q = moved * [1.0, aspect]
    pc, qc = weights @ p / wsum, weights @ q / wsum
    dp, dq = p - pc, q - qc
    spread = weights @ (dp * dp).sum(1)
    a = weights @ (dp * dq).sum(1) / spread
    b = weights @ (dp[:, 0] * dq[:, 1] - dp[:, 1] * dq[:, 0]) / spread
    tx = qc[0] - (a * pc[0] - b * pc[1])
    ty = qc[1] - (b * pc[0] + a * pc[1])
    return _from_iso(np.array([[a, -b, tx], [b, a, ty]]), aspect)


def _measure(anchor: np.ndarray, warped: np.ndarray, mode: str,
             aspect: float) -> tuple[np.ndarray, float] | None:
    """Residual transform warped-vs-anchor (anchor px -> warped px), or None if untrusted."""
    if mode == "translation":
        whole = np.s_[:, :]
        dx, dy, resp = _shift(anchor, warped, _ANCHORS.spectrum(anchor, whole))
        if resp < MIN_RESPONSE:
            return None
        return np.array([[1.0, 0.0, dx], [0.0, 1.0, dy]]), resp
    h, w = anchor.shape
    bh, bw = h // _BLOCKS, w // _BLOCKS
    points, moved, weights = [], [], []
    for i in range(_BLOCKS):
        for j in range(_BLOCKS):
            sl = np.s_[i * bh:(i + 1) * bh, j * bw:(j + 1) * bw]
            dx, dy, resp = _shift(anchor[sl], warped[sl], _ANCHORS.spectrum(anchor, sl))
            if resp < MIN_RESPONSE:
                continue
            c = np.array([j * bw + (bw - 1) / 2, i * bh + (bh - 1) / 2])
            points.append(c)
            moved.append(c + np.array([dx, dy]))
            weights.append(resp)
    if len(points) < 2:
        # too few trusted blocks for a similarity: fall back to one global translation
        return _measure(anchor, warped, "translation", aspect)
    p, q, wts = np.array(points), np.array(moved), np.array(weights)
    m = _fit(p, q, wts, mode, aspect)
    err = np.linalg.norm(p @ m[:, :2].T + m[:, 2] - q, axis=1)
    keep = err <= OUTLIER_PX
    if 2 <= keep.sum() < len(p):  # a block with its own motion (an object): fit without it
        m = _fit(p[keep], q[keep], wts[keep], mode, aspect)
    return m, float(wts.min())


def estimate_motion(anchor_gray: np.ndarray, current_gray: np.ndarray, mode: str,
             prediction: Motion | None = None, aspect: float = 1.0,
             photometric: bool = True) -> Motion:
    """Motion and exposure change from the anchor to the current frame (`gray` thumbnails).

    `prediction` (the previous frame's estimate) is applied first; the residual is measured
    against the anchor, so the estimate never drifts away from it. `aspect` = the camera frame's
    height / width (the model input is square). Mode "off" returns the identity."""
    if mode not in MOTION_MODES:
        raise ValueError(f"motion mode must be one of {MOTION_MODES}, got {mode!r}")
    if anchor_gray.shape != current_gray.shape or anchor_gray.ndim != 2:
        raise ValueError(f"anchor {anchor_gray.shape} and current {current_gray.shape} must be "
                         "the same (H, W) grey images")
    smooth_current = _smooth(current_gray)
    view: _View | None = None
    if mode == "off":
        motion = Motion.identity()
    else:
        motion, view = _track(anchor_gray, current_gray, mode, prediction, aspect,
                              smooth_current, photometric)
    if photometric:
        if view is None:
            thumb = (_TO_THUMB @ _h(motion.matrix) @ _TO_MODEL)[:2]
            view = _warp_seen(smooth_current, thumb)
        # on blurred images: sub-pixel misalignment and noise at edges would dilute the gain
        motion.gain = fit_gain(_ANCHORS.sampled(anchor_gray), view)
    return motion


def _track(anchor: np.ndarray, current: np.ndarray, mode: str, prediction: Motion | None,
           aspect: float, smooth_current: np.ndarray, photometric: bool = True
           ) -> tuple[Motion, _View]:
    """Predict, measure the residual, and keep whichever of measurement, prediction and
    identity explains the frame best (an object moving across a still view can fool phase
    correlation; the photometric residual is not fooled). The still camera wins a near tie
    (IDENTITY_MARGIN), and a view with too little texture to tell camera motion from an
    object's (MIN_TEXTURED_BLOCKS) is not tracked at all. The pick is refined (`_refine`)
    unless the still camera won. Last, the refined pick must leave fewer tokens' patches
    changed than the still camera (`_changed_patches`), or the camera is taken to be still.
    Also returns the blurred current frame as the pick sees it, for the gain fit.

    Why the last test: a mean residual rewards a motion that half-aligns everything. Over a
    flat background with a still object and a moving one, a roll and zoom about the still
    object aligns neither exactly but both roughly, and beat the still camera's residual
    (which is all on the moving object) by a third; the estimate grew frame after frame until
    the stage re-anchored and recomputed every token (two bench-budget test clips, -5.3
    degrees and 1.11 x zoom). What STTF pays for is tokens changed, and the still camera
    changed fewer there. On val clips it only took out false motions (module constants).

    Tried and removed: a constant-velocity prediction (the last estimate moved on by its last
    step, the last position kept as a candidate). On val clips it helped zoom on acting scenes
    but extrapolated the false motions of busy scenes: busy 7.8 -> 8.4% recomputed, exposure
    10.3 -> 11.1%, and the refinement alone did better on every motion level."""
    ident = Motion.identity().matrix
    if _ANCHORS.textured_blocks(anchor) < MIN_TEXTURED_BLOCKS:
        # nothing across the view to tell the camera from an object
        return Motion.identity(), _warp_seen(smooth_current, ident)
    pred = prediction.matrix if prediction is not None else ident
    pred_thumb = (_TO_THUMB @ _h(pred) @ _TO_MODEL)[:2]
    warped = warp_gray(current, pred_thumb)
    measured = _measure(anchor, warped, mode, aspect)
    candidates = []
    if measured is not None:
        candidates.append(((_h(pred_thumb) @ _h(measured[0]))[:2], measured[1]))
    if mode == "similarity":
        # one global phase correlation is hard to fool by an object that moves in one block
        shift = _measure(anchor, warped, "translation", aspect)
        if shift is not None:
            candidates.append(((_h(pred_thumb) @ _h(shift[0]))[:2], shift[1]))
    n_measured = len(candidates)
    candidates.append((pred_thumb, 0.0))
    if not np.array_equal(pred, ident):
        candidates.append((ident, 0.0))
    smooth_anchor = _ANCHORS.sampled(anchor)
    views = [_warp_seen(smooth_current, m) for m, _ in candidates]
    # Candidates are compared in the anchor's exposure: a gain change is not an offset, and
    # left in, a -20% step made a 2.5 px shift with a 2% zoom look better than the still
    # camera on a val clip. The gain is read off the prediction's view (robust to the small
    # misalignment still left there) and refitted on the final view by the caller.
    gain = fit_gain(smooth_anchor, views[n_measured]) if photometric else 1.0
    diffs = [_centred_difference(smooth_anchor, v, gain) for v in views]
    scores = np.array([math.inf if d is None else _mean_abs(d[0]) for d in diffs])
    # the measurement stands unless another candidate explains the frame clearly better
    pick = int(np.argmin(scores))
    if n_measured and pick >= n_measured:
        best_measured = int(np.argmin(scores[:n_measured]))
        if scores[best_measured] <= PREFER_MEASURED * scores[pick]:
            pick = best_measured
    # the last candidate is the identity (the prediction itself when that is the identity)
    if scores[-1] <= IDENTITY_MARGIN * scores.min():
        pick = len(candidates) - 1
    best, response = candidates[pick]
    view, diff = views[pick], diffs[pick]
    if REFINE_STEPS and (pick != len(candidates) - 1 or not np.array_equal(best, ident)):
        best, view, diff = _refine(anchor, smooth_current, best, view, diff, mode, aspect,
                                   gain)
    if not np.array_equal(best, ident) and diffs[-1] is not None:
        # a camera motion that leaves more tokens changed than a still camera does (the last
        # candidate) is an object's motion taken for the camera's (a roll and zoom about a
        # still object)
        if diff is None or _changed_patches(diffs[-1], smooth_anchor.shape) < \
                _changed_patches(diff, smooth_anchor.shape):
            best, response, view = ident, 0.0, views[-1]
    motion = Motion((_TO_MODEL @ _h(best) @ _TO_THUMB)[:2], response=response)
    if motion.is_identity:
        motion.matrix = ident.copy()
        if view[1] is not None:
            view = _warp_seen(smooth_current, ident)
    return motion, view


def _changed_patches(diff: tuple[np.ndarray, np.ndarray | None], shape: tuple[int, ...]
                     ) -> int:
    """How many tokens' patches a motion leaves changed: patches whose mean absolute residual
    (`_centred_difference` on the sample grid of `shape`) is above PATCH_RESIDUAL; what the
    warp does not see counts as unchanged (`compensate` keeps the anchor's pixels there)."""
    r, ok = diff
    full = np.zeros(shape, np.float32)
    if ok is None:
        full[:] = np.abs(r).reshape(shape)
    else:
        full[ok] = np.abs(r)
    n = _PATCH_SAMPLES
    g = shape[0] // n
    patches = full[: g * n, : g * n].reshape(g, n, g, n).mean(axis=(1, 3))
    return int((patches > PATCH_RESIDUAL).sum())


def _sample(img: np.ndarray) -> np.ndarray:
    """Every SAMPLE_STRIDE-th pixel of a thumbnail, contiguous."""
    return np.ascontiguousarray(img[::SAMPLE_STRIDE, ::SAMPLE_STRIDE])


def _smooth(img: np.ndarray) -> np.ndarray:
    """Blur before comparing candidates: otherwise the interpolation of a fractional warp
    (which softens edges) makes the unwarped identity look better than the true motion."""
    return cv2.GaussianBlur(img, (0, 0), RESIDUAL_BLUR)


def _centred_difference(anchor: np.ndarray, view: _View, gain: float = 1.0
                        ) -> tuple[np.ndarray, np.ndarray | None] | None:
    """Warped current (divided by `gain`, into the anchor's exposure) minus anchor, less its
    median (an exposure offset), over what both see (and where: None = everywhere); None when
    too little is seen to tell.

    The median of the difference, not the difference of the two medians: it is the robust
    offset between the frames, and one selection instead of two. On the val camera clips
    (sample grid in both) it did better on every moving condition (zoom 1%: 9.1 -> 5.9%
    recomputed, shake 7.1 -> 5.7%)."""
    warped, ok = view
    if ok is None:
        c, a = warped.ravel(), anchor.ravel()
    elif ok.sum() < 64:
        return None
    else:
        c, a = warped[ok], anchor[ok]
    d = c - a if gain == 1.0 else c * np.float32(1.0 / gain) - a
    return d - _median(d), ok


def _refine(anchor: np.ndarray, current: np.ndarray, thumb: np.ndarray, view: _View,
            diff: tuple[np.ndarray, np.ndarray | None] | None, mode: str, aspect: float,
            gain: float = 1.0
            ) -> tuple[np.ndarray, _View, tuple[np.ndarray, np.ndarray | None] | None]:
    """The picked motion (`thumb`, its `view` and its `_centred_difference` at `gain`, all
    against the blurred `anchor` thumbnail) refined by robust inverse-compositional
    Gauss-Newton steps; returns the refined motion with its view and difference.

    Why: phase correlation and the candidate set get within a few tenths of a thumbnail pixel,
    and an object acting in the scene pulls the measurement towards its own motion; on
    textured backgrounds a 0.2 px misalignment already changes most tokens. Each step linearises
    the anchor (its gradients are cached with it), leaves out pixels whose residual is more
    than REFINE_CUT times the median (the object), and solves for the translation or
    similarity that explains the rest. A step is kept only if it lowers the median residual:
    the mean would reward a step that half-aligns the object's edges (tried, with the cut in
    mean residuals too: on pans with an object crossing them it was 0.13 model px off on
    average, up to 0.35, against 0.10 with no refinement and 0.03 with the median)."""
    grad_x, grad_y = _ANCHORS.gradients(anchor)
    h, w = anchor.shape
    grid = _AnchorCache.grid(anchor.shape)
    anchor = _ANCHORS.sampled(anchor)
    cx, cy = (w - 1) / 2, (h - 1) / 2
    # isotropic coordinates about the centre (y in units of the frame's aspect), as in _fit
    to_iso = np.array([[1.0, 0.0, -cx], [0.0, aspect, -cy * aspect], [0.0, 0.0, 1.0]])
    for _ in range(REFINE_STEPS):
        if diff is None:
            break
        r, ok = diff
        abs_r = np.abs(r)
        spread = float(_median(abs_r))
        inlier = abs_r <= np.float32(REFINE_CUT * spread)
        if ok is not None:
            inlier_at = ok.copy()
            inlier_at[ok] = inlier
        else:
            inlier_at = inlier.reshape(anchor.shape)
        r = r[inlier]
        gx = grad_x[inlier_at]
        gy = grad_y[inlier_at] / np.float32(aspect)
        if mode == "translation":
            jac = [gx, gy]
        else:
            xs, ys = grid
            x = xs[inlier_at] - np.float32(cx)
            y = (ys[inlier_at] - np.float32(cy)) * np.float32(aspect)
            jac = [gx * x + gy * y, gy * x - gx * y, gx, gy]
        try:
            d = np.linalg.solve(*_normal_equations(jac, r))
        except np.linalg.LinAlgError:
            break
        if mode == "translation":
            step = np.array([[1.0, 0.0, d[0]], [0.0, 1.0, d[1]], [0.0, 0.0, 1.0]])
        else:
            a, b, tx, ty = d
            iso = np.array([[1.0 + a, -b, tx], [b, 1.0 + a, ty], [0.0, 0.0, 1.0]])
            step = np.linalg.inv(to_iso) @ iso @ to_iso
        # the warped frame looks like the anchor moved by `step`: undo it in the warp
        new_thumb = (_h(thumb) @ np.linalg.inv(step))[:2]
        new_view = _warp_seen(current, new_thumb)
        new_diff = _centred_difference(anchor, new_view, gain)
        if new_diff is None or not float(_median(np.abs(new_diff[0]))) < spread:
            break
        thumb, view, diff = new_thumb, new_view, new_diff
    return thumb, view, diff


def _normal_equations(columns: list[np.ndarray], r: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(J^T J, J^T r) for the Jacobian given by its columns, summed in float64 by numpy.

    Not `jac.T @ jac`: a BLAS product's rounding depends on the arrays' memory alignment and
    thread count, so the torch and onnxruntime engines, which run this same code on the same
    frames, disagreed in the 7th digit of a motion estimate (their decisions must match)."""
    jac = np.array(columns, np.float64)  # (parameters, pixels)
    gradient = (jac * r.astype(np.float64)).sum(axis=1)
    hessian = (jac[:, None, :] * jac[None, :, :]).sum(axis=2)
    return hessian, gradient


def _mean_abs(x: np.ndarray) -> float:
    """Mean absolute value of a 1-D float32 array (OpenCV's L1 norm: numpy's mean costs a
    few times more in call overhead at these sizes)."""
    return cv2.norm(x, cv2.NORM_L1) / x.size


def _median(x: np.ndarray) -> np.floating:
    """np.median of a non-empty 1-D float array, bit for bit, without its generic-axis overhead
    (a third of the cost at thumbnail sizes; every candidate motion takes one)."""
    k = x.size // 2
    part = np.partition(x, k)
    if x.size % 2:
        return part[k]
    # the largest of the lower half: cheaper than a second partition index
    return (part[:k].max() + part[k]) / 2


def _warp_seen(current: np.ndarray, matrix: np.ndarray) -> _View:
    """The current grey thumbnail in anchor coordinates at the sample grid (`_sample`), and
    where it was fully seen (None: the identity, which sees everything and needs no warp)."""
    if np.array_equal(matrix, _IDENTITY):
        return _sample(current), None
    h, w = current.shape
    size = ((w + SAMPLE_STRIDE - 1) // SAMPLE_STRIDE, (h + SAMPLE_STRIDE - 1) // SAMPLE_STRIDE)
    at = matrix * _SUB_COLUMNS  # sample grid -> current px: matrix @ diag(stride, stride, 1)
    flags = cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP
    warped = cv2.warpAffine(current, at, size, flags=flags,
                            borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    inside = cv2.warpAffine(_ones((h, w)), at, size, flags=flags,
                            borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    return warped, inside > 0.999


def warp_gray(current: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """The current grey image in anchor coordinates (edges replicated; thumbnail matrix)."""
    h, w = current.shape
    return cv2.warpAffine(current, matrix, (w, h), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                          borderMode=cv2.BORDER_REPLICATE)


def fit_gain(anchor: np.ndarray, view: _View) -> float:
    """The gain with current ~ gain * anchor over the pixels both frames see (`view`: the
    current image warped into the anchor's coordinates, `_warp_seen`).

    Exposure is modelled as a gain alone (the estimate leaves `Motion.offset` at 0):
    auto-exposure and mains flicker scale the light reaching the sensor, and a gamma or
    power-law tone curve turns a
    scale of linear light into a scale of the encoded values. A gain + offset line fitted to
    these images was ill-conditioned: a rendered scene is a flat background and a few flat
    objects, two or three clusters of intensity, and the fitted line swung to gain 1.6 and
    offset -76 levels on a frame where nothing had changed. The gain is the median of the
    per-pixel ratios (robust to the part of the image that really changed) over pixels well
    inside the sensor's range in both frames: clipped highlights and crushed blacks do not
    follow a gain, and a dark pixel's ratio is mostly noise."""
    warped, seen = view
    a, c = (anchor.ravel(), warped.ravel()) if seen is None else (anchor[seen], warped[seen])
    ok = (c >= _SAT_LOW) & (c <= _SAT_HIGH) & (a >= _GAIN_MIN_LEVEL) & (a <= _SAT_HIGH)
    if int(ok.sum()) < 64:
        return 1.0  # too little well-exposed content to tell
    gain = float(_median(c[ok] / a[ok]))
    for _ in range(GAIN_REFITS if gain > 1.0 else 0):
        # Once the gain is known, an anchor pixel it takes to the clip says nothing either: the
        # sensor clipped it, and read noise, JPEG ringing and the blur pull such a pixel (and
        # its neighbours at an edge) back under the clip level, reading as a lower gain.
        unclipped = ok & (a * np.float32(gain) <= np.float32(_SAT_HIGH - GAIN_CLIP_MARGIN))
        if int(unclipped.sum()) < 64:
            break
        gain = float(_median(c[unclipped] / a[unclipped]))
    return gain


def compensate(current: np.ndarray, anchor: np.ndarray, motion: Motion) -> np.ndarray:
    """The current (H, W, 3) unit-float frame in the anchor's coordinates and exposure.

    Pixels the current frame does not see (they left the view) keep the anchor's values, so
    their tokens are reused rather than filled with made-up content; the part of the view that
    is new since the anchor is not in the anchor's grid and is seen at the next re-anchor."""
    out = current
    exposure = not motion.is_unit_exposure and motion.gain > 0
    if exposure:
        out = (out - np.float32(motion.offset)) * np.float32(1.0 / motion.gain)
    if not motion.is_identity:
        out = _warp_into_anchor(out, anchor, motion.matrix)
    return _keep_clipped(out, anchor, motion) if exposure else out


def _keep_clipped(out: np.ndarray, anchor: np.ndarray, motion: Motion) -> np.ndarray:
    """Where the current frame is clipped (white or black) and the anchor's pixel, re-exposed
    by the fitted gain, would clip the same way, the frame tells nothing new about that pixel:
    it keeps the anchor's value. Without this a +20% step that burns out a white suit
    recomputed half of the photo's tokens, though nothing but the exposure changed."""
    gain, offset = np.float32(motion.gain), np.float32(motion.offset)
    raw = out * gain + offset  # the current frame's own levels, in anchor coordinates
    predicted = np.asarray(anchor, np.float32) * gain + offset
    high = (raw >= _SAT_HIGH) & (predicted >= _SAT_HIGH)
    low = (raw <= _SAT_LOW) & (predicted <= _SAT_LOW)
    clipped = high | low
    if high.any() or low.any():
        # The sensor clips at its own resolution, and the model input averages several sensor
        # pixels: at the edge of a clipped area a model pixel mixes clipped and unclipped ones
        # and reads darker (brighter, at black) than the gain predicts, without being clipped
        # itself. Those next to a clipped pixel and off the prediction in that direction say
        # nothing new either (a +20% step recomputed textured tokens for that ring alone).
        near_high = cv2.dilate(high.view(np.uint8), _RING).view(bool) & (raw < predicted)
        near_low = cv2.dilate(low.view(np.uint8), _RING).view(bool) & (raw > predicted)
        clipped = clipped | near_high | near_low
    return np.where(clipped, anchor, out).astype(np.float32, copy=False)


def _warp_into_anchor(out: np.ndarray, anchor: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """`out` warped into the anchor's grid; pixels it does not cover keep the anchor's."""
    h, w = anchor.shape[:2]
    tx, ty = _as_translation(matrix, w, h)
    if not math.isnan(tx):
        return _shift_into_anchor(out, anchor, tx, ty)
    # A fourth channel of ones rides along in the same warp: afterwards it holds what share of
    # each output pixel's interpolation weight fell inside the current frame; the rest comes
    # from the anchor (cv2's BORDER_TRANSPARENT does not mix this cleanly). One 4-channel warp
    # costs about what the 3-channel one did, and OpenCV packs, unpacks and blends in a
    # fraction of what the numpy expressions took (the stage's budget is 2 ms).
    rgba = cv2.cvtColor(np.ascontiguousarray(out, np.float32), cv2.COLOR_RGB2RGBA)  # alpha 1
    warped = cv2.warpAffine(rgba, matrix, (w, h), flags=cv2.INTER_CUBIC | cv2.WARP_INVERSE_MAP,
                            borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    outside = cv2.cvtColor(1.0 - cv2.extractChannel(warped, 3), cv2.COLOR_GRAY2RGB)
    blended = cv2.multiply(outside, np.ascontiguousarray(anchor, np.float32))
    return cv2.add(blended, cv2.cvtColor(warped, cv2.COLOR_RGBA2RGB))


def _shift_into_anchor(out: np.ndarray, anchor: np.ndarray, tx: float, ty: float) -> np.ndarray:
    """`_warp_into_anchor` for a pure shift (`_as_translation`): the same pixels (within float
    rounding, about 1e-7), at about two thirds of the cost (1.25 -> 0.79 ms a call on val
    pans in the engine).

    Why: a pan's frames are shifts, and there the general path's coverage channel (packed in,
    warped, unpacked and blended over the whole image by five full-image passes) took about
    1 ms of the motion stage's 2.5 on 2 cores. A shift's coverage is separable, the product of
    one row's and one column's (`_shift_coverage`), and it differs from 1 only in the few rows
    and columns at the edges the frame moved away from: only those are blended."""
    h, w = anchor.shape[:2]
    warped = np.ascontiguousarray(_shift_cubic(np.ascontiguousarray(out, np.float32), tx, ty))
    cover_x, cover_y = _shift_coverage(w, tx), _shift_coverage(h, ty)
    anchor = np.asarray(anchor, np.float32)
    # with a tolerance: inside the frame the four taps sum to 1 only within float rounding
    edge_rows = np.abs(1.0 - cover_y) > _COVER_TOLERANCE
    edge_cols = np.flatnonzero(np.abs(1.0 - cover_x) > _COVER_TOLERANCE)
    rows = np.flatnonzero(edge_rows)
    if len(rows):
        share = 1.0 - cover_y[rows, None] * cover_x[None, :]
        warped[rows] += share[..., None] * anchor[rows]
    if len(edge_cols):
        inner = np.flatnonzero(~edge_rows)
        at = np.ix_(inner, edge_cols)
        share = 1.0 - cover_y[inner, None] * cover_x[None, edge_cols]
        warped[at] += share[..., None] * anchor[at]
    return warped


_COVER_TOLERANCE = 1e-6


def _shift_coverage(n: int, t: float) -> np.ndarray:
    """(n,) share of each output pixel's bicubic weights (`_cubic_taps`) that falls inside an
    n-pixel line shifted by `t`: what the coverage channel of `_warp_into_anchor` holds along
    one axis of a pure shift."""
    i = math.floor(t)
    source = np.arange(n)[:, None] + (i - 1) + np.arange(4)
    inside = ((source >= 0) & (source < n)).astype(np.float32)
    return inside @ _cubic_taps(t - i)


_ONES: dict[tuple[int, ...], np.ndarray] = {}


def _ones(shape: tuple[int, ...]) -> np.ndarray:
    ones = _ONES.get(shape)
    if ones is None:
        ones = _ONES[shape] = np.ones(shape, np.float32)
    return ones


def _as_translation(matrix: np.ndarray, w: int, h: int) -> tuple[float, float]:
    """The (x, y) shift of the image centre when `matrix`'s scale and rotation move no pixel of
    a w x h image by DEADBAND_PX or more about that centre; (nan, nan) otherwise.

    Why: the estimate of a pan carries a spurious scale and rotation of a few hundredths of a
    pixel at the corners (noise well under its own error), and a pure shift can be warped by a
    separable filter (`_shift_cubic`) at a fifth of warpAffine's cost."""
    linear = matrix[:, :2] - np.eye(2)
    half = np.array([(w - 1) / 2, (h - 1) / 2])
    if float(np.abs(linear).max() * 2 * half.max()) >= DEADBAND_PX:  # bound on any corner
        return math.nan, math.nan
    tx, ty = matrix @ np.array([half[0], half[1], 1.0]) - half
    return float(tx), float(ty)


_CUBIC_A = -0.75  # OpenCV's bicubic kernel parameter


def _cubic_taps(t: float) -> np.ndarray:
    """The 4 bicubic weights for source pixels floor(x) - 1 ... floor(x) + 2 at fraction t."""
    a = _CUBIC_A
    w0 = ((a * (t + 1) - 5 * a) * (t + 1) + 8 * a) * (t + 1) - 4 * a
    w1 = ((a + 2) * t - (a + 3)) * t * t + 1
    w2 = ((a + 2) * (1 - t) - (a + 3)) * (1 - t) * (1 - t) + 1
    return np.array([w0, w1, w2, 1.0 - w0 - w1 - w2], np.float32)


def _shift_cubic(image: np.ndarray, tx: float, ty: float) -> np.ndarray:
    """out(x, y) = image(x + tx, y + ty), bicubic, zero outside: what cv2.warpAffine with
    INTER_CUBIC, WARP_INVERSE_MAP and a zero constant border gives for a pure translation (equal
    to about 1e-5), as one separable filter over a zero-padded window."""
    h, w = image.shape[:2]
    ix, iy = math.floor(tx), math.floor(ty)
    if abs(ix) > w + 2 or abs(iy) > h + 2:
        return np.zeros_like(image)  # nothing of the image lands in the view
    pad = 3 + max(abs(ix), abs(iy))
    padded = cv2.copyMakeBorder(image, pad, pad, pad, pad, cv2.BORDER_CONSTANT, value=0)
    # the window's pixel (0, 0) is image(ix - 1, iy - 1), the first tap of output pixel (0, 0)
    x0, y0 = pad + ix - 1, pad + iy - 1
    window = padded[y0:y0 + h + 3, x0:x0 + w + 3]
    out = cv2.sepFilter2D(window, -1, _cubic_taps(tx - ix), _cubic_taps(ty - iy),
                          anchor=(0, 0), borderType=cv2.BORDER_CONSTANT)
    return out[:h, :w]
