"""Model configuration and runtime knobs, with validation shared by the engines and the ROS layer.

`ModelConfig` is fixed when a model is built and saved with its weights. `Knobs` are the STTF/ANC
settings that may change between frames (ROS parameters map onto them one to one).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from itertools import pairwise
from typing import Any

GRID = 14  # tokens per side: 14 x 14 = 196 tokens per frame or event window
NUM_TOKENS = GRID * GRID
IMAGE_SIZE = 224  # camera frames are resized to this before 16 px patching
FRAME_STEMS = ("patch", "conv", "lean_conv")  # ModelConfig.frame_stem
EVENT_SENSOR = 128  # event sensor resolution (DVS128-like), events binned to EVENT_GRID_SIZE
EVENT_GRID_SIZE = 112  # 8 px patches over the binned event histogram -> 14 x 14 tokens
BRANCH_NAMES = ("reuse", "small", "medium", "large")  # index 0 = no encoder at all
# STTF ego-motion compensation: what global camera motion is estimated and undone (ops/motion.py)
MOTION_MODES = ("off", "translation", "similarity")
# Gesture head (heads.py): lattice nodes per image axis, features per token, MLP width.
GESTURE_SPACE_CELLS = 4
GESTURE_CHANNELS = 32
GESTURE_HIDDEN = 128
# Decoder geometry embedding (decoder.py): each vision token's (x, y, t) centroid as itself plus
# sin/cos at GEOMETRY_FREQUENCIES octaves (pi, 2 pi, 4 pi ...), projected to the decoder width.
GEOMETRY_FREQUENCIES = 3
GEOMETRY_FEATURES = 3 * (1 + 2 * GEOMETRY_FREQUENCIES)
# Below this many events in a window the gesture is NO_GESTURE (knob gesture_min_events). 50 per
# 50 ms window (1,000 events/s) is under a third of the quietest gesture window of the generated
# data (147) and above the background noise of most simulated sensors (about 16-160).
GESTURE_MIN_EVENTS_DEFAULT = 50


def gesture_head_features(temporal_window: int) -> int:
    """Length of the gesture head's flattened space-time lattice (its MLP's input)."""
    return GESTURE_SPACE_CELLS ** 2 * temporal_window * (GESTURE_CHANNELS + 1)


@dataclass(frozen=True)
class ModelConfig:
    """Architecture of one TinyGPT model. Saved in the model manifest."""

    dim: int = 128  # encoder width
    heads: int = 4
    mlp_ratio: float = 4.0
    # ANC encoder branches are nested depths of one block stack: branch i runs the first
    # branch_depths[i] blocks, then its own exit norm. Costs differ ~1:2:4.
    branch_depths: tuple[int, ...] = (1, 2, 4)
    temporal_window: int = 4  # frames whose tokens are fused for the decoder
    dec_dim: int = 128
    dec_layers: int = 2
    dec_heads: int = 4
    max_caption_len: int = 16
    vocab_size: int = 0  # set from the tokenizer when the model is built
    num_gestures: int = 11
    # temporal fusion's match score: cosine similarity - this * squared centroid distance
    # (normalised x, y, t), so fused tokens stay local and keep the layout the gesture head uses
    fusion_pos_weight: float = 5.0
    router_hidden: int = 16
    num_router_features: int = 4
    # The decoder adds an embedding of each vision token's (x, y, t) centroid to it: what moved
    # where shows in the centroids, while the tokens' features barely change when an object
    # moves (the first shipped captioner could not tell a moving scene from a still one).
    # Manifests written before the field have no key: they load as False (`from_dict`).
    decoder_geometry: bool = True
    # Token grid side of each ANC branch (pretrained towers: the cheap branch runs a 7 x 7 grid
    # on a frame pooled 2 x, `ops.token_grid`); empty = every branch at the GRID x GRID grid.
    branch_grids: tuple[int, ...] = ()
    # How a frame becomes its 14 x 14 tokens: "patch", one 16 x 16 stride-16 convolution (each
    # token sees its own patch only), or "conv", four overlapping 3 x 3 stride-2 convolutions
    # (`frame_stem_layers`), 3 -> dim/8 -> dim/4 -> dim/2 -> dim channels; "lean_conv" is the
    # same with 8, 16 and 32 channels before the last. Why "conv": an object is 2-4 patches
    # wide, so its shape is in the edges between patches. Trained on the renderer's per-patch
    # labels alone with a fresh scene per sample, the same encoder read the shape of unseen val
    # patches at 80% with the conv stem after 970 steps, 45% with the patch stem after 1,200
    # (scratch experiments, README "What this says"). Why "lean_conv": every frame pays the stem,
    # reused or not (the change test reads its output); at dim 128 "conv" costs 97.5 MFLOPs a
    # frame, the patch stem 38.5 and "lean_conv" 34.3. Manifests written before the field have
    # no key and load as "patch".
    frame_stem: str = "patch"

    def branch_grid(self, branch: int) -> int:
        """Token grid side of `branch`."""
        return self.branch_grids[branch] if self.branch_grids else GRID

    def frame_stem_layers(self) -> tuple[tuple[int, int, int, int, int], ...]:
        """(in channels, out channels, kernel, stride, output side) of each convolution of the
        frame stem, in order; the stem's own FLOPs and the encoder's modules both read it."""
        if self.frame_stem == "patch":
            return ((3, self.dim, IMAGE_SIZE // GRID, IMAGE_SIZE // GRID, GRID),)
        if self.frame_stem == "conv":
            channels = (3, self.dim // 8, self.dim // 4, self.dim // 2, self.dim)
        elif self.frame_stem == "lean_conv":
            channels = (3, 8, 16, 32, self.dim)
        else:
            raise ValueError(f"frame_stem must be one of {FRAME_STEMS}, got {self.frame_stem!r}")
        return tuple((a, b, 3, 2, IMAGE_SIZE >> (i + 1))
                     for i, (a, b) in enumerate(pairwise(channels)))

    def to_dict(self) -> dict[str, Any]:
        """The manifest's "config". `branch_grids` is written only when a branch has a grid of
        its own (pretrained towers): a TinyGPT manifest then reads the same as before the field
        existed, so a package from before it still loads weights trained by this one (its
        `from_dict` refuses keys it does not know)."""
        d = dataclasses.asdict(self)
        d["branch_depths"] = list(self.branch_depths)
        if self.branch_grids:
            d["branch_grids"] = list(self.branch_grids)
        else:
            del d["branch_grids"]
        if self.frame_stem == "patch":  # as branch_grids: old packages read new manifests
            del d["frame_stem"]
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ModelConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown model config keys: {sorted(unknown)}")
        d = dict(d)
        d.setdefault("decoder_geometry", False)
        if "branch_depths" in d:
            d["branch_depths"] = tuple(int(x) for x in d["branch_depths"])
        if "branch_grids" in d:
            d["branch_grids"] = tuple(int(x) for x in d["branch_grids"])
        return cls(**d)


@dataclass(frozen=True)
class KnobSpec:
    """Type and range of one runtime knob; the ROS layer builds parameter descriptors from it."""

    kind: type
    low: float
    high: float
    description: str
    choices: tuple[str, ...] | None = None  # str knobs: the allowed values


KNOB_SPECS: dict[str, KnobSpec] = {
    "fusion_threshold": KnobSpec(
        float, 0.0, 100.0,
        "STTF on camera frames: a token is recomputed when its patch embedding's L2 distance "
        "to its reference exceeds this. 0 recomputes every token.",
    ),
    "event_fusion_threshold": KnobSpec(
        float, 0.0, 1000.0,
        "STTF on event windows: a token is recomputed when its patch's event count differs "
        "by more than this from the count it had when last recomputed. 0 recomputes every "
        "token.",
    ),
    "max_active_tokens": KnobSpec(
        int, 0, NUM_TOKENS,
        "STTF: at most this many tokens recomputed per frame (top-k by change); 0 = no cap.",
    ),
    "refresh_interval": KnobSpec(
        int, 0, 100000, "STTF: full recompute every N frames to bound drift; 0 = never."
    ),
    "max_fused_tokens": KnobSpec(
        int, 1, 8 * NUM_TOKENS,
        "STTF: temporal token fusion merges the window's tokens down to at most this many.",
    ),
    "fused_frames": KnobSpec(
        int, 0, 64,
        "STTF on camera frames: temporal fusion takes the newest N frames of the model's "
        "temporal window (0 = all of it). Fewer frames are cheaper to merge: on a busy scene "
        "or a pan few tokens stay static, and the merge's cost grows with the square of what "
        "enters it.",
    ),
    "caption_reuse_threshold": KnobSpec(
        float, 0.0, 100.0,
        "Republish the last caption without decoding when no fused token moved more than "
        "this (distance to its nearest token at the last decode, relative to token norm) "
        "since it was decoded; 0 = always decode.",
    ),
    "caption_draft": KnobSpec(
        bool, 0, 1,
        "STTF: when a caption is decoded, the last one is fed as a draft and one decoder pass "
        "checks all its tokens (the same greedy caption in fewer passes; pretrained "
        "captioners, where a pass is a sweep of the decoder's weights). Off = one token per "
        "pass.",
    ),
    "routing_temperature": KnobSpec(
        float, 0.01, 100.0, "ANC: router probabilities are softmax(logits / temperature)."
    ),
    "routing_hysteresis": KnobSpec(
        float, 0.0, 1.0,
        "ANC: switch branch only when the new branch's probability beats the current one's by "
        "this margin (stops flapping).",
    ),
    "gesture_min_events": KnobSpec(
        int, 0, 10_000_000,
        "Event windows with fewer events than this get gesture 'none' (silence, or sensor noise "
        "only) instead of a class; the gesture head does not run. 0 = always classify.",
    ),
    "sttf_enabled": KnobSpec(
        bool, 0, 1, "STTF on; off = dense: every token recomputed, no fusion, no caption reuse."
    ),
    "anc_enabled": KnobSpec(bool, 0, 1, "ANC on; off = always the largest encoder branch."),
    "motion_compensation": KnobSpec(
        str, 0, 0,
        "STTF on camera frames: global camera motion estimated against the anchor frame (the "
        "last full refresh) and undone before the change test: off, translation (pan, tilt, "
        "shake) or similarity (also zoom and roll).",
        choices=MOTION_MODES,
    ),
    "max_compensated_motion": KnobSpec(
        float, 0.0, 0.5,
        "STTF: re-anchor (recompute every token) once any image corner has moved more than this "
        "fraction of the image since the anchor; bounds the unseen new border and the drift.",
    ),
    "exposure_compensation": KnobSpec(
        bool, 0, 1,
        "STTF on camera frames: fit a global gain and offset against the anchor frame and undo "
        "them before the change test, so auto-exposure steps and flicker recompute nothing.",
    ),
    "noise_floor": KnobSpec(
        float, 0.0, 10.0,
        "STTF on camera frames: the sensor's temporal noise is measured from frame to frame "
        "and this many times its expected token change is taken out of every token's change "
        "(in quadrature) before the threshold, so a noisy still camera recomputes nothing. "
        "0 = off.",
    ),
}


@dataclass
class Knobs:
    """Runtime STTF / ANC settings. Use `Knobs.validated(name, value)` before assigning."""

    fusion_threshold: float = 0.5
    event_fusion_threshold: float = 2.0
    max_active_tokens: int = 0
    refresh_interval: int = 60
    max_fused_tokens: int = 31  # 196 -> 31 tokens per frame, the paper's gesture setting
    fused_frames: int = 0  # camera frames: fuse the newest N of the window; 0 = all
    caption_reuse_threshold: float = 0.1
    caption_draft: bool = True
    routing_temperature: float = 1.0
    routing_hysteresis: float = 0.1
    gesture_min_events: int = GESTURE_MIN_EVENTS_DEFAULT
    sttf_enabled: bool = True
    anc_enabled: bool = True
    motion_compensation: str = "similarity"
    max_compensated_motion: float = 0.08
    exposure_compensation: bool = True
    noise_floor: float = 2.0

    @staticmethod
    def validated(name: str, value: Any) -> Any:
        """Return `value` coerced to the knob's type, or raise ValueError saying why not."""
        spec = KNOB_SPECS.get(name)
        if spec is None:
            raise ValueError(f"unknown knob {name!r}; known: {', '.join(KNOB_SPECS)}")
        if spec.kind is bool:
            if isinstance(value, bool):
                return value
            raise ValueError(f"{name} must be a bool, got {type(value).__name__}")
        if spec.kind is str:
            if not isinstance(value, str):
                raise ValueError(f"{name} must be a string, got {type(value).__name__}")
            if spec.choices is not None and value not in spec.choices:
                raise ValueError(f"{name}={value!r} is not one of {list(spec.choices)}")
            return value
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ValueError(f"{name} must be a number, got {type(value).__name__}")
        if spec.kind is int:
            if isinstance(value, float) and not value.is_integer():
                raise ValueError(f"{name} must be an integer, got {value}")
            value = int(value)
        else:
            value = float(value)
            if not math.isfinite(value):
                raise ValueError(f"{name} must be finite, got {value}")
        if not spec.low <= value <= spec.high:
            raise ValueError(f"{name}={value} is out of range [{spec.low}, {spec.high}]")
        return value

    def set(self, name: str, value: Any) -> None:
        """Validate then assign; on error nothing changes."""
        setattr(self, name, self.validated(name, value))

    def as_dict(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in KNOB_SPECS}
