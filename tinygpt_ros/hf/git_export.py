"""ONNX export of a GIT checkpoint for the onnxruntime backend (`git_onnx.GitOnnxKernels`).

Graphs (D vision width, E text width, H heads, hd head width, L branch depth, N = 197 rows:
CLS + 196 patches; dynamic dims: n, K, P):
- `git_embed`: pixels (1,3,224,224) -> tokens (196,D): patch conv + position + pre_layrnorm.
- `git_embed_g{g}` per coarse grid g (7): the pooled frame (1,3,112,112) -> (g*g,D), with the
  position embedding interpolated (`vision.TowerFront.grid_pos`).
- `git_vision_b{i}` per ANC branch (N = 1 + its grid's tokens: 197, or 50 on the 7 x 7
  grid): the gated step of `vision.GatedTower` in the contract of
  `ops.StackedEncoderCache`: tokens (N,D), idx (n,) int64, cache_k/cache_v (L,H,N,hd),
  cache_y (L,N,D) -> projected (N,E) (post_layernorm + visual projection of every row), and the
  updated caches. idx = all rows with zero caches is the dense pass.
- `git_prefill`: vis (K,E), log_size (K,), ids (k,) int64, positions (k,) int64 -> logits
  (k,V), past_k/past_v (layers,Ht,K+k,hdt), key_bias (K+k,): the first decoding pass, the
  visual prefix (image rows attend to image rows, bias log(size)) with the first k text rows
  (bos, then any draft), as GIT's own generate() runs image and bos together.
- `git_step`: ids (k,) int64, positions (k,) int64, past_k/past_v (layers,Ht,P,hdt), key_bias
  (P,) -> logits (k,V), the caches and the bias grown by k positions. The k text rows attend
  to the cache and causally to each other: k = 1 is a decoding step, k > 1 checks a draft
  (`ops.drafting`).

Files go to `<checkpoint>/tinygpt_onnx/` with `export.json` (depths, grids, the weights file's
size so a replaced checkpoint is noticed). Every graph is checked against torch on the export's
example inputs before it is written.
"""

from __future__ import annotations

import io
import json
import logging
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from tinygpt_ros.hf.engine import load_git
from tinygpt_ros.hf.git_decoder import TextPrefill, TextStep, split_heads
from tinygpt_ros.hf.git_onnx import (
    CLS_FILE,
    EXPORT_DIR,
    EXPORT_FILE,
    EXPORT_FORMAT,
    weights_size,
)
from tinygpt_ros.hf.vision import TowerFront, tower_branches
from tinygpt_ros.spec.config import GRID

log = logging.getLogger(__name__)
VERIFY_ATOL = 1e-3
IO: dict[str, tuple[dict[str, dict[int, str]], dict[str, dict[int, str]]]] = {
    "git_embed": ({"pixels": {}}, {"tokens": {}}),
    "git_vision": ({"tokens": {}, "idx": {0: "n"}, "cache_k": {}, "cache_v": {}, "cache_y": {}},
                   {"projected": {}, "out_k": {}, "out_v": {}, "out_y": {}}),
    "git_prefill": ({"vis": {0: "K"}, "log_size": {0: "K"}, "ids": {0: "k"},
                     "position": {0: "k"}},
                    {"logits": {0: "k"}, "past_k": {2: "Kk"}, "past_v": {2: "Kk"},
                     "key_bias": {0: "Kk"}}),
    "git_step": ({"ids": {0: "k"}, "position": {0: "k"}, "past_k": {2: "P"},
                  "past_v": {2: "P"}, "key_bias": {0: "P"}},
                 {"logits": {0: "k"}, "out_k": {2: "Pk"}, "out_v": {2: "Pk"},
                  "out_bias": {0: "Pk"}}),
}


class _Embed(nn.Module):
    """Patch conv + `pos` (the grid's position table) + pre_layrnorm."""

    def __init__(self, vision: nn.Module, pos: torch.Tensor) -> None:
        super().__init__()
        self.vision = vision
        self.register_buffer("pos", pos.detach().clone())

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        emb = self.vision.embeddings
        patches = emb.patch_embedding(pixels).flatten(2).transpose(1, 2)[0]
        return self.vision.pre_layrnorm(patches + self.pos)


class _VisionStep(nn.Module):
    """`GatedTower._gated` as scatters, then post_layernorm + projection of every row."""

    def __init__(self, model: nn.Module, depth: int) -> None:
        super().__init__()
        self.vision = model.git.image_encoder.vision_model
        self.project = model.git.visual_projection
        self.depth = depth
        self.heads = model.config.vision_config.num_attention_heads

    def forward(self, tokens, idx, cache_k, cache_v, cache_y):
        d = tokens.shape[1]
        rows = idx[:, None].expand(-1, d)
        x = tokens.index_select(0, idx)
        ks, vs, ys = [], [], []
        for i, layer in enumerate(self.vision.encoder.layers[: self.depth]):
            h = layer.layer_norm1(x)
            att = layer.self_attn
            q, k, v = (split_heads(m(h), self.heads) for m in (att.q_proj, att.k_proj, att.v_proj))
            hr = idx[None, :, None].expand(self.heads, -1, k.shape[2])
            k_all = cache_k[i].scatter(1, hr, k)
            v_all = cache_v[i].scatter(1, hr, v)
            w = torch.softmax((q @ k_all.transpose(-2, -1)) * (q.shape[-1] ** -0.5), dim=-1)
            x = x + att.out_proj((w @ v_all).transpose(0, 1).reshape(x.shape[0], -1))
            x = x + layer.mlp(layer.layer_norm2(x))
            ks.append(k_all)
            vs.append(v_all)
            ys.append(cache_y[i].scatter(0, rows, x))
        projected = self.project(self.vision.post_layernorm(ys[-1]))
        return projected, torch.stack(ks), torch.stack(vs), torch.stack(ys)


