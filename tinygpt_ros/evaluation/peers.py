"""Peer token-reduction methods for `tinygpt-ros bench`, as Engine-protocol objects.

Every peer is built from the same TinyGPT weights and runs, per camera frame: patch embedding ->
the encoder (largest branch) -> the window of the last `window` frames (1: the current frame
only, the single-frame dense baseline's input; `temporal_window`: the engine's window) with the
learned time embedding (`TemporalFusion.dense`) -> its own token reduction -> the decoder,
greedy, decoding every frame (no caption reuse, no router, no gating). So they stream through
`quality.evaluate_captions` exactly like the engine does. Each method takes one budget value
(`PeerSpec.budget`), so the bench sweeps it into a curve:

- `dense`: no reduction (budget unused).
- `tome`: ToMe as published (Bolya et al., ICLR 2023) inside the encoder: in every block,
  after attention, bipartite soft matching merges `budget` = r tokens, with the block's keys
  averaged over heads as the similarity metric and size-weighted averages; attention uses
  proportional attention (log token size added to the logits), and the sizes reach the
  decoder's proportional attention. 196 - depth * r tokens per frame leave the encoder.
- `random_drop`: keep `budget` tokens of the window chosen uniformly at random (seeded,
  re-seeded on reset), sizes 1, after a dense encoder.
- `downscale`: the embedded 14 x 14 token grid (position embedding included) average-pooled to
  `budget` x `budget` before the encoder (adaptive pooling), each token sized by the patches
  it stands for.
- `fastv`: FastV (Chen et al., ECCV 2024) inside the decoder: the prefix [vision ; bos] runs
  through the first `fastv_layer` decoder layer(s) in full; the vision tokens the bos query
  attended to most there (mean over heads) are kept, `budget` = their share of the vision
  tokens (0.5: FastV's designed operating point), and the others are dropped from every later
  layer (prefill and every decoding step). With a 1-layer decoder fastv equals dense.

Compute: `ComputeRecord.flops` is analytical (`spec/flops.py` formulas on the token counts
each stage really saw), and `measured_flops` is counted by `runtime.torch_flops.FlopMeter`
around each stage as it runs (every linear, conv and matmul: ToMe's similarity matmuls and
FastV's pruned layers included), the counter the engine's `TorchKernels(count_flops=True)`
uses.
"""

from __future__ import annotations

import dataclasses
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as nnf

from tinygpt_ros.model.encoder import VisualEncoder
from tinygpt_ros.model.preprocess import events_to_histogram, frame_to_tensor
from tinygpt_ros.model.sttf import bipartite_merge, token_positions
from tinygpt_ros.model.tinygpt import TinyGPT
from tinygpt_ros.ops import validate_events
from tinygpt_ros.runtime.streaming import StageTimer
from tinygpt_ros.runtime.torch_flops import FlopMeter
from tinygpt_ros.spec import flops as F
from tinygpt_ros.spec.config import GRID, NUM_TOKENS, ModelConfig
from tinygpt_ros.spec.tokenizer import Tokenizer
from tinygpt_ros.spec.types import ComputeRecord, FrameResult

METHODS = ("dense", "tome", "random_drop", "downscale", "fastv")
FASTV_LAYER = 1  # fastv: prune after this many decoder layers


