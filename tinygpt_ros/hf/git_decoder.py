"""GIT's text decoder as two torch modules, the one implementation of a decoding pass: the
torch kernels (`git.GitKernels.decode`) call them, and `git_export` exports the very same modules
as the onnxruntime graphs `git_prefill` and `git_step`.

- `TextPrefill`: the first pass, the visual prefix (image rows attend to image rows, every image
  key biased by log(size)) together with the first k text rows (bos, then any draft), as GIT's
  own generate() runs image and bos together. -> logits (k, V), keys and values (layers, heads,
  K + k, hd), the key bias (K + k,).
- `TextStep`: k more text rows against the cache, causal among themselves: k = 1 is a decoding
  step, k > 1 checks a draft (`ops.drafting`). -> logits (k, V), the caches and the bias grown
  by k positions.
Post-LN residuals as in BERT; the masks are additive -1e9 so the graphs stay plain ops.
"""

from __future__ import annotations

import torch
from torch import nn

HIDDEN = -1e9  # additive logit bias of a key a row must not see


def split_heads(x: torch.Tensor, heads: int) -> torch.Tensor:
    """(n, H) -> (heads, n, H / heads)."""
    return x.reshape(x.shape[0], heads, -1).transpose(0, 1)


def text_layer(layer: nn.Module, h, k, v, q, bias):
    """One GIT text layer for rows h (n, H) whose queries q attend to keys/values
    (heads, N, hd) with an additive (n, N) bias."""
    w = torch.softmax((q @ k.transpose(-2, -1)) / (q.shape[-1] ** 0.5) + bias, dim=-1)
    ctx = (w @ v).transpose(0, 1).reshape(h.shape[0], -1)
    a = layer.attention.output(ctx, h)
    return layer.output(layer.intermediate(a), a)


class _TextPass(nn.Module):
    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.git = model.git
        self.output = model.output
        self.heads = model.config.num_attention_heads

    def _text_rows(self, ids, position):
        emb = self.git.embeddings
        return emb.LayerNorm(emb.word_embeddings(ids) + emb.position_embeddings(position))


class TextPrefill(_TextPass):
    def forward(self, vis, log_size, ids, position):
        h = torch.cat([vis, self._text_rows(ids, position)])
        k_vis, n = vis.shape[0], ids.shape[0]
        bias = torch.cat([log_size, torch.zeros_like(position, dtype=log_size.dtype)])
        r = torch.arange(k_vis + n, device=ids.device)
        # image rows see image keys only; text rows see the image and earlier text
        hidden = ((r[None, :] > r[:, None]) & (r[None, :] >= k_vis)).to(log_size.dtype) * HIDDEN
        rows = bias[None] + hidden
        ks, vs = [], []
        for layer in self.git.encoder.layer:
            s = layer.attention.self
            q, k, v = (split_heads(m(h), self.heads) for m in (s.query, s.key, s.value))
            ks.append(k)
            vs.append(v)
            h = text_layer(layer, h, k, v, q, rows)
        return self.output(h[k_vis:]), torch.stack(ks), torch.stack(vs), bias


class TextStep(_TextPass):
    def forward(self, ids, position, past_k, past_v, key_bias):
        h = self._text_rows(ids, position)
        n = ids.shape[0]
        bias = torch.cat([key_bias, torch.zeros_like(position, dtype=key_bias.dtype)])
        r = torch.arange(n, device=ids.device)
        later = (r[None, :] > r[:, None]).to(key_bias.dtype) * HIDDEN  # causal among new rows
        rows = torch.cat([key_bias[None].expand(n, -1), later], dim=1)
        ks, vs = [], []
        for i, layer in enumerate(self.git.encoder.layer):
            s = layer.attention.self
            q, k, v = (split_heads(m(h), self.heads) for m in (s.query, s.key, s.value))
            k_all = torch.cat([past_k[i], k], dim=1)
            v_all = torch.cat([past_v[i], v], dim=1)
            ks.append(k_all)
            vs.append(v_all)
            h = text_layer(layer, h, k_all, v_all, q, rows)
        return self.output(h), torch.stack(ks), torch.stack(vs), bias
