"""The streaming controller shared by the torch and onnxruntime engines (numpy only, no torch).

Per step: patch-embed the input, measure per-token change against the STTF references, let the
ANC router pick an encoder branch (with hysteresis), run only the changed tokens through the
gated encoder (or nothing at all: "reuse"), fuse the last `temporal_window` steps' tokens, and
decode a caption unless the fused tokens barely moved since the last one (caption reuse).
A backend with `decode(tokens, sizes, drafts)` (the pretrained families) also gets the recent
captions as drafts, so one decoder pass checks many tokens (`ops.drafting`).
Every step returns a `ComputeRecord` with analytical FLOPs and wall time per stage; with a
backend that counts FLOPs (`counts_flops`, e.g. `TorchKernels(count_flops=True)`) also the FLOPs
counted as the step ran (`measured_flops`): each kernel call's own count plus the numpy
decision stages (change test, router features, static averaging, caption-reuse check) from the
shapes they ran on (`spec.flops`), as Eventful Transformers count theirs.

Camera frames are compared in a stabilised frame: the anchor is the frame of the last full
refresh; each later frame is warped and exposure-normalised into the anchor's coordinates
(`ops.motion`) before patch embedding, so a pan, zoom, shake or exposure step leaves the
embeddings of unchanged content where they were. Pixels that left the view keep the anchor's
values (their tokens are reused); content that entered the view since the anchor is seen at the
next re-anchor, which comes when any corner has moved more than `max_compensated_motion` of the
image, the exposure gain leaves [1/MAX_GAIN, MAX_GAIN], or `refresh_interval` is due. A
re-anchor also starts the fusion window over: its older frames are in the old coordinates.

Every decision (refresh, selection, branch, hysteresis, window, caption reuse, FLOPs, records)
is taken here, in numpy, so both engines take the same ones. The networks are behind `Kernels`:
`torch_kernels.TorchKernels` (the reference) and `onnx_engine.OnnxKernels` (deployment).

Bad input raises ValueError before any state is touched, so the next good frame works.
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

import numpy as np

from tinygpt_ros import ops
from tinygpt_ros.runtime.budget import BudgetController
from tinygpt_ros.runtime.gpu_share import GpuTimer, GpuTimingChoice, make_gpu_timer
from tinygpt_ros.spec import flops as F
from tinygpt_ros.spec.config import (
    BRANCH_NAMES,
    GRID,
    IMAGE_SIZE,
    NUM_TOKENS,
    Knobs,
    ModelConfig,
)
from tinygpt_ros.spec.tokenizer import Tokenizer
from tinygpt_ros.spec.types import NO_GESTURE, ComputeRecord, FrameResult

# Static-token averaging tolerance used by temporal fusion (relative L2 to the window mean).
STATIC_THRESHOLD = 0.1
# A re-anchor is a new view (run at the user's knobs out of the budget's allowance) only after
# this many frames without one: a camera that re-anchors frame after frame (a pan faster than
# the motion stage follows, noise it reads as motion) is not looking at a new scene, and its
# re-anchors stay with the controller's level (the tokens rung gates them).
NEW_VIEW_AFTER = 4
# A re-anchor whose estimate was measured with at least this phase-correlation response, and
# continues the previous frame's estimate against the same anchor by at most the re-anchor
# limit, is a followed camera motion that carried the view past `max_compensated_motion`,
# not a lost view: it is never a new view (`Compensation.followed`). On 36 val streams at the
# user's knobs (2026-12-06) such re-anchors measured 0.47-0.68 and the cuts whose estimate
# crossed the limit 0.10-0.15 (the rest of the cuts measured nothing).
FOLLOWED_MIN_RESPONSE = 0.3
# Under a latency target the controller may lower the camera-motion model to a shift
# (`BudgetController._time_motion`). The engine runs it only while the user's model last
# found no more than SHIFT_ONLY_PX of zoom or roll at a corner against the anchor, and
# checks with the user's model again after SHIFT_ONLY_RUN frames (`StreamingEngine._motion_mode`)
SHIFT_ONLY_PX = 0.5
SHIFT_ONLY_RUN = 3
MODALITIES = ("frame", "events")
# A frame on which at least this share of the tokens changed past the user's threshold, though
# the motion stage kept its anchor, is a scene cut the motion estimate did not see: the frame
# re-anchors (`StreamingEngine._missed_cut`).
MISSED_CUT_SHARE = 0.9
# ... of at least this many tokens recomputed in the anchor's view (the squeeze's active-token
# floor): fewer are too few to tell a cut from an object moving
MISSED_CUT_MIN_TOKENS = 16
# Exposure gain beyond [1/MAX_GAIN, MAX_GAIN] against the anchor re-anchors: normalising more
# would amplify noise and clipped highlights into fake content.
MAX_GAIN = 1.5
# With exposure compensation on, a token whose per-patch channel means moved by at most this
# (unit intensity, 4 levels of 255) is judged on the rest of its embedding change only
# (`ops.token_change_dc_tolerant`): residual exposure error and JPEG block means are not content.
DC_TOLERANCE = 4.0 / 255.0
# the noise floor uses the median of this many recent frame-pair noise estimates: a re-anchor,
# an exposure step or a burst of scene action inflates one or two of them, not the median
NOISE_HISTORY = 8
# The budget estimates a caption decode's rows (its sequential passes, for greedy search) as the
# most of this many recent decodes: captions differ in length, and a short one (a thinned set,
# a plain view) made the next decode look cheap enough to run on a frame it then took over.
DECODE_ROWS_MEMORY = 4
# Knobs whose change makes cached state incompatible (the stream restarts on the next frame).
_RESET_KNOBS = ("sttf_enabled", "anc_enabled", "motion_compensation", "exposure_compensation")


class Kernels(Protocol):
    """The networks of one backend. Arrays in and out are numpy float32 (ids int)."""

    cfg: ModelConfig

    def embed_frame(self, x: np.ndarray) -> np.ndarray:
        """(3, 224, 224) normalised frame -> (196, D) embedded tokens."""
        ...

    def embed_events(self, hist: np.ndarray) -> np.ndarray:
        """(2, 112, 112) event histogram -> (196, D) embedded tokens."""
        ...

    def new_encoder_state(self) -> Any:
        """Empty per-stream gated-encoder cache."""
        ...

    def run_encoder(
        self, state: Any, tokens: np.ndarray, selected: np.ndarray | None, branch: int
    ) -> tuple[np.ndarray, int]:
        """Gated (or dense when `selected` is None) pass of encoder branch `branch` ->
        ((196, D) output, number of rows really recomputed: 196 when it fell back to dense)."""
        ...

    # A backend whose `cfg.branch_grids` has a coarse branch (a pretrained tower) also takes
    # `run_encoder(..., pixels=x)` for it, the encoder's (3, S, S) input, which it pools and
    # embeds on the coarse grid (`ops.token_grid`); its output has the usual rows, each coarse
    # row repeated over the patches it covers, and its count is in patches (4 per coarse row).

    def router_logits(self, features: np.ndarray) -> np.ndarray:
        """(F,) complexity features -> (num_branches,) logits."""
        ...

    def fuse(
        self, window: np.ndarray, max_tokens: int | None, static_threshold: float
    ) -> ops.Fused:
        """(T, 196, D) window -> tokens (K, D), sizes (K,) (0 = padding), (x, y, t) centroids
        (K, 3), and how many tokens entered the merge loop; max_tokens None = no fusion."""
        ...

    def generate(self, tokens: np.ndarray, sizes: np.ndarray,
                 positions: np.ndarray | None = None) -> list[int]:
        """Caption ids (without bos/eos) for (K, D) tokens with sizes (K,) and (x, y, t)
        centroids (K, 3); a decoder that reads no centroids (a pretrained family, an older
        TinyGPT) ignores them, one that does (`cfg.decoder_geometry`) requires them."""
        ...

    # Optional: `decode(tokens, sizes, drafts, positions=) -> ops.Decoded` is `generate` that
    # also checks drafts (recent captions' ids) several tokens a pass; the controller uses it
    # when present.
    # Optional: `start_decode(tokens, sizes, positions) -> ops.StepwiseGreedy | None` is greedy
    # `generate` advanced one decoder pass at a time (None: this backend decodes in one call,
    # e.g. with beam search); under a latency target the controller spreads a decode over
    # frames with it (`StreamingEngine._advance_decode`).

    def gesture_logits(self, tokens: np.ndarray, sizes: np.ndarray,
                       positions: np.ndarray) -> np.ndarray:
        """(num_gestures,) logits for (K, D) tokens with sizes (K,) and centroids (K, 3)."""
        ...

    # Optional: `frame_input(frame) -> (3, H, W)` replaces `ops.frame_to_array` for backends
    # whose network expects its own preprocessing (a pretrained tower's size and mean/std), and
    # `change_scale` (float) divides the frame token change, so `fusion_threshold` means the
    # same relative change on a pretrained tower whose token norms differ from TinyGPT's.
    # With `frame_unit(frame) -> (224, 224, 3)` (the family's view of the frame in [0, 1]),
    # `unit_input(unit) -> (3, H, W)`, `unit_aspect(shape)` and `unit_scale(shape)` such a
    # backend also gets the motion / exposure compensation stage between the two halves.


@dataclass
class Stream:
    """Temporal state of one input stream (frames and events are kept apart)."""

    cache: Any
    reference: ops.TokenReference = field(default_factory=ops.TokenReference)
    # events: each patch's event count when its token was last recomputed
    count_reference: ops.TokenReference = field(default_factory=ops.TokenReference)
    # frames: each patch's channel means when its token was last recomputed (DC-tolerant test)
    mean_reference: ops.TokenReference = field(default_factory=ops.TokenReference)
    window: deque = field(default_factory=deque)
    # the encoder branch the window's newest slot came from, and per patch the step whose
    # input its token was last computed from (see StreamingEngine._rebase_window)
    window_branch: int | None = None
    content_step: np.ndarray = field(default_factory=lambda: np.full(NUM_TOKENS, -1, np.int64))
    selector: ops.BranchSelector | None = None
    steps: int = 0
    since_refresh: int = 0
    last_output: np.ndarray | None = None
    last_input: np.ndarray | None = None  # the last step's embedded tokens (196, D)
    last_caption: str | None = None
    last_caption_len: int = 0
    # the recent decodes' decoder rows and milliseconds: the estimate of the next decode's
    # cost that the budget weighs (BudgetController.defer_decode, fit_tokens)
    decode_rows: deque = field(default_factory=lambda: deque(maxlen=DECODE_ROWS_MEMORY))
    decode_ms: deque = field(default_factory=lambda: deque(maxlen=DECODE_ROWS_MEMORY))
    drafts: list[list[int]] = field(default_factory=list)  # recent captions (ops.drafting)
    # frames: a caption decode spread over frames under a latency target (ops.stepwise), the
    # real fused set it reads, the frames and milliseconds it has run so far, and the recent
    # milliseconds of the prefill and of one decoder step (what decides whether another pass
    # fits the frame, and each frame's share of the passes left)
    pending_decode: ops.StepwiseGreedy | None = None
    pending_summary: np.ndarray | None = None
    pending_frames: int = 0
    pending_ms: float = 0.0
    prefill_ms: float = 0.0
    pass_ms: float = 0.0
    last_summary: np.ndarray | None = None  # the fused tokens the last caption was decoded from
    # frames: the view changed (a re-anchor or full refresh) since the caption was decoded; the
    # budget's caption rung does not apply until it is decoded again (StreamingEngine._caption)
    view_changed_since_caption: bool = False
    # frames: the encoder outputs (window slots) the last caption was decoded from, and the
    # richest fused-set knobs (max_fused_tokens, fused frames) it stands for on them; see
    # StreamingEngine._caption_still_stands
    caption_window: tuple[np.ndarray, ...] = ()
    caption_fused_knobs: tuple[int, int] = (0, 0)
    since_reanchor: int = 1 << 30  # frames since the motion stage last re-anchored
    # (window frames, max_tokens, fusion result) of the last fusion: see StreamingEngine._fuse
    fusion_memo: tuple[tuple[np.ndarray, ...], int | None, tuple[Any, ...]] | None = None
    fusion_ms: float = 0.0  # what the last fusion that ran took (BudgetController.hold_fusion)
    # frames: the stabilised frame (ops.motion); anchor = model input of the last full refresh
    anchor: np.ndarray | None = None  # (224, 224, 3) unit float
    anchor_gray: np.ndarray | None = None
    # frames: the tokens whose change reference was computed since the anchor was set, i.e. in
    # the anchor's view (the missed-cut test reads only these: StreamingEngine._missed_cut)
    anchored: np.ndarray = field(default_factory=lambda: np.zeros(NUM_TOKENS, bool))
    motion: ops.Motion | None = None  # last anchor -> frame estimate (predicts the next)
    # frames: whether the user's motion model last found a shift against this anchor, and the
    # frames since in a row that ran the controller's cheaper one (StreamingEngine._motion_mode)
    seen_shift: bool = False
    shift_only_run: int = 0
    # frames: the last embedded (compensated) image and the recent temporal-noise estimates
    noise_image: np.ndarray | None = None
    noise_history: deque = field(default_factory=lambda: deque(maxlen=NOISE_HISTORY))


def _expected_rows(s: Stream) -> int:
    """The next caption decode's rows, as the budget estimates them: the most of the recent
    decodes' (`DECODE_ROWS_MEMORY`), 0 before the first."""
    return max(s.decode_rows, default=0)


