"""Peer token-reduction methods for `tinygpt-ros bench`, as Engine-protocol objects.

Every peer is built from the same TinyGPT weights and runs, per camera frame: patch embedding ->
the dense encoder (largest branch, every token, every frame) -> the window of the last
`temporal_window` frames with the learned time embedding (`TemporalFusion.dense`) -> its own
token reduction -> the decoder, greedy, decoding every frame (no caption reuse, no router, no
gating). So they stream through `quality.evaluate_captions` exactly like the engine does.

- `dense`: no reduction; T x 196 tokens to the decoder (the same outputs as the engine with
  STTF and ANC off).
- `tome`: ToMe bipartite soft matching only (`sttf.bipartite_merge`, size-weighted, repeated)
  on the window's T x 196 tokens down to `max_fused_tokens`; sizes feed the decoder's
  proportional attention. No static averaging, no gating.
- `random_drop`: keep `max_fused_tokens` tokens of the window chosen uniformly at random
  (seeded, re-seeded on reset), sizes 1.
- `downscale`: uniform down-scaling of the token grid *before* the encoder: 2 x 2 average
  pooling of the embedded 14 x 14 patch tokens (position embedding included) -> 49 tokens per
  frame through the encoder, T x 49 to the decoder, each with size 4 (it stands for 4 patches).
- `fastv`: FastV-style pruning inside the decoder: the prefix [T x 196 vision ; bos] runs
  through decoder layer 1 in full; the `max_fused_tokens` vision tokens that received the most
  attention from the bos query in that layer (mean over heads) are kept and the others are
  dropped from every later layer (prefill and every decoding step). Implemented here with the
  decoder's own modules (`fastv_generate`), decoder.py is untouched. With a 1-layer decoder
  there is nothing after layer 1 and fastv equals dense.

FLOPs are counted for what each peer really runs, with the formulas of `spec/flops.py`
(encoder on the tokens it sees, merge similarity matmuls for ToMe, decoder prefill/steps on the
tokens each layer sees for FastV); top-k, random choice and pooling cost is ignored like norms.
"""

from __future__ import annotations

import dataclasses
from collections import deque
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as nnf

from tinygpt_ros.model.preprocess import events_to_histogram, frame_to_tensor
from tinygpt_ros.model.sttf import bipartite_merge, token_positions
from tinygpt_ros.model.tinygpt import TinyGPT
from tinygpt_ros.ops import validate_events
from tinygpt_ros.runtime.streaming import StageTimer
from tinygpt_ros.spec import flops as F
from tinygpt_ros.spec.config import GRID, NUM_TOKENS, Knobs, ModelConfig
from tinygpt_ros.spec.tokenizer import Tokenizer
from tinygpt_ros.spec.types import ComputeRecord, FrameResult

PEERS = ("dense", "tome", "random_drop", "downscale", "fastv")
POOL = 2  # downscale: POOL x POOL average pooling of the token grid
FASTV_LAYER = 1  # fastv: prune after this many decoder layers


def load_model(model_dir: str | Path) -> tuple[TinyGPT, Tokenizer, list[str]]:
    """The TinyGPT weights of a model directory (checked against its manifest), eval mode."""
    from tinygpt_ros.model.weights import ModelLoadError, load_model_files

    loaded = load_model_files(model_dir)
    model = TinyGPT(loaded.config)
    try:
        model.load_state_dict(loaded.state_dict)
    except RuntimeError as exc:
        raise ModelLoadError(f"model in {model_dir}: weights do not fit the manifest's config "
                             f"({exc})") from exc
    return model.eval(), loaded.tokenizer, list(loaded.gesture_classes)


# ------------------------------------------------------------------------------------ FastV


def _prefix_bias(key_bias: torch.Tensor, n_vis: int) -> torch.Tensor:
    """(1, S) key bias -> (1, S, S) prefix-LM bias: vision queries see vision keys, text queries
    see vision keys and earlier text (as `TinyGPTDecoder._prefix_bias`, without padding)."""
    s = key_bias.shape[1]
    qi = torch.arange(s, device=key_bias.device)[:, None]
    ki = torch.arange(s, device=key_bias.device)[None, :]
    allowed = (ki < n_vis) | ((qi >= n_vis) & (ki <= qi))
    return torch.where(allowed, key_bias[:, None, :], float("-inf"))


