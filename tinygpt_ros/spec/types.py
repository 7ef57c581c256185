"""Data types shared by the engines, the ROS layer and evaluation (no torch, no ROS)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

import numpy as np

# One event: sensor pixel x, y; time stamp in microseconds; polarity 1 = brighter, 0 = darker.
EVENT_DTYPE = np.dtype([("x", "<u2"), ("y", "<u2"), ("t", "<i8"), ("p", "u1")])

# The gesture of an event window with too little activity to classify (see the knob
# gesture_min_events): published on the gesture topic and in /diagnostics like a class.
NO_GESTURE = "none"

STAGES = ("preprocess", "motion", "change", "router", "encoder", "fusion", "decoder", "head")


@dataclass
class ComputeRecord:
    """What one frame (or event window) cost. FLOPs are analytical, from tokens really processed."""

    frame_index: int
    modality: str  # "frame" | "events"
    tokens_in: int  # tokens of this frame (196)
    tokens_recomputed: int  # tokens that went through the encoder this frame
    tokens_fused: int  # tokens handed to the decoder / head after temporal fusion
    branch: str  # one of config.BRANCH_NAMES
    flops: dict[str, float] = field(default_factory=dict)  # per stage (STAGES)
    dense_flops: float = 0.0  # what the dense model (largest branch, no STTF) would cost here
    latency_ms: dict[str, float] = field(default_factory=dict)  # wall time per stage
    caption_reused: bool = False
    # sequential decoder passes of this frame's caption (0: reused, or no caption); fewer than
    # its tokens when drafts from recent captions were accepted (ops.drafting)
    decoder_passes: int = 0
    full_refresh: bool = False
    router_probs: list[float] = field(default_factory=list)  # over the encoder branches
    # STTF ego-motion / exposure compensation of camera frames (ops/motion.py), anchor -> frame:
    motion_compensation: str = "off"  # mode applied: off | translation | similarity
    motion_dx: float = 0.0  # image-centre displacement since the anchor, input-frame pixels
    motion_dy: float = 0.0
    motion_scale: float = 1.0  # zoom since the anchor (similarity mode)
    motion_rotation_deg: float = 0.0  # roll since the anchor (similarity mode)
    exposure_gain: float = 1.0  # frame ~ gain * anchor + offset (unit intensities)
    exposure_offset: float = 0.0
    # the accumulated motion or exposure re-anchored: a full refresh, unless the budget
    # controller's tokens rung gated it (then full_refresh says whether all tokens ran)
    reanchored: bool = False
    # GPU busy time of the step (runtime/gpu_share.py: CUDA events or NVML), None = not measured
    gpu_busy_ms: float | None = None
    # FLOPs counted at run time per stage (a counting backend: the networks' ops as they ran,
    # plus the numpy decision stages from the shapes they ran on); empty when not counted
    measured_flops: dict[str, float] = field(default_factory=dict)

    @property
    def total_flops(self) -> float:
        return float(sum(self.flops.values()))

    @property
    def measured_total_flops(self) -> float:
        return float(sum(self.measured_flops.values()))

    @property
    def encoder_flops(self) -> float:
        return float(self.flops.get("encoder", 0.0))

    @property
    def total_latency_ms(self) -> float:
        return float(sum(self.latency_ms.values()))

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["total_flops"] = self.total_flops
        d["total_latency_ms"] = self.total_latency_ms
        return d


@dataclass
class FrameResult:
    """Output of one engine step."""

    record: ComputeRecord
    caption: str | None = None  # frames: the current caption (decoded or reused)
    gesture: str | None = None  # events: predicted gesture class, or NO_GESTURE
    gesture_confidence: float = 0.0
    token_mask: np.ndarray | None = None  # (14, 14) bool: tokens recomputed this step
    # Temporal fusion's output tokens: (K, 3) size-weighted (x, y, t) centroids in [0, 1] (x, y
    # over the frame, t = slot in the window, 1 = this frame) and their sizes (K,) (tokens merged).
    fused_centroids: np.ndarray | None = None
    fused_sizes: np.ndarray | None = None
    # compute-budget controller (runtime/budget.py): target, measured, state, chosen knobs;
    # None when no budget is held
    budget: dict[str, Any] | None = None


class Engine(Protocol):
    """The streaming API both engines (torch reference, onnxruntime) offer to the ROS layer."""

    def process_frame(self, frame: np.ndarray, stamp_us: int | None = None,
                      pixel_scale: float = 1.0) -> FrameResult:
        """One camera frame, HxWx3 uint8 RGB of any size (resized internally). `pixel_scale`:
        camera pixels per pixel of `frame` (2 for a jpeg decoded at half size), so motion is
        reported in the camera's pixels."""
        ...

    def process_events(self, events: np.ndarray, stamp_us: int | None = None) -> FrameResult:
        """One window of events (EVENT_DTYPE, sorted by t, coordinates inside the sensor)."""
        ...

    def set_knob(self, name: str, value: Any) -> None:
        """Validate and apply a knob for the next frame; ValueError (old value kept) if bad."""
        ...

    def knobs(self) -> dict[str, Any]: ...

    def reset(self) -> None:
        """Forget all temporal state (caches, references, window, router history)."""
        ...
