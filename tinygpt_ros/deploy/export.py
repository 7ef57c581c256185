"""`tinygpt-ros export`: the ONNX graphs the onnxruntime engine (and TensorRT on a Jetson) runs.

One graph per piece whose shapes are static or simply dynamic; the data-dependent parts stay in
numpy in the engine (`ops/`): change detection, token selection, the router's hysteresis, the
STTF caches and references, and temporal fusion (its ToMe merge loop runs a data-dependent number
of times, so it is not a graph; its only weight, the time embedding, is saved as a .npy file).

Graphs (`graphs.GRAPHS` holds the I/O names; D dim, H heads, hd = D / H, L branch depth,
E dec_dim, V vocabulary, G gestures; leading dims named below are dynamic):
- `embed_frames`: frames (B,3,224,224) -> tokens (B,196,D);
  `embed_events`: hist (B,2,112,112) -> tokens (B,196,D).
- `encoder_b{i}` per encoder branch i: one gated step of the first L_i blocks.
  tokens (N,D) fresh embeddings, idx (n,) int64 rows to recompute, cache_k/cache_v (L,H,N,hd),
  cache_y (L,N,D) -> out (N,D) the branch output (exit norm), and the updated caches. The rows
  `idx` are recomputed, their queries attend to all N keys (fresh for `idx`, cached for the
  rest), the other rows keep their cached block outputs. With idx = all rows it is the dense
  pass (the engine passes zero caches then), so one graph serves refreshes and gated frames.
  The per-block *inputs* that `GatedEncoderCache` keeps are never read by the gated step, so
  they are not carried.
- `router`: features (B,F) -> logits (B,nb).
- `decoder_prefill`: projector + prefix: vis (B,K,D), vis_size (B,K), [vis_pos (B,K,3) when
  the decoder reads centroids, `cfg.decoder_geometry`], ids (B,T) int64 -> logits (B,V) for
  the next token, past_k/past_v (layers,B,H,K+T,E/H), key_bias (B,K+T).
- `decoder_step`: next_ids (B,) int64, position (1,) int64 (text position of next_ids), past_k,
  past_v, key_bias -> logits (B,V) and the caches grown by one position.
- `gesture_head`: vis (B,K,D), vis_size (B,K), vis_pos (B,K,3) -> logits (B,G).

Precisions: fp32 as exported; fp16 converted with onnxruntime.transformers' float16 converter
(onnx's own converter is not in onnx 1.23) with `keep_io_types=True`, so every graph's inputs
and outputs stay float32 and the engine code is the same for both. Files: `<model_dir>/onnx/
<precision>/<graph>.onnx`, the weights those graphs share, `<model_dir>/onnx/<precision>/
weights.bin` (ONNX external data, each distinct tensor stored once: `shared_weights.py`), and
`<model_dir>/onnx/fusion_time_embed.npy`, each recorded in the manifest (`weights.add_files`)
with sha256, opset, precision, its I/O, the export command and the sha256 of the `model.pt` it
came from (a retrained model makes the export stale). The check against torch runs on the
written files, so it covers the external-data references too.
"""

from __future__ import annotations

import io
import logging
import os
import shlex
import tempfile
import time
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from tinygpt_ros.deploy.graphs import (
    FUSION_FILE,
    MIN_OPSET,
    ONNX_DIR,
    PRECISIONS,
    WEIGHTS_KIND,
    WEIGHTS_NAME,
    graph_file,
    graph_names,
    graph_spec,
    weights_file,
)
from tinygpt_ros.deploy.shared_weights import share_initializers
from tinygpt_ros.model.tinygpt import TinyGPT
from tinygpt_ros.model.weights import MODEL_FILE, ModelLoadError, add_files, load_model_files
from tinygpt_ros.spec.config import NUM_TOKENS, ModelConfig

log = logging.getLogger(__name__)

# Largest |torch - onnxruntime| accepted when the export checks itself on its example inputs.
VERIFY_ATOL = {"fp32": 1e-4, "fp16": 5e-2}


# ------------------------------------------------------------------------------ wrappers


class _Embed(nn.Module):
    def __init__(self, model: TinyGPT, modality: str) -> None:
        super().__init__()
        self.encoder = model.encoder
        self.modality = modality

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        enc = self.encoder
        if self.modality == "frame":
            return enc._embed(enc.frame_embed, x, 0)
        return enc._embed(enc.event_embed, x, 1)


