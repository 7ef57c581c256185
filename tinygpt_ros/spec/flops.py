"""Analytical FLOPs per stage, from the numbers of tokens really processed (pure Python).

Convention (the same as torch.utils.flop_counter): 2 FLOPs per multiply-add, counting linear
layers and convolutions (weights only, biases ignored) and the attention matmuls QK^T and AV.
Norms, softmax, GELU, additions, gathers and scatters are ignored. The formulas follow the
architectures in encoder.py (encoder), decoder.py (decoder: pre-LN blocks of width dec_dim with
a 4x MLP, projector Linear(dim, dec_dim), tied LM head Linear(dec_dim, vocab)) and heads.py.
"""

from __future__ import annotations

import math

from tinygpt_ros.spec.config import (
    EVENT_GRID_SIZE,
    GEOMETRY_FEATURES,
    GESTURE_CHANNELS,
    GESTURE_HIDDEN,
    GESTURE_SPACE_CELLS,
    IMAGE_SIZE,
    NUM_TOKENS,
    ModelConfig,
    gesture_head_features,
)

EVENT_PATCH = 8
DEC_MLP_RATIO = 4  # decoder MLP hidden width = 4 * dec_dim (decoder.py)


def _mlp_hidden(cfg: ModelConfig) -> int:
    return int(cfg.mlp_ratio * cfg.dim)  # same rule as encoder.mlp_hidden


def _transformer_block(dim: int, hidden: int, n_query: int, n_keys: int) -> float:
    """qkv + output projection + MLP for n_query tokens, attention n_query x n_keys."""
    linear = n_query * (dim * 3 * dim + dim * dim + 2 * dim * hidden)
    attention = 2 * n_query * n_keys * dim  # QK^T and AV, summed over heads
    return 2.0 * (linear + attention)