@torch.no_grad()
def fastv_generate(
    decoder: Any, vis: torch.Tensor, vis_size: torch.Tensor, bos_id: int, eos_id: int,
    keep: int, prune_after: int = FASTV_LAYER, max_len: int | None = None,
) -> list[int]:
    """Greedy caption ids (without bos/eos) of one item (vis (1, K, D), sizes (1, K) > 0) with
    FastV pruning: after `prune_after` (>= 1) decoder layers only the `keep` vision tokens most
    attended by the bos query (mean over heads, in layer `prune_after`) stay, in every later
    layer. keep >= K reproduces `decoder.generate` (greedy, KV cache)."""
    if vis.shape[0] != 1 or not bool((vis_size > 0).all()):
        raise ValueError("vis must be one item (1, K, D) with all sizes > 0")
    cfg = decoder.cfg
    max_len = cfg.max_caption_len if max_len is None else max_len
    n_vis = vis.shape[1]
    keep = max(1, min(int(keep), n_vis))
    if int(prune_after) < 1:
        raise ValueError(f"prune_after must be >= 1 (ranking needs one layer), got {prune_after}")
    p = int(prune_after)
    kept = torch.arange(n_vis, device=vis.device)
    bos = torch.full((1, 1), bos_id, dtype=torch.long, device=vis.device)
    x = torch.cat([decoder.project(vis), decoder.tok_emb(bos) + decoder.pos_emb[0:1]], dim=1)
    key_bias = torch.cat([decoder.size_bias(vis_size, x.dtype), x.new_zeros(1, 1)], dim=1)
    caches: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []
    cur_vis = n_vis
    for li, blk in enumerate(decoder.blocks):
        if li == p and keep < cur_vis:
            sel = torch.cat([kept, torch.tensor([cur_vis], device=vis.device)])
            x, key_bias, cur_vis = x[:, sel], key_bias[:, sel], keep
        x, k, v, att = blk.forward_with_attention(x, _prefix_bias(key_bias, cur_vis))
        caches.append((k, v, key_bias))
        if li == p - 1:
            score = att[0, :, -1, :cur_vis].mean(0)  # attention the bos query gives each token
            kept = torch.topk(score, min(keep, cur_vis)).indices.sort().values
    logits = decoder.lm_head(decoder.ln_f(x[:, -1]))
    out: list[int] = []
    text_len = 1
    for t in range(max_len):
        logits = logits.float()
        logits[:, bos_id] = float("-inf")
        tok = int(logits.argmax(-1))
        if tok == eos_id or t + 1 == max_len:
            if tok != eos_id:
                out.append(tok)
            break
        out.append(tok)
        h = decoder.tok_emb(torch.tensor([[tok]], device=vis.device))
        h = h + decoder.pos_emb[text_len:text_len + 1]
        for li, blk in enumerate(decoder.blocks):
            k_old, v_old, kb = caches[li]
            kb = torch.cat([kb, kb.new_zeros(1, 1)], dim=1)
            h, k_new, v_new = blk(h, kb[:, None, :], (k_old, v_old))
            caches[li] = (k_new, v_new, kb)
        text_len += 1
        logits = decoder.lm_head(decoder.ln_f(h[:, -1]))
    return out


def fastv_flops(cfg: ModelConfig, n_vis: int, keep: int, n_generated: int,
                prune_after: int = FASTV_LAYER) -> float:
    """Decoder FLOPs of `fastv_generate`: projector on K tokens, the first `prune_after` layers
    on K vision tokens (prefill and every step), the other layers on `keep`. Equals
    `flops.decode_flops(cfg, K, n)` when keep >= K."""
    layers = cfg.dec_layers
    p = min(max(prune_after, 1), layers)
    k = min(keep, n_vis)
    one = dataclasses.replace(cfg, dec_layers=1)
    head = F.lm_head_flops(cfg)

    def prefill(n: int) -> float:
        return F.decoder_prefill_flops(one, n) - head

    def step(n_ctx: int) -> float:
        return F.decoder_step_flops(one, n_ctx) - head

    total = F.projector_flops(cfg, n_vis) + p * prefill(n_vis + 1) + (layers - p) * prefill(k + 1)
    total += head
    for j in range(1, n_generated):
        total += p * step(n_vis + j + 1) + (layers - p) * step(k + j + 1) + head
    return total


