"""Ego-motion and exposure estimation (ops/motion.py) and the camera/photo stream generators."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from tinygpt_ros import ops
from tinygpt_ros.data.camera import Camera, camera_path
from tinygpt_ros.data.scenes import CAMERA_MOTIONS, render_clip, split_seeds
from tinygpt_ros.ops import motion as M
from tinygpt_ros.spec.config import IMAGE_SIZE

W, H = 640, 480


def _texture(seed: int = 0) -> np.ndarray:
    """A 640x480 photo-like RGB image: smooth blobs plus edges at several scales."""
    rng = np.random.default_rng(seed)
    img = np.zeros((H + 80, W + 80, 3), np.float32)
    for cells in (4, 9, 23):
        grid = rng.uniform(0, 1, (cells, cells, 3)).astype(np.float32)
        img += cv2.resize(grid, (W + 80, H + 80), interpolation=cv2.INTER_CUBIC) / 3
    for _ in range(25):
        p = tuple(int(v) for v in rng.integers(0, W, 2))
        cv2.circle(img, p, int(rng.integers(8, 60)), tuple(float(v) for v in rng.uniform(0, 1, 3)),
                   -1, cv2.LINE_AA)
    return np.clip(img * 255, 0, 255).astype(np.uint8)


def _shifted(img: np.ndarray, dx: float, dy: float, scale: float = 1.0) -> np.ndarray:
    """The 640x480 view of `img` after the camera content moved by (dx, dy) px (and zoomed)."""
    c = np.array([(W - 1) / 2 + 40, (H - 1) / 2 + 40])
    # view pixel u shows canvas pixel c + (u - vc) / scale - d
    m = np.array([[1 / scale, 0, 0], [0, 1 / scale, 0]], np.float64)
    vc = np.array([(W - 1) / 2, (H - 1) / 2])
    m[:, 2] = c - vc / scale - np.array([dx, dy])
    return cv2.warpAffine(img, m, (W, H), flags=cv2.INTER_CUBIC | cv2.WARP_INVERSE_MAP)


def _grey(frame: np.ndarray) -> np.ndarray:
    return M.gray(ops.frame_to_unit(frame))


@pytest.mark.parametrize("mode", ["translation", "similarity"])
@pytest.mark.parametrize("shift", [(0.3, 0.0), (1.7, -0.6), (-4.2, 2.5), (9.5, 6.25)])
def test_shift_estimated_within_half_a_pixel(mode, shift):
    img = _texture()
    a, b = _shifted(img, 0, 0), _shifted(img, *shift)
    m = ops.estimate_motion(_grey(a), _grey(b), mode, aspect=H / W, photometric=False)
    dx, dy = m.translation
    got = (dx * W / IMAGE_SIZE, dy * H / IMAGE_SIZE)  # model px -> camera px
    assert abs(got[0] - shift[0]) < 0.5 and abs(got[1] - shift[1]) < 0.5, got
    if mode == "similarity":
        scale, rot = m.scale_rotation(H / W)
        assert abs(scale - 1) < 3e-3 and abs(rot) < 0.2


def test_zoom_estimated_as_similarity():
    img = _texture(1)
    a, b = _shifted(img, 0, 0), _shifted(img, 1.0, 0.0, scale=1.03)
    m = ops.estimate_motion(_grey(a), _grey(b), "similarity", aspect=H / W, photometric=False)
    scale, _ = m.scale_rotation(H / W)
    assert abs(scale - 1.03) < 4e-3
    # a prediction near the truth converges to the same estimate
    m2 = ops.estimate_motion(_grey(a), _grey(b), "similarity", prediction=m, aspect=H / W,
                             photometric=False)
    assert abs(m2.scale_rotation(H / W)[0] - 1.03) < 3e-3


def test_still_frame_is_exact_identity():
    a = _grey(_shifted(_texture(), 0, 0))
    m = ops.estimate_motion(a, a.copy(), "similarity")
    assert m.is_identity and np.array_equal(m.matrix, M.Motion.identity().matrix)
    assert abs(m.gain - 1) < 1e-4 and abs(m.offset) < 1e-4


def test_exposure_fit_and_compensation():
    frame = _shifted(_texture(2), 0, 0)
    unit = ops.frame_to_unit(frame)
    brighter = np.clip(unit * 1.15, 0, 1).astype(np.float32)
    assert (brighter >= 1.0).mean() > 0.01  # the step burns out some highlights
    m = ops.estimate_motion(M.gray(unit), M.gray(brighter), "similarity")
    assert m.is_identity
    assert abs(m.gain - 1.15) < 0.01 and m.offset == 0.0
    back = ops.compensate(brighter, unit, m)
    # unclipped pixels come back; clipped ones the gain explains keep the anchor's value
    assert np.abs(back - unit).max() < 0.01


def test_clipping_the_gain_does_not_explain_is_kept():
    unit = ops.frame_to_unit(_shifted(_texture(2), 0, 0))
    brighter = np.clip(unit * 1.15, 0, 1).astype(np.float32)
    brighter[100:120, 100:120] = 1.0  # a real new highlight on content the gain keeps below 1
    assert (unit[100:120, 100:120] * 1.15 < 0.95).any()
    m = ops.estimate_motion(M.gray(unit), M.gray(brighter), "similarity")
    back = ops.compensate(brighter, unit, m)
    changed = np.abs(back - unit)[100:120, 100:120].max(axis=-1)
    assert changed.max() > 0.1


def test_exposure_gain_on_a_flat_rendered_scene():
    """A flat background and a few flat objects (what the scene generator draws): a gain +
    offset line through two or three intensity clusters is ill-conditioned; the gain is not."""
    rng = np.random.default_rng(5)
    img = np.full((H, W, 3), 40, np.float32)
    cv2.circle(img, (200, 200), 60, (220, 40, 40), -1)
    cv2.rectangle(img, (400, 250), (480, 330), (50, 95, 235), -1)
    for gain in (0.8, 1.2):
        frames = [np.clip(img * g + rng.normal(0, 2.0, img.shape), 0, 255).astype(np.uint8)
                  for g in (1.0, gain)]
        a, b = (ops.frame_to_unit(f) for f in frames)
        m = ops.estimate_motion(M.gray(a), M.gray(b), "similarity")
        assert abs(m.gain - gain) < 0.01, (gain, m.gain)


def test_compensate_keeps_anchor_where_the_frame_does_not_see():
    frame = _shifted(_texture(3), 0, 0)
    anchor = ops.frame_to_unit(frame)
    moved = ops.frame_to_unit(_shifted(_texture(3), 20, 0))
    m = ops.estimate_motion(M.gray(anchor), M.gray(moved), "translation", aspect=H / W,
                            photometric=False)
    out = ops.compensate(moved, anchor, m)
    band = int(np.ceil(20 * IMAGE_SIZE / W)) + 2
    # content moved right: the anchor's right band left the view and keeps the anchor's pixels
    assert np.array_equal(out[:, -(band - 4):], anchor[:, -(band - 4):])
    assert np.abs(out[:, :-band] - anchor[:, :-band]).mean() < 0.01


def test_bad_arguments():
    a = np.zeros((IMAGE_SIZE, IMAGE_SIZE), np.float32)
    with pytest.raises(ValueError, match="motion mode"):
        ops.estimate_motion(a, a, "homography")
    with pytest.raises(ValueError, match="same"):
        ops.estimate_motion(a, a[:10], "translation")


def test_camera_levels_move_but_keep_captions():
    for motion in CAMERA_MOTIONS:
        clip = render_clip(7, motion, num_frames=12)
        base = render_clip(7, "slow", num_frames=12)
        assert clip.camera is not None
        # the same scene and captions as the "slow" scene of that seed, filmed differently
        assert [s.captions for s in clip.segments] == [s.captions for s in base.segments]
        diffs = [np.abs(clip.frames[i].astype(int) - clip.frames[i - 1]).mean()
                 for i in range(1, 12)]
        assert min(diffs) > 0.3  # noise + camera: no frame repeats bit for bit
    # still/slow/busy are unchanged by the camera code: still frames repeat exactly
    still = render_clip(7, "still", num_frames=6)
    assert still.camera is None and np.array_equal(still.frames[1], still.frames[2])


def test_camera_path_stays_in_the_margin_and_is_seeded():
    cam = Camera(pan_px=4, tilt_px=-3, zoom_pct=1.0, shake_px=2)
    p1 = camera_path(cam, 200, np.random.default_rng(0))
    p2 = camera_path(cam, 200, np.random.default_rng(0))
    assert np.array_equal(p1.dx, p2.dx)
    assert np.abs(p1.dx).max() < 0.08 and np.abs(p1.dy).max() < 0.08
    assert 0.94 < p1.zoom.min() and p1.zoom.max() < 1.13
    steps = np.abs(np.diff(p1.dx - (p1.dx - p1.dx)))  # pan speed about 4 px at 640
    assert np.median(steps) * 640 < 4 + 2 * 2 + 1e-6


def test_motion_timing_is_reported_not_asserted():
    """Smoke: the estimate on a 640x480 frame runs (speed lives in `tinygpt-ros robustness`)."""
    g = _grey(_shifted(_texture(), 0, 0))
    m = ops.estimate_motion(g, _grey(_shifted(_texture(), 2, 1)), "similarity", aspect=H / W)
    assert m.response > 0


def test_anchor_cache_follows_the_anchor_array(monkeypatch):
    """Estimates reuse what was derived from the anchor while it is the same array; a new
    anchor (even alternating between several, as several streams do) gives what a cold cache
    gives."""
    img = _texture(3)
    anchors = [_grey(_shifted(img, 0, 0)), _grey(_shifted(img, 2.0, -1.0))]
    current = _grey(_shifted(img, 1.2, 0.7))
    warm = [ops.estimate_motion(anchors[i % 2], current, "similarity", aspect=H / W)
            for i in range(4)]
    for i, got in enumerate(warm):
        monkeypatch.setattr(M, "_ANCHORS", M._AnchorCache())  # cold
        cold = ops.estimate_motion(anchors[i % 2], current, "similarity", aspect=H / W)
        np.testing.assert_array_equal(got.matrix, cold.matrix)
        assert (got.gain, got.offset) == (cold.gain, cold.offset)
    assert not np.allclose(warm[0].matrix, warm[1].matrix)


@pytest.mark.parametrize("n", [1, 2, 7, 12544, 12545])
def test_fast_median_is_numpy_median(n):
    x = np.random.default_rng(n).random(n).astype(np.float32)
    assert M._median(x) == np.median(x)


@pytest.mark.parametrize("shape", [(56, 56), (112, 112), (55, 57), (57, 56), (56, 55)])
def test_packed_phase_correlation_is_the_complex_one(shape):
    """`_shift` works on OpenCV's packed real spectra (CCS); its peak and response are those of
    the same windowed, low-passed phase correlation done with numpy's complex FFT, for even and
    odd block sizes (the packing differs on each)."""
    rng = np.random.default_rng(shape[0] * 100 + shape[1])
    a = cv2.GaussianBlur(rng.random(shape, np.float32), (0, 0), 2)
    b = np.roll(a, (1, -2), axis=(0, 1)) + rng.normal(0, 0.01, shape).astype(np.float32)
    plan = M._plan(shape)

    def spectrum(x):
        return np.fft.fft2((x - x.mean()) * plan.window)

    fy, fx = np.fft.fftfreq(shape[0])[:, None], np.fft.fftfreq(shape[1])[None, :]
    lowpass = np.exp(-(fx ** 2 + fy ** 2) / (2 * M.LOWPASS_SIGMA ** 2))
    cross = spectrum(b) * np.conj(spectrum(a))
    surface = np.fft.ifft2(lowpass * cross / (np.abs(cross) + 1e-9)).real
    surface[plan.search == 0] = -np.inf
    y, x = np.unravel_index(np.argmax(surface), shape)
    dx, dy, response = M._shift(a, b)
    assert (round(dx) % shape[1], round(dy) % shape[0]) == (x, y) == ((-2) % shape[1], 1)
    assert response == pytest.approx(surface[y, x] / lowpass.mean(), abs=1e-4)


@pytest.mark.parametrize("shift", [(0.0, 0.0), (3.3, -1.7), (-0.25, 0.6), (10.9, 4.01),
                                   (-57.5, 30.2), (400.0, 0.0)])
def test_separable_cubic_shift_is_warp_affine(shift):
    """The compensation's fast path for a pure shift gives what the general bicubic warp gives,
    coverage channel (zero outside the frame) included."""
    img = cv2.GaussianBlur(np.random.default_rng(0).random((224, 224, 3), np.float32), (0, 0), 1)
    rgba = cv2.cvtColor(img, cv2.COLOR_RGB2RGBA)
    matrix = np.array([[1.0, 0.0, shift[0]], [0.0, 1.0, shift[1]]])
    want = cv2.warpAffine(rgba, matrix, (224, 224), flags=cv2.INTER_CUBIC | cv2.WARP_INVERSE_MAP,
                          borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    np.testing.assert_allclose(M._shift_cubic(rgba, *shift), want, atol=2e-5)


@pytest.mark.parametrize("shift", [(0.0, 0.0), (3.3, -1.7), (-0.25, 0.6), (10.9, 4.01),
                                   (-57.5, 30.2), (0.4, 0.0), (400.0, 0.0)])
def test_a_shift_into_the_anchor_blends_the_edges_as_the_general_warp_does(shift):
    """A pure shift skips the coverage channel and blends the anchor into the edge rows and
    columns alone: the same pixels as the general path's 4-channel warp and blend, left edge,
    right edge and a shift that leaves nothing of the frame in view included."""
    rng = np.random.default_rng(2)
    frame = cv2.GaussianBlur(rng.random((IMAGE_SIZE, IMAGE_SIZE, 3), np.float32), (0, 0), 1)
    anchor = rng.random((IMAGE_SIZE, IMAGE_SIZE, 3), np.float32)
    fast = M._shift_into_anchor(frame, anchor, *shift)
    rgba = cv2.cvtColor(frame, cv2.COLOR_RGB2RGBA)
    matrix = np.array([[1.0, 0.0, shift[0]], [0.0, 1.0, shift[1]]])
    warped = cv2.warpAffine(rgba, matrix, (IMAGE_SIZE, IMAGE_SIZE),
                            flags=cv2.INTER_CUBIC | cv2.WARP_INVERSE_MAP,
                            borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    exact = warped[..., :3] + (1.0 - warped[..., 3:]) * anchor
    assert fast.shape == exact.shape and fast.dtype == np.float32
    np.testing.assert_allclose(fast, exact, atol=5e-5)
    assert np.array_equal(ops.compensate(frame, anchor, M.Motion(matrix)), fast)


def test_only_a_scale_and_rotation_under_the_deadband_count_as_a_shift():
    """`_as_translation` takes the centre's shift when the rest moves no pixel by DEADBAND_PX,
    and compensating such a near-shift stays within a few thousandths of the exact warp."""
    c = (IMAGE_SIZE - 1) / 2

    def about_centre(scale: float, tx: float, ty: float) -> np.ndarray:
        return np.array([[scale, 0.0, c - scale * c + tx], [0.0, scale, c - scale * c + ty]])

    tiny = about_centre(1.0 + 0.3 * M.DEADBAND_PX / IMAGE_SIZE, 2.5, -1.25)
    assert M._as_translation(tiny, IMAGE_SIZE, IMAGE_SIZE) == pytest.approx((2.5, -1.25))
    zoom = about_centre(1.01, 2.5, -1.25)
    assert all(np.isnan(M._as_translation(zoom, IMAGE_SIZE, IMAGE_SIZE)))
    rng = np.random.default_rng(1)
    frame = cv2.GaussianBlur(rng.random((IMAGE_SIZE, IMAGE_SIZE, 3), np.float32), (0, 0), 1.5)
    anchor = rng.random((IMAGE_SIZE, IMAGE_SIZE, 3), np.float32)
    fast = ops.compensate(frame, anchor, M.Motion(tiny))
    rgba = cv2.cvtColor(frame, cv2.COLOR_RGB2RGBA)
    warped = cv2.warpAffine(rgba, tiny, (IMAGE_SIZE, IMAGE_SIZE),
                            flags=cv2.INTER_CUBIC | cv2.WARP_INVERSE_MAP,
                            borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    exact = warped[..., :3] + (1.0 - warped[..., 3:]) * anchor
    assert np.abs(fast - exact)[8:-8, 8:-8].max() < 5e-3


def test_the_ring_around_a_clipped_highlight_is_kept_after_an_exposure_step():
    """The sensor clips at 640x480 and the model input averages several sensor pixels: around a
    highlight the +20% step burns out, model pixels mix clipped and unclipped ones and read
    darker than the gain predicts. They say nothing new and keep the anchor's values."""
    base = _shifted(_texture(5), 0, 0).copy()
    cv2.circle(base, (320, 240), 90, (245, 240, 235), -1, cv2.LINE_AA)
    step = np.clip(np.rint(base.astype(np.float32) * 1.2), 0, 255).astype(np.uint8)
    anchor, current = ops.frame_to_unit(base), ops.frame_to_unit(step)
    m = ops.estimate_motion(M.gray(anchor), M.gray(current), "similarity", aspect=H / W)
    assert m.is_identity and m.gain == pytest.approx(1.2, abs=0.005)
    back = np.abs(ops.compensate(current, anchor, m) - anchor).max(axis=-1)
    ys, xs = np.mgrid[0:IMAGE_SIZE, 0:IMAGE_SIZE]
    c = (IMAGE_SIZE - 1) / 2
    radius = np.hypot((xs - c) * W / IMAGE_SIZE, (ys - c) * H / IMAGE_SIZE)
    ring = np.abs(radius - 90) < 8  # camera px around the disc's edge
    assert back[ring].max() < 0.04  # 0.115 without the ring rule
    assert back.max() < 0.08  # the texture's own highlights: 0.111 without it


