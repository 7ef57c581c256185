"""Visual encoder with nested-depth ANC branches, and the STTF gated token-reuse cache.

`VisualEncoder` is one stack of `max(cfg.branch_depths)` pre-LN transformer blocks. Encoder
branch i (0 = small, 1 = medium, 2 = large for the default config; `BRANCH_NAMES[i + 1]`) runs
the first `cfg.branch_depths[i]` blocks and then its own exit LayerNorm, so the branches share
weights and cost roughly in proportion to their depth.

`GatedEncoderCache` implements gated token reuse in the spirit of Eventful Transformers (Dutson
et al., ICCV 2023): per stream it caches every block's input, keys, values and output; on the
next frame only the selected (changed) tokens run through LN/qkv/attention/MLP, their queries
attend to the keys of *all* tokens (fresh ones for selected rows, cached ones for the rest), and
the unselected tokens keep their cached outputs. The approximation is the usual one: the cached
outputs of unselected tokens do not see the selected tokens' new keys; the caller bounds the
drift with a periodic full refresh.

Attention is written as explicit matmuls so `flops.py` can count it exactly and ONNX export sees
plain ops.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from tinygpt_ros.spec.config import (
    EVENT_GRID_SIZE,
    IMAGE_SIZE,
    NUM_TOKENS,
    ModelConfig,
)

EVENT_PATCH = 8  # 112 / 8 = 14 patches per side
MODALITY_FRAME = 0
MODALITY_EVENTS = 1


def mlp_hidden(cfg: ModelConfig) -> int:
    """Hidden width of the encoder MLP (shared with flops.py)."""
    return int(cfg.mlp_ratio * cfg.dim)


def validate_config(cfg: ModelConfig) -> None:
    if cfg.dim <= 0 or cfg.heads <= 0 or cfg.dim % cfg.heads:
        raise ValueError(f"ModelConfig.dim ({cfg.dim}) must be a positive multiple of heads "
                         f"({cfg.heads})")
    if not cfg.branch_depths or min(cfg.branch_depths) < 1:
        raise ValueError(f"ModelConfig.branch_depths must be positive ints, got "
                         f"{cfg.branch_depths}")
    if mlp_hidden(cfg) < 1:
        raise ValueError(f"ModelConfig.mlp_ratio too small: {cfg.mlp_ratio}")
    cfg.frame_stem_layers()  # ValueError for a stem it does not know
    if cfg.frame_stem == "conv" and cfg.dim % 8:
        raise ValueError(f"the conv frame stem needs a dim divisible by 8, got {cfg.dim}")


def frame_stem(cfg: ModelConfig) -> nn.Module:
    """The frame's token embedding, as `cfg.frame_stem_layers()` lays it out: one convolution
    (patch), or a chain of them with a GELU between each two (conv)."""
    layers: list[nn.Module] = []
    for c_in, c_out, k, stride, _ in cfg.frame_stem_layers():
        if layers:
            layers.append(nn.GELU())
        layers.append(nn.Conv2d(c_in, c_out, k, stride, padding=(k - stride + 1) // 2))
    return layers[0] if len(layers) == 1 else nn.Sequential(*layers)


class Attention(nn.Module):
    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.head_dim = dim // heads
        self.scale = self.head_dim**-0.5
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def qkv_heads(self, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(B, N, D) normed tokens -> q, k, v each (B, heads, N, head_dim)."""
        b, n, _ = h.shape
        qkv = self.qkv(h).reshape(b, n, 3, self.heads, self.head_dim).permute(2, 0, 3, 1, 4)
        return qkv[0], qkv[1], qkv[2]

    def attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """q (B,H,Nq,hd) against k, v (B,H,Nk,hd) -> projected (B, Nq, D)."""
        attn = torch.softmax((q * self.scale) @ k.transpose(-2, -1), dim=-1)
        out = attn @ v
        b, _, nq, _ = out.shape
        return self.proj(out.transpose(1, 2).reshape(b, nq, self.heads * self.head_dim))