# ------------------------------------------------------------------------------------ engine


def pool_tokens(tokens: torch.Tensor, k: int = POOL) -> torch.Tensor:
    """(B, 196, D) row-major 14 x 14 grid -> (B, (14/k)^2, D) by k x k average pooling."""
    b, n, d = tokens.shape
    if n != NUM_TOKENS:
        raise ValueError(f"tokens must hold the {NUM_TOKENS}-token grid, got {n}")
    grid = tokens.transpose(1, 2).reshape(b, d, GRID, GRID)
    return nnf.avg_pool2d(grid, k).flatten(2).transpose(1, 2)


class PeerEngine:
    """A peer method (see the module docstring) behind the `types.Engine` protocol.

    The token budget of tome, random_drop and fastv is the `max_fused_tokens` knob (the budget
    STTF fuses down to); the other knobs are accepted and ignored, so evaluation code can set
    them on every engine alike."""

    backend = "torch-peer"

    def __init__(self, model: TinyGPT, tokenizer: Tokenizer, gesture_classes: list[str],
                 method: str, knobs: Knobs | None = None, seed: int = 0,
                 fastv_layer: int = FASTV_LAYER) -> None:
        if method not in PEERS:
            raise ValueError(f"method must be one of {PEERS}, got {method!r}")
        self.model = model.eval()
        self.cfg = model.cfg
        self.tokenizer = tokenizer
        self.gesture_classes = list(gesture_classes)
        self.method = method
        self.seed = int(seed)
        self.fastv_layer = int(fastv_layer)
        self._knobs = knobs or Knobs()
        self.reset()

    def set_knob(self, name: str, value: Any) -> None:
        self._knobs.set(name, value)

    def knobs(self) -> dict[str, Any]:
        return self._knobs.as_dict()

    def reset(self) -> None:
        self._windows = {m: deque(maxlen=self.cfg.temporal_window) for m in ("frame", "events")}
        self._steps = {"frame": 0, "events": 0}
        self._gen = torch.Generator().manual_seed(self.seed)

    # ---------------------------------------------------------------------------- steps

    @torch.no_grad()
    def process_frame(self, frame: np.ndarray, stamp_us: int | None = None) -> FrameResult:
        timer = StageTimer()
        with timer.stage("preprocess"):
            emb = self.model.encoder.embed_frames(frame_to_tensor(frame)[None])
        return self._step("frame", emb, timer)

    @torch.no_grad()
    def process_events(self, events: np.ndarray, stamp_us: int | None = None) -> FrameResult:
        timer = StageTimer()
        with timer.stage("preprocess"):
            validate_events(events)
            emb = self.model.encoder.embed_events(events_to_histogram(events)[None])
        return self._step("events", emb, timer)

    def _reduce(self, tokens: torch.Tensor, sizes: torch.Tensor, pos: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, float]:
        budget = int(self._knobs.max_fused_tokens)
        n, d = tokens.shape[1:]
        if self.method == "tome" and n > budget:
            x = torch.cat([tokens, pos], -1)  # centroids are averaged like the tokens
            while x.shape[1] > budget:
                x, sizes = bipartite_merge(x, sizes, x.shape[1] - budget, metric=x[..., :d])
            return x[..., :d], sizes, x[..., d:], F.fusion_flops(self.cfg, n, budget)
        if self.method == "random_drop" and n > budget:
            idx = torch.randperm(n, generator=self._gen)[:budget].sort().values
            return tokens[:, idx], sizes[:, idx], pos[:, idx], 0.0
        if self.method == "downscale":
            return tokens, sizes * float(POOL * POOL), pos, 0.0
        return tokens, sizes, pos, 0.0

    def _step(self, modality: str, emb: torch.Tensor, timer: StageTimer) -> FrameResult:
        cfg = self.cfg
        big = self.model.largest_branch
        with timer.stage("encoder"):
            if self.method == "downscale":
                emb = pool_tokens(emb)
            n_enc = emb.shape[1]
            out = self.model.encoder(emb, big)[0]
        window = self._windows[modality]
        window.append(out)
        self._steps[modality] += 1
        with timer.stage("fusion"):
            stacked = torch.stack(list(window))[None]
            layout = None
            if self.method == "downscale":  # pooled tokens sit at their k x k blocks' centres
                t = stacked.shape[1]
                layout = pool_tokens(token_positions(t, self.cfg.temporal_window))
            tokens, sizes, pos = self.model.fusion.dense(stacked, layout)
            tokens, sizes, pos, fusion_flops = self._reduce(tokens, sizes, pos)
        n_fused = tokens.shape[1]
        flops = {
            "preprocess": F.patch_embed_flops(cfg, modality),
            "change": 0.0,
            "router": 0.0,
            "encoder": F.encoder_flops(cfg, big, n_enc),
            "fusion": fusion_flops,
        }
        caption = gesture = None
        confidence = 0.0
        n_gen = 1
        if modality == "frame":
            tok = self.tokenizer
            with timer.stage("decoder"):
                if self.method == "fastv":
                    ids = fastv_generate(self.model.decoder, tokens, sizes, tok.bos_id,
                                            tok.eos_id, self._knobs.max_fused_tokens,
                                            self.fastv_layer)
                else:
                    ids = self.model.decoder.generate(tokens, sizes, tok.bos_id, tok.eos_id)[0]
                caption = tok.decode(ids)
            n_gen = len(ids) + (1 if len(ids) < cfg.max_caption_len else 0)
            if self.method == "fastv":
                flops["decoder"] = fastv_flops(cfg, n_fused, self._knobs.max_fused_tokens,
                                               n_gen, self.fastv_layer)
            else:
                flops["decoder"] = F.decode_flops(cfg, n_fused, n_gen)
            dense_head = F.decode_flops(cfg, len(window) * NUM_TOKENS, n_gen)
        else:
            with timer.stage("head"):
                p = torch.softmax(self.model.gesture_head(tokens, sizes, pos)[0], -1)
                idx = int(p.argmax())
                gesture, confidence = self.gesture_classes[idx], float(p[idx])
            flops["head"] = F.gesture_head_flops(cfg, n_fused)
            dense_head = F.gesture_head_flops(cfg, len(window) * NUM_TOKENS)
        record = ComputeRecord(
            frame_index=self._steps[modality] - 1, modality=modality, tokens_in=NUM_TOKENS,
            tokens_recomputed=n_enc, tokens_fused=n_fused, branch="large", flops=flops,
            dense_flops=(F.patch_embed_flops(cfg, modality) + F.encoder_flops(cfg, big)
                         + dense_head),
            latency_ms=dict(timer.ms), full_refresh=True,
        )
        mask = np.ones((GRID, GRID), dtype=bool)
        return FrameResult(record, caption, gesture, confidence, mask)


