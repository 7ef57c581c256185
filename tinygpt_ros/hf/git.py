"""`streaming.Kernels` for GIT (`GitForCausalLM`): a CLIP ViT image encoder whose projected
tokens prefix a BERT-style (post-LN) text decoder.

Everything reuses the pretrained modules' own weights:
- preprocessing follows the checkpoint's preprocessor_config.json (shortest edge, centre crop,
  mean/std) in numpy (`ops.frame_to_pretrained_input`);
- `embed_frame` is the patch conv + position embedding + `pre_layrnorm` (per token, so it can
  run before the change test); the CLS token's input is constant and always recomputed;
- `run_encoder` is `vision.GatedTower` at the branch depth, then `post_layernorm` and GIT's
  visual projection (cached per row, so a gated frame projects only its changed rows);
- `fuse` keeps the newest CLS token and fuses the window's patch tokens with
  `ops.temporal_fusion` (GIT has no time embedding: zeros);
- `generate` / `decode` is greedy decoding (`ops.greedy_decode`, optionally checking recent
  captions as drafts) with a KV cache in which every visual key gets the bias log(size) in
  every layer (image rows attend to image rows, text rows to image rows and causally to text,
  as GIT's mask does). Sizes of 1 give bias 0: the model's own attention.

Rows returned by `run_encoder` are 1 + 196 (CLS first); the engine only stacks them.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from tinygpt_ros import ops
from tinygpt_ros.hf.git_common import (
    DEFAULT_MAX_CAPTION_LEN,
    DEFAULT_TEMPORAL_WINDOW,
    GitKernelsCommon,
    Preprocessor,
    git_model_config,
)
from tinygpt_ros.hf.router import RouterParams
from tinygpt_ros.hf.vision import GatedTower, TowerFront
from tinygpt_ros.model.weights import ModelLoadError


def _np(t: torch.Tensor) -> np.ndarray:
    return t.detach().cpu().numpy()


class GitStream:
    """Per-stream state: the gated tower cache and the projected rows of its last output."""

    def __init__(self, tower: GatedTower) -> None:
        self.tower = tower
        self.projected: torch.Tensor | None = None
        self.projected_depth = 0


class GitKernels(GitKernelsCommon):
    """GIT behind the `Kernels` protocol (torch, CPU or CUDA, inference only)."""

    family = "git"

    def __init__(
        self,
        model: nn.Module,
        preprocessor: dict,
        depths: tuple[int, ...],
        router: RouterParams | None = None,
        device: str | torch.device = "cpu",
        max_caption_len: int = DEFAULT_MAX_CAPTION_LEN,
        temporal_window: int = DEFAULT_TEMPORAL_WINDOW,
    ) -> None:
        self.device = torch.device(device)
        self.model = model.to(self.device).eval()
        conf = model.config
        vconf = conf.vision_config
        vision = model.git.image_encoder.vision_model
        self.vision = vision
        self.layers = vision.encoder.layers
        self.heads = vconf.num_attention_heads
        if max(depths) > len(self.layers) or min(depths) < 1:
            raise ModelLoadError(f"branch depths {list(depths)} do not fit a tower of "
                                 f"{len(self.layers)} layers")
        self.depths = tuple(depths)
        self.router = router
        self.cfg = git_model_config(conf.to_dict(), self.depths, max_caption_len,
                                    temporal_window)
        self.image_size = int(vconf.image_size)
        self.pre = Preprocessor(preprocessor, self.image_size)
        gen = getattr(model, "generation_config", None)
        self.bos_id = int(getattr(gen, "bos_token_id", None) or conf.bos_token_id)
        eos = getattr(gen, "eos_token_id", None) or conf.eos_token_id
        self.eos_ids = set(eos if isinstance(eos, list | tuple) else [eos])
        self.front = TowerFront(vision, self.device)
        self._cls_in = self.front.cls_input
        self.change_scale = self.measure_change_scale()

    def _t(self, a: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(a)).to(self.device)

    # ------------------------------------------------------------------ vision

    @torch.no_grad()
    def embed_frame(self, x: np.ndarray) -> np.ndarray:
        return _np(self.front.patches(self._t(x)))

    def new_encoder_state(self) -> GitStream:
        return GitStream(GatedTower(self.layers, self.heads))

    @torch.no_grad()
    def run_encoder(self, state: GitStream, tokens: np.ndarray, selected: np.ndarray | None,
                    branch: int) -> tuple[np.ndarray, int]:
        depth = self.depths[branch]
        sel = None if selected is None else torch.from_numpy(selected).to(self.device)
        out, n = self.front.run(state.tower, self._t(tokens), sel, depth)
        tower = state.tower
        project = self.model.git.visual_projection
        if tower.last_dense or state.projected is None or state.projected_depth != depth:
            state.projected = project(self.vision.post_layernorm(out))
            state.projected_depth = depth
        else:
            idx = torch.cat([sel.new_ones(1), sel]).nonzero().squeeze(1)  # CLS first
            state.projected[idx] = project(self.vision.post_layernorm(out[idx]))
        return _np(state.projected).copy(), n

    # ------------------------------------------------------------------ decoder

    def _attend(self, layer: nn.Module, h: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                q: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        """One GIT text layer for rows h (n, H) whose queries q attend to keys/values
        (heads, N, hd) with an additive (n or 1, N) bias; post-LN residuals as in BERT."""
        scores = (q @ k.transpose(-2, -1)) / (q.shape[-1] ** 0.5) + bias
        ctx = (torch.softmax(scores, dim=-1) @ v).transpose(0, 1).reshape(h.shape[0], -1)
        a = layer.attention.output(ctx, h)
        return layer.output(layer.intermediate(a), a)

    def generate(self, tokens: np.ndarray, sizes: np.ndarray) -> list[int]:
        return self.decode(tokens, sizes).ids

    @torch.no_grad()
    def decode(self, tokens: np.ndarray, sizes: np.ndarray,
               drafts: Sequence[Sequence[int]] = ()) -> ops.Decoded:
        """`ops.greedy_decode` over a KV cache whose image rows come first; `drafts` (recent
        captions' ids) let one pass check several tokens (see `ops.drafting`). The first pass
        runs the image rows with the first text rows, as GIT's own generate() does."""
        git = self.model.git
        layers = git.encoder.layer
        heads = self.model.config.num_attention_heads
        emb = git.embeddings

        def split(x: torch.Tensor) -> torch.Tensor:
            return x.view(x.shape[0], heads, -1).transpose(0, 1)

        vis = self._t(np.asarray(tokens, np.float32))
        n_vis = vis.shape[0]
        log_size = torch.log(self._t(np.asarray(sizes, np.float32)).clamp_min(1e-6))
        past_k: list[torch.Tensor] = []
        past_v: list[torch.Tensor] = []
        cache = {"bias": log_size[:0]}  # key bias: log(size) per image key, 0 per text key

        def run(ids: list[int], start: int) -> list[int]:
            n = len(ids)
            h = emb.LayerNorm(emb.word_embeddings.weight[ids]
                              + emb.position_embeddings.weight[start:start + n])
            first = start == 0
            if first:  # image rows: bidirectional among themselves, blind to the text
                h = torch.cat([vis, h])
                cache["bias"] = log_size
            bias = torch.cat([cache["bias"], log_size.new_zeros(n)])
            cache["bias"] = bias
            rows = bias[None].repeat(h.shape[0], 1)  # text rows see the image and earlier text
            rows[-n:, -n:] += torch.triu(torch.full((n, n), -1e9), diagonal=1)
            if first:
                rows[:n_vis, n_vis:] = -1e9
            for i, layer in enumerate(layers):
                s = layer.attention.self
                q, k, v = (split(m(h)) for m in (s.query, s.key, s.value))
                if first:
                    past_k.append(k)
                    past_v.append(v)
                else:
                    past_k[i] = torch.cat([past_k[i], k], dim=1)
                    past_v[i] = torch.cat([past_v[i], v], dim=1)
                h = self._attend(layer, h, past_k[i], past_v[i], q, rows)
            return self.model.output(h[-n:]).argmax(dim=-1).tolist()

        def rewind(n_text: int) -> None:
            keep = n_vis + n_text
            for i in range(len(past_k)):
                past_k[i], past_v[i] = past_k[i][:, :keep], past_v[i][:, :keep]
            cache["bias"] = cache["bias"][:keep]

        return ops.greedy_decode(run, rewind, self.bos_id, self.eos_ids,
                                 self.cfg.max_caption_len, drafts)