def test_an_exposure_step_in_an_acting_scene_is_not_read_as_camera_motion():
    """A -20% step on a val clip whose scene acts: compared in the anchor's exposure, the still
    camera explains the step frame best (compared raw, a 2.5 px shift with a 2% zoom won)."""
    camera = Camera(exposure_steps=((8, -0.2),), read_noise=2.0, shot_noise=0.2,
                    jpeg_quality=85)
    seed = split_seeds("val", 8, base_seed=0)[7]
    frames = render_clip(seed, "slow", num_frames=14, size=(H, W), camera=camera).frames
    anchor = _grey(frames[0])
    pred = None
    for k in range(1, 11):
        pred = ops.estimate_motion(anchor, _grey(frames[k]), "similarity", pred, aspect=H / W)
        assert pred.is_identity, (k, pred.matrix)
    assert pred.gain == pytest.approx(0.8, abs=0.005)


def _object_track(background: np.ndarray, steps: int = 6, speed: int = 8) -> list[M.Motion]:
    """A still camera in front of one object moving right; the estimates, frame by frame."""
    frames = []
    for k in range(steps):
        f = background.copy()
        cv2.circle(f, (180 + speed * k, 240), 70, (230, 200, 40), -1, cv2.LINE_AA)
        frames.append(f)
    anchor = _grey(frames[0])
    out, pred = [], None
    for f in frames[1:]:
        pred = ops.estimate_motion(anchor, _grey(f), "similarity", pred, aspect=H / W)
        out.append(pred)
    return out


