"""The per-frame algorithms in numpy, implemented once: preprocessing, STTF gating, temporal
fusion, ANC routing, beam bookkeeping. The streaming controller runs them for both backends, and
training reuses them where no gradient is needed, so torch and onnxruntime take the same
decisions. Torch-free by rule (`test_layers.py`): the onnxruntime engine imports this package."""

from tinygpt_ros.ops.fusion import (
    MERGE_SCORE_QUANTUM,
    bipartite_merge,
    compact,
    fused_set_movement,
    static_mask,
    temporal_fusion,
    token_positions,
)
from tinygpt_ros.ops.gating import (
    StackedEncoderCache,
    TokenReference,
    patch_means,
    select_tokens,
    token_change,
    token_change_dc_tolerant,
)
from tinygpt_ros.ops.motion import Motion, compensate, estimate_motion
from tinygpt_ros.ops.preprocess import (
    PIXEL_MEAN,
    PIXEL_STD,
    SMALL_GRAY_SIZE,
    events_histogram,
    events_per_patch,
    frame_to_array,
    frame_to_pretrained_input,
    frame_to_unit,
    small_gray,
    unit_to_array,
    validate_events,
)
from tinygpt_ros.ops.routing import (
    CHANGE_FLOOR,
    EDGE_THRESHOLD,
    NUM_FEATURES,
    BranchSelector,
    as_vector,
    edge_density,
    event_complexity_features,
    frame_complexity_features,
    routing_probs,
    softmax,
)

__all__ = [
    "CHANGE_FLOOR",
    "EDGE_THRESHOLD",
    "MERGE_SCORE_QUANTUM",
    "NUM_FEATURES",
    "PIXEL_MEAN",
    "PIXEL_STD",
    "SMALL_GRAY_SIZE",
    "BranchSelector",
    "Motion",
    "StackedEncoderCache",
    "TokenReference",
    "as_vector",
    "bipartite_merge",
    "compact",
    "compensate",
    "edge_density",
    "estimate_motion",
    "event_complexity_features",
    "events_histogram",
    "events_per_patch",
    "frame_complexity_features",
    "frame_to_array",
    "frame_to_pretrained_input",
    "frame_to_unit",
    "fused_set_movement",
    "patch_means",
    "routing_probs",
    "select_tokens",
    "small_gray",
    "softmax",
    "static_mask",
    "temporal_fusion",
    "token_change",
    "token_change_dc_tolerant",
    "token_positions",
    "unit_to_array",
    "validate_events",
]