def patch_embed_flops(cfg: ModelConfig, modality: str) -> float:
    """Token embedding of one frame ("frame": the convolutions of `cfg.frame_stem`) or event
    window ("events": the 8 x 8 patch convolution), 196 tokens."""
    if modality in ("frame", "frames"):
        return float(sum(2.0 * side * side * c_out * c_in * k * k
                         for c_in, c_out, k, _, side in cfg.frame_stem_layers()))
    if modality in ("events", "event"):
        per_token = 2 * EVENT_PATCH * EVENT_PATCH
        n = (EVENT_GRID_SIZE // EVENT_PATCH) ** 2
    else:
        raise ValueError(f"modality must be 'frame' or 'events', got {modality!r}")
    return 2.0 * n * cfg.dim * per_token


def block_flops(cfg: ModelConfig, n_query: int, n_keys: int) -> float:
    """One encoder block: n_query tokens through qkv/proj/MLP, attending to n_keys keys."""
    return _transformer_block(cfg.dim, _mlp_hidden(cfg), n_query, n_keys)


def encoder_flops(
    cfg: ModelConfig, branch: int, n_tokens: int | None = None, n_selected: int | None = None
) -> float:
    """Encoder branch `branch` (index into cfg.branch_depths), excluding the frame's patch
    embedding (which the change test needs whatever the branch).

    Counts are in the branch's own tokens: `n_tokens` defaults to its grid (196, or 49 for a
    7 x 7 branch). Dense (n_selected None): n_tokens tokens through depth blocks. Gated:
    n_selected queries against n_tokens keys in each block (cached keys/values of the others
    cost nothing). A coarse-grid branch adds its own patch embedding of the pooled frame.
    """
    if not 0 <= branch < len(cfg.branch_depths):
        raise ValueError(f"branch must be in [0, {len(cfg.branch_depths) - 1}], got {branch}")
    grid_tokens = cfg.branch_grid(branch) ** 2
    n = grid_tokens if n_tokens is None else int(n_tokens)
    n_q = n if n_selected is None else min(int(n_selected), n)
    embed = 0.0
    if grid_tokens != NUM_TOKENS:
        embed = patch_embed_flops(cfg, "frame") * grid_tokens / NUM_TOKENS
    return embed + cfg.branch_depths[branch] * block_flops(cfg, n_q, n)


def branch_rows(cfg: ModelConfig, branch: int, n_patches: int) -> int:
    """A count of 14 x 14 patches (what the controller tracks) in `branch`'s own tokens."""
    return int(n_patches) * cfg.branch_grid(branch) ** 2 // NUM_TOKENS


def branch_dense_flops(cfg: ModelConfig) -> list[float]:
    """Dense cost of every encoder branch on its own token grid."""
    return [encoder_flops(cfg, b) for b in range(len(cfg.branch_depths))]


def router_flops(cfg: ModelConfig) -> float:
    """Router MLP: features -> router_hidden -> branches."""
    nb = len(cfg.branch_depths)
    return 2.0 * (cfg.num_router_features * cfg.router_hidden + cfg.router_hidden * nb)


def fusion_flops(cfg: ModelConfig, n_in: int, n_out: int) -> float:
    """Similarity matmuls of the bipartite merge steps taking n_in tokens down to n_out.

    Replays the loop of `sttf.TemporalFusion`: while n > n_out, one merge with r = min(n - n_out,
    n // 2) costs ceil(n/2) * floor(n/2) dot products of width dim. Static averaging, norms and
    the scatter are ignored. `n_in` is the token count that enters the merge loop, after static
    averaging (`ops.Fused.merge_input`), not the window's T * N: on a calm scene most positions
    are averaged first and the loop is far shorter.
    """
    n, n_out = int(n_in), max(int(n_out), 1)
    total = 0.0
    while n > n_out and n >= 2:
        total += 2.0 * math.ceil(n / 2) * (n // 2) * cfg.dim
        n -= min(n - n_out, n // 2)
    return total


def projector_flops(cfg: ModelConfig, n_vis: int) -> float:
    """Projector Linear(dim, dec_dim) on n_vis vision tokens, plus the geometry embedding's
    Linear(GEOMETRY_FEATURES, dec_dim) when the decoder reads token positions (its sin/cos
    features are elementwise, like the norms, and not counted)."""
    geometry = GEOMETRY_FEATURES if cfg.decoder_geometry else 0
    return 2.0 * n_vis * (cfg.dim + geometry) * cfg.dec_dim


def _decoder_layers(cfg: ModelConfig, n_query: int, n_keys: int) -> float:
    return cfg.dec_layers * _transformer_block(
        cfg.dec_dim, DEC_MLP_RATIO * cfg.dec_dim, n_query, n_keys
    )


def lm_head_flops(cfg: ModelConfig) -> float:
    """LM head Linear(dec_dim, vocab) for one position."""
    return 2.0 * cfg.dec_dim * cfg.vocab_size


def decoder_prefill_flops(cfg: ModelConfig, n_prefix: int) -> float:
    """n_prefix tokens through all layers (full n_prefix x n_prefix attention counted, as the
    masked matmul really runs) plus the LM head on the last position."""
    return _decoder_layers(cfg, n_prefix, n_prefix) + lm_head_flops(cfg)


def decoder_step_flops(cfg: ModelConfig, n_ctx: int) -> float:
    """One new token through all layers attending to n_ctx keys (itself included) + LM head."""
    return _decoder_layers(cfg, 1, n_ctx) + lm_head_flops(cfg)


def decode_flops(cfg: ModelConfig, n_vis: int, n_generated: int) -> float:
    """Caption of n_generated tokens (eos included) from n_vis vision tokens, with the KV cache.

    projector + prefill(n_vis + 1 bos), which yields token 1, then one step per further token:
    the token fed at text position j (j = 1 .. n_generated - 1) attends to n_vis + j + 1 keys.
    """
    if n_vis < 0 or n_generated < 0:
        raise ValueError(f"n_vis and n_generated must be >= 0, got {n_vis}, {n_generated}")
    total = projector_flops(cfg, n_vis) + decoder_prefill_flops(cfg, n_vis + 1)
    for j in range(1, n_generated):
        total += decoder_step_flops(cfg, n_vis + j + 1)
    return total


def gesture_head_flops(cfg: ModelConfig, n_tokens: int = 0) -> float:
    """Gesture head (heads.py) over n_tokens fused tokens: projection K D C, splat onto the
    lattice cells K (C+1), then Linear(cells (C+1), HIDDEN) and Linear(HIDDEN, G)."""
    c, hidden = GESTURE_CHANNELS, GESTURE_HIDDEN
    cells = GESTURE_SPACE_CELLS ** 2 * cfg.temporal_window
    k = n_tokens
    macs = (k * cfg.dim * c + cells * k * (c + 1)
            + gesture_head_features(cfg.temporal_window) * hidden + hidden * cfg.num_gestures)
    return 2.0 * macs


# ------------------------------------------------------------------ the numpy decision stages
# What the analytical convention above leaves out because it is not a matmul: the per-frame
# decisions of the streaming engine, done in numpy. They are counted here as they are written
# in ops/ (1 FLOP per elementwise add, subtract, multiply, compare or square root; 2 per
# multiply-add in a matmul), from the array shapes really used, so a run-time counter
# (`StreamingEngine` with a counting backend) can charge each of them per frame.


def change_test_flops(n_tokens: int, dim: int, dc_tolerant: bool = False) -> float:
    """`ops.token_change` on (n, D): subtract, square, sum, sqrt. The DC-tolerant variant adds
    the channel-mean difference, its projection onto the (3, D) DC basis, a second norm and the
    tolerance test (`ops.token_change_dc_tolerant`)."""
    n, d = int(n_tokens), int(dim)
    plain = 3.0 * n * d + n
    if not dc_tolerant:
        return plain
    return plain + 3.0 * n + 2.0 * n * 3 * d + n * d + 3.0 * n * d + n + 3.0 * n + n


def patch_means_flops(image_size: int = IMAGE_SIZE) -> float:
    """`ops.patch_means`: area resize of the (S, S, 3) image to 14 x 14 (one add per pixel)."""
    return 3.0 * image_size * image_size


def frame_noise_flops(image_size: int = IMAGE_SIZE) -> float:
    """`ops.frame_noise`: the difference, its per-patch mean and squared deviation (about four
    operations per pixel and channel) and a partition of the 196 patch spreads."""
    return 4.0 * 3 * image_size * image_size


def router_feature_flops(n_tokens: int, gray_pixels: int) -> float:
    """`ops.frame_complexity_features`: change > threshold and its mean, clipped mean of the
    change (3 per token), and the Sobel edge density of the gray thumbnail: two 3 x 3 kernels
    (9 multiply-adds each), the magnitude (3) and the threshold test (1) per pixel."""
    return 3.0 * n_tokens + gray_pixels * (2 * 2 * 9 + 3 + 1)


def reuse_check_flops(n_current: int, n_previous: int, dim: int) -> float:
    """`ops.fused_set_movement`: the (K, K', D) squared-distance matrix (subtract, square, sum),
    the row minima, K square roots and the previous set's norms."""
    k, kp, d = int(n_current), int(n_previous), int(dim)
    return 3.0 * k * kp * d + k * kp + k + 3.0 * kp * d


def static_average_flops(t: int, n_tokens: int, dim: int) -> float:
    """`TemporalFusion.static_mask` and the averaging of static positions over a (T, N, D)
    window: the window mean, deviations and their norms, the mean's norm, and the average."""
    t, n, d = int(t), int(n_tokens), int(dim)
    return t * n * d + 3.0 * t * n * d + 3.0 * n * d + t * n * d


def beam_decode_flops(cfg: ModelConfig, n_vis: int, n_generated: int, beams: int) -> float:
    """Upper estimate of beam search: every step runs `beams` hypotheses, the prefill one.
    `decode_flops` is the beams == 1 case."""
    if beams <= 1:
        return decode_flops(cfg, n_vis, n_generated)
    greedy = decode_flops(cfg, n_vis, n_generated)
    prefill = projector_flops(cfg, n_vis) + decoder_prefill_flops(cfg, n_vis + 1)
    return prefill + beams * (greedy - prefill)