def test_an_object_on_a_flat_background_is_not_read_as_camera_motion():
    flat = np.full((H, W, 3), 40, np.uint8)
    assert all(m.is_identity for m in _object_track(flat))


def test_a_rendered_scene_acting_before_a_still_camera_keeps_the_still_camera():
    """A held-out "slow" clip (an object moves, then rests) through a still, noisy camera:
    phase correlation partly locks onto the object, and preferring that over the still camera
    read it as a 0.2-0.35 px camera drift whose warp changed every textured token."""
    from tinygpt_ros.data.scenes import split_seeds

    cam = Camera(read_noise=2.0, shot_noise=0.2, jpeg_quality=85)
    clip = render_clip(split_seeds("test", 1)[0], "slow", num_frames=14, size=(H, W), camera=cam)
    assert any(s.kind == "moves" for s in clip.segments)
    anchor, pred, shifts = _grey(clip.frames[0]), None, []
    for f in clip.frames[1:]:
        pred = ops.estimate_motion(anchor, _grey(f), "similarity", pred, aspect=H / W)
        shifts.append(round(pred.max_displacement(), 2))
    assert max(shifts) < 0.1, shifts


def _pan_past_an_object(contrast: float, pan_px: float, object_px: int,
                        steps: int = 10) -> np.ndarray:
    """A camera panning over a textured view while a bright object crosses it on a path of
    its own; the tracking error (model px) frame by frame."""
    texture = _texture(3).astype(np.float32)
    background = np.clip(128 + (texture - 128) * contrast, 0, 255).astype(np.uint8)
    anchor, pred, errors = None, None, []
    for k in range(steps):
        f = _shifted(background, pan_px * k, 0)
        cv2.circle(f, (200 + object_px * k, 240 - object_px * k // 2), 70, (240, 220, 30), -1,
                   cv2.LINE_AA)
        grey = _grey(f)
        if anchor is None:
            anchor = grey
            continue
        pred = ops.estimate_motion(anchor, grey, "similarity", pred, aspect=H / W)
        dx, dy = pred.translation
        errors.append(max(abs(dx - pan_px * k * IMAGE_SIZE / W), abs(dy)))
    return np.array(errors)


@pytest.mark.parametrize("contrast,pan_px,object_px", [
    (0.5, 1.5, 12), (0.5, 3.0, -10), (1.0, 2.0, 20), (1.0, 3.0, -10)])
def test_a_pan_is_tracked_while_an_object_crosses_the_view(contrast, pan_px, object_px):
    """The object pulls phase correlation towards its own motion: the measurement alone was
    0.07-0.14 model px off on average here, and such errors change most textured tokens.
    The robust refinement leaves the object out and keeps the camera within 0.06 px."""
    errors = _pan_past_an_object(contrast, pan_px, object_px)
    # from the third frame on: over the first two the pan is 0.5-1 model px and the still
    # camera can still win its tie-break (up to 1 px off here, with either code)
    assert errors[2:].mean() < 0.06, np.round(errors, 3)


def _striped_square(frame: np.ndarray, centre: tuple[int, int], side: int, angle: float) -> None:
    """Draw a square of diagonal stripes (textured, as the scene generator's patterned shapes)
    centred at `centre`, turned by `angle` degrees."""
    patch = np.zeros((side, side, 3), np.uint8)
    patch[:] = (20, 120, 30)
    for k in range(-side, 2 * side, 24):
        cv2.line(patch, (k, 0), (k + side, side), (40, 200, 60), 10, cv2.LINE_AA)
    turn = cv2.getRotationMatrix2D((side / 2, side / 2), angle, 1.0)
    shown = cv2.warpAffine(np.ones((side, side), np.uint8), turn, (side, side)) > 0
    patch = cv2.warpAffine(patch, turn, (side, side))
    x0, y0 = centre[0] - side // 2, centre[1] - side // 2
    frame[y0:y0 + side, x0:x0 + side][shown] = patch[shown]


def test_an_object_moving_beside_a_still_one_is_not_read_as_a_roll_and_zoom():
    """A still camera over a flat background, one textured square still and one moving up:
    a roll and zoom about the still square half-aligns both, and by mean residual beat the
    still camera; the estimate grew to a 12 degree roll and 0.86 x zoom over nine frames
    (a re-anchor of every token each time it passed `max_compensated_motion`). The still
    camera leaves fewer tokens changed, so it stands."""
    frames = []
    for k in range(10):
        f = np.full((H, W, 3), 45, np.uint8)
        _striped_square(f, (150, 140), 110, 20)
        _striped_square(f, (330, 300 - 10 * k), 110, -15)
        frames.append(f)
    anchor = _grey(frames[0])
    assert M._ANCHORS.textured_blocks(anchor) >= M.MIN_TEXTURED_BLOCKS  # the view is tracked
    pred = None
    for k, f in enumerate(frames[1:], 1):
        pred = ops.estimate_motion(anchor, _grey(f), "similarity", pred, aspect=H / W)
        assert pred.is_identity, (k, pred.scale_rotation(H / W), pred.max_displacement())