class _EncoderStep(nn.Module):
    """Gated step of one branch, the same ops in the same order as GatedEncoderCache._gated."""

    def __init__(self, model: TinyGPT, branch: int) -> None:
        super().__init__()
        self.encoder = model.encoder
        self.branch = branch
        self.depth = model.encoder.depth_of(branch)

    def forward(
        self,
        tokens: torch.Tensor,
        idx: torch.Tensor,
        cache_k: torch.Tensor,
        cache_v: torch.Tensor,
        cache_y: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        d = tokens.shape[1]
        rows = idx[:, None].expand(-1, d)  # (n, D) scatter index for (N, D) caches
        x = tokens.index_select(0, idx)
        ks, vs, ys = [], [], []
        for layer, blk in enumerate(self.encoder.blocks[: self.depth]):
            q, k, v = blk.attn.qkv_heads(blk.norm1(x)[None])  # (1, H, n, hd)
            heads_rows = idx[None, :, None].expand(k.shape[1], -1, k.shape[3])
            k_all = cache_k[layer].scatter(1, heads_rows, k[0])
            v_all = cache_v[layer].scatter(1, heads_rows, v[0])
            x = x + blk.attn.attend(q, k_all[None], v_all[None])[0]
            x = blk.mlp(x)
            ks.append(k_all)
            vs.append(v_all)
            ys.append(cache_y[layer].scatter(0, rows, x))
        out = self.encoder.exit_norms[self.branch](ys[-1])
        return out, torch.stack(ks), torch.stack(vs), torch.stack(ys)


class _Router(nn.Module):
    def __init__(self, model: TinyGPT) -> None:
        super().__init__()
        self.router = model.router

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.router(features)


class _Prefill(nn.Module):
    def __init__(self, model: TinyGPT) -> None:
        super().__init__()
        self.decoder = model.decoder

    def forward(self, vis: torch.Tensor, vis_size: torch.Tensor, *rest: torch.Tensor):
        """(vis, vis_size, ids), or (vis, vis_size, vis_pos, ids) for a decoder that reads
        the tokens' centroids (`graphs.graph_spec` orders the inputs alike)."""
        *pos, ids = rest
        logits, cache = self.decoder.prefill(vis, vis_size, ids, *pos)
        return logits, torch.stack(cache.k), torch.stack(cache.v), cache.key_bias


class _Step(nn.Module):
    """`TinyGPTDecoder.step` with the text position as a tensor input (not a traced constant)."""

    def __init__(self, model: TinyGPT) -> None:
        super().__init__()
        self.decoder = model.decoder

    def forward(self, next_ids, position, past_k, past_v, key_bias):
        dec = self.decoder
        x = dec.tok_emb(next_ids[:, None]) + dec.pos_emb.index_select(0, position)
        key_bias = torch.cat([key_bias, torch.zeros_like(key_bias[:, :1])], dim=1)
        bias = key_bias[:, None, :]
        ks, vs = [], []
        for layer, blk in enumerate(dec.blocks):
            x, k, v = blk(x, bias, (past_k[layer], past_v[layer]))
            ks.append(k)
            vs.append(v)
        logits = dec.lm_head(dec.ln_f(x[:, -1]))
        return logits, torch.stack(ks), torch.stack(vs), key_bias


class _Gesture(nn.Module):
    def __init__(self, model: TinyGPT) -> None:
        super().__init__()
        self.head = model.gesture_head

    def forward(self, vis: torch.Tensor, vis_size: torch.Tensor,
                vis_pos: torch.Tensor) -> torch.Tensor:
        return self.head(vis, vis_size, vis_pos)


# ------------------------------------------------------------------------------ examples


def _example_inputs(model: TinyGPT, name: str, gen: torch.Generator) -> tuple[torch.Tensor, ...]:
    """Inputs to trace `name` with; sizes differ from the dynamic dims' usual values on purpose."""
    cfg = model.cfg
    d, h = cfg.dim, cfg.heads
    hd = d // h
    r = lambda *s: torch.randn(*s, generator=gen)  # noqa: E731
    if name == "embed_frames":
        return (r(2, 3, 224, 224),)
    if name == "embed_events":
        return (torch.rand(2, 2, 112, 112, generator=gen),)
    if name.startswith("encoder_b"):
        depth = model.encoder.depth_of(int(name[len("encoder_b"):]))
        n = NUM_TOKENS
        idx = torch.randperm(n, generator=gen)[:23].sort().values
        return (r(n, d), idx, r(depth, h, n, hd), r(depth, h, n, hd), r(depth, n, d))
    if name == "router":
        return (r(2, cfg.num_router_features),)
    e, layers, dh = cfg.dec_dim, cfg.dec_layers, cfg.dec_heads
    if name == "decoder_prefill":
        size = torch.tensor([[1.0, 2.0, 0.0, 3.0, 1.0, 1.0, 4.0]]).repeat(2, 1)
        pos = (torch.rand(2, 7, 3, generator=gen),) if cfg.decoder_geometry else ()
        return (r(2, 7, d), size, *pos, torch.ones(2, 1, dtype=torch.long))
    if name == "decoder_step":
        s = 9
        bias = torch.zeros(2, s)
        bias[:, 2] = float("-inf")
        return (torch.tensor([4, 5]), torch.tensor([2]), r(layers, 2, dh, s, e // dh),
                r(layers, 2, dh, s, e // dh), bias)
    if name == "gesture_head":
        return (r(2, 7, d), torch.tensor([[1.0, 2.0, 0.0, 3.0, 1.0, 1.0, 4.0]]).repeat(2, 1),
                torch.rand(2, 7, 3, generator=gen))
    raise ValueError(f"unknown graph {name!r}")


def _module(model: TinyGPT, name: str) -> nn.Module:
    if name == "embed_frames":
        return _Embed(model, "frame")
    if name == "embed_events":
        return _Embed(model, "events")
    if name.startswith("encoder_b"):
        return _EncoderStep(model, int(name[len("encoder_b"):]))
    return {"router": _Router, "decoder_prefill": _Prefill, "decoder_step": _Step,
            "gesture_head": _Gesture}[name](model)


# ------------------------------------------------------------------------------ export


def _to_onnx(module: nn.Module, args: tuple[torch.Tensor, ...], name: str, opset: int,
             cfg: ModelConfig):
    import onnx

    spec = graph_spec(name, cfg)
    buf = io.BytesIO()
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # tracer warnings about shape asserts in the modules
        torch.onnx.export(
            module.eval(), args, buf, dynamo=False, opset_version=opset,
            input_names=list(spec["inputs"]), output_names=list(spec["outputs"]),
            dynamic_axes={**spec["inputs"], **spec["outputs"]}, do_constant_folding=True,
        )
    proto = onnx.load_from_string(buf.getvalue())
    proto.doc_string = f"tinygpt_ros {name}"
    return proto


def _to_fp16(proto: Any) -> Any:
    from onnxruntime.transformers.float16 import convert_float_to_float16
    from onnxruntime.transformers.onnx_model import OnnxModel

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        half = convert_float_to_float16(proto, keep_io_types=True, disable_shape_infer=False)
    model = OnnxModel(half)
    model.topological_sort(is_deterministic=True)  # the I/O casts are appended at the end
    return model.model


def _verify(path: Path, module: nn.Module, args: tuple[torch.Tensor, ...], name: str,
            precision: str) -> float:
    """Run the written graph (and its shared weights) in onnxruntime (CPU) on the example
    inputs; max |diff| to torch."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.log_severity_level = 3
    sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    feeds = {i.name: a.numpy() for i, a in zip(sess.get_inputs(), args, strict=True)}
    got = sess.run(None, feeds)
    with torch.no_grad():
        ref = module(*args)
    ref = ref if isinstance(ref, tuple) else (ref,)
    worst = 0.0
    for a, b in zip(ref, got, strict=True):
        a = a.numpy()
        finite = np.isfinite(a)
        if not np.array_equal(finite, np.isfinite(b)):
            raise RuntimeError(f"export check of {name} ({precision}): inf/NaN pattern differs")
        if finite.any():
            worst = max(worst, float(np.abs(a[finite] - b[finite]).max()))
    if worst > VERIFY_ATOL[precision]:
        raise RuntimeError(f"export check of {name} ({precision}): onnxruntime differs from torch "
                           f"by {worst:.3g} > {VERIFY_ATOL[precision]}")
    return worst


def _save(data: bytes, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _write_precision(d: Path, precision: str, cfg: ModelConfig, protos: dict[str, Any],
                     traced: dict[str, tuple[nn.Module, tuple[torch.Tensor, ...]]],
                     common: dict[str, Any], verify: bool) -> dict[str, dict[str, Any]]:
    """Write one precision's graphs and their shared weights file, check each written graph
    against torch; returns their manifest entries."""
    shared = share_initializers(protos, WEIGHTS_NAME)
    weights_rel = weights_file(precision)
    _save(shared.blob, d / weights_rel)
    entries: dict[str, dict[str, Any]] = {
        weights_rel: {**common, "kind": WEIGHTS_KIND, "precision": precision,
                      "graphs": list(protos), "tensors": shared.tensors,
                      "referenced_bytes": shared.referenced_bytes,
                      "stored_bytes": shared.stored_bytes,
                      "deduplicated_bytes": shared.deduplicated_bytes},
    }
    for name, proto in protos.items():
        rel = graph_file(name, precision)
        _save(proto.SerializeToString(), d / rel)
        module, args = traced[name]
        err = _verify(d / rel, module, args, name, precision) if verify else float("nan")
        spec = graph_spec(name, cfg)
        entries[rel] = {
            **common, "kind": "onnx", "graph": name, "precision": precision,
            "io_dtype": "float32", "inputs": list(spec["inputs"]),
            "outputs": list(spec["outputs"]), "verify_max_abs_diff": err,
            "external_data": weights_rel, **shared.per_graph[name],
        }
        log.info(f"{rel} ({precision}, opset {common['opset']}, max |ort - torch| {err:.2g})")
    return entries


def export_model(
    model_dir: str | os.PathLike[str],
    opset: int = 17,
    precisions: Sequence[str] = ("fp32", "fp16"),
    command: str | None = None,
    verify: bool = True,
) -> dict[str, dict[str, Any]]:
    """Export every graph of `model_dir` in each precision and record the files in its manifest.

    Returns the manifest entries written (relative file name -> entry). Raises ModelLoadError for
    a missing/corrupt model, ValueError for a bad opset or precision.
    """
    import onnx
    import onnxruntime as ort

    if isinstance(opset, bool) or not isinstance(opset, int) or opset < MIN_OPSET:
        raise ValueError(f"opset must be an int >= {MIN_OPSET} (LayerNormalization), got {opset!r}")
    precisions = tuple(dict.fromkeys(precisions))
    bad = [p for p in precisions if p not in PRECISIONS]
    if bad or not precisions:
        raise ValueError(f"precision must be some of {PRECISIONS}, got {list(precisions)}")
    loaded = load_model_files(model_dir)
    model = TinyGPT(loaded.config)
    try:
        model.load_state_dict(loaded.state_dict)
    except (RuntimeError, KeyError) as exc:
        raise ModelLoadError(f"model in {model_dir}: weights do not fit the manifest's config "
                             f"({exc})") from exc
    model.eval()
    d = Path(model_dir)
    command = command or shlex.join(["tinygpt-ros", "export", "--model", str(d), "--opset",
                                     str(opset), "--precision", *precisions])
    common = {
        "opset": opset,
        "export_command": command,
        "source_sha256": loaded.manifest["files"][MODEL_FILE]["sha256"],
        "onnx": onnx.__version__,
        "onnxruntime": ort.__version__,
        "torch": torch.__version__,
    }
    entries: dict[str, dict[str, Any]] = {}
    gen = torch.Generator().manual_seed(0)
    t0 = time.perf_counter()
    traced: dict[str, tuple[nn.Module, tuple[torch.Tensor, ...]]] = {}
    protos: dict[str, dict[str, Any]] = {p: {} for p in precisions}
    for name in graph_names(loaded.config):
        module = _module(model, name).eval()
        args = _example_inputs(model, name, gen)
        traced[name] = (module, args)
        base = _to_onnx(module, args, name, opset, loaded.config)
        for precision in precisions:  # fp16 converts `base` before it loses its weights below
            proto = base if precision == "fp32" else _to_fp16(base)
            onnx.checker.check_model(proto, full_check=True)
            protos[precision][name] = proto
    for precision in precisions:
        entries.update(_write_precision(d, precision, loaded.config, protos[precision], traced,
                                        common, verify))
        log.info(f"{weights_file(precision)}: "
            f"{entries[weights_file(precision)]['deduplicated_bytes']} duplicate weight bytes "
            f"not stored")
    time_embed = model.fusion.time_embed.detach().cpu().numpy().astype(np.float32)
    fp = d / FUSION_FILE
    fp.parent.mkdir(parents=True, exist_ok=True)
    with open(fp, "wb") as f:
        np.save(f, time_embed, allow_pickle=False)
    entries[FUSION_FILE] = {**common, "kind": "npy", "graph": "fusion_time_embed",
                            "precision": "fp32", "shape": list(time_embed.shape)}
    add_files(d, entries)
    log.info(f"{len(entries)} files under {d / ONNX_DIR} in {time.perf_counter() - t0:.1f}s")
    return entries
