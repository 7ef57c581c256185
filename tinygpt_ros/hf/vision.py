"""STTF gated token reuse inside a pretrained CLIP-style vision tower (GIT's image encoder,
LLaVA's CLIP or SigLIP tower): one implementation for every family.

A CLIP ViT layer is pre-LN: x + out_proj(attn(layer_norm1(x))), then x + fc2(act(fc1(
layer_norm2(x)))). `GatedTower` runs those layers with the pretrained modules' own weights
(no copy, no retraining) in two ways:

- dense: every token through the first `depth` layers, caching each layer's keys, values and
  outputs (the reference: equals the tower's own forward within float tolerance);
- gated: only the selected rows go through LN / Q,K,V / MLP; their queries attend to the keys
  and values of all tokens (fresh for the selected rows, cached for the others) and every other
  row keeps its cached output, as `model.encoder.GatedEncoderCache` does for TinyGPT.

ANC branches (`tower_branches`) share every weight. Two kinds, as a pretrained tower can run
without retraining: depth truncation (stop after `depths[i]` layers; GIT then applies the
tower's final norm, `post_layernorm`) and a coarser token grid (the frame pooled 2 x, 7 x 7
patches, the position embedding interpolated as the family's own `interpolate_pos_encoding`
does: the tower at half the resolution, a quarter of the tokens).

`TowerFront` is the layer-0 input per token (patch conv + position embedding, CLIP's
`pre_layrnorm`), so it can run before the change test; a CLIP CLS row's input is constant.
"""

from __future__ import annotations

import torch
from torch import nn

from tinygpt_ros.spec.config import GRID, NUM_TOKENS

COARSE_GRID = 7  # the cheap branch's token grid: 49 tokens, the frame pooled 2 x


