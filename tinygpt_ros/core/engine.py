"""Streaming TinyGPT engine (torch reference): one frame or event window in, caption/gesture out.

Per step: patch-embed the input, measure per-token change against the STTF references, let the
ANC router pick an encoder branch (with hysteresis), run only the changed tokens through the
gated encoder (or nothing at all: "reuse"), fuse the last `temporal_window` steps' tokens, and
decode a caption unless the fused tokens barely moved since the last one (caption reuse).
Every step returns a `ComputeRecord` with analytical FLOPs and wall time per stage.

Bad input raises ValueError before any state is touched, so the next good frame works.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from . import flops as F
from .anc import BranchSelector, event_complexity_features, frame_complexity_features
from .anc import routing_probs as _routing_probs
from .config import BRANCH_NAMES, GRID, NUM_TOKENS, Knobs, ModelConfig
from .encoder import GatedEncoderCache
from .model import TinyGPT
from .preprocess import (
    events_per_patch,
    events_to_histogram,
    frame_to_tensor,
    small_gray,
    validate_events,
)
from .sttf import TokenReference, select_tokens, token_change
from .tokenizer import Tokenizer
from .types import ComputeRecord, FrameResult

# Fused-token movement is measured relative to the summary's norm, so the threshold is unitless.
_EPS = 1e-8
# Static-token averaging tolerance used by temporal fusion (relative L2 to the window mean).
STATIC_THRESHOLD = 0.1


@dataclass
class _Stream:
    """Temporal state of one input stream (frames and events are kept apart)."""

    cache: GatedEncoderCache = field(default_factory=GatedEncoderCache)
    reference: TokenReference = field(default_factory=TokenReference)
    window: deque = field(default_factory=deque)
    selector: BranchSelector | None = None
    steps: int = 0
    since_refresh: int = 0
    last_output: torch.Tensor | None = None
    last_caption: str | None = None
    last_caption_len: int = 0
    last_summary: torch.Tensor | None = None


class _StageTimer:
    def __init__(self) -> None:
        self.ms: dict[str, float] = {}

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.ms[name] = self.ms.get(name, 0.0) + (time.perf_counter() - t0) * 1e3


class TorchEngine:
    """Reference engine on torch (CPU or CUDA). Implements `types.Engine`."""

    backend = "torch"

    def __init__(
        self,
        model: TinyGPT,
        tokenizer: Tokenizer,
        gesture_classes: list[str],
        knobs: Knobs | None = None,
        device: str = "cpu",
        beam_size: int = 1,
    ) -> None:
        self.model = model.to(device).eval()
        self.cfg: ModelConfig = model.cfg
        self.tokenizer = tokenizer
        self.gesture_classes = list(gesture_classes)
        self.device = torch.device(device)
        self._knobs = knobs or Knobs()
        self.beam_size = beam_size
        self._streams: dict[str, _Stream] = {}
        self._branch_dense = F.branch_dense_flops(self.cfg)
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
        self._streams = {m: self._new_stream() for m in ("frame", "events")}

    def _new_stream(self) -> _Stream:
        s = _Stream(window=deque(maxlen=self.cfg.temporal_window))
        s.selector = BranchSelector(self._knobs.routing_hysteresis)
        return s

    # ----------------------------------------------------------------------------- steps

    @torch.no_grad()
    def process_frame(self, frame: np.ndarray, stamp_us: int | None = None) -> FrameResult:
        timer = _StageTimer()
        with timer.stage("preprocess"):
            x = frame_to_tensor(frame).to(self.device)  # ValueError on bad input, state untouched
            gray = small_gray(frame)
            emb = self.model.encoder.embed_frames(x[None])[0]
        s = self._streams["frame"]
        with timer.stage("change"):
            if s.reference.is_empty:
                change = torch.full((NUM_TOKENS,), float("inf"))
            else:
                change = token_change(emb, s.reference.value)
        with timer.stage("router"):
            finite = torch.nan_to_num(change, posinf=1e6)
            feats = frame_complexity_features(finite, self._knobs.fusion_threshold, gray)
        return self._step(s, "frame", emb, change, feats, timer, stamp_us)

    @torch.no_grad()
    def process_events(self, events: np.ndarray, stamp_us: int | None = None) -> FrameResult:
        timer = _StageTimer()
        with timer.stage("preprocess"):
            validate_events(events)  # ValueError on bad input, state untouched
            hist = events_to_histogram(events).to(self.device)
            emb = self.model.encoder.embed_events(hist[None])[0]
        s = self._streams["events"]
        with timer.stage("change"):
            counts = events_per_patch(events)
            change = torch.from_numpy(counts)
            if s.reference.is_empty:  # first window: everything is new
                change = torch.full((NUM_TOKENS,), float("inf"))
        with timer.stage("router"):
            window_us = int(events["t"][-1] - events["t"][0]) if len(events) > 1 else 0
            feats = event_complexity_features(counts, len(events), max(window_us, 1))
        return self._step(s, "events", emb, change, feats, timer, stamp_us)

    def _step(
        self,
        s: _Stream,
        modality: str,
        emb: torch.Tensor,
        change: torch.Tensor,
        feats: torch.Tensor,
        timer: _StageTimer,
        stamp_us: int | None,
    ) -> FrameResult:
        k = self._knobs
        cfg = self.cfg
        with timer.stage("router"):
            probs = _routing_probs(self.model.router(feats[None].to(self.device)),
                                   k.routing_temperature)[0].cpu()
            if k.anc_enabled:
                branch = s.selector.choose(probs)
            else:
                branch = self.model.largest_branch

        refresh = (
            not k.sttf_enabled
            or s.last_output is None
            or (k.refresh_interval > 0 and s.since_refresh + 1 >= k.refresh_interval)
        )
        with timer.stage("change"):
            if refresh:
                selected = torch.ones(NUM_TOKENS, dtype=torch.bool)
            else:
                selected = select_tokens(change, k.fusion_threshold, k.max_active_tokens)
        n_sel = int(selected.sum())

        with timer.stage("encoder"):
            if n_sel == 0:
                out = s.last_output  # nothing changed: no encoder at all
                branch_name = BRANCH_NAMES[0]
                enc_flops = 0.0
            else:
                out = s.cache.run(
                    self.model.encoder, emb, None if refresh else selected.to(self.device), branch
                )
                branch_name = BRANCH_NAMES[branch + 1]
                # the cache may have fallen back to a dense pass (e.g. deeper branch than cached)
                n_sel = int(s.cache.n_recomputed)
                enc_flops = F.encoder_flops(cfg, branch, NUM_TOKENS, n_sel)
                if n_sel >= NUM_TOKENS:
                    selected = torch.ones(NUM_TOKENS, dtype=torch.bool)
        s.reference.update(emb, selected)
        s.since_refresh = 0 if n_sel >= NUM_TOKENS else s.since_refresh + 1
        s.last_output = out
        s.window.append(out)
        s.steps += 1

        with timer.stage("fusion"):
            window = torch.stack(list(s.window))[None]  # (1,T,N,D)
            n_window = window.shape[1] * NUM_TOKENS
            if k.sttf_enabled:
                fused, sizes = self.model.fuse(window, k.max_fused_tokens, STATIC_THRESHOLD)
                fusion_flops = F.fusion_flops(cfg, n_window, int((sizes > 0).sum()))
            else:
                fused, sizes = self.model.fuse(window, None)
                fusion_flops = 0.0
        n_fused = int((sizes > 0).sum())
        # A real token count: drop padding before the decoder so FLOPs match what runs.
        real = sizes[0] > 0
        fused, sizes = fused[:, real], sizes[:, real]

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
                caption, caption_reused, dec_flops = self._caption(s, fused, sizes)
            flops["decoder"] = dec_flops
            dense_head = F.decode_flops(cfg, n_window, max(1, s.last_caption_len))
        else:
            with timer.stage("head"):
                logits = self.model.gesture_head(fused, sizes)[0]
                p = torch.softmax(logits, -1)
                idx = int(p.argmax())
                gesture, confidence = self.gesture_classes[idx], float(p[idx])
            flops["head"] = F.gesture_head_flops(cfg)
            dense_head = F.gesture_head_flops(cfg)

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
                + self._branch_dense[self.model.largest_branch]
                + dense_head
            ),
            latency_ms=dict(timer.ms),
            caption_reused=caption_reused,
            full_refresh=n_sel >= NUM_TOKENS,
            router_probs=[float(v) for v in probs],
        )
        mask = selected.view(GRID, GRID).cpu().numpy().copy()
        return FrameResult(record, caption, gesture, confidence, mask)

    def _caption(
        self, s: _Stream, fused: torch.Tensor, sizes: torch.Tensor
    ) -> tuple[str, bool, float]:
        k = self._knobs
        w = sizes[..., None].float()
        summary = (fused * w).sum(1)[0] / w.sum().clamp_min(_EPS)
        if (
            k.sttf_enabled
            and k.caption_reuse_threshold > 0
            and s.last_summary is not None
            and s.last_caption is not None
        ):
            moved = float((summary - s.last_summary).norm() / (s.last_summary.norm() + _EPS))
            if moved < k.caption_reuse_threshold:
                return s.last_caption, True, 0.0
        tok = self.tokenizer
        ids = self.model.decoder.generate(
            fused, sizes, tok.bos_id, tok.eos_id, beam_size=self.beam_size
        )[0]
        s.last_caption = tok.decode(ids)
        # decoding ran one step per token, plus one for EOS unless it stopped at max length
        s.last_caption_len = len(ids) + (1 if len(ids) < self.cfg.max_caption_len else 0)
        s.last_summary = summary
        return s.last_caption, False, F.decode_flops(self.cfg, fused.shape[1], s.last_caption_len)

    # ----------------------------------------------------------------------------- loading

    @classmethod
    def from_dir(cls, model_dir: str | Path, device: str = "cpu", **kwargs: Any) -> TorchEngine:
        from .weights import ModelLoadError, load_model_files

        loaded = load_model_files(model_dir)
        try:
            model = TinyGPT(loaded.config)
            model.load_state_dict(loaded.state_dict)
        except (RuntimeError, ValueError, KeyError) as exc:
            raise ModelLoadError(
                f"model in {model_dir}: weights do not fit the manifest's config ({exc})"
            ) from exc
        return cls(model, loaded.tokenizer, loaded.gesture_classes, device=device, **kwargs)


BACKENDS = ("torch", "onnxruntime")


def load_engine(model_dir: str | Path, backend: str = "torch", **options: Any):
    """The factory the ROS node calls. Raises ModelLoadError for a missing or corrupt model."""
    if backend == "torch":
        opts = {k: v for k, v in options.items() if k in ("device", "beam_size", "knobs")}
        return TorchEngine.from_dir(model_dir, **opts)
    if backend == "onnxruntime":
        from .onnx_engine import OnnxEngine

        return OnnxEngine.from_dir(model_dir, **options)
    raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