class Block(nn.Module):
    """Pre-LN transformer block: x + attn(LN(x)), then x + MLP(LN(x))."""

    def __init__(self, dim: int, heads: int, hidden: int) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = Attention(dim, heads)
        self.norm2 = nn.LayerNorm(dim)
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def mlp(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.fc2(F.gelu(self.fc1(self.norm2(x))))

    def forward_kv(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Dense block on (B, N, D); also returns its k, v (B, H, N, hd) for the gated cache."""
        q, k, v = self.attn.qkv_heads(self.norm1(x))
        x = x + self.attn.attend(q, k, v)
        return self.mlp(x), k, v

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_kv(x)[0]


class VisualEncoder(nn.Module):
    """Patch embeddings (frames, events) + a shared block stack with one exit norm per branch.

    Token order everywhere is the row-major flatten of the 14 x 14 patch grid.
    """

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        validate_config(cfg)
        self.cfg = cfg
        d = cfg.dim
        self.depths = tuple(int(x) for x in cfg.branch_depths)
        self.frame_embed = frame_stem(cfg)
        self.event_embed = nn.Conv2d(2, d, EVENT_PATCH, EVENT_PATCH)
        self.pos_embed = nn.Parameter(torch.zeros(NUM_TOKENS, d))
        self.modality_embed = nn.Parameter(torch.zeros(2, d))
        self.blocks = nn.ModuleList(
            Block(d, cfg.heads, mlp_hidden(cfg)) for _ in range(max(self.depths))
        )
        self.exit_norms = nn.ModuleList(nn.LayerNorm(d) for _ in self.depths)
        self._init_weights()

    def _init_weights(self) -> None:
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        nn.init.trunc_normal_(self.modality_embed, std=0.02)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                nn.init.zeros_(m.bias)

    @property
    def num_branches(self) -> int:
        return len(self.depths)

    def depth_of(self, branch: int) -> int:
        """Number of blocks encoder branch `branch` runs; ValueError for a bad index."""
        if isinstance(branch, bool) or not 0 <= int(branch) < len(self.depths):
            raise ValueError(f"branch must be in [0, {len(self.depths) - 1}], got {branch}")
        return self.depths[int(branch)]

    # ------------------------------------------------------------------ embeddings

    def _embed(self, conv: nn.Module, x: torch.Tensor, modality: int) -> torch.Tensor:
        tok = conv(x).flatten(2).transpose(1, 2)  # (B, 196, D), row-major patch order
        return tok + self.pos_embed + self.modality_embed[modality]

    def embed_frames(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, 224, 224) -> (B, 196, D) with position and modality embeddings added."""
        if x.ndim != 4 or tuple(x.shape[1:]) != (3, IMAGE_SIZE, IMAGE_SIZE):
            raise ValueError(f"frames must be (B, 3, {IMAGE_SIZE}, {IMAGE_SIZE}), got "
                             f"{tuple(x.shape)}")
        return self._embed(self.frame_embed, x, MODALITY_FRAME)

    def embed_events(self, h: torch.Tensor) -> torch.Tensor:
        """(B, 2, 112, 112) event histograms -> (B, 196, D) with position + modality embeddings."""
        g = EVENT_GRID_SIZE
        if h.ndim != 4 or tuple(h.shape[1:]) != (2, g, g):
            raise ValueError(f"event histograms must be (B, 2, {g}, {g}), got {tuple(h.shape)}")
        return self._embed(self.event_embed, h, MODALITY_EVENTS)

    # ------------------------------------------------------------------ dense passes

    def forward(self, tokens: torch.Tensor, branch: int) -> torch.Tensor:
        """Dense pass of encoder branch `branch`: (B, N, D) -> (B, N, D).

        N may be < 196: token drop for training gathers the *embedded* tokens (position
        embedding already added), so the kept tokens carry their position and the blocks need no
        mask. There is no padding support: every row of `tokens` is a real token.
        """
        depth = self.depth_of(branch)
        x = tokens
        for blk in self.blocks[:depth]:
            x = blk(x)
        return self.exit_norms[branch](x)

    def forward_exits(self, tokens: torch.Tensor) -> list[torch.Tensor]:
        """One pass through all blocks; the normed output of every branch (training)."""
        outs: list[torch.Tensor | None] = [None] * len(self.depths)
        x = tokens
        for i, blk in enumerate(self.blocks):
            x = blk(x)
            for b, d in enumerate(self.depths):
                if d == i + 1:
                    outs[b] = self.exit_norms[b](x)
        return outs  # type: ignore[return-value]


class GatedEncoderCache:
    """Per-stream state for gated token reuse (inference only; `run` disables autograd).

    Cached per block l (for the N tokens of the stream): input x_l (N, D), keys and values
    (heads, N, head_dim) and output (N, D). The caches are valid for the first `depth` blocks,
    where `depth` is the depth of the last run: a pass refreshes the blocks it runs, and the
    deeper blocks (if any) no longer match the new shallower outputs, so they are dropped.

    `run(encoder, tokens, selected, branch)`:
    - dense pass (every cache refreshed, bit-identical to `encoder(tokens[None], branch)[0]`)
      when `selected` is None or all True, the cache is empty, N changed, or the branch is
      deeper than the cached depth (e.g. the router switched up);
    - otherwise gated: only rows with `selected` True are read from `tokens`; the other rows'
      block-0 inputs are the cached ones (the caller's fresh values for them are ignored). In
      every block the selected rows run LN/qkv/MLP, their queries attend to all N keys (fresh
      for selected rows, cached for the others), and the unselected rows keep cached outputs.
      No row selected -> the cached output of the branch (exit norm re-applied), no block runs.
    `n_recomputed` is the number of rows that went through the blocks in the last run (N for a
    dense pass), `last_dense` whether the last run was dense.
    """

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.inputs: list[torch.Tensor] = []
        self.keys: list[torch.Tensor] = []
        self.values: list[torch.Tensor] = []
        self.outputs: list[torch.Tensor] = []
        self.n_recomputed = 0
        self.last_dense = False

    @property
    def is_empty(self) -> bool:
        return not self.outputs

    @property
    def depth(self) -> int:
        """Number of blocks whose caches are valid."""
        return len(self.outputs)

    @torch.no_grad()
    def run(
        self,
        encoder: VisualEncoder,
        tokens: torch.Tensor,
        selected: torch.Tensor | None,
        branch: int,
    ) -> torch.Tensor:
        depth = encoder.depth_of(branch)
        if tokens.ndim != 2 or tokens.shape[1] != encoder.cfg.dim:
            raise ValueError(f"tokens must be (N, {encoder.cfg.dim}), got {tuple(tokens.shape)}")
        n = tokens.shape[0]
        if selected is not None:
            if selected.shape != (n,) or selected.dtype != torch.bool:
                raise ValueError(f"selected must be a ({n},) bool tensor, got "
                                 f"{tuple(selected.shape)} {selected.dtype}")
            selected = selected.to(tokens.device)
        dense = (
            selected is None
            or bool(selected.all())
            or self.is_empty
            or depth > self.depth
            or self.outputs[0].shape[0] != n
        )
        if dense:
            return self._dense(encoder, tokens, depth, branch)
        return self._gated(encoder, tokens, selected, depth, branch)

    def _dense(
        self, encoder: VisualEncoder, tokens: torch.Tensor, depth: int, branch: int
    ) -> torch.Tensor:
        self.reset()
        x = tokens[None]
        for blk in encoder.blocks[:depth]:
            self.inputs.append(x[0].clone())
            x, k, v = blk.forward_kv(x)
            self.keys.append(k[0].clone())
            self.values.append(v[0].clone())
            self.outputs.append(x[0].clone())
        self.n_recomputed = tokens.shape[0]
        self.last_dense = True
        return encoder.exit_norms[branch](x)[0]

    def _gated(
        self,
        encoder: VisualEncoder,
        tokens: torch.Tensor,
        selected: torch.Tensor,
        depth: int,
        branch: int,
    ) -> torch.Tensor:
        idx = selected.nonzero().squeeze(1)
        del self.inputs[depth:], self.keys[depth:], self.values[depth:], self.outputs[depth:]
        x = tokens[idx]  # (S, D): fresh rows of the selected tokens
        if idx.numel():
            for layer, blk in enumerate(encoder.blocks[:depth]):
                self.inputs[layer][idx] = x
                q, k, v = blk.attn.qkv_heads(blk.norm1(x)[None])  # (1, H, S, hd)
                self.keys[layer][:, idx] = k[0]
                self.values[layer][:, idx] = v[0]
                x = x + blk.attn.attend(q, self.keys[layer][None], self.values[layer][None])[0]
                x = blk.mlp(x)
                self.outputs[layer][idx] = x
        self.n_recomputed = int(idx.numel())
        self.last_dense = False
        return encoder.exit_norms[branch](self.outputs[depth - 1])