def _pass_ms(s: Stream) -> tuple[float, float]:
    """The recent milliseconds of a decode's prefill (its first pass, which reads every fused
    token) and of one step; either stands in for the other until both were measured."""
    return s.prefill_ms or s.pass_ms, s.pass_ms or s.prefill_ms


def _smoothed_ms(recent: float, ms: float) -> float:
    """A decoder pass's recent milliseconds with one more measurement folded in (an
    exponential average; 0: nothing measured yet)."""
    return ms if recent == 0.0 else 0.8 * recent + 0.2 * ms


def _decode_ms_left(d: ops.StepwiseGreedy, rows: int, prefill: float, step: float) -> float:
    """The pending decode's milliseconds left, estimated: its passes left as the recent
    captions' `rows` put them (`_expected_rows`, at least one more), the prefill at `prefill`
    milliseconds and each step at `step`."""
    left = max(rows, d.passes + 1) - d.passes
    return (prefill + (left - 1) * step) if d.passes == 0 else left * step


def _expected_ms(s: Stream) -> float:
    """The next caption decode's milliseconds, estimated like its rows (`_expected_rows`): the
    most of the recent decodes'. Why not the last one's: a draft-checked decode whose draft
    held, or a short caption, takes a fraction of a full one, and a latency target then let
    the next full decode run on a frame it took over the target."""
    return max(s.decode_ms, default=0.0)


def _same_outputs(a: tuple[np.ndarray, ...], b: tuple[np.ndarray, ...]) -> bool:
    """Whether two window snapshots hold the very same encoder output arrays (identity, not
    equality: a still scene reuses one output array, so identity means nothing recomputed)."""
    return len(a) == len(b) and all(x is y for x, y in zip(a, b, strict=True))


@dataclass
class Compensation:
    """What the motion stage decided for one camera frame."""

    image: np.ndarray  # (224, 224, 3) unit float: what is embedded
    motion: ops.Motion
    mode: str  # applied: off | translation | similarity
    refresh: bool  # recompute every token (first frame, refresh due, or ungated re-anchor)
    reanchored: bool  # the anchor moved to this frame because of the motion / exposure
    followed: bool = False  # a re-anchor of a tracked camera motion (FOLLOWED_MIN_RESPONSE)


class StageTimer:
    def __init__(self) -> None:
        self.ms: dict[str, float] = {}

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.ms[name] = self.ms.get(name, 0.0) + (time.perf_counter() - t0) * 1e3


