"""The ONNX graph contract, in one place: which graphs a model has, their files, their inputs
and outputs with dynamic axes, and the TensorRT shape ranges. `export.py` writes graphs to
this contract, `onnx_engine.py` feeds them, `providers.py` builds TensorRT profiles from it."""

from __future__ import annotations

from tinygpt_ros.spec.config import NUM_TOKENS, ModelConfig

ONNX_DIR = "onnx"
PRECISIONS = ("fp32", "fp16")
MIN_OPSET = 17  # LayerNormalization
FUSION_FILE = f"{ONNX_DIR}/fusion_time_embed.npy"
# The external-data file each precision's graphs share (`shared_weights.py`), next to them.
WEIGHTS_NAME = "weights.bin"
WEIGHTS_KIND = "onnx_weights"  # its manifest entry's "kind" (graphs are "onnx")

# Inputs and outputs of every graph, in order, with their dynamic axes (export.py writes them,
# the engine feeds them). Encoder graphs `encoder_b{i}` share the "encoder" entry.
GRAPHS: dict[str, dict[str, dict[str, dict[int, str]]]] = {
    "embed_frames": {"inputs": {"frames": {0: "batch"}}, "outputs": {"tokens": {0: "batch"}}},
    "embed_events": {"inputs": {"hist": {0: "batch"}}, "outputs": {"tokens": {0: "batch"}}},
    "encoder": {
        "inputs": {
            "tokens": {0: "n_tokens"}, "idx": {0: "n_selected"},
            "cache_k": {2: "n_tokens"}, "cache_v": {2: "n_tokens"}, "cache_y": {1: "n_tokens"},
        },
        "outputs": {
            "out": {0: "n_tokens"}, "cache_k_out": {2: "n_tokens"},
            "cache_v_out": {2: "n_tokens"}, "cache_y_out": {1: "n_tokens"},
        },
    },
    "router": {"inputs": {"features": {0: "batch"}}, "outputs": {"logits": {0: "batch"}}},
    "decoder_prefill": {
        "inputs": {"vis": {0: "batch", 1: "n_vis"}, "vis_size": {0: "batch", 1: "n_vis"},
                   "ids": {0: "batch", 1: "n_text"}},
        "outputs": {"logits": {0: "batch"}, "past_k": {1: "batch", 3: "n_past"},
                    "past_v": {1: "batch", 3: "n_past"}, "key_bias": {0: "batch", 1: "n_past"}},
    },
    "decoder_step": {
        "inputs": {"next_ids": {0: "batch"}, "position": {},
                   "past_k": {1: "batch", 3: "n_past"}, "past_v": {1: "batch", 3: "n_past"},
                   "key_bias": {0: "batch", 1: "n_past"}},
        "outputs": {"logits": {0: "batch"}, "past_k_out": {1: "batch", 3: "n_next"},
                    "past_v_out": {1: "batch", 3: "n_next"},
                    "key_bias_out": {0: "batch", 1: "n_next"}},
    },
    "gesture_head": {
        "inputs": {"vis": {0: "batch", 1: "n_vis"}, "vis_size": {0: "batch", 1: "n_vis"},
                   "vis_pos": {0: "batch", 1: "n_vis"}},
        "outputs": {"logits": {0: "batch"}},
    },
}


def graph_names(cfg: ModelConfig) -> list[str]:
    """Every graph a model of this config needs (one encoder graph per branch)."""
    enc = [f"encoder_b{i}" for i in range(len(cfg.branch_depths))]
    return ["embed_frames", "embed_events", *enc, "router", "decoder_prefill", "decoder_step",
            "gesture_head"]


def graph_spec(name: str, cfg: ModelConfig) -> dict[str, dict[str, dict[int, str]]]:
    """Inputs and outputs of graph `name` for a model of `cfg`: a decoder that reads token
    centroids (`cfg.decoder_geometry`) takes them in its prefill, as `vis_pos` before `ids`."""
    spec = GRAPHS["encoder" if name.startswith("encoder_b") else name]
    if name == "decoder_prefill" and cfg.decoder_geometry:
        inputs = dict(spec["inputs"])
        ids = inputs.pop("ids")
        spec = {**spec, "inputs": {**inputs, "vis_pos": {0: "batch", 1: "n_vis"}, "ids": ids}}
    return spec


def graph_file(name: str, precision: str) -> str:
    """Path of a graph relative to the model directory (the manifest's file name)."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    return f"{ONNX_DIR}/{precision}/{name}.onnx"


def weights_file(precision: str) -> str:
    """Path of the weights file the graphs of `precision` share, relative to the model dir."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    return f"{ONNX_DIR}/{precision}/{WEIGHTS_NAME}"


def trt_profile_shapes(cfg: ModelConfig, name: str) -> dict[str, tuple[tuple[int, ...], ...]]:
    """(min, opt, max) shape of each dynamic input, so TensorRT builds one engine per graph for
    every shape the engine can feed it (and never rebuilds when a new size shows up)."""
    d, h = cfg.dim, cfg.heads
    n = NUM_TOKENS
    k_max = cfg.temporal_window * NUM_TOKENS  # dense fusion path hands over every token
    s_max = k_max + cfg.max_caption_len + 2
    beams = 8
    e_h = cfg.dec_dim // cfg.dec_heads
    lay, dh = cfg.dec_layers, cfg.dec_heads
    if name.startswith("encoder_b"):
        depth = cfg.branch_depths[int(name[len("encoder_b"):])]
        fixed = {"tokens": (n, d), "cache_k": (depth, h, n, d // h),
                 "cache_v": (depth, h, n, d // h), "cache_y": (depth, n, d)}
        shapes = {k: (v, v, v) for k, v in fixed.items()}
        shapes["idx"] = ((1,), (16,), (n,))
        return shapes
    if name == "decoder_prefill":
        shapes = {"vis": ((1, 1, d), (1, 31, d), (beams, k_max, d)),
                  "vis_size": ((1, 1), (1, 31), (beams, k_max)),
                  "ids": ((1, 1), (1, 1), (beams, cfg.max_caption_len + 2))}
        if cfg.decoder_geometry:
            shapes["vis_pos"] = ((1, 1, 3), (1, 31, 3), (beams, k_max, 3))
        return shapes
    if name == "decoder_step":
        past = ((lay, 1, dh, 2, e_h), (lay, 1, dh, 40, e_h), (lay, beams, dh, s_max, e_h))
        return {"next_ids": ((1,), (1,), (beams,)), "past_k": past, "past_v": past,
                "key_bias": ((1, 2), (1, 40), (beams, s_max))}
    if name == "gesture_head":
        return {"vis": ((1, 1, d), (1, 31, d), (1, k_max, d)),
                "vis_size": ((1, 1), (1, 31), (1, k_max)),
                "vis_pos": ((1, 1, 3), (1, 31, 3), (1, k_max, 3))}
    batch = {"embed_frames": ("frames", (3, 224, 224)), "embed_events": ("hist", (2, 112, 112)),
             "router": ("features", (cfg.num_router_features,))}[name]
    inp, rest = batch
    return {inp: ((1, *rest), (1, *rest), (4, *rest))}


# ---------------------------------------------------------------------------- kernels