def _heads(x: torch.Tensor, heads: int) -> torch.Tensor:
    """(N, D) -> (H, N, D / H)."""
    n, d = x.shape
    return x.view(n, heads, d // heads).transpose(0, 1)


class GatedTower:
    """Per-stream gated cache over `layers` (CLIP encoder layers: layer_norm1, self_attn with
    q/k/v/out_proj, layer_norm2, mlp). Inference only.

    `run(tokens, selected, depth)` with tokens (N, D) the tower's layer-0 input; dense when
    `selected` is None or all True, the cache is empty, N changed, or `depth` is deeper than
    what is cached. Returns the last run layer's output (N, D), before the final norm.
    """

    def __init__(self, layers: nn.ModuleList, heads: int) -> None:
        self.layers = layers
        self.heads = heads
        self.reset()

    def reset(self) -> None:
        self.keys: list[torch.Tensor] = []
        self.values: list[torch.Tensor] = []
        self.outputs: list[torch.Tensor] = []
        self.n_recomputed = 0
        self.last_dense = False

    @property
    def depth(self) -> int:
        return len(self.outputs)

    def _qkv(self, layer: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        h = layer.layer_norm1(x)
        att = layer.self_attn
        return (_heads(att.q_proj(h), self.heads), _heads(att.k_proj(h), self.heads),
                _heads(att.v_proj(h), self.heads))

    def _finish(self, layer: nn.Module, x: torch.Tensor, q: torch.Tensor, k: torch.Tensor,
                v: torch.Tensor) -> torch.Tensor:
        """Residual attention of queries q (H, n, hd) over keys/values (H, N, hd), then MLP."""
        scale = q.shape[-1] ** -0.5
        attn = torch.softmax((q @ k.transpose(-2, -1)) * scale, dim=-1)
        ctx = (attn @ v).transpose(0, 1).reshape(x.shape[0], -1)
        x = x + layer.self_attn.out_proj(ctx)
        return x + layer.mlp(layer.layer_norm2(x))

    @torch.no_grad()
    def run(self, tokens: torch.Tensor, selected: torch.Tensor | None, depth: int) -> torch.Tensor:
        if not 1 <= depth <= len(self.layers):
            raise ValueError(f"depth must be in [1, {len(self.layers)}], got {depth}")
        n = tokens.shape[0]
        if selected is not None and (selected.shape != (n,) or selected.dtype != torch.bool):
            raise ValueError(f"selected must be a ({n},) bool tensor, got "
                             f"{tuple(selected.shape)} {selected.dtype}")
        dense = (selected is None or bool(selected.all()) or not self.outputs
                 or depth > self.depth or self.outputs[0].shape[0] != n)
        if dense:
            return self._dense(tokens, depth)
        return self._gated(tokens, selected, depth)

    def _dense(self, tokens: torch.Tensor, depth: int) -> torch.Tensor:
        self.reset()
        x = tokens
        for layer in self.layers[:depth]:
            q, k, v = self._qkv(layer, x)
            x = self._finish(layer, x, q, k, v)
            self.keys.append(k)
            self.values.append(v)
            self.outputs.append(x)
        self.n_recomputed, self.last_dense = tokens.shape[0], True
        return x

    def _gated(self, tokens: torch.Tensor, selected: torch.Tensor, depth: int) -> torch.Tensor:
        """Selected rows through the first `depth` cached layers (the cache must hold them)."""
        del self.keys[depth:], self.values[depth:], self.outputs[depth:]
        idx = selected.nonzero().squeeze(1)
        x = tokens[idx]
        for i, layer in enumerate(self.layers[:depth]):
            q, k, v = self._qkv(layer, x)
            self.keys[i][:, idx] = k
            self.values[i][:, idx] = v
            x = self._finish(layer, x, q, self.keys[i], self.values[i])
            self.outputs[i][idx] = x
        self.n_recomputed, self.last_dense = int(idx.numel()), False
        return self.outputs[depth - 1]

class TowerFront:
    """Layer-0 tokens of a CLIP (`CLIPVisionTransformer`: CLS + `pre_layrnorm`) or SigLIP
    (`SiglipVisionTransformer`: no CLS, no pre-norm) vision transformer, with its weights."""

    def __init__(self, vision_model: nn.Module, device: torch.device) -> None:
        emb = vision_model.embeddings
        self.patch_embedding = emb.patch_embedding
        self.pre_norm = getattr(vision_model, "pre_layrnorm", None) or nn.Identity()
        pos = emb.position_embedding.weight
        self.has_cls = hasattr(emb, "class_embedding")
        self.n_cls = 1 if self.has_cls else 0
        if pos.shape[0] != self.n_cls + NUM_TOKENS:
            raise ValueError(f"tower has {pos.shape[0]} position embeddings; the engine "
                             f"streams {self.n_cls} + {NUM_TOKENS} tokens")
        self._grid_pos = {GRID: pos[self.n_cls:]}
        with torch.no_grad():
            self.cls_input = (self.pre_norm(emb.class_embedding + pos[0])[None].to(device)
                              if self.has_cls else None)  # (1, D) or None

    @torch.no_grad()
    def grid_pos(self, grid: int) -> torch.Tensor:
        """(grid * grid, D) patch position embedding: the pretrained 14 x 14 table, or its
        bicubic interpolation (align_corners False) as CLIP's and SigLIP's
        `interpolate_pos_encoding` make it, computed once per grid."""
        if grid not in self._grid_pos:
            table = self._grid_pos[GRID]
            d = table.shape[-1]
            img = table.reshape(1, GRID, GRID, d).permute(0, 3, 1, 2)
            img = nn.functional.interpolate(img, size=(grid, grid), mode="bicubic",
                                            align_corners=False)
            self._grid_pos[grid] = img.permute(0, 2, 3, 1).reshape(grid * grid, d)
        return self._grid_pos[grid]

    @torch.no_grad()
    def patches(self, pixels: torch.Tensor, grid: int = GRID) -> torch.Tensor:
        """(3, S, S) pixel values -> (196, D) layer-0 patch tokens; a coarse `grid` takes the
        frame pooled to grid patches per side (`ops.pool_pixels`) -> (grid * grid, D)."""
        x = self.patch_embedding(pixels[None].to(self.patch_embedding.weight.dtype))
        x = x.flatten(2).transpose(1, 2)[0]
        if x.shape[0] != grid * grid:
            raise ValueError(f"{tuple(pixels.shape)} pixels make {x.shape[0]} patches, not a "
                             f"{grid}x{grid} grid")
        return self.pre_norm(x + self.grid_pos(grid))

    @torch.no_grad()
    def run(self, tower: GatedTower, tokens: torch.Tensor, selected: torch.Tensor | None,
            depth: int) -> tuple[torch.Tensor, int]:
        """(n_cls + n, D) output of `tower` at `depth` for (n, D) patch tokens (the CLS
        row, if any, first and always recomputed) and the patch rows really recomputed."""
        n_patches = tokens.shape[0]
        sel = selected
        if self.cls_input is not None:
            tokens = torch.cat([self.cls_input, tokens])
            if selected is not None:
                sel = torch.cat([selected.new_ones(1), selected])
        out = tower.run(tokens, sel, depth)
        n = n_patches if tower.last_dense else tower.n_recomputed - self.n_cls
        return out, n


def tower_branches(num_layers: int) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """(grids, depths) of the ANC branches of a tower of `num_layers` layers, cheapest
    first: small = the 7 x 7 grid at full depth (about a quarter of the full cost), medium =
    the 14 x 14 grid through three quarters of the layers, large = the full tower (12 layers:
    grids (7, 14, 14), depths (12, 9, 12)). A tower of one layer has no depth branch.

    A coarser grid replaced the half-depth exit the first version had. At half the resolution
    the tower still runs every layer and its final norm, so the decoder reads features of the
    kind it was trained on (coarser); a half-depth exit's are another layer's. On ViT-B the
    coarse grid also costs half as much. Which keeps captions is the user's checkpoint's to
    say: `train-router` measures it on their bags."""
    pairs = [(COARSE_GRID, num_layers), (GRID, max(1, (3 * num_layers) // 4)),
             (GRID, num_layers)]
    unique = list(dict.fromkeys(pairs))
    return tuple(g for g, _ in unique), tuple(d for _, d in unique)