@dataclasses.dataclass(frozen=True)
class PeerSpec:
    """One peer configuration: the method, its budget knob and the frames it decodes."""

    method: str
    budget: float = 0.0  # tome: r per block; random_drop: tokens; downscale: grid; fastv: share
    window: int = 1  # frames whose tokens reach the decoder (1 = current frame only)

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"method must be one of {METHODS}, got {self.method!r}")
        if self.window < 1:
            raise ValueError(f"window must be >= 1, got {self.window}")
        if self.method == "fastv" and not 0 < self.budget <= 1:
            raise ValueError(f"fastv budget is the kept share in (0, 1], got {self.budget}")
        if self.method in ("tome", "random_drop", "downscale") and self.budget < 1:
            raise ValueError(f"{self.method} budget must be >= 1, got {self.budget}")


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
    vis_pos: torch.Tensor | None = None,
) -> list[int]:
    """Greedy caption ids (without bos/eos) of one item (vis (1, K, D), sizes (1, K) > 0,
    centroids vis_pos (1, K, 3) for a decoder that reads them) with
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
    x = torch.cat([decoder.project(vis, vis_pos), decoder.tok_emb(bos) + decoder.pos_emb[0:1]],
                  dim=1)
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


# ------------------------------------------------------------------------------------ ToMe


@torch.no_grad()
def tome_encode(encoder: VisualEncoder, tokens: torch.Tensor, branch: int, r: int,
                positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor,
                                                  list[int]]:
    """ToMe inside every block of encoder branch `branch` for (1, N, D) embedded tokens with
    (1, N, P) positions. Per block: attention with proportional attention (log size added to
    every key's logit), then r bipartite merges on the keys' head mean (size-weighted, sizes
    add, positions averaged alike), then the MLP on the merged tokens. Returns the exit-normed
    tokens, sizes, positions and the token count each block ran on."""
    depth = encoder.depth_of(branch)
    x, pos = tokens, positions
    d = x.shape[-1]
    size = x.new_ones(x.shape[:2])
    counts = []
    for blk in encoder.blocks[:depth]:
        counts.append(x.shape[1])
        att = blk.attn
        q, k, v = att.qkv_heads(blk.norm1(x))
        logits = (q * att.scale) @ k.transpose(-2, -1) + size.log()[:, None, None, :]
        out = torch.softmax(logits, -1) @ v
        b, _, n, _ = out.shape
        x = x + att.proj(out.transpose(1, 2).reshape(b, n, d))
        merged, size = bipartite_merge(torch.cat([x, pos], -1), size, r, metric=k.mean(1))
        x, pos = merged[..., :d], merged[..., d:]
        x = blk.mlp(x)
    return encoder.exit_norms[branch](x), size, pos, counts


def tome_encoder_flops(cfg: ModelConfig, counts: list[int], r: int) -> float:
    """Analytical cost of `tome_encode`: each block's attention on its n tokens, the key-metric
    similarity matmul (ceil(n/2) x floor(n/2) dots of head_dim) and the MLP on n - r tokens."""
    hd = cfg.dim // cfg.heads
    hidden = int(cfg.mlp_ratio * cfg.dim)
    total = 0.0
    for n in counts:
        m = n - min(r, n // 2)
        total += 2.0 * (n * 4 * cfg.dim * cfg.dim + 2 * n * n * cfg.dim)  # qkv, proj, QK^T, AV
        total += 2.0 * ((n + 1) // 2) * (n // 2) * hd
        total += 2.0 * m * 2 * cfg.dim * hidden
    return total


# ------------------------------------------------------------------------------------ engine


def pool_grid(tokens: torch.Tensor, g: int) -> torch.Tensor:
    """(B, 196, C) row-major 14 x 14 grid -> (B, g * g, C) by adaptive average pooling."""
    b, n, c = tokens.shape
    if n != NUM_TOKENS:
        raise ValueError(f"tokens must hold the {NUM_TOKENS}-token grid, got {n}")
    grid = tokens.transpose(1, 2).reshape(b, c, GRID, GRID)
    return nnf.adaptive_avg_pool2d(grid, g).flatten(2).transpose(1, 2)


@contextmanager
def _count(meter: dict[str, float], stage: str) -> Iterator[None]:
    """FLOPs of the torch ops run inside, added to meter[stage]."""
    with FlopMeter() as fc:
        yield
    meter[stage] = meter.get(stage, 0.0) + fc.total


class PeerEngine:
    """A peer method (see the module docstring) behind the `types.Engine` protocol. Knobs are
    accepted and ignored (the budget is the spec's), so evaluation code can set them on every
    engine alike."""

    backend = "torch-peer"

    def __init__(self, model: TinyGPT, tokenizer: Tokenizer, gesture_classes: list[str],
                 spec: PeerSpec, seed: int = 0, fastv_layer: int = FASTV_LAYER,
                 count_flops: bool = True) -> None:
        from tinygpt_ros.spec.config import Knobs

        self.model = model.eval()
        self.cfg = model.cfg
        if spec.window > self.cfg.temporal_window:
            raise ValueError(f"window {spec.window} exceeds the model's temporal_window "
                             f"{self.cfg.temporal_window}")
        self.tokenizer = tokenizer
        self.gesture_classes = list(gesture_classes)
        self.spec = spec
        self.method = spec.method
        self.seed = int(seed)
        self.fastv_layer = int(fastv_layer)
        self.count_flops = bool(count_flops)
        self._knobs = Knobs()
        self.reset()

    def set_knob(self, name: str, value: Any) -> None:
        self._knobs.set(name, value)

    def knobs(self) -> dict[str, Any]:
        return self._knobs.as_dict()

    def reset(self) -> None:
        self._windows = {m: deque(maxlen=self.spec.window) for m in ("frame", "events")}
        self._steps = {"frame": 0, "events": 0}
        self._gen = torch.Generator().manual_seed(self.seed)

    @contextmanager
    def _stage(self, timer: StageTimer, meter: dict[str, float], stage: str,
               timed: str | None = None) -> Iterator[None]:
        with timer.stage(timed or stage):
            if self.count_flops:
                with _count(meter, stage):
                    yield
            else:
                yield

    # ---------------------------------------------------------------------------- steps

    @torch.no_grad()
    def process_frame(self, frame: np.ndarray, stamp_us: int | None = None,
                      pixel_scale: float = 1.0) -> FrameResult:
        # pixel_scale: unused, a peer has no motion stage to report in camera pixels
        timer, meter = StageTimer(), {}
        with self._stage(timer, meter, "preprocess"):
            emb = self.model.encoder.embed_frames(frame_to_tensor(frame)[None])
        return self._step("frame", emb, timer, meter)

    @torch.no_grad()
    def process_events(self, events: np.ndarray, stamp_us: int | None = None) -> FrameResult:
        timer, meter = StageTimer(), {}
        with self._stage(timer, meter, "preprocess"):
            validate_events(events)
            emb = self.model.encoder.embed_events(events_to_histogram(events)[None])
        return self._step("events", emb, timer, meter)

    def _encode(self, emb: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor,
                                                   float, int]:
        """Encoder of the method: tokens (1, N, D), sizes (1, N), (x, y) positions (1, N, 2),
        analytical encoder FLOPs, tokens that entered the encoder."""
        cfg, big = self.cfg, self.model.largest_branch
        grid = token_positions(1, 1)[0, :, :2][None].to(emb)
        if self.method == "tome":
            out, size, pos, counts = tome_encode(self.model.encoder, emb, big,
                                                 int(self.spec.budget), grid)
            return out, size, pos, tome_encoder_flops(cfg, counts, int(self.spec.budget)), \
                NUM_TOKENS
        if self.method == "downscale":
            g = int(self.spec.budget)
            emb, grid = pool_grid(emb, g), pool_grid(grid, g)
            size = emb.new_full(emb.shape[:2], NUM_TOKENS / (g * g))
            out = self.model.encoder(emb, big)
            return out, size, grid, F.encoder_flops(cfg, big, emb.shape[1]), emb.shape[1]
        out = self.model.encoder(emb, big)
        return out, emb.new_ones(emb.shape[:2]), grid, F.encoder_flops(cfg, big), NUM_TOKENS

    def _window_tokens(self, window: deque) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The window's frames through the learned time embedding, concatenated, with their
        sizes and (x, y, t) positions (every frame of a window keeps the same token count)."""
        times = ops_time(len(window), self.cfg.temporal_window)
        layout = torch.stack([torch.cat([p[0], p.new_full((p.shape[1], 1), times[i])], -1)
                              for i, (_, _, p) in enumerate(window)])
        stacked = torch.stack([o[0] for o, _, _ in window])[None]
        tokens, _, pos = self.model.fusion.dense(stacked, layout)
        return tokens, torch.cat([sz for _, sz, _ in window], 1), pos

    def _step(self, modality: str, emb: torch.Tensor, timer: StageTimer,
              meter: dict[str, float]) -> FrameResult:
        cfg = self.cfg
        with self._stage(timer, meter, "encoder"):
            out, size, pos, enc_flops, n_enc = self._encode(emb)
        window = self._windows[modality]
        window.append((out, size, pos))
        self._steps[modality] += 1
        with self._stage(timer, meter, "fusion"):
            tokens, sizes, pos = self._window_tokens(window)
            n = tokens.shape[1]
            if self.method == "random_drop" and n > self.spec.budget:
                idx = torch.randperm(n, generator=self._gen)[:int(self.spec.budget)].sort().values
                tokens, sizes, pos = tokens[:, idx], sizes[:, idx], pos[:, idx]
        n_fused = tokens.shape[1]
        flops = {"preprocess": F.patch_embed_flops(cfg, modality), "change": 0.0, "router": 0.0,
                 "encoder": enc_flops, "fusion": 0.0}
        caption = gesture = None
        confidence = 0.0
        keep = max(1, round(self.spec.budget * n_fused)) if self.method == "fastv" else n_fused
        if modality == "frame":
            tok = self.tokenizer
            with self._stage(timer, meter, "decoder"):
                if self.method == "fastv":
                    ids = fastv_generate(self.model.decoder, tokens, sizes, tok.bos_id,
                                         tok.eos_id, keep, self.fastv_layer, vis_pos=pos)
                else:
                    ids = self.model.decoder.generate(tokens, sizes, tok.bos_id, tok.eos_id,
                                                      vis_pos=pos)[0]
                caption = tok.decode(ids)
            n_gen = len(ids) + (1 if len(ids) < cfg.max_caption_len else 0)
            flops["decoder"] = fastv_flops(cfg, n_fused, keep, n_gen, self.fastv_layer) \
                if self.method == "fastv" else F.decode_flops(cfg, n_fused, n_gen)
            dense_head = F.decode_flops(cfg, len(window) * NUM_TOKENS, n_gen)
        else:
            with self._stage(timer, meter, "head"):
                p = torch.softmax(self.model.gesture_head(tokens, sizes, pos)[0], -1)
                idx = int(p.argmax())
                gesture, confidence = self.gesture_classes[idx], float(p[idx])
            flops["head"] = F.gesture_head_flops(cfg, n_fused)
            dense_head = F.gesture_head_flops(cfg, len(window) * NUM_TOKENS)
        record = ComputeRecord(
            frame_index=self._steps[modality] - 1, modality=modality, tokens_in=NUM_TOKENS,
            tokens_recomputed=n_enc, tokens_fused=keep, branch="large", flops=flops,
            dense_flops=(F.patch_embed_flops(cfg, modality)
                         + F.encoder_flops(cfg, self.model.largest_branch) + dense_head),
            latency_ms=dict(timer.ms), full_refresh=True, measured_flops=meter,
        )
        mask = np.ones((GRID, GRID), dtype=bool)
        return FrameResult(record, caption, gesture, confidence, mask)


def ops_time(t: int, temporal_window: int) -> list[float]:
    """Normalised time coordinate of each of a window's last t slots (as `token_positions`)."""
    return [float(v) for v in token_positions(t, temporal_window)[:, 0, 2]]


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

    def process_frame(self, frame: np.ndarray, stamp_us: int | None = None,
                      pixel_scale: float = 1.0) -> FrameResult:
        return self.engines[self.active].process_frame(frame, stamp_us, pixel_scale)

    def process_events(self, events: np.ndarray, stamp_us: int | None = None) -> FrameResult:
        return self.engines[self.active].process_events(events, stamp_us)
