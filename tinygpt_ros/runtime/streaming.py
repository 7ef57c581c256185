"""The streaming controller shared by the torch and onnxruntime engines (numpy only, no torch).

Per step: patch-embed the input, measure per-token change against the STTF references, let the
ANC router pick an encoder branch (with hysteresis), run only the changed tokens through the
gated encoder (or nothing at all: "reuse"), fuse the last `temporal_window` steps' tokens, and
decode a caption unless the fused tokens barely moved since the last one (caption reuse).
Every step returns a `ComputeRecord` with analytical FLOPs and wall time per stage.

Every decision (refresh, selection, branch, hysteresis, window, caption reuse, FLOPs, records)
is taken here, in numpy, so both engines take the same ones. The networks are behind `Kernels`:
`torch_kernels.TorchKernels` (the reference) and `onnx_engine.OnnxKernels` (deployment).

Bad input raises ValueError before any state is touched, so the next good frame works.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from tinygpt_ros import ops
from tinygpt_ros.runtime.budget import BudgetController
from tinygpt_ros.spec import flops as F
from tinygpt_ros.spec.config import BRANCH_NAMES, GRID, NUM_TOKENS, Knobs, ModelConfig
from tinygpt_ros.spec.tokenizer import Tokenizer
from tinygpt_ros.spec.types import NO_GESTURE, ComputeRecord, FrameResult

# Static-token averaging tolerance used by temporal fusion (relative L2 to the window mean).
STATIC_THRESHOLD = 0.1
MODALITIES = ("frame", "events")


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

    def router_logits(self, features: np.ndarray) -> np.ndarray:
        """(F,) complexity features -> (num_branches,) logits."""
        ...

    def fuse(
        self, window: np.ndarray, max_tokens: int | None, static_threshold: float
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(T, 196, D) window -> tokens (K, D), sizes (K,) (0 = padding), (x, y, t) centroids
        (K, 3); max_tokens None = no fusion."""
        ...

    def generate(self, tokens: np.ndarray, sizes: np.ndarray) -> list[int]:
        """Caption ids (without bos/eos) for (K, D) tokens with sizes (K,)."""
        ...

    def gesture_logits(self, tokens: np.ndarray, sizes: np.ndarray,
                       positions: np.ndarray) -> np.ndarray:
        """(num_gestures,) logits for (K, D) tokens with sizes (K,) and centroids (K, 3)."""
        ...

    # Optional: `frame_input(frame) -> (3, H, W)` replaces `ops.frame_to_array` for backends
    # whose network expects its own preprocessing (a pretrained tower's size and mean/std), and
    # `change_scale` (float) divides the frame token change, so `fusion_threshold` means the
    # same relative change on a pretrained tower whose token norms differ from TinyGPT's.


