"""TinyGPT decoder: a prefix-LM transformer that captions a set of fused vision tokens.

Architecture (D = cfg.dim, E = cfg.dec_dim, H = cfg.dec_heads, V = cfg.vocab_size,
P = cfg.max_caption_len + 2 text positions; every Linear has a bias):

- Projector, per vision token: `LayerNorm(D)` -> `Linear(D, E)` -> `+ vis_type` (a learned (E,)
  vision-type embedding), and with `cfg.decoder_geometry` `+ Linear(G, E)` of the token's
  (x, y, t) centroid features (`geometry_features`, G = GEOMETRY_FEATURES). Why: fusion averages
  a token over the space-time region it stands for, so an object that moved leaves tokens of the
  same look at two places and two times; only their centroids say so. Without geometry (older
  models) the tokens carry the encoder's position embedding only, and the captioner could not
  tell a moving object from a still one.
- Text: `tok_emb` Embedding(V, E) + `pos_emb` (P, E) learned positions 0..L-1.
- Sequence = [K vision tokens ; L text tokens], `cfg.dec_layers` pre-LN blocks, each
  `x += proj(attn(LN1(x)))` with `qkv = Linear(E, 3E)`, `proj = Linear(E, E)`, H heads of E/H,
  scaled dot-product with explicit matmuls; then `x += fc2(GELU(fc1(LN2(x))))` with
  `fc1 = Linear(E, 4E)`, `fc2 = Linear(4E, E)`.
- Final `LayerNorm(E)` and LM head `Linear(E, V)` whose weight is tied to `tok_emb.weight`
  (own bias). The LM head runs on text positions only (`forward`) or on the last position only
  (`prefill`, `step`).

Attention (prefix LM): vision queries see all vision keys (bidirectional), text query t sees all
vision keys and text keys 0..t. Each key carries an additive logit bias: `log(size)` for vision
tokens (ToMe proportional attention: a token that stands for `s` merged tokens weighs like `s`
copies; size 0 = padding -> -inf, never attended), 0 for text. A padding query attends to itself
only, so no row is all -inf (no NaN) and padding never leaks into real tokens.

Decoding and its cost (for `spec/flops.py`): `generate` with `use_cache=True` runs the projector
on the K vision tokens, `prefill` on K vision + 1 bos token (all layers; LM head on the last
position), which yields generated token 1, then one `step` per further generated token: the token
produced at step j (j >= 1) is fed at text position j and attends to K + j + 1 keys. A caption of
n generated tokens (eos included when produced) costs prefill + (n - 1) steps; the final token
is never fed back. Greedy (beam_size=1) processes the batch together; beam search runs each item
with up to `beam_size` beams per step.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from tinygpt_ros.ops.beam import best_finished, expand_beams
from tinygpt_ros.spec.config import GEOMETRY_FEATURES, GEOMETRY_FREQUENCIES, ModelConfig


def _is_int(x: object) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def geometry_features(pos: torch.Tensor) -> torch.Tensor:
    """(..., 3) centroids in [0, 1] -> (..., GEOMETRY_FEATURES): the centroid itself and
    sin/cos of pi * 2^j * centroid for j < GEOMETRY_FREQUENCIES. The octaves let one linear
    layer place a token finely (a quarter of the view, a window slot) where the raw coordinate
    alone would give it a single direction in the embedding."""
    freqs = math.pi * 2.0 ** torch.arange(GEOMETRY_FREQUENCIES, dtype=pos.dtype,
                                          device=pos.device)
    angles = (pos[..., :, None] * freqs).flatten(-2)  # (..., 3 * F), coordinate-major
    return torch.cat([pos, torch.sin(angles), torch.cos(angles)], -1)


@dataclass
class KVCache:
    """Per-layer keys/values (B, H, S, E/H), the key logit bias (B, S), and text tokens so far."""

    k: list[torch.Tensor]
    v: list[torch.Tensor]
    key_bias: torch.Tensor
    text_len: int

    def select(self, index: torch.Tensor) -> KVCache:
        """Rows `index` of the batch (beam search reorders and duplicates beams with this)."""
        return KVCache(
            [t.index_select(0, index) for t in self.k],
            [t.index_select(0, index) for t in self.v],
            self.key_bias.index_select(0, index),
            self.text_len,
        )

    @property
    def seq_len(self) -> int:
        return int(self.key_bias.shape[1])


class DecoderBlock(nn.Module):
    """Pre-LN transformer block with an additive attention bias and optional past keys/values."""

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.head_dim = dim // heads
        self.ln1 = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.ln2 = nn.LayerNorm(dim)
        self.fc1 = nn.Linear(dim, 4 * dim)
        self.fc2 = nn.Linear(4 * dim, dim)

    def forward(
        self,
        x: torch.Tensor,
        bias: torch.Tensor,
        past: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """x (B,Q,E), bias (B,Q,S) over all S = past + Q keys -> (x, k_all, v_all)."""
        x, k, v, _ = self._attend(x, bias, past)
        return x, k, v

    def forward_with_attention(
        self, x: torch.Tensor, bias: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """`forward` without a past that also returns the attention probabilities (B,H,Q,S):
        FastV ranks vision tokens by the attention they receive."""
        return self._attend(x, bias, None)

    def _attend(
        self,
        x: torch.Tensor,
        bias: torch.Tensor,
        past: tuple[torch.Tensor, torch.Tensor] | None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        b, q_len, e = x.shape
        qkv = self.qkv(self.ln1(x)).view(b, q_len, 3, self.heads, self.head_dim)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # each (B,H,Q,hd)
        if past is not None:
            k = torch.cat([past[0], k], dim=2)
            v = torch.cat([past[1], v], dim=2)
        logits = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(self.head_dim)) + bias[:, None]
        att = torch.softmax(logits, dim=-1)
        y = (att @ v).transpose(1, 2).reshape(b, q_len, e)
        x = x + self.proj(y)
        x = x + self.fc2(F.gelu(self.fc1(self.ln2(x))))
        return x, k, v, att


class TinyGPTDecoder(nn.Module):
    """Projector + prefix-LM decoder with a KV cache; see the module docstring."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        if cfg.vocab_size <= 0:
            raise ValueError(
                f"cfg.vocab_size must be > 0 (set from the tokenizer), got {cfg.vocab_size}"
            )
        if cfg.dec_dim % cfg.dec_heads != 0:
            raise ValueError(
                f"cfg.dec_dim={cfg.dec_dim} must be divisible by cfg.dec_heads={cfg.dec_heads}"
            )
        if cfg.dec_layers < 1 or cfg.max_caption_len < 1:
            raise ValueError("cfg.dec_layers and cfg.max_caption_len must be >= 1")
        self.cfg = cfg
        e = cfg.dec_dim
        self.n_pos = cfg.max_caption_len + 2
        self.proj_norm = nn.LayerNorm(cfg.dim)
        self.proj = nn.Linear(cfg.dim, e)
        self.vis_type = nn.Parameter(torch.zeros(e))
        self.geometry = nn.Linear(GEOMETRY_FEATURES, e) if cfg.decoder_geometry else None
        self.tok_emb = nn.Embedding(cfg.vocab_size, e)
        self.pos_emb = nn.Parameter(torch.zeros(self.n_pos, e))
        self.blocks = nn.ModuleList(DecoderBlock(e, cfg.dec_heads) for _ in range(cfg.dec_layers))
        self.ln_f = nn.LayerNorm(e)
        self.lm_head = nn.Linear(e, cfg.vocab_size)
        self.lm_head.weight = self.tok_emb.weight  # tied
        self._init_weights()

    def _init_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, std=0.02)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Embedding):
                nn.init.normal_(m.weight, std=0.02)
        nn.init.normal_(self.pos_emb, std=0.02)
        nn.init.normal_(self.vis_type, std=0.02)

    # ----------------------------------------------------------------------------- pieces

    def _check(self, vis: torch.Tensor, vis_size: torch.Tensor, ids: torch.Tensor | None,
               vis_pos: torch.Tensor | None = None) -> None:
        if vis.dim() != 3 or vis.shape[-1] != self.cfg.dim:
            raise ValueError(f"vis must be (B, K, {self.cfg.dim}), got {tuple(vis.shape)}")
        if vis_size.shape != vis.shape[:2]:
            raise ValueError(
                f"vis_size must be (B, K) = {tuple(vis.shape[:2])}, got {tuple(vis_size.shape)}"
            )
        if self.geometry is not None and (vis_pos is None
                                          or vis_pos.shape != (*vis.shape[:2], 3)):
            got = None if vis_pos is None else tuple(vis_pos.shape)
            raise ValueError(f"vis_pos must be (B, K, 3) = {(*vis.shape[:2], 3)}: this decoder "
                             f"reads the tokens' (x, y, t) centroids; got {got}")
        if ids is not None:
            if ids.dim() != 2 or ids.shape[0] != vis.shape[0] or ids.shape[1] < 1:
                raise ValueError(f"ids must be (B={vis.shape[0]}, L>=1), got {tuple(ids.shape)}")
            if ids.shape[1] > self.n_pos:
                raise ValueError(
                    f"ids length {ids.shape[1]} exceeds the {self.n_pos} text positions "
                    f"(cfg.max_caption_len + 2)"
                )

    def project(self, vis: torch.Tensor, vis_pos: torch.Tensor | None = None) -> torch.Tensor:
        """Vision tokens (B,K,D) and their centroids (B,K,3) -> decoder width (B,K,E). The
        centroids are read only by a decoder with `cfg.decoder_geometry`."""
        x = self.proj(self.proj_norm(vis)) + self.vis_type
        if self.geometry is not None:
            if vis_pos is None:
                raise ValueError("vis_pos (B, K, 3) is required: this decoder reads the tokens' "
                                 "(x, y, t) centroids (cfg.decoder_geometry)")
            x = x + self.geometry(geometry_features(vis_pos.to(x.dtype)))
        return x

    def _embed_text(self, ids: torch.Tensor, start: int) -> torch.Tensor:
        return self.tok_emb(ids) + self.pos_emb[start : start + ids.shape[1]]

    @staticmethod
    def size_bias(vis_size: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        """log(size) per vision key; size 0 (padding) -> -inf."""
        return torch.log(vis_size.to(dtype).clamp_min(0.0))

    def _prefix_bias(
        self, vis_size: torch.Tensor, n_text: int, dtype: torch.dtype
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, S, S) additive attention bias for [vision ; text] and the (B, S) key bias."""
        b, k = vis_size.shape
        s = k + n_text
        dev = vis_size.device
        text0 = torch.zeros(b, n_text, dtype=dtype, device=dev)
        key_bias = torch.cat([self.size_bias(vis_size, dtype), text0], dim=1)
        qi = torch.arange(s, device=dev)[:, None]
        ki = torch.arange(s, device=dev)[None, :]
        allowed = (ki < k) | ((qi >= k) & (ki <= qi))  # vision keys for all; causal text
        bias = torch.where(allowed, key_bias[:, None, :], float("-inf"))
        # Padding queries see only themselves: no all -inf row, hence no NaN anywhere.
        is_pad = torch.cat([vis_size <= 0, text0.bool()], dim=1)
        pad_self = (qi == ki)[None] & is_pad[:, None, :]
        return torch.where(pad_self, 0.0, bias), key_bias

    def _run_prefix(
        self, vis: torch.Tensor, vis_size: torch.Tensor, ids: torch.Tensor,
        vis_pos: torch.Tensor | None,
    ) -> tuple[torch.Tensor, list[torch.Tensor], list[torch.Tensor], torch.Tensor]:
        self._check(vis, vis_size, ids, vis_pos)
        x = torch.cat([self.project(vis, vis_pos), self._embed_text(ids, 0)], dim=1)
        bias, key_bias = self._prefix_bias(vis_size, ids.shape[1], x.dtype)
        ks, vs = [], []
        for blk in self.blocks:
            x, k, v = blk(x, bias)
            ks.append(k)
            vs.append(v)
        return x, ks, vs, key_bias

    # ----------------------------------------------------------------------------- public API

    def forward(self, vis: torch.Tensor, vis_size: torch.Tensor, ids: torch.Tensor,
                vis_pos: torch.Tensor | None = None) -> torch.Tensor:
        """Teacher forcing: vis (B,K,D), vis_size (B,K), ids (B,L), vis_pos (B,K,3) (required
        with `cfg.decoder_geometry`) -> logits (B,L,V)."""
        x, _, _, _ = self._run_prefix(vis, vis_size, ids, vis_pos)
        return self.lm_head(self.ln_f(x[:, vis.shape[1] :]))

    def prefill(
        self, vis: torch.Tensor, vis_size: torch.Tensor, ids: torch.Tensor,
        vis_pos: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, KVCache]:
        """Run the prefix once: logits for the token after `ids` (B,V) and the cache."""
        x, ks, vs, key_bias = self._run_prefix(vis, vis_size, ids, vis_pos)
        logits = self.lm_head(self.ln_f(x[:, -1]))
        return logits, KVCache(ks, vs, key_bias, int(ids.shape[1]))

    def step(self, next_ids: torch.Tensor, cache: KVCache) -> tuple[torch.Tensor, KVCache]:
        """Feed one token per row (B,) at the next text position -> (logits (B,V), new cache).

        The given cache is not modified, so it can be reused (beam search).
        """
        b = cache.key_bias.shape[0]
        if next_ids.shape != (b,):
            raise ValueError(f"next_ids must be ({b},), got {tuple(next_ids.shape)}")
        if cache.text_len >= self.n_pos:
            raise ValueError(
                f"cache already holds {cache.text_len} text tokens, the maximum "
                f"(cfg.max_caption_len + 2 = {self.n_pos})"
            )
        x = self._embed_text(next_ids[:, None], cache.text_len)
        key_bias = torch.cat([cache.key_bias, cache.key_bias.new_zeros(b, 1)], dim=1)
        bias = key_bias[:, None, :]
        ks, vs = [], []
        for blk, k_old, v_old in zip(self.blocks, cache.k, cache.v, strict=True):
            x, k, v = blk(x, bias, (k_old, v_old))
            ks.append(k)
            vs.append(v)
        logits = self.lm_head(self.ln_f(x[:, -1]))
        return logits, KVCache(ks, vs, key_bias, cache.text_len + 1)

    @torch.no_grad()
    def generate(
        self,
        vis: torch.Tensor,
        vis_size: torch.Tensor,
        bos_id: int,
        eos_id: int,
        max_len: int | None = None,
        beam_size: int = 1,
        use_cache: bool = True,
        length_penalty: float = 1.0,
        vis_pos: torch.Tensor | None = None,
    ) -> list[list[int]]:
        """Caption ids per batch row, without bos/eos (at most `max_len` tokens each).

        beam_size=1 is greedy; otherwise beam search, ranking finished beams by
        sum(log p) / n**length_penalty (n = generated tokens incl. eos). `bos_id` is never
        generated. `use_cache=False` re-runs `forward` on the whole prefix each step (reference
        path; same ids up to float rounding). `vis_pos` (B,K,3): the tokens' centroids, required
        with `cfg.decoder_geometry`.
        """
        max_len = self.cfg.max_caption_len if max_len is None else max_len
        if not _is_int(max_len) or not 1 <= max_len <= self.n_pos:
            raise ValueError(f"max_len must be an int in [1, {self.n_pos}], got {max_len!r}")
        if not _is_int(beam_size) or beam_size < 1:
            raise ValueError(f"beam_size must be an int >= 1, got {beam_size!r}")
        v = self.cfg.vocab_size
        for name, tok in (("bos_id", bos_id), ("eos_id", eos_id)):
            if not 0 <= int(tok) < v:
                raise ValueError(f"{name}={tok} is outside the vocabulary [0, {v})")
        self._check(vis, vis_size, None, vis_pos)
        if beam_size == 1:
            return self._greedy(vis, vis_size, vis_pos, bos_id, eos_id, max_len, use_cache)
        return [
            self._beam(vis[i : i + 1], vis_size[i : i + 1],
                       None if vis_pos is None else vis_pos[i : i + 1], bos_id, eos_id,
                       max_len, beam_size, use_cache, length_penalty)
            for i in range(vis.shape[0])
        ]

    # ----------------------------------------------------------------------------- decoding

    def _greedy(
        self, vis: torch.Tensor, vis_size: torch.Tensor, vis_pos: torch.Tensor | None, bos: int,
        eos: int, max_len: int, use_cache: bool,
    ) -> list[list[int]]:
        b = vis.shape[0]
        ids = torch.full((b, 1), bos, dtype=torch.long, device=vis.device)
        if use_cache:
            logits, cache = self.prefill(vis, vis_size, ids, vis_pos)
        else:
            logits = self.forward(vis, vis_size, ids, vis_pos)[:, -1]
        out: list[list[int]] = [[] for _ in range(b)]
        done = [False] * b
        for t in range(max_len):
            logits = logits.float()
            logits[:, bos] = float("-inf")
            nxt = logits.argmax(-1)
            for i, tok in enumerate(nxt.tolist()):
                if not done[i]:
                    if tok == eos:
                        done[i] = True
                    else:
                        out[i].append(tok)
            if all(done) or t + 1 == max_len:
                break
            feed = torch.where(torch.tensor(done, device=nxt.device), eos, nxt)
            if use_cache:
                logits, cache = self.step(feed, cache)
            else:
                ids = torch.cat([ids, feed[:, None]], dim=1)
                logits = self.forward(vis, vis_size, ids, vis_pos)[:, -1]
        return out

    def _beam(
        self, vis: torch.Tensor, vis_size: torch.Tensor, vis_pos: torch.Tensor | None, bos: int,
        eos: int, max_len: int, width: int, use_cache: bool, alpha: float,
    ) -> list[int]:
        """Beam search for one item. Stops when `width` beams have finished (or at max_len)."""
        dev = vis.device
        ids0 = torch.full((1, 1), bos, dtype=torch.long, device=dev)
        if use_cache:
            logits, cache = self.prefill(vis, vis_size, ids0, vis_pos)
        else:
            logits = self.forward(vis, vis_size, ids0, vis_pos)[:, -1]
        seqs: list[list[int]] = [[]]
        scores = torch.zeros(1, device=dev)
        finished: list[tuple[float, list[int]]] = []
        v = logits.shape[-1]
        for t in range(max_len):
            logp = torch.log_softmax(logits.float(), dim=-1)
            logp[:, bos] = float("-inf")
            cand = (scores[:, None] + logp).view(-1)
            top_s, top_i = cand.topk(min(2 * width, cand.numel()))
            beams, done = expand_beams(zip(top_s.tolist(), top_i.tolist(), strict=True), seqs, v,
                                       eos, width, t, max_len, alpha, finished)
            if done:
                break
            seqs, parents = beams.seqs, beams.parents
            scores = torch.tensor(beams.scores, device=dev)
            feed = torch.tensor(beams.tokens, dtype=torch.long, device=dev)
            if use_cache:
                cache = cache.select(torch.tensor(parents, dtype=torch.long, device=dev))
                logits, cache = self.step(feed, cache)
            else:
                n = len(seqs)
                ids = torch.tensor([[bos, *q] for q in seqs], dtype=torch.long, device=dev)
                logits = self.forward(
                    vis.expand(n, -1, -1), vis_size.expand(n, -1), ids,
                    None if vis_pos is None else vis_pos.expand(n, -1, -1),
                )[:, -1]
        return best_finished(finished)
