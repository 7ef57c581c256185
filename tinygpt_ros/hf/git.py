"""`streaming.Kernels` for GIT (`GitForCausalLM`): a CLIP ViT image encoder whose projected
tokens prefix a BERT-style (post-LN) text decoder.

Everything reuses the pretrained modules' own weights:
- preprocessing follows the checkpoint's preprocessor_config.json (shortest edge, centre crop,
  mean/std) in numpy (`ops.frame_to_pretrained_input`);
- `embed_frame` is the patch conv + position embedding + `pre_layrnorm` (per token, so it can
  run before the change test); the CLS token's input is constant and always recomputed;
- `run_encoder` is `vision.GatedTower` at the branch depth (and grid: the cheap branch runs
  the pooled frame's 7 x 7 tokens, `HfKernelsCommon.branch_input`), then `post_layernorm` and
  GIT's visual projection (cached per row, so a gated frame projects only its changed rows);
- `fuse` keeps the newest CLS token and fuses the window's patch tokens with
  `ops.temporal_fusion` (GIT has no time embedding: zeros);
- `generate` / `decode` (`git_common`, shared with the onnxruntime kernels) is greedy decoding
  (`ops.greedy_decode`, optionally checking recent captions as drafts) through the passes of
  `git_decoder`, with a KV cache in which every visual key gets the bias log(size) in every
  layer (image rows attend to image rows, text rows to image rows and causally to text,
  as GIT's mask does). Sizes of 1 give bias 0: the model's own attention.

Rows returned by `run_encoder` are 1 + 196 (CLS first; a coarse branch's rows repeated over
their patches); the engine only stacks them.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from tinygpt_ros.hf.git_common import (
    DEFAULT_MAX_CAPTION_LEN,
    DEFAULT_TEMPORAL_WINDOW,
    GitKernelsCommon,
    Preprocessor,
    git_model_config,
)
from tinygpt_ros.hf.git_decoder import TextPrefill, TextStep
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
        self.projected_key = (0, 0)  # (grid, depth) of `projected`


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
        grids: tuple[int, ...] = (),
    ) -> None:
        """`depths` and `grids` (`vision.tower_branches`; no grids: every branch 14 x 14)
        are the ANC branches."""
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
                                    temporal_window, grids)
        self.image_size = int(vconf.image_size)
        self.pre = Preprocessor(preprocessor, self.image_size)
        gen = getattr(model, "generation_config", None)
        self.bos_id = int(getattr(gen, "bos_token_id", None) or conf.bos_token_id)
        eos = getattr(gen, "eos_token_id", None) or conf.eos_token_id
        self.eos_ids = set(eos if isinstance(eos, list | tuple) else [eos])
        self._prefill, self._step = TextPrefill(self.model), TextStep(self.model)
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
    def embed_grid(self, pooled: np.ndarray, grid: int) -> np.ndarray:
        return _np(self.front.patches(self._t(pooled), grid))

    @torch.no_grad()
    def run_encoder(self, state: GitStream, tokens: np.ndarray, selected: np.ndarray | None,
                    branch: int, pixels: np.ndarray | None = None) -> tuple[np.ndarray, int]:
        depth = self.depths[branch]
        rows, sel_rows, grid = self.branch_input(tokens, selected, branch, pixels)
        sel = None if sel_rows is None else torch.from_numpy(sel_rows).to(self.device)
        out, n = self.front.run(state.tower, self._t(rows), sel, depth)
        tower = state.tower
        project = self.model.git.visual_projection
        if tower.last_dense or state.projected is None or state.projected_key != (grid, depth):
            state.projected = project(self.vision.post_layernorm(out))
            state.projected_key = (grid, depth)
        else:
            idx = torch.cat([sel.new_ones(1), sel]).nonzero().squeeze(1)  # CLS first
            state.projected[idx] = project(self.vision.post_layernorm(out[idx]))
        return self.branch_output(_np(state.projected), grid, n)

    # ------------------------------------------------------------------ decoder

    @torch.no_grad()
    def first_pass(self, vis: np.ndarray, log_size: np.ndarray, ids: np.ndarray,
                   position: np.ndarray) -> tuple[torch.Tensor, ...]:
        return self._prefill(self._t(vis), self._t(log_size), self._t(ids), self._t(position))

    @torch.no_grad()
    def next_pass(self, ids: np.ndarray, position: np.ndarray, past_k: torch.Tensor,
                  past_v: torch.Tensor, key_bias: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return self._step(self._t(ids), self._t(position), past_k, past_v, key_bias)