@dataclass
class Stream:
    """Temporal state of one input stream (frames and events are kept apart)."""

    cache: Any
    reference: ops.TokenReference = field(default_factory=ops.TokenReference)
    # events: each patch's event count when its token was last recomputed
    count_reference: ops.TokenReference = field(default_factory=ops.TokenReference)
    window: deque = field(default_factory=deque)
    selector: ops.BranchSelector | None = None
    steps: int = 0
    since_refresh: int = 0
    last_output: np.ndarray | None = None
    last_caption: str | None = None
    last_caption_len: int = 0
    last_summary: np.ndarray | None = None  # the fused tokens the last caption was decoded from
    # (window frames, max_tokens, fusion result) of the last fusion: see StreamingEngine._fuse
    fusion_memo: tuple[tuple[np.ndarray, ...], int | None, tuple[Any, ...]] | None = None


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
        self._frame_input = getattr(kernels, "frame_input", None) or ops.frame_to_array
        self._change_scale = float(getattr(kernels, "change_scale", 1.0))
        self._streams: dict[str, Stream] = {}
        self._branch_dense = F.branch_dense_flops(self.cfg)
        self.largest_branch = len(self.cfg.branch_depths) - 1
        # compute budget (runtime/budget.py): consulted before each step, fed after it
        self.budget = BudgetController()
        self.reset()

    # ----------------------------------------------------------------------------- knobs

    def set_knob(self, name: str, value: Any) -> None:
        old = getattr(self._knobs, name, None)
        self._knobs.set(name, value)  # raises ValueError and keeps the old value
        if name == "routing_hysteresis":
            for s in self._streams.values():
                if s.selector is not None:
                    s.selector.hysteresis = float(value)
        if name in ("sttf_enabled", "anc_enabled") and old != value:
            self.reset()  # switching mode mid-stream would mix incompatible cached state

    def knobs(self) -> dict[str, Any]:
        return self._knobs.as_dict()

    def reset(self) -> None:
        self._streams = {m: self._new_stream() for m in MODALITIES}
        self.budget.reset()  # levels belong to the temporal state they were measured on

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

    def process_frame(self, frame: np.ndarray, stamp_us: int | None = None) -> FrameResult:
        timer = StageTimer()
        with timer.stage("preprocess"):
            x = self._frame_input(frame)  # ValueError on bad input, state untouched
            gray = ops.small_gray(frame)
            emb = self.kernels.embed_frame(x)
        s = self._streams["frame"]
        with timer.stage("change"):
            if s.reference.is_empty:
                change = np.full(NUM_TOKENS, np.inf, np.float32)
            else:
                change = ops.token_change(emb, s.reference.value)  # type: ignore[arg-type]
                if self._change_scale != 1.0:
                    change /= np.float32(self._change_scale)
        with timer.stage("router"):
            finite = np.nan_to_num(change, posinf=1e6)
            feats = ops.frame_complexity_features(finite, self._knobs.fusion_threshold, gray)
        return self._step(s, "frame", emb, change, feats, timer, stamp_us=stamp_us)

    def process_events(self, events: np.ndarray, stamp_us: int | None = None) -> FrameResult:
        timer = StageTimer()
        with timer.stage("preprocess"):
            events = ops.validate_events(events)  # ValueError on bad input, state untouched
            hist = ops.events_histogram(events)
            emb = self.kernels.embed_events(hist)
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
        return self._step(s, "events", emb, change, feats, timer, counts, len(events),
                          stamp_us)

    def _step(
        self,
        s: Stream,
        modality: str,
        emb: np.ndarray,
        change: np.ndarray,
        feats: np.ndarray,
        timer: StageTimer,
        counts: np.ndarray | None = None,
        n_events: int = 0,
        stamp_us: int | None = None,
    ) -> FrameResult:
        # budget hook (1/2): the controller picks this step's knobs inside the user's
        k, router_bias = self.budget.plan(modality, self._knobs)
        cfg = self.cfg
        kern = self.kernels
        with timer.stage("router"):
            logits = kern.router_logits(feats)
            if router_bias > 0:  # toward cheaper branches: a penalty per step up in depth
                logits = logits - router_bias * np.arange(len(logits), dtype=np.float32)
            probs = ops.routing_probs(logits, k.routing_temperature)
            if k.anc_enabled:
                branch = s.selector.choose(probs)  # type: ignore[union-attr]
            else:
                branch = self.largest_branch

        refresh = (
            not k.sttf_enabled
            or s.last_output is None
            or (k.refresh_interval > 0 and s.since_refresh + 1 >= k.refresh_interval)
        )
        with timer.stage("change"):
            if refresh:
                selected = np.ones(NUM_TOKENS, bool)
            else:
                thr = k.fusion_threshold if counts is None else k.event_fusion_threshold
                selected = ops.select_tokens(change, thr, k.max_active_tokens)
        n_sel = int(selected.sum())

        with timer.stage("encoder"):
            if n_sel == 0:
                out = s.last_output  # nothing changed: no encoder at all
                branch_name = BRANCH_NAMES[0]
                enc_flops = 0.0
            else:
                out, n_sel = kern.run_encoder(s.cache, emb, None if refresh else selected,
                                              branch)
                branch_name = BRANCH_NAMES[branch + 1]
                # the cache may have fallen back to a dense pass (e.g. deeper branch than cached)
                enc_flops = F.encoder_flops(cfg, branch, NUM_TOKENS, n_sel)
                if n_sel >= NUM_TOKENS:
                    selected = np.ones(NUM_TOKENS, bool)
        s.reference.update(emb, selected)
        if counts is not None:
            s.count_reference.update(counts.astype(np.float32)[:, None], selected)
        s.since_refresh = 0 if n_sel >= NUM_TOKENS else s.since_refresh + 1
        s.last_output = out
        s.window.append(out)
        s.steps += 1

        with timer.stage("fusion"):
            n_window = len(s.window) * NUM_TOKENS
            fused, sizes, positions = self._fuse(s, k.max_fused_tokens if k.sttf_enabled
                                                 else None)
            if k.sttf_enabled:
                fusion_flops = F.fusion_flops(cfg, n_window, int((sizes > 0).sum()))
            else:
                fusion_flops = 0.0
        n_fused = int((sizes > 0).sum())
        # A real token count: drop padding before the decoder so FLOPs match what runs.
        real = sizes > 0
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
        if modality == "frame":
            with timer.stage("decoder"):
                caption, caption_reused, dec_flops = self._caption(s, fused, sizes, k)
            flops["decoder"] = dec_flops
            dense_head = F.decode_flops(cfg, n_window, max(1, s.last_caption_len))
        elif n_events < k.gesture_min_events:
            # Silence (or noise only): the head was never trained on it and would still name a
            # class with high confidence, so this is a decision of the gate, not of the model.
            gesture, confidence = NO_GESTURE, 1.0
            flops["head"] = 0.0
            dense_head = F.gesture_head_flops(cfg, n_window)
        else:
            with timer.stage("head"):
                p = ops.softmax(kern.gesture_logits(fused, sizes, positions))
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
            caption_reused=caption_reused,
            full_refresh=n_sel >= NUM_TOKENS,
            router_probs=[float(v) for v in probs],
        )
        mask = selected.reshape(GRID, GRID).copy()
        # budget hook (2/2): feed the measured cost; its diagnostics ride on the result
        budget = self.budget.observe(modality, record, stamp_us, k, router_bias)
        return FrameResult(record, caption, gesture, confidence, mask,
                           fused_centroids=np.asarray(positions, np.float32).copy(),
                           fused_sizes=np.asarray(sizes, np.float32).copy(), budget=budget)

    def _fuse(self, s: Stream, max_tokens: int | None
              ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Temporal fusion of the stream's window, or the last result when the window holds
        the very same encoder outputs as last time (a still scene reuses the same output
        array frame after frame, so after `temporal_window` reused frames the window stops
        changing): the same input gives the same tokens, so they are not fused again.
        The returned arrays are shared with the memo; callers must not write into them."""
        frames = tuple(s.window)
        memo = s.fusion_memo
        if (memo is not None and memo[1] == max_tokens and len(memo[0]) == len(frames)
                and all(a is b for a, b in zip(memo[0], frames, strict=True))):
            return memo[2]
        result = self.kernels.fuse(np.stack(frames), max_tokens, STATIC_THRESHOLD)
        s.fusion_memo = (frames, max_tokens, result)  # holds the frames: ids stay unique
        return result

    def _caption(
        self, s: Stream, fused: np.ndarray, sizes: np.ndarray, k: Knobs
    ) -> tuple[str, bool, float]:
        real = fused[sizes > 0]
        if (
            k.sttf_enabled
            and k.caption_reuse_threshold > 0
            and s.last_summary is not None
            and s.last_caption is not None
            and ops.fused_set_movement(real, s.last_summary) < k.caption_reuse_threshold
        ):
            return s.last_caption, True, 0.0
        ids = self.kernels.generate(fused, sizes)
        s.last_caption = self.tokenizer.decode(ids)
        # decoding ran one step per token, plus one for EOS unless it stopped at max length
        s.last_caption_len = len(ids) + (1 if len(ids) < self.cfg.max_caption_len else 0)
        s.last_summary = real.copy()
        return s.last_caption, False, F.decode_flops(self.cfg, fused.shape[0], s.last_caption_len)
