"""Ego-motion / exposure compensation in the streaming controller, on the shipped model through
the onnxruntime engine (the deployment path): what a pan and an exposure step recompute, the
knobs, and the per-frame diagnostics."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from tinygpt_ros.deploy.factory import load_engine
from tinygpt_ros.spec.config import GRID, IMAGE_SIZE

MODEL = Path(__file__).resolve().parent.parent / "models" / "tinygpt"
W, H = 640, 480
MARGIN = 120


@pytest.fixture(scope="module")
def engine():
    e = load_engine(MODEL, "onnxruntime", threads=1)
    yield e
    e.close()


def _fresh(engine, **knobs):
    defaults = {"motion_compensation": "similarity", "exposure_compensation": True,
                "refresh_interval": 0, "max_compensated_motion": 0.08}
    for k, v in {**defaults, **knobs}.items():
        engine.set_knob(k, v)
    engine.reset()
    return engine


def _canvas(seed: int = 0) -> np.ndarray:
    """Photo-like texture, kept inside [30, 215] so a +15% exposure step does not clip."""
    rng = np.random.default_rng(seed)
    img = np.zeros((H + 2 * MARGIN, W + 2 * MARGIN, 3), np.float32)
    for cells in (4, 9, 23):
        grid = rng.uniform(0, 1, (cells, cells, 3)).astype(np.float32)
        img += cv2.resize(grid, (img.shape[1], img.shape[0]), interpolation=cv2.INTER_CUBIC) / 3
    for _ in range(40):
        p = tuple(int(v) for v in rng.integers(0, img.shape[1], 2))
        cv2.circle(img, p, int(rng.integers(10, 50)),
                   tuple(float(v) for v in rng.uniform(0, 1, 3)), -1, cv2.LINE_AA)
    return (30 + np.clip(img, 0, 1) * 185).astype(np.uint8)


def _view(canvas: np.ndarray, x: int) -> np.ndarray:
    """The camera's 640x480 view with its left edge at canvas column MARGIN + x."""
    return np.ascontiguousarray(canvas[MARGIN:MARGIN + H, MARGIN + x:MARGIN + x + W])


def test_exposure_step_alone_recomputes_nothing(engine):
    frame = _view(_canvas(1), 0)
    brighter = np.clip(np.rint(frame.astype(np.float32) * 1.15), 0, 255).astype(np.uint8)
    e = _fresh(engine)
    assert e.process_frame(frame).record.full_refresh
    rec = e.process_frame(brighter).record
    assert rec.tokens_recomputed == 0
    assert rec.motion_compensation == "similarity" and not rec.reanchored
    assert abs(rec.exposure_gain - 1.15) < 0.02
    # without exposure compensation the same step recomputes most of the frame
    e = _fresh(engine, exposure_compensation=False, motion_compensation="off")
    e.process_frame(frame)
    assert e.process_frame(brighter).record.tokens_recomputed > 98