class StreamingEngine:
    """`types.Engine` on top of a `Kernels` backend; subclasses only build the kernels."""

    backend = "abstract"

    def __init__(
        self,
        kernels: Kernels,
        tokenizer: Tokenizer,
        gesture_classes: list[str],
        knobs: Knobs | None = None,
    ) -> None:
        self.kernels = kernels
        self.cfg: ModelConfig = kernels.cfg
        self.tokenizer = tokenizer
        self.gesture_classes = list(gesture_classes)
        if len(self.gesture_classes) != self.cfg.num_gestures:
            raise ValueError(f"gesture_classes lists {len(self.gesture_classes)} names, the "
                             f"model has {self.cfg.num_gestures}")
        self._knobs = knobs or Knobs()
        # Beam search runs every decoding step for each beam: the analytical decoder FLOPs (and
        # dense's, for the ratio) count them, as the run-time meter does.
        self._beams = int(getattr(kernels, "beam_size", 1))
        # A pretrained family (hf/) brings its own preprocessing. Split in two halves
        # (`frame_unit`: its view of the frame at the 224 px motion size; `unit_input`: its
        # size and normalisation), the motion stage runs in between, as for TinyGPT.
        self._frame_input = getattr(kernels, "frame_input", None)
        self._frame_unit = getattr(kernels, "frame_unit", None)
        self._unit_input = getattr(kernels, "unit_input", None)
        self._change_scale = float(getattr(kernels, "change_scale", 1.0))
        self._streams: dict[str, Stream] = {}
        self._branch_dense = F.branch_dense_flops(self.cfg)
        # the DC-tolerant change test needs an embedding linear in the pixels: the patch stem
        # is, the conv stem (GELUs between its layers) is not, and then the plain test runs
        linear = self._frame_input is None and self.cfg.frame_stem == "patch"
        self._dc_basis = self._frame_dc_basis() if linear else None
        self._noise_gain: float | None = None  # see _unit_noise_gain
        self.largest_branch = len(self.cfg.branch_depths) - 1
        # leading rows a pretrained tower keeps out of fusion (GIT's CLS: `hf.common.fuse_window`)
        self._kept_rows = int(getattr(kernels, "n_keep", 0))
        # compute budget (runtime/budget.py): consulted before each step, fed after it
        self.budget = BudgetController()
        self._gpu_timer: GpuTimer | None = None  # gpu_share mode: see use_gpu_timing
        self._counts = bool(getattr(kernels, "counts_flops", False))
        self._measured: dict[str, float] = {}
        self.reset()

    def use_gpu_timing(self, choice: GpuTimingChoice, timer: GpuTimer | None = None) -> None:
        """Measure GPU busy time with `choice` (runtime/gpu_share.py; `timer` overrides the one
        it builds) whenever the budget is in gpu_share mode; a choice without a source makes
        that mode refuse, with its reason."""
        self._gpu_timer = timer if timer is not None else make_gpu_timer(choice)
        self.budget.gpu_timing = choice.source if self._gpu_timer is not None else None
        self.budget.gpu_refusal = choice.reason

    def _gpu_start(self) -> None:
        if self._gpu_timer is not None and self.budget.mode == "gpu_share":
            self._gpu_timer.start()

    def _gpu_stop(self) -> float | None:
        if self._gpu_timer is not None and self.budget.mode == "gpu_share":
            return self._gpu_timer.stop()
        return None

    # ----------------------------------------------------------------------------- knobs

    def set_knob(self, name: str, value: Any) -> None:
        old = getattr(self._knobs, name, None)
        self._knobs.set(name, value)  # raises ValueError and keeps the old value
        if name == "routing_hysteresis":
            for s in self._streams.values():
                if s.selector is not None:
                    s.selector.hysteresis = float(value)
        if name in _RESET_KNOBS and old != value:
            self.reset()  # switching mode mid-stream would mix incompatible cached state

    def knobs(self) -> dict[str, Any]:
        return self._knobs.as_dict()

    def reset(self) -> None:
        self._streams = {m: self._new_stream() for m in MODALITIES}
        self.budget.reset()  # levels belong to the temporal state they were measured on

    def _frame_dc_basis(self) -> np.ndarray:
        """(3, D): how a token's embedding moves when its patch brightens by 1.0 in one channel
        (the frame patch embedding is linear; measured through the backend's own kernel)."""
        zero = np.zeros((3, IMAGE_SIZE, IMAGE_SIZE), np.float32)
        base = self.kernels.embed_frame(zero)[0]
        rows = []
        for c in range(3):
            step = zero.copy()
            step[c] = 1.0 / ops.PIXEL_STD
            rows.append(self.kernels.embed_frame(step)[0] - base)
        return np.stack(rows).astype(np.float32)

    def _new_stream(self) -> Stream:
        s = Stream(cache=self.kernels.new_encoder_state(),
                   window=deque(maxlen=self.cfg.temporal_window))
        s.selector = ops.BranchSelector(self._knobs.routing_hysteresis)
        return s

    def close(self) -> None:
        """Release backend resources (the ROS node calls it on cleanup); idempotent."""
        close = getattr(self.kernels, "close", None)
        if callable(close):
            close()

    # ----------------------------------------------------------------------------- steps

    def last_encoder_io(self, modality: str = "frame") -> tuple[np.ndarray, np.ndarray]:
        """The last step's embedded input (196, D) and the encoder output it used (gated,
        reused or dense), so evaluation can measure reuse drift against a dense pass."""
        s = self._streams[modality]
        if s.last_output is None or s.last_input is None:
            raise ValueError(f"no {modality} step has run since the last reset")
        return s.last_input, s.last_output

    def _charge(self, stage: str, flops: float | None = None) -> None:
        """Add to this step's run-time count: `flops` (a numpy stage) or the FLOPs the kernel
        just called counted. A no-op unless the backend counts."""
        if self._counts:
            value = self.kernels.last_flops if flops is None else flops  # type: ignore[attr-defined]
            self._measured[stage] = self._measured.get(stage, 0.0) + float(value)

    def process_frame(self, frame: np.ndarray, stamp_us: int | None = None,
                      pixel_scale: float = 1.0) -> FrameResult:
        timer = StageTimer()
        self._measured = {}
        with timer.stage("preprocess"):
            # ValueError on bad input, state untouched
            if self._frame_unit is None:
                unit = ops.frame_to_unit(frame)
                aspect = frame.shape[0] / frame.shape[1]
                # the router's thumbnail from the model input, as training computes it from
                # its 224 px frames (and a 4x box instead of a second pass over the camera
                # frame: 0.6 ms of every 640x480 frame)
                gray = ops.unit_small_gray(unit)
            else:
                unit = self._frame_unit(frame)
                aspect = self.kernels.unit_aspect(frame.shape)  # type: ignore[attr-defined]
                gray = ops.small_gray(frame)
        s = self._streams["frame"]
        # budget hook (1/2): the controller picks this step's knobs inside the user's; it is
        # asked before the motion stage, which it may tell to gate a re-anchor
        planned = self.budget.plan("frame", self._knobs, self.cfg.temporal_window)
        with timer.stage("motion"):
            comp = self._compensate(s, unit, aspect,
                                    self._motion_mode(s, planned[0].motion_compensation),
                                    self.budget.gates_reanchor("frame"))
        x, emb, means, change = self._embed_and_compare(s, frame, unit, comp, timer)
        if self._missed_cut(s, comp, change):
            # the anchor moves here; the tokens follow the change test (the user's threshold
            # and active-token cap), which found nearly all of them changed
            with timer.stage("motion"):
                self._set_anchor(s, unit, ops.motion.gray(unit))
            warped = comp.image is not unit
            comp = Compensation(unit, ops.Motion.identity(), comp.mode, False, True)
            if warped:  # the tokens of the frame itself, not of its warp into the old view
                x, emb, means, change = self._embed_and_compare(s, frame, unit, comp, timer,
                                                                first=False)
        isolated = s.since_reanchor >= NEW_VIEW_AFTER
        s.since_reanchor = 0 if comp.reanchored else s.since_reanchor + 1
        if comp.reanchored and isolated and not comp.followed \
                and self.budget.spend_on_new_view("frame"):
            # a new view (the camera turned, the scene cut) runs once at the user's knobs, out
            # of the budget's p95 allowance: a calm scene keeps the tokens computed here. A
            # pan tracked past the re-anchor limit is not one: the view moved on by a frame's
            # step, the scene did not change, and the controller's level holds (with the
            # tokens rung's gate) as on the pan's other frames
            planned = (replace(self._knobs), 0.0)
            comp = replace(comp, refresh=True)
        with timer.stage("router"):
            finite = np.nan_to_num(change, posinf=1e6)
            feats = ops.frame_complexity_features(finite, self._knobs.fusion_threshold, gray)
            self._charge("router", F.router_feature_flops(len(finite), gray.size))
        s.view_changed_since_caption |= comp.refresh or comp.reanchored
        if comp.reanchored:
            # the window's older slots are in the old anchor's coordinates: a token there
            # shows other content than the same position now, so fusing them would merge
            # another view into this one (and, nothing being static, the whole window)
            s.window.clear()
        result = self._step(s, "frame", emb, change, feats, timer, planned, refresh=comp.refresh,
                            means=means, stamp_us=stamp_us, pixels=x)
        scale = getattr(self.kernels, "unit_scale", None)
        px = scale(frame.shape) if scale else (frame.shape[1] / IMAGE_SIZE,
                                               frame.shape[0] / IMAGE_SIZE)
        px = (px[0] * pixel_scale, px[1] * pixel_scale)
        self._record_motion(result.record, comp, aspect, px)
        return result

    def _embed_and_compare(self, s: Stream, frame: np.ndarray, unit: np.ndarray,
                           comp: Compensation, timer: StageTimer, first: bool = True
                           ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """The frame's encoder input, patch embedding, patch means and token change against
        the stream's references, on the image the motion stage handed on (`first`: the
        step's first embedding, where its GPU time starts and the noise is measured)."""
        with timer.stage("preprocess"):
            if self._frame_input is None:
                x = ops.unit_to_array(comp.image)
            elif comp.image is unit or self._unit_input is None:
                x = self._frame_input(frame)  # exactly the family's own preprocessing
            else:
                x = self._unit_input(comp.image)
            if first:
                self._gpu_start()  # gpu_share: from the first GPU work of the step
            emb = self.kernels.embed_frame(x)
            self._charge("preprocess")
        with timer.stage("change"):
            means = ops.patch_means(comp.image)
            self._charge("change", F.patch_means_flops())
            if s.reference.is_empty or s.mean_reference.is_empty:
                change = np.full(NUM_TOKENS, np.inf, np.float32)
            elif self._dc_basis is not None and self._knobs.exposure_compensation \
                    and self._knobs.sttf_enabled:
                change = ops.token_change_dc_tolerant(
                    emb, s.reference.value, means, s.mean_reference.value,  # type: ignore[arg-type]
                    self._dc_basis, DC_TOLERANCE)
                self._charge("change", F.change_test_flops(*emb.shape, dc_tolerant=True))
            else:
                change = ops.token_change(emb, s.reference.value)  # type: ignore[arg-type]
                self._charge("change", F.change_test_flops(*emb.shape))
                if self._change_scale != 1.0:
                    change /= np.float32(self._change_scale)
            change = self._remove_noise(s, comp.image, change, measure=first)
        return x, emb, means, change

    def _missed_cut(self, s: Stream, comp: Compensation, change: np.ndarray) -> bool:
        """Whether this frame is a scene cut (or a turn of the camera) that the motion stage
        did not re-anchor on: at least MISSED_CUT_SHARE of the tokens changed past the user's
        threshold against an anchor the stage kept.

        Why: the motion stage re-anchors on a displacement or an exposure gain it cannot
        undo, and a cut to a view that looks alike in the grey thumbnail (the same backdrop,
        other objects) passes as a small motion. The anchor then stayed the old scene's frame,
        and every later frame was tracked against a view it does not show. On 18 val streams
        of bench-budget 43 of the 144 switches were such cuts; on 4 of them the pans after one
        recomputed 17-74% of their tokens a frame (1-37% with this; 10-20% after a cut the
        stage caught), and the fusion window kept the old scene's frames. At the user's knobs
        CIDEr went 1.671 -> 1.828 at 9% fewer GFLOPs (docs/robustness.md).

        Only the tokens recomputed since the anchor was set count (`Stream.anchored`), and at
        least MISSED_CUT_MIN_TOKENS of them: the others' references show the view before it.
        A re-anchor the budget gates (`BudgetController.gates_reanchor`) recomputes a few
        tokens and leaves the rest to later frames, so against every reference nearly all
        tokens of the next frame "changed". Read that way, each gated re-anchor was followed
        by missed cuts, one a frame, each clearing the fusion window and restarting the
        caption decode at the user's reuse threshold. On 18 val streams of bench-budget at
        a latency target of 0.6 x the user's-knobs p95 (scratch trace, 2026-12-05), 133 of
        the controller's 173 missed cuts came the frame after a gated re-anchor (49) or
        another missed cut (84); with this test it found 38, 37 of them at scene switches.
        At 0.8 x the settled p95 went 1.06 -> 1.03 x the target and CIDEr 1.704 -> 1.783 in
        that run (at 0.6 x 1.24 -> 1.26, CIDEr 1.205 -> 1.259); FLOPs targets did not move
        (their fit fills a re-anchor's frame with the tokens that fit)."""
        k = self._knobs
        if comp.refresh or comp.reanchored or comp.mode == "off" or s.anchor is None \
                or not k.sttf_enabled or k.fusion_threshold <= 0:
            return False
        judged = change[s.anchored]
        if len(judged) < MISSED_CUT_MIN_TOKENS:
            return False
        return float(np.mean(judged > k.fusion_threshold)) >= MISSED_CUT_SHARE

    def _remove_noise(self, s: Stream, image: np.ndarray, change: np.ndarray,
                      measure: bool = True) -> np.ndarray:
        """Take the sensor's temporal noise out of the token change (knob `noise_floor`);
        `measure` False: with the noise measured so far (a frame compared a second time).

        Why: at the model's 224 px a camera's read and shot noise of a few levels moves every
        patch embedding past the fusion threshold, so a noisy but still view recomputed most of
        its tokens. The noise is measured on the images the change test compares (this frame
        and the last, both compensated into the anchor's view), turned into the token change it
        causes through the backend's own patch embedding, and removed in quadrature."""
        previous, s.noise_image = s.noise_image, image
        k = self._knobs
        if k.noise_floor <= 0 or not k.sttf_enabled or previous is None \
                or previous.shape != image.shape:
            return change
        if measure:
            s.noise_history.append(ops.frame_noise(image, previous))
            self._charge("change", F.frame_noise_flops(image.shape[0]))
        if not s.noise_history:
            return change
        sigma = float(np.median(np.asarray(s.noise_history)))
        floor = k.noise_floor * sigma * self._unit_noise_gain() / self._change_scale
        return ops.remove_noise(change, floor)

    def _unit_noise_gain(self) -> float:
        """Token change per unit of pixel noise std (unit-float images), root mean square over
        the tokens, measured once through the backend's patch embedding (it is linear): what
        the change test sees of independent noise of std sigma in the two frames is sigma
        (the measured difference spread) times this. 0 for a family with no unit-image input."""
        if self._noise_gain is None:
            if self._frame_input is not None and self._unit_input is None:
                self._noise_gain = 0.0
            else:
                to_input = ops.unit_to_array if self._frame_input is None else self._unit_input
                base = np.full((IMAGE_SIZE, IMAGE_SIZE, 3), 0.5, np.float32)
                eps = np.float32(0.02)
                noise = np.random.default_rng(0).standard_normal(base.shape).astype(np.float32)
                delta = (self.kernels.embed_frame(to_input(base + eps * noise))  # type: ignore[misc]
                         - self.kernels.embed_frame(to_input(base)))  # type: ignore[misc]
                self._noise_gain = float(np.sqrt(np.mean(np.sum(delta * delta, axis=-1)))
                                         / eps)
        return self._noise_gain

    def _refresh_due(self, s: Stream) -> bool:
        k = self._knobs
        return (
            not k.sttf_enabled
            or s.last_output is None
            or (k.refresh_interval > 0 and s.since_refresh + 1 >= k.refresh_interval)
        )

    def _compensate(self, s: Stream, unit: np.ndarray, aspect: float, motion_mode: str,
                    gated_reanchor: bool = False) -> Compensation:
        """Estimate the camera motion and exposure against the anchor and undo them; decide
        whether this frame re-anchors (every token recomputed on the raw frame).
        `motion_mode`: the camera-motion model this frame runs (`_motion_mode`).

        `gated_reanchor` (the budget controller's tokens rung): a re-anchor does not recompute
        every token; the raw frame becomes the anchor and goes through the ordinary change test
        and selection (threshold and active-token cap), so a pan or a busy scene whose motion
        estimate keeps failing costs what the rung allows. Tokens left out keep their old
        content and are picked up by later frames' change test (what compensation off does)."""
        k = self._knobs
        compensable = k.sttf_enabled and (self._frame_input is None
                                          or self._unit_input is not None)
        mode = motion_mode if compensable else "off"
        photometric = compensable and k.exposure_compensation
        refresh = self._refresh_due(s)
        identity = ops.Motion.identity()
        if mode == "off" and not photometric:
            s.anchor = s.anchor_gray = s.motion = None
            return Compensation(unit, identity, "off", refresh, False)
        gray = ops.motion.gray(unit)
        if refresh or s.anchor is None:
            self._set_anchor(s, unit, gray)
            return Compensation(unit, identity, mode, True, False)
        prior = s.motion
        motion = ops.estimate_motion(s.anchor_gray, gray, mode, prior, aspect,  # type: ignore[arg-type]
                                     photometric)
        limit = k.max_compensated_motion * IMAGE_SIZE
        exposed = not 1.0 / MAX_GAIN <= motion.gain <= MAX_GAIN
        if motion.max_displacement() > limit or exposed:
            followed = not exposed and self._followed(prior, motion, limit)
            self._set_anchor(s, unit, gray)
            return Compensation(unit, motion, mode, not gated_reanchor, True, followed)
        s.motion = motion
        if mode == k.motion_compensation:  # what `_motion_mode` reads next frame
            s.seen_shift = motion.zoom_roll_px() < SHIFT_ONLY_PX
        return Compensation(ops.compensate(unit, s.anchor, motion), motion, mode, False, False)

    @staticmethod
    def _followed(prior: ops.Motion | None, motion: ops.Motion, limit: float) -> bool:
        """Whether a re-anchor on displacement is the tracked camera carrying the view past
        the limit: the estimate was measured (FOLLOWED_MIN_RESPONSE), the camera had already
        moved against this anchor, and the centre moved on from there by at most `limit`.

        Why: a cut is a new view, worth every token at the user's knobs under a budget
        (`BudgetController.spend_on_new_view`); a pan's re-anchor is one more frame of the
        pan. Taken for a new view, it ran at the user's knobs whenever the last new view was
        `time_view_spacing` frames back: on bench-budget's test streams the re-anchor of one
        pan 11 frames after its cut cost 1.16-1.50 x a latency target in three runs of
        2026-12-06, the step's only frame over it. A cut's estimate against the old anchor
        measures nothing or a weak peak (`FOLLOWED_MIN_RESPONSE`).

        Chosen on val: of 36 streams, three have such re-anchors (at frames 6-11 of a pan or
        a slow clip), and on the others nothing changes. Those three run 4 times each under
        0.6 / 0.7 / 0.8 x targets, with and without (scratch, 2026-12-06): the clips'
        captions were alike, CIDEr over them 1.943 / 1.928 / 1.984 against 1.939 / 1.943 /
        1.969, and all their switches settled within 10 frames both ways but one without (at
        0.7 x)."""
        if prior is None or prior.is_identity or motion.response < FOLLOWED_MIN_RESPONSE:
            return False
        (px, py), (x, y) = prior.translation, motion.translation
        return max(abs(x - px), abs(y - py)) <= limit

    def _motion_mode(self, s: Stream, planned: str) -> str:
        """The camera-motion model this frame runs: the step's (`planned`, which a latency
        target may have lowered to a shift), but the user's whenever it has not yet measured
        against the current anchor, last found a zoom or roll (SHIFT_ONLY_PX), or last ran
        SHIFT_ONLY_RUN frames back.

        Why: the similarity fit is most of the motion stage of a moving camera's frame, and on
        a pan, a tilt or a shaking camera it finds nothing a shift does not. At the user's
        knobs on val clips (16 a kind, scratch, 2026-12-06) the stage took 3.0 / 2.1 / 2.0 ms
        a frame on pans / tilts / shakes with it and 2.2 / 1.5 / 1.4 with a shift, for the
        same tokens recomputed; on 60 clips a kind CIDEr moved 1.807 -> 1.820, 1.814 -> 1.796
        and 1.903 -> 1.932. Its zoom and roll there stay under 0.1 px at a corner (the 90th
        percentile; SHIFT_ONLY_PX is 0.5). On a zoom (a robot driving forward) they are 4.5 px
        at the median, and a shift alone misaligns the view: 30 -> 48 tokens recomputed a
        frame and CIDEr 1.755 -> 1.522. So the user's model keeps looking: it measures every
        anchor first and every SHIFT_ONLY_RUN + 1 frames after, and once it sees a zoom the
        stream stays on it. Under a latency target of 0.7 x the user's-knobs p95, on the same
        60 zoom clips, the shift ran on 13% of the frames and CIDEr was 1.712 (1.681 without
        the shift, 1.691 with it on every frame, at 47 tokens a frame against 30); on the
        pans it ran on 66%, the mean frame 5.63 -> 5.47 ms, CIDEr 1.762 -> 1.785."""
        user = self._knobs.motion_compensation
        if planned == user or not s.seen_shift or s.shift_only_run >= SHIFT_ONLY_RUN:
            s.shift_only_run = 0
            return user
        s.shift_only_run += 1
        return planned

    @staticmethod
    def _set_anchor(s: Stream, unit: np.ndarray, gray: np.ndarray) -> None:
        s.anchor, s.anchor_gray, s.motion = unit, gray, ops.Motion.identity()
        s.seen_shift = False  # the user's motion model has not measured against this anchor
        s.anchored[:] = False  # the step that follows marks the tokens it recomputes

    @staticmethod
    def _record_motion(rec: ComputeRecord, comp: Compensation, aspect: float,
                       px: tuple[float, float]) -> None:
        """Diagnostics; `px` = camera pixels per motion-domain pixel (x, y)."""
        m = comp.motion
        dx, dy = m.translation
        scale, rot = m.scale_rotation(aspect)
        rec.motion_compensation = comp.mode
        rec.motion_dx = dx * px[0]
        rec.motion_dy = dy * px[1]
        rec.motion_scale, rec.motion_rotation_deg = scale, rot
        rec.exposure_gain, rec.exposure_offset = m.gain, m.offset
        rec.reanchored = comp.reanchored

    def process_events(self, events: np.ndarray, stamp_us: int | None = None) -> FrameResult:
        timer = StageTimer()
        self._measured = {}
        with timer.stage("preprocess"):
            events = ops.validate_events(events)  # ValueError on bad input, state untouched
            hist = ops.events_histogram(events)
            self._gpu_start()
            emb = self.kernels.embed_events(hist)
            self._charge("preprocess")
        s = self._streams["events"]
        with timer.stage("change"):
            counts = ops.events_per_patch(events)
            if s.count_reference.is_empty:  # first window: everything is new
                change = np.full(NUM_TOKENS, np.inf, np.float32)
            else:
                # A patch that fell silent changed too: its token must stop saying "motion".
                change = np.abs(counts - s.count_reference.value[:, 0])  # type: ignore[index]
        with timer.stage("router"):
            window_us = int(events["t"][-1] - events["t"][0]) if len(events) > 1 else 0
            feats = ops.event_complexity_features(counts, len(events), max(window_us, 1))
        planned = self.budget.plan("events", self._knobs, self.cfg.temporal_window)
        return self._step(s, "events", emb, change, feats, timer, planned, counts=counts,
                          n_events=len(events), stamp_us=stamp_us,
                          refresh=self._refresh_due(s))

    def _step(
        self,
        s: Stream,
        modality: str,
        emb: np.ndarray,
        change: np.ndarray,
        feats: np.ndarray,
        timer: StageTimer,
        planned: tuple[Knobs, float],
        *,
        refresh: bool,
        counts: np.ndarray | None = None,
        n_events: int = 0,
        stamp_us: int | None = None,
        means: np.ndarray | None = None,
        pixels: np.ndarray | None = None,
    ) -> FrameResult:
        """One step after the change test. `pixels` (frames) is the encoder's input, which a
        coarse-grid branch of a pretrained tower pools and embeds itself."""
        k, router_bias = planned  # budget hook (1/2): the step's knobs, from budget.plan
        cfg = self.cfg
        kern = self.kernels
        with timer.stage("router"):
            logits = kern.router_logits(feats)
            self._charge("router")
            if router_bias > 0:  # toward cheaper branches: a penalty per step up in depth
                logits = logits - router_bias * np.arange(len(logits), dtype=np.float32)
            probs = ops.routing_probs(logits, k.routing_temperature)
            if k.anc_enabled:
                branch = s.selector.choose(probs)  # type: ignore[union-attr]
            else:
                branch = self.largest_branch

        with timer.stage("change"):
            if refresh:
                selected = np.ones(NUM_TOKENS, bool)
            else:
                thr = k.fusion_threshold if counts is None else k.event_fusion_threshold
                selected = ops.select_tokens(change, thr, k.max_active_tokens)
                if counts is None and self.budget.active:
                    self._fit_selection(s, selected, change, branch, k, sum(timer.ms.values()))
        n_sel = int(selected.sum())

        fresh = selected  # patches whose input the encoder reads this step (before a fallback)
        with timer.stage("encoder"):
            if n_sel == 0:
                out = s.last_output  # nothing changed: no encoder at all
                branch_name = BRANCH_NAMES[0]
                enc_flops = 0.0
            else:
                grid = cfg.branch_grid(branch)
                extra = {} if grid == GRID else {"pixels": pixels}
                out, n_sel = kern.run_encoder(s.cache, emb, None if refresh else selected,
                                              branch, **extra)
                self._charge("encoder")
                branch_name = BRANCH_NAMES[branch + 1]
                # the cache may have fallen back to a dense pass (e.g. deeper branch than cached)
                enc_flops = F.encoder_flops(cfg, branch, n_selected=F.branch_rows(cfg, branch,
                                                                                  n_sel))
                if grid != GRID:  # a coarse token covers its patches: all of them are fresh
                    fresh = ops.fine_selection(ops.coarse_selection(fresh, grid), grid)
                selected = np.ones(NUM_TOKENS, bool) if n_sel >= NUM_TOKENS else fresh
                if s.window_branch is not None and branch != s.window_branch:
                    self._rebase_window(s, out, fresh)
                s.window_branch = branch
        s.content_step[fresh] = s.steps
        s.last_input = emb
        s.reference.update(emb, selected)
        s.anchored |= selected
        if means is not None:
            s.mean_reference.update(means, selected)
        if counts is not None:
            s.count_reference.update(counts.astype(np.float32)[:, None], selected)
        s.since_refresh = 0 if n_sel >= NUM_TOKENS else s.since_refresh + 1
        s.last_output = out
        s.window.append(out)
        s.steps += 1

        with timer.stage("fusion"):
            n_window = len(s.window) * NUM_TOKENS
            if self._hold_fusion(s, modality, k, sum(timer.ms.values())):
                fused, sizes, positions, merge_input = s.fusion_memo[2]  # type: ignore[index]
                fused_now = False
            else:
                fused, sizes, positions, merge_input, fused_now = self._fuse(
                    s, k.max_fused_tokens if k.sttf_enabled else None,
                    k.fused_frames if k.sttf_enabled and counts is None else 0)
            real = sizes > 0
            n_fused = int(real.sum())
            if k.sttf_enabled and fused_now:  # a memo hit ran no fusion: it costs nothing
                # the merge loop's input, not the window: static averaging shrinks it; and its
                # output, not the fused set: a pretrained tower's kept rows (CLS) never merge
                fusion_flops = F.fusion_flops(cfg, merge_input, n_fused - self._kept_rows)
            else:
                fusion_flops = 0.0
        if fused_now:  # what the next frame's hold_fusion weighs
            s.fusion_ms = timer.ms["fusion"]
        # A real token count: drop padding before the decoder so FLOPs match what runs.
        fused, sizes, positions = fused[real], sizes[real], positions[real]

        flops = {
            "preprocess": F.patch_embed_flops(cfg, modality),
            "change": 0.0,
            "router": F.router_flops(cfg),
            "encoder": enc_flops,
            "fusion": fusion_flops,
        }
        caption = gesture = None
        confidence = 0.0
        caption_reused = False
        passes = 0
        if modality == "frame":
            spent = (sum(flops.values()), sum(timer.ms.values()))
            with timer.stage("decoder"):
                caption, caption_reused, dec_flops, passes = self._caption(s, fused, sizes,
                                                                           positions, k, spent)
            flops["decoder"] = dec_flops
            dense_head = F.beam_decode_flops(cfg, n_window, max(1, s.last_caption_len),
                                             self._beams)
        elif n_events < k.gesture_min_events:
            # Silence (or noise only): the head was never trained on it and would still name a
            # class with high confidence, so this is a decision of the gate, not of the model.
            gesture, confidence = NO_GESTURE, 1.0
            flops["head"] = 0.0
            dense_head = F.gesture_head_flops(cfg, n_window)
        else:
            with timer.stage("head"):
                p = ops.softmax(kern.gesture_logits(fused, sizes, positions))
                self._charge("head")
                idx = int(p.argmax())
                gesture, confidence = self.gesture_classes[idx], float(p[idx])
            flops["head"] = F.gesture_head_flops(cfg, n_fused)
            dense_head = F.gesture_head_flops(cfg, n_window)

        record = ComputeRecord(
            frame_index=s.steps - 1,
            modality=modality,
            tokens_in=NUM_TOKENS,
            tokens_recomputed=n_sel,
            tokens_fused=n_fused,
            branch=branch_name,
            flops=flops,
            dense_flops=(
                F.patch_embed_flops(cfg, modality)
                + self._branch_dense[self.largest_branch]
                + dense_head
            ),
            latency_ms=dict(timer.ms),
            measured_flops=dict(self._measured),
            caption_reused=caption_reused,
            decoder_passes=passes,
            full_refresh=n_sel >= NUM_TOKENS,
            router_probs=[float(v) for v in probs],
        )
        record.gpu_busy_ms = self._gpu_stop()
        mask = selected.reshape(GRID, GRID).copy()
        # budget hook (2/2): feed the measured cost; its diagnostics ride on the result
        budget = self.budget.observe(modality, record, stamp_us, k, router_bias)
        return FrameResult(record, caption, gesture, confidence, mask,
                           fused_centroids=np.asarray(positions, np.float32).copy(),
                           fused_sizes=np.asarray(sizes, np.float32).copy(), budget=budget)

    def _fit_selection(self, s: Stream, selected: np.ndarray, change: np.ndarray, branch: int,
                       k: Knobs, spent_ms: float) -> None:
        """Fit the frame's token selection (in place) to a FLOPs or power target
        (`BudgetController.fit_tokens`): the changed tokens, largest change first, that the
        frame can afford. Candidates are the tokens the user's own knobs would recompute
        (change over the user's threshold, at most the user's cap) and those the step's knobs
        selected.

        Why: the step's knobs come from the level, which follows the cost of recent frames,
        so a frame whose scene just cut either left most of the new view waiting behind the
        active-token cap (a still scene after a busy one brought its tokens in 16 a frame and
        was decoded at every one of them) or, at a low level with no cap, recomputed all of
        it far over the target. The encoder's FLOPs for n tokens are known before it runs,
        so the frame takes exactly what fits; the rest waits for the next frame's change
        test, as capped tokens always did."""
        user = self._knobs
        cfg = self.cfg
        n_sel = int(selected.sum())
        candidates = (change > user.fusion_threshold) | selected
        n_cand = min(int(candidates.sum()), max(user.max_active_tokens or NUM_TOKENS, n_sel))
        if n_cand == 0:
            return
        base = F.patch_embed_flops(cfg, "frame") + F.router_flops(cfg)
        # the window this step's output joins
        frames = self._fused_frame_count(min(len(s.window) + 1, cfg.temporal_window), k)
        # positions already moving inside the fused frames: each moving position enters the
        # merge once per frame, a static one once (static averaging)
        moving = int((s.content_step > s.steps - frames).sum())

        def frame_flops(n: int) -> float:
            if n == 0:
                return base
            merge_in = NUM_TOKENS + (frames - 1) * min(NUM_TOKENS, moving + n)
            return (base + F.encoder_flops(cfg, branch, n_selected=F.branch_rows(cfg, branch, n))
                    + F.fusion_flops(cfg, merge_in, k.max_fused_tokens))

        decode = F.beam_decode_flops(cfg, k.max_fused_tokens, max(1, _expected_rows(s)),
                                     self._beams)
        n = self.budget.fit_tokens("frame", frame_flops, decode, n_cand, n_sel, spent_ms)
        if n is not None:  # sorted only now: most frames (and every latency one) keep theirs
            order = np.argsort(-np.where(candidates, change, -np.inf), kind="stable")
            selected[:] = False
            selected[order[:n]] = True

    def _hold_fusion(self, s: Stream, modality: str, k: Knobs, spent_ms: float) -> bool:
        """Whether this camera frame keeps the last fused set (`BudgetController.hold_fusion`:
        under a latency target, when fusing would take the frame over it). Only when that set
        was fused from slots still in the window: never across a re-anchor, which starts the
        window anew (the set would show the old view), nor without STTF, whose dense path
        keeps no fused set."""
        memo = s.fusion_memo
        if (modality != "frame" or not k.sttf_enabled or memo is None
                or not any(slot is memo[0][-1] for slot in list(s.window)[:-1])):
            return False
        return self.budget.hold_fusion(modality, spent_ms, s.fusion_ms)

    def _rebase_window(self, s: Stream, out: np.ndarray, fresh: np.ndarray) -> None:
        """After a change of encoder branch, re-express the window's older slots in the new
        branch wherever the input has not changed since that slot.

        Why: a new branch rewrites every token (a deeper one by a dense pass, a shallower one
        from the cache's shallower blocks), so until the window was flushed no position stayed
        within the static tolerance across it, and temporal fusion merged the whole window:
        on validation clips most frames far over a FLOPs budget after the controller had
        settled were these (docs/benchmarks.md). A patch whose input the encoder has not read
        since a slot was computed holds the same content in that slot as now; its token under
        the current branch is the one just computed, so the slot takes it. Patches read since
        (content that changed) keep their old-branch tokens: that is the motion fusion is for.
        Costs no network work; the slots become new arrays (the deque's old ones may be
        shared with the fusion memo and the cache)."""
        rows = self._kept_rows  # a pretrained tower's kept rows (CLS) lead, patches follow
        first = s.steps - len(s.window)
        for i, slot in enumerate(s.window):
            same = (s.content_step <= first + i) & ~fresh
            if same.any():
                slot = slot.copy()
                slot[rows:][same] = out[rows:][same]
                s.window[i] = slot

    def _fuse(self, s: Stream, max_tokens: int | None, newest: int = 0
              ) -> tuple[np.ndarray, np.ndarray, np.ndarray, int, bool]:
        """Temporal fusion of the stream's window (its `newest` frames when 0 < newest <
        the window's length: the `fused_frames` knob), or the last result when those are the
        very same encoder outputs as last time (a still scene reuses the same output
        array frame after frame, so after `temporal_window` reused frames the window stops
        changing): the same input gives the same tokens, so they are not fused again.
        The returned arrays are shared with the memo; callers must not write into them. The
        last two values are the merge loop's input count and whether fusion ran (False: the
        memo's result, no work, no FLOPs)."""
        frames = tuple(s.window)
        if 0 < newest < len(frames):
            frames = frames[-newest:]
        memo = s.fusion_memo
        if memo is not None and memo[1] == max_tokens and _same_outputs(memo[0], frames):
            return (*memo[2], False)
        result = self.kernels.fuse(np.stack(frames), max_tokens, STATIC_THRESHOLD)
        self._charge("fusion")
        if max_tokens is not None and len(frames) > 1:
            self._charge("fusion", F.static_average_flops(len(frames), *frames[0].shape))
        s.fusion_memo = (frames, max_tokens, result)  # holds the frames: ids stay unique
        return (*result, True)

    def _caption(
        self, s: Stream, fused: np.ndarray, sizes: np.ndarray, positions: np.ndarray, k: Knobs,
        spent: tuple[float, float] = (0.0, 0.0),
    ) -> tuple[str, bool, float, int]:
        """(caption, reused, decoder FLOPs, sequential decoder passes).

        `spent` is the frame's cost so far (FLOPs, ms): a decode that would take the frame
        over the budget's target may wait for the next frame (`BudgetController.defer_decode`);
        the last caption is shown meanwhile, as a reuse. One that has waited as long as it
        may reads a thinner set when the budget asks (`BudgetController.thin_decode`); the
        merge's few FLOPs are counted with the decoder's. Under a latency target, a backend
        that decodes a pass at a time (`start_decode`) spreads the decode over frames instead
        (`_advance_decode`), and the last caption is shown until it completes.

        After a new view (a re-anchor: the camera turned or the scene cut) the reuse test uses
        the user's threshold, not the budget's raised one (its caption rung), until the caption
        is decoded again: at that rung's cheap end the fused set of a new scene can stay within
        the threshold, and the previous scene's caption stood for the whole new scene. A gated
        re-anchor brings the new scene's tokens in over several frames, so the flag lasts until
        the set has moved past the user's threshold, not for the re-anchor frame alone."""
        started = time.perf_counter()
        if s.pending_decode is not None:
            if not s.view_changed_since_caption:
                return self._advance_decode(s, spent[1], started)
            s.pending_decode = None  # it describes a view that has gone: decide anew
        real = fused[sizes > 0]
        threshold = k.caption_reuse_threshold
        if s.view_changed_since_caption:
            threshold = min(threshold, self._knobs.caption_reuse_threshold)
        fused_knobs = (k.max_fused_tokens, self._fused_frames(s, k))
        # reuse (and so a deferred or spread decode) needs a caption and a reuse the user allows
        reusable = k.sttf_enabled and threshold > 0 and s.last_caption is not None
        if reusable and (
            self._caption_still_stands(s, fused_knobs)
            or (s.last_summary is not None
                and self._reuse_movement(real, s.last_summary) < threshold)
        ):
            return s.last_caption, True, 0.0, 0
        start_decode = getattr(self.kernels, "start_decode", None)
        stepwise = (start_decode(fused, sizes, positions)
                    if reusable and start_decode is not None
                    and self.budget.decode_deadline("frame") is not None else None)
        merge_flops = 0.0
        if reusable and self.budget.active and stepwise is None:
            rows = _expected_rows(s)
            if self.budget.defer_decode(
                    "frame",
                    spent[0] + F.beam_decode_flops(self.cfg, fused.shape[0], rows, self._beams),
                    spent[1] + _expected_ms(s)):
                return s.last_caption, True, 0.0, 0
            kept = self._kept_rows
            cap = self.budget.thin_decode(
                "frame", *spent,
                lambda n: (F.beam_decode_flops(self.cfg, n, rows, self._beams)
                           + F.fusion_flops(self.cfg, len(real) - kept, n - kept)),
                len(real))
            if cap is not None and cap > kept:
                fused, sizes, positions = self._thin(fused, sizes, positions, cap)
                merge_flops = F.fusion_flops(self.cfg, len(real) - kept, len(fused) - kept)
                real = fused
                fused_knobs = (cap, fused_knobs[1])  # cap < the set's size <= the knob
        s.view_changed_since_caption = False
        s.caption_window = tuple(s.window)
        s.caption_fused_knobs = fused_knobs
        if stepwise is not None:
            s.pending_decode, s.pending_summary = stepwise, real
            s.pending_frames, s.pending_ms = 0, 0.0
            return self._advance_decode(s, spent[1], started)
        decode = getattr(self.kernels, "decode", None)
        if decode is None:  # a backend without draft checking: one token per pass
            ids = self.kernels.generate(fused, sizes, positions)
            # one step per token, plus one for EOS unless it stopped at max length
            rows = passes = len(ids) + (1 if len(ids) < self.cfg.max_caption_len else 0)
        else:
            use = k.sttf_enabled and k.caption_draft
            out = decode(fused, sizes, s.drafts if use else [], positions=positions)
            ids, rows, passes = out.ids, out.rows, out.passes
            ops.remember(s.drafts, ops.draft_of(ids, self.tokenizer.eos_id,
                                                self.cfg.max_caption_len))
        self._charge("decoder")
        self._decoded(s, ids, rows, real, (time.perf_counter() - started) * 1e3)
        return (s.last_caption, False,
                merge_flops + F.beam_decode_flops(self.cfg, fused.shape[0], rows, self._beams),
                passes)

    def _decoded(self, s: Stream, ids: list[int], rows: int, summary: np.ndarray,
                 ms: float) -> None:
        """A caption decode completed: it becomes the caption shown and the reference of the
        reuse test, and its rows and milliseconds the estimate of the next decode's cost."""
        s.decode_rows.append(rows)
        s.decode_ms.append(ms)
        s.last_caption = self.tokenizer.decode(ids)
        s.last_caption_len = len(ids) + (1 if len(ids) < self.cfg.max_caption_len else 0)
        s.last_summary = summary

    def _advance_decode(self, s: Stream, spent_ms: float, started: float
                        ) -> tuple[str, bool, float, int]:
        """Run the pending decode's passes this frame affords; (caption shown, reused,
        decoder FLOPs of the passes run, passes run), as `_caption` returns.

        A pass runs while the frame's time so far (`spent_ms` before the decoder stage, plus
        the stage's since `started`) and one more pass's recent milliseconds stay within the
        budget's deadline (`BudgetController.decode_deadline`), and at least for the share of
        the decode's milliseconds left (`_decode_ms_left`, at the estimates the frame started
        with) that completes it within `ControllerGains.split_decode_frames` frames, one pass
        at the least, in a frame with room for one. A frame with no room for its next pass
        runs none and leaves the passes to frames with room; the budget's level is decided on
        what it would have cost with its share (`BudgetController.wait_decode`). On its last
        frame the decode runs to the end: a target that nothing meets still gets its caption,
        that many frames late at most. Until it completes, the last caption is shown (as a
        reuse).

        Why a share of milliseconds, not of passes: the first pass (the prefill, over every
        fused token) takes two to three steps' time, and an equal share of passes put all of
        that on the decode's first frame. On 18 val streams at a target of 0.6 x the
        user's-knobs p95 (2026-12-05, interleaved, scratch trace), frames over 1.1 x the
        target went from 19.4 / 7.5 / 14.4% of a spread's first / second / last frames to
        14.1 / 9.4 / 19.1%, and from 11.7 to 10.4% of all frames; at 0.8 x (3.3 -> 3.5% of
        frames) nothing moved beyond the run-to-run spread.

        Why no pass in a frame without room: at 0.6 x, most settled frames over 1.1 x the
        target were decode frames whose encoder alone had taken them to the target; the
        share's pass or two took them past 1.1 x (`ControllerGains.split_decode_frames`; the
        module docstring of runtime/budget.py has the figures)."""
        d = s.pending_decode
        assert d is not None
        deadline = self.budget.decode_deadline("frame")  # None: the target mode changed
        limit = math.inf if deadline is None else deadline
        frames_left = self.budget.gains.split_decode_frames - s.pending_frames
        # the estimates as the frame starts: the passes it runs for its share do not depend
        # on how fast its own passes happen to run
        prefill_ms, step_ms = _pass_ms(s)
        share_ms = (_decode_ms_left(d, _expected_rows(s), prefill_ms, step_ms) / frames_left
                    if frames_left > 1 else math.inf)
        # no room for the next pass: it waits for a frame with some (unless this is the last)
        first_ms = step_ms if d.passes else prefill_ms  # this frame's first pass
        wait = frames_left > 1 and spent_ms + first_ms > limit
        if wait:  # the level weighs the frame with its share (`BudgetController.wait_decode`)
            self.budget.wait_decode("frame", spent_ms + max(first_ms, share_ms))
        before = d.passes
        taken = 0.0  # the estimated milliseconds of the passes run so far this frame
        while not d.done and not wait:
            t = time.perf_counter()
            prefill = d.passes == 0
            next_ms = prefill_ms if prefill else step_ms
            if (d.passes > before and taken >= share_ms
                    and spent_ms + (t - started) * 1e3 + next_ms > limit):
                break
            taken += next_ms
            d.advance()
            self._charge("decoder")
            ms = (time.perf_counter() - t) * 1e3
            if prefill:
                s.prefill_ms = _smoothed_ms(s.prefill_ms, ms)
            else:
                s.pass_ms = _smoothed_ms(s.pass_ms, ms)
        s.pending_frames += 1
        s.pending_ms += (time.perf_counter() - started) * 1e3
        passes = d.passes - before
        n_vis = len(s.pending_summary)  # type: ignore[arg-type]  (the set it decodes)
        # decode_flops(n, k) counts the prefill from k = 0 on: a frame that ran none cost none
        flops = 0.0 if passes == 0 else (F.decode_flops(self.cfg, n_vis, d.passes)
                                         - (F.decode_flops(self.cfg, n_vis, before)
                                            if before else 0.0))
        if not d.done:
            return s.last_caption, True, flops, passes  # type: ignore[return-value]
        if s.pending_frames > 1:
            self.budget.note_split_decode("frame")
        s.pending_decode = None
        self._decoded(s, d.ids, d.passes, s.pending_summary, s.pending_ms)  # type: ignore[arg-type]
        s.pending_summary = None
        return s.last_caption, False, flops, passes  # type: ignore[return-value]

    def _thin(self, fused: np.ndarray, sizes: np.ndarray, positions: np.ndarray, cap: int
              ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The real fused set merged on down to `cap` tokens (`BudgetController.thin_decode`);
        a pretrained tower's kept rows (CLS) lead and stay out of the merge, as in fusion."""
        kept = self._kept_rows
        thin = ops.merge_fused(fused[kept:], sizes[kept:], positions[kept:], cap - kept,
                               self.cfg.fusion_pos_weight)
        return (np.concatenate([fused[:kept], thin.tokens]),
                np.concatenate([sizes[:kept], thin.sizes]),
                np.concatenate([positions[:kept], thin.positions]))

    @classmethod
    def _fused_frames(cls, s: Stream, k: Knobs) -> int:
        """How many of the window's frames the fusion took (`fused_frames` 0 = all)."""
        return cls._fused_frame_count(len(s.window), k)

    @staticmethod
    def _fused_frame_count(window: int, k: Knobs) -> int:
        """How many of a `window`-frame window's frames fusion takes (`fused_frames` 0 =
        all)."""
        return min(k.fused_frames or window, window)

    @staticmethod
    def _caption_still_stands(s: Stream, fused_knobs: tuple[int, int]) -> bool:
        """Whether the caption was decoded from these very encoder outputs (no token
        recomputed since, the view unchanged) with fused-set knobs at least as rich as now.

        Why: the budget controller moves `max_fused_tokens` and `fused_frames` while the scene
        holds still, and a different token budget merges the same tokens into a different set,
        which the reuse test reads as movement. Each step of the level then decoded the caption
        again, over the target on a still scene, so the controller stepped back, and it cycled
        (a decode every four frames on the node benchmark's still camera at 0.07 GFLOPs). A set
        fused from fewer tokens of the same outputs tells the decoder nothing new; a richer one
        goes through the reuse test as before, so quality still comes back when the level
        relaxes."""
        return (not s.view_changed_since_caption
                and _same_outputs(tuple(s.window), s.caption_window)
                and all(now <= then for now, then in zip(fused_knobs, s.caption_fused_knobs,
                                                          strict=True)))

    def _reuse_movement(self, real: np.ndarray, summary: np.ndarray) -> float:
        self._charge("reuse_check", F.reuse_check_flops(len(real), len(summary), real.shape[1]))
        return ops.fused_set_movement(real, summary)
