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
    select_tokens,
    token_change,
)
from tinygpt_ros.ops.preprocess import (
    PIXEL_MEAN,
    PIXEL_STD,
    SMALL_GRAY_SIZE,
    events_histogram,
    events_per_patch,
    frame_to_array,
    frame_to_pretrained_input,
    small_gray,
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
    "StackedEncoderCache",
    "TokenReference",
    "as_vector",
    "bipartite_merge",
    "compact",
    "edge_density",
    "event_complexity_features",
    "events_histogram",
    "events_per_patch",
    "frame_complexity_features",
    "frame_to_array",
    "frame_to_pretrained_input",
    "fused_set_movement",
    "routing_probs",
    "select_tokens",
    "small_gray",
    "softmax",
    "static_mask",
    "temporal_fusion",
    "token_change",
    "token_positions",
    "validate_events",
]