def _examples(model: nn.Module, name: str, depth: int = 1,
              grid: int = GRID) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(0)
    vc, c = model.config.vision_config, model.config
    d, hv = vc.hidden_size, vc.num_attention_heads
    e, ht = c.hidden_size, c.num_attention_heads
    n = 1 + grid * grid
    if name == "git_embed":
        size = vc.image_size * grid // GRID
        return (torch.randn(1, 3, size, size, generator=g),)
    if name == "git_vision":
        idx = torch.tensor([0, 3, 7, n // 2, n - 1])
        return (torch.randn(n, d, generator=g), idx,
                torch.randn(depth, hv, n, d // hv, generator=g),
                torch.randn(depth, hv, n, d // hv, generator=g),
                torch.randn(depth, n, d, generator=g))
    if name == "git_prefill":
        return (torch.randn(12, e, generator=g), torch.log(torch.rand(12, generator=g) * 3 + 1),
                torch.tensor([3, 7, 9]), torch.tensor([0, 1, 2]))
    layers, p = c.num_hidden_layers, 14
    return (torch.tensor([5, 9, 4]), torch.tensor([2, 3, 4]),
            torch.randn(layers, ht, p, e // ht, generator=g),
            torch.randn(layers, ht, p, e // ht, generator=g), torch.rand(p, generator=g))


def _export(module: nn.Module, args: tuple[torch.Tensor, ...], kind: str, path: Path,
            opset: int) -> float:
    import onnx
    import onnxruntime as ort

    inputs, outputs = IO[kind]
    buf = io.BytesIO()
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(module.eval(), args, buf, dynamo=False, opset_version=opset,
                          input_names=list(inputs), output_names=list(outputs),
                          dynamic_axes={k: v for k, v in {**inputs, **outputs}.items() if v},
                          do_constant_folding=True)
    proto = onnx.load_from_string(buf.getvalue())
    sess = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    got = sess.run(None, {i.name: a.numpy() for i, a in zip(sess.get_inputs(), args,
                                                              strict=True)})
    with torch.no_grad():
        ref = module(*args)
    ref = ref if isinstance(ref, tuple) else (ref,)
    worst = max(float(np.abs(a.numpy() - b).max()) for a, b in zip(ref, got, strict=True))
    if worst > VERIFY_ATOL:
        raise RuntimeError(f"export of {path.name}: onnxruntime differs from torch by "
                           f"{worst:.3g} > {VERIFY_ATOL}")
    path.write_bytes(proto.SerializeToString())
    return worst


def export_git(model_dir: str | Path, opset: int = 17) -> dict[str, Any]:
    """Export every graph of a local GIT checkpoint into `<model_dir>/tinygpt_onnx/`."""
    model, _, _ = load_git(model_dir)
    out = Path(model_dir) / EXPORT_DIR
    out.mkdir(exist_ok=True)
    grids, depths = tower_branches(model.config.vision_config.num_hidden_layers)
    vision = model.git.image_encoder.vision_model
    front = TowerFront(vision, torch.device("cpu"))
    graphs: dict[str, float] = {}
    jobs: list[tuple[str, str, nn.Module, tuple[torch.Tensor, ...]]] = [
        ("git_embed", "git_embed", _Embed(vision, front.grid_pos(GRID)),
         _examples(model, "git_embed"))]
    for grid in sorted(set(grids) - {GRID}):
        jobs.append((f"git_embed_g{grid}", "git_embed", _Embed(vision, front.grid_pos(grid)),
                     _examples(model, "git_embed", grid=grid)))
    for i, (grid, depth) in enumerate(zip(grids, depths, strict=True)):
        jobs.append((f"git_vision_b{i}", "git_vision", _VisionStep(model, depth),
                     _examples(model, "git_vision", depth, grid)))
    jobs += [("git_prefill", "git_prefill", TextPrefill(model),
              _examples(model, "git_prefill")),
             ("git_step", "git_step", TextStep(model), _examples(model, "git_step"))]
    for name, kind, module, args in jobs:
        graphs[name] = _export(module, args, kind, out / f"{name}.onnx", opset)
        log.info("exported %s (max |onnxruntime - torch| %.2g)", name, graphs[name])
    with torch.no_grad():
        emb = vision.embeddings
        cls = vision.pre_layrnorm(emb.class_embedding + emb.position_embedding.weight[0])
    np.save(out / CLS_FILE, cls.numpy().astype(np.float32))
    info = {"format": EXPORT_FORMAT, "family": "git", "branch_depths": list(depths),
            "branch_grids": list(grids),
            "opset": opset, "weights_bytes": weights_size(Path(model_dir)),
            "verify_max_abs_diff": graphs}
    (out / EXPORT_FILE).write_text(json.dumps(info, indent=1) + "\n")
    return info