def test_motion_is_reported_in_camera_pixels_for_a_frame_decoded_smaller(engine):
    """The node decodes a large jpeg at half size (`pixel_scale` 2): the pan it reports is still
    in the camera's pixels, as for the full frame."""
    canvas = _canvas(4)
    step = 8
    half = lambda f: cv2.resize(f, (W // 2, H // 2), interpolation=cv2.INTER_AREA)  # noqa: E731
    runs = {}
    for name, shrink, scale in (("full", False, 1), ("half", True, 2), ("half_unscaled", True, 1)):
        e = _fresh(engine)
        for i in range(4):
            frame = _view(canvas, i * step)
            rec = e.process_frame(half(frame) if shrink else frame, None, scale).record
        runs[name] = rec.motion_dx
    assert abs(runs["full"] + 3 * step) < 0.5, runs
    assert abs(runs["half"] - runs["full"]) < 0.5, runs
    assert runs["half"] == pytest.approx(2 * runs["half_unscaled"]), runs


def test_pan_recomputes_only_the_border_band_and_changed_content(engine):
    canvas = _canvas(2)
    step = 6  # px per frame at 640: 2.1 model px
    e = _fresh(engine)
    off = _fresh(load_engine(MODEL, "onnxruntime", threads=1), motion_compensation="off",
                 exposure_compensation=False)
    box = (MARGIN + 300, MARGIN + 200, 50)  # canvas x, y, size of an object that appears
    for i in range(6):
        if i == 4:
            x, y, s = box
            cv2.rectangle(canvas, (x, y), (x + s, y + s), (250, 20, 20), -1)
        frame = _view(canvas, i * step)
        r = e.process_frame(frame)
        ro = off.process_frame(frame)
        if i == 0:
            continue
        assert not r.record.reanchored
        dx = r.record.motion_dx  # content moves left by i * step px
        assert abs(dx + i * step) < 0.5, dx
        shift_tokens = i * step * IMAGE_SIZE / W / (IMAGE_SIZE / GRID)
        band = int(np.ceil(shift_tokens)) + 1
        allowed = np.zeros((GRID, GRID), bool)
        allowed[:, GRID - band:] = True  # anchor pixels that left the view, and the seam
        if i >= 4:  # the new object, in anchor coordinates, dilated by one token
            x, y, s = box
            ax = (x - MARGIN - i * step + i * step) * GRID / W  # stabilised: no shift
            ay = (y - MARGIN) * GRID / H
            c0, c1 = int(ax) - 1, int(np.ceil(ax + s * GRID / W)) + 1
            r0, r1 = int(ay) - 1, int(np.ceil(ay + s * GRID / H)) + 1
            allowed[max(r0, 0):r1, max(c0, 0):c1] = True
            if i == 4:
                assert r.token_mask[int(ay) + 1, int(ax) + 1], "the new object was not recomputed"
        extra = r.token_mask & ~allowed
        assert not extra.any(), f"frame {i}: recomputed outside band/object: {np.argwhere(extra)}"
        assert ro.record.tokens_recomputed > 0.6 * GRID * GRID  # uncompensated: most of it
    off.close()


def test_large_motion_reanchors_and_diagnostics_say_so(engine):
    canvas = _canvas(3)
    e = _fresh(engine, max_compensated_motion=0.02)  # 12.8 px at 640
    recs = [e.process_frame(_view(canvas, i * 5)).record for i in range(5)]
    assert [r.reanchored for r in recs] == [False, False, False, True, False]
    assert recs[3].full_refresh and recs[3].tokens_recomputed == GRID * GRID
    assert abs(recs[2].motion_dx + 10) < 0.5 and recs[4].motion_dx > -6  # the new anchor


def test_a_reanchor_starts_the_fusion_window_over(engine):
    """The window's older frames are in the old anchor's coordinates: after a re-anchor fusion
    sees the new view only (sizes sum to one frame's tokens), and the window grows again from
    there (before, the window kept its four frames across the re-anchor)."""
    canvas = _canvas(3)
    e = _fresh(engine, max_compensated_motion=0.02)
    res = [e.process_frame(_view(canvas, i * 5)) for i in range(6)]
    assert [r.record.reanchored for r in res] == [False, False, False, True, False, False]
    frames_fused = [round(float(r.fused_sizes.sum())) // (GRID * GRID) for r in res]
    assert frames_fused == [1, 2, 3, 1, 2, 3]


def test_a_scene_cut_taken_for_a_small_motion_re_anchors(engine, monkeypatch):
    """A cut to a view that looks alike in the grey thumbnail passes the motion stage as a
    small motion; the change test then finds nearly every token changed, and the frame
    re-anchors (`StreamingEngine._missed_cut`). Without that (the share set out of reach) the
    anchor stayed the old scene's frame: the fusion window kept the old scene's frames, and a
    pan after the cut, tracked against a view it does not show, recomputed about twice the
    tokens. Clips: a bench-budget val stream's flicker -> pan switch."""
    import tinygpt_ros.runtime.streaming as streaming
    from tinygpt_ros.evaluation.budget_bench import switching_streams

    clips = switching_streams(1, 12, 0, split="val")[0]
    before, after = clips[5], clips[6]
    assert (before.motion, after.motion) == ("flicker", "pan")

    def cut_and_pan() -> tuple[list, np.ndarray]:
        e = _fresh(engine, anc_enabled=False)  # one encoder branch: no router memory
        res = [e.process_frame(f) for f in before.frames]
        res.append(e.process_frame(after.frames[0]))
        at_cut = np.array(e._streams["frame"].last_output)
        res += [e.process_frame(f) for f in after.frames[1:]]
        return res[len(before.frames):], at_cut

    try:
        _fresh(engine, anc_enabled=False).process_frame(after.frames[0])
        own = np.array(engine._streams["frame"].last_output)  # the cut frame's own tokens
        monkeypatch.setattr(streaming, "MISSED_CUT_SHARE", 2.0)
        missed, missed_tokens = cut_and_pan()
        monkeypatch.undo()
        caught, caught_tokens = cut_and_pan()
    finally:
        engine.set_knob("anc_enabled", True)
    assert not missed[0].record.reanchored and caught[0].record.reanchored
    # re-anchored, the frame's tokens are its own, not those of its warp into the old view
    np.testing.assert_allclose(caught_tokens, own, atol=1e-5)
    assert not np.allclose(missed_tokens, own, atol=1e-3)
    frames_fused = [[round(float(r.fused_sizes.sum())) // (GRID * GRID) for r in res[:4]]
                    for res in (missed, caught)]
    assert frames_fused == [[4, 4, 4, 4], [1, 2, 3, 4]]
    tokens = [sum(r.record.tokens_recomputed for r in res[1:]) for res in (missed, caught)]
    assert tokens[1] < 0.6 * tokens[0], tokens


def test_knobs_are_validated(engine):
    with pytest.raises(ValueError, match="one of"):
        engine.set_knob("motion_compensation", "homography")
    with pytest.raises(ValueError, match="out of range"):
        engine.set_knob("max_compensated_motion", 0.9)
    with pytest.raises(ValueError, match="bool"):
        engine.set_knob("exposure_compensation", 1)
    engine.set_knob("motion_compensation", "translation")
    assert engine.knobs()["motion_compensation"] == "translation"
    engine.set_knob("motion_compensation", "similarity")


def test_compensation_off_matches_no_compensation_code_path(engine):
    """motion off + exposure off: the frame is embedded as is and records say 'off'."""
    canvas = _canvas(4)
    e = _fresh(engine, motion_compensation="off", exposure_compensation=False)
    r = [e.process_frame(_view(canvas, i * 3)).record for i in range(3)]
    assert all(x.motion_compensation == "off" and x.motion_dx == 0.0 for x in r)


def test_a_re_anchor_is_followed_only_when_its_estimate_was_measured_and_continues_the_last():
    """A pan carried past the re-anchor limit (`StreamingEngine._followed`): the estimate was
    measured, the camera had already moved against the anchor, and the step from the last
    estimate is at most the limit. A cut's estimate measures a weak peak or none."""
    from tinygpt_ros.ops import Motion
    from tinygpt_ros.runtime.streaming import FOLLOWED_MIN_RESPONSE, StreamingEngine

    def shift(dx: float, dy: float = 0.0, response: float = 0.6) -> Motion:
        return Motion(np.array([[1.0, 0.0, dx], [0.0, 1.0, dy]]), response=response)

    limit = 0.08 * IMAGE_SIZE
    followed = StreamingEngine._followed
    assert followed(shift(12.0), shift(19.0), limit)
    assert followed(shift(-9.0, 1.0), shift(-18.5, 2.0), limit)
    assert not followed(shift(12.0), shift(19.0, response=FOLLOWED_MIN_RESPONSE / 2), limit)
    assert not followed(None, shift(19.0), limit)  # no estimate against this anchor yet
    assert not followed(Motion.identity(), shift(19.0), limit)  # the camera had not moved
    assert not followed(shift(2.0), shift(2.0 + limit + 1.0), limit)  # a jump, not a step