class EngineSwitch:
    """Several engines behind one: the pseudo-knob `engine` selects which one runs.

    `quality.evaluate_captions(switch, clips, {"tome": {"engine": "tome"}, "sttf+anc":
    {"engine": "torch", "sttf_enabled": True, ...}})` then streams every method through the
    same loop in one call and scores all of them together (one pycocoevalcap run, identical
    reference set). `engine` is listed first by `knobs()`, so it is applied before the others."""

    def __init__(self, engines: dict[str, Any]) -> None:
        if not engines:
            raise ValueError("engines must not be empty")
        self.engines = dict(engines)
        self.active = next(iter(self.engines))

    def set_knob(self, name: str, value: Any) -> None:
        if name == "engine":
            if value not in self.engines:
                raise ValueError(f"engine must be one of {list(self.engines)}, got {value!r}")
            self.active = value
            return
        self.engines[self.active].set_knob(name, value)

    def knobs(self) -> dict[str, Any]:
        return {"engine": self.active, **self.engines[self.active].knobs()}

    def reset(self) -> None:
        self.engines[self.active].reset()

    def process_frame(self, frame: np.ndarray, stamp_us: int | None = None) -> FrameResult:
        return self.engines[self.active].process_frame(frame, stamp_us)

    def process_events(self, events: np.ndarray, stamp_us: int | None = None) -> FrameResult:
        return self.engines[self.active].process_events(events, stamp_us)
