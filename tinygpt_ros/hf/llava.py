"""`streaming.Kernels` for the LLaVA family (`LlavaForConditionalGeneration`): a CLIP or SigLIP
vision tower, a multimodal projector, and a Llama / Qwen2 (any causal) language model.

Everything reuses the pretrained modules' own weights:
- preprocessing follows the checkpoint's image processor (`hf.common.Preprocessor`);
- `embed_frame` / `run_encoder` are the family-neutral `vision.TowerFront` and
  `vision.GatedTower` (one implementation for GIT and LLaVA). The full branch stops at the
  config's `vision_feature_layer` (LLaVA reads a hidden state, e.g. the penultimate layer's,
  without the tower's final norm); the ANC branches are a depth truncation of it and the
  same depth on the pooled frame's 7 x 7 grid (`vision.tower_branches`); the "default"
  feature strategy drops the CLS row, "full" keeps it (fusion keeps it apart);
- `fuse` fuses the tower features (before the projector), and `generate` runs the projector
  on the fused tokens only, so a fused frame projects K rows instead of 196;
- `generate` / `decode` builds the prompt from the processor's chat template (`prompt_ids`),
  puts the fused tokens where the processor puts the image tokens, and decodes greedily
  (`ops.greedy_decode`, optionally checking recent captions as drafts) through the language
  model with a KV cache and a 4-D float attention mask: causal, plus log(size) on every key of
  a fused token. Sizes of 1 give bias 0: the model's own attention, so with STTF
  and ANC off the captions are token-identical to the model's own greedy generate().

ONNX export is not provided for this family: the torch backend serves it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from tinygpt_ros import ops
from tinygpt_ros.hf.common import (
    DEFAULT_MAX_CAPTION_LEN,
    DEFAULT_TEMPORAL_WINDOW,
    HfKernelsCommon,
    Preprocessor,
    stream_model_config,
    tower_grid,
)
from tinygpt_ros.hf.router import RouterParams
from tinygpt_ros.hf.vision import GatedTower, TowerFront
from tinygpt_ros.model.weights import ModelLoadError
from tinygpt_ros.spec.config import ModelConfig

DEFAULT_PROMPT = "Describe the image in one sentence."
FALLBACK_TEMPLATE = "USER: {image}\n{prompt} ASSISTANT:"  # llava-1.5's, when none is shipped


def _np(t: torch.Tensor) -> np.ndarray:
    return t.detach().cpu().numpy()


def feature_depth(num_layers: int, feature_layer: Any) -> int:
    """Layers of the tower LLaVA runs to produce its features: hidden_states[feature_layer]
    is the output of layer `feature_layer` (hidden_states[0] is the embedding)."""
    if not isinstance(feature_layer, int):
        raise ModelLoadError(f"vision_feature_layer {feature_layer!r}: only a single feature "
                             "layer is supported (not a list of layers)")
    depth = num_layers + 1 + feature_layer if feature_layer < 0 else feature_layer
    if not 1 <= depth <= num_layers:
        raise ModelLoadError(f"vision_feature_layer {feature_layer} selects no layer of a "
                             f"{num_layers}-layer tower")
    return depth


def llava_model_config(conf: dict[str, Any], depths: tuple[int, ...],
                       max_caption_len: int = DEFAULT_MAX_CAPTION_LEN,
                       temporal_window: int = DEFAULT_TEMPORAL_WINDOW,
                       grids: tuple[int, ...] = ()) -> ModelConfig:
    """The engine's `ModelConfig` view of a LLaVA config.json dict."""
    v, t = conf["vision_config"], conf["text_config"]
    tower_grid(v, "LLaVA")
    return stream_model_config(v, depths, t["hidden_size"], t["num_hidden_layers"],
                               t["num_attention_heads"], t["vocab_size"], max_caption_len,
                               temporal_window, grids)


def prompt_ids(processor: Any, image_token_id: int, image_size: int,
               prompt: str = DEFAULT_PROMPT) -> tuple[list[int], list[int], int]:
    """(ids before the image, ids after it, image tokens the processor expands it to) for a
    one-image user turn and the assistant's turn, from the processor's chat template (or
    llava-1.5's plain template when it ships none), tokenised by the processor itself."""
    image_token = getattr(processor, "image_token", "<image>")
    if getattr(processor, "chat_template", None):
        conv = [{"role": "user", "content": [{"type": "image"},
                                             {"type": "text", "text": prompt}]}]
        text = processor.apply_chat_template(conv, add_generation_prompt=True, tokenize=False)
    else:
        text = FALLBACK_TEMPLATE.format(image=image_token, prompt=prompt)
    dummy = np.zeros((image_size, image_size, 3), np.uint8)
    ids = processor(text=text, images=dummy, return_tensors="np")["input_ids"][0].tolist()
    where = [i for i, t in enumerate(ids) if t == image_token_id]
    if not where or where != list(range(where[0], where[-1] + 1)):
        raise ModelLoadError(f"the processor's prompt {text!r} has no single run of image "
                             f"tokens (id {image_token_id})")
    return ids[: where[0]], ids[where[-1] + 1:], len(where)


class LlavaKernels(HfKernelsCommon):
    """LLaVA behind the `Kernels` protocol (torch, CPU or CUDA, inference only)."""

    family = "llava"

    def __init__(
        self,
        model: nn.Module,
        processor: Any,
        preprocessor: dict,
        depths: tuple[int, ...],
        router: RouterParams | None = None,
        device: str | torch.device = "cpu",
        max_caption_len: int = DEFAULT_MAX_CAPTION_LEN,
        temporal_window: int = DEFAULT_TEMPORAL_WINDOW,
        prompt: str = DEFAULT_PROMPT,
        grids: tuple[int, ...] = (),
    ) -> None:
        """`depths` and `grids` (`vision.tower_branches`; no grids: every branch 14 x 14)
        are the ANC branches."""
        self.device = torch.device(device)
        self.model = model.to(self.device).eval()
        conf = model.config
        inner = getattr(model, "model", model)  # LlavaModel (transformers >= 4.52)
        tower = inner.vision_tower
        self.vision = getattr(tower, "vision_model", tower)
        self.layers = self.vision.encoder.layers
        self.heads = conf.vision_config.num_attention_heads
        self.projector = inner.multi_modal_projector
        self.language_model = inner.language_model
        self.lm_head = model.lm_head
        full = feature_depth(len(self.layers), conf.vision_feature_layer)
        if max(depths) > full or min(depths) < 1:
            raise ModelLoadError(f"branch depths {list(depths)} do not fit the {full} layers "
                                 "LLaVA reads its features from")
        self.depths = tuple(depths)
        self.router = router
        self.cfg = llava_model_config(conf.to_dict(), self.depths, max_caption_len,
                                      temporal_window, grids)
        self.image_size = int(conf.vision_config.image_size)
        self.pre = Preprocessor(preprocessor, self.image_size)
        self.front = TowerFront(self.vision, self.device)
        strategy = conf.vision_feature_select_strategy
        if strategy not in ("default", "full"):
            raise ModelLoadError(f"vision_feature_select_strategy {strategy!r} is not supported")
        self.drop = self.front.n_cls if strategy == "default" else 0  # rows LLaVA discards
        self.n_keep = self.front.n_cls - self.drop
        image_id = getattr(conf, "image_token_id", None)
        if image_id is None:
            image_id = conf.image_token_index
        self.prompt = prompt
        self.prefix, self.suffix, n_image = prompt_ids(processor, int(image_id),
                                                            self.image_size, prompt)
        if n_image != self.n_keep + 196:
            raise ModelLoadError(f"the processor expands the image to {n_image} tokens; the "
                                 f"tower gives {self.n_keep + 196}")
        gen = getattr(model, "generation_config", None)
        eos = getattr(gen, "eos_token_id", None) or conf.text_config.eos_token_id
        self.eos_ids = set(eos if isinstance(eos, list | tuple) else [eos])
        tok = processor.tokenizer
        bos = getattr(gen, "bos_token_id", None) or tok.bos_token_id
        self.bos_id = int(bos if bos is not None else min(self.eos_ids))
        self.embed_tokens = self.language_model.get_input_embeddings()
        self.change_scale = self.measure_change_scale()

    def _t(self, a: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(a)).to(self.device)

    # ------------------------------------------------------------------ vision

    @torch.no_grad()
    def embed_frame(self, x: np.ndarray) -> np.ndarray:
        return _np(self.front.patches(self._t(x)))

    def new_encoder_state(self) -> GatedTower:
        return GatedTower(self.layers, self.heads)

    @torch.no_grad()
    def embed_grid(self, pooled: np.ndarray, grid: int) -> np.ndarray:
        return _np(self.front.patches(self._t(pooled), grid))

    @torch.no_grad()
    def run_encoder(self, state: GatedTower, tokens: np.ndarray, selected: np.ndarray | None,
                    branch: int, pixels: np.ndarray | None = None) -> tuple[np.ndarray, int]:
        rows, sel_rows, grid = self.branch_input(tokens, selected, branch, pixels)
        sel = None if sel_rows is None else torch.from_numpy(sel_rows).to(self.device)
        out, n = self.front.run(state, self._t(rows), sel, self.depths[branch])
        # a copy (`branch_output`): the cache keeps writing into `out`
        return self.branch_output(_np(out[self.drop:]), grid, n)

    # ------------------------------------------------------------------ decoder

    def _ids_embed(self, ids: list[int]) -> torch.Tensor:
        return self.embed_tokens(torch.tensor(ids, dtype=torch.long, device=self.device))

    def generate(self, tokens: np.ndarray, sizes: np.ndarray,
                 positions: np.ndarray | None = None) -> list[int]:
        return self.decode(tokens, sizes).ids

    @torch.no_grad()
    def decode(self, tokens: np.ndarray, sizes: np.ndarray,
               drafts: Sequence[Sequence[int]] = (),
               positions: np.ndarray | None = None) -> ops.Decoded:
        """`ops.greedy_decode` through the language model; text position 0 is the whole prompt
        (its last row predicts the first word), and `drafts` (recent captions' ids) let one
        pass check several tokens (see `ops.drafting`). `positions` (the tokens' centroids)
        is accepted and unused: the tower embeds where each patch is itself."""
        vis = self.projector(self._t(np.asarray(tokens, np.float32)))
        dtype = vis.dtype
        log_size = torch.log(self._t(np.asarray(sizes, np.float32)).clamp_min(1e-6)).to(dtype)
        p, k = len(self.prefix), vis.shape[0]
        prompt = torch.cat([self._ids_embed(self.prefix), vis, self._ids_embed(self.suffix)])
        n_prompt = prompt.shape[0]
        # key bias: 0 for text keys, log(size) for fused image keys
        key_bias = torch.zeros(n_prompt, dtype=dtype, device=self.device)
        key_bias[p:p + k] = log_size
        state: dict[str, Any] = {"past": None, "bias": key_bias[:0]}
        low = torch.finfo(dtype).min

        def run(ids: list[int], start: int) -> list[int]:
            if start == 0:  # the prompt stands at text position 0
                x = torch.cat([prompt, self._ids_embed(ids[1:])]) if len(ids) > 1 else prompt
                new_bias = torch.cat([key_bias, key_bias.new_zeros(len(ids) - 1)])
            else:
                x = self._ids_embed(ids)
                new_bias = key_bias.new_zeros(len(ids))
            n, cached = x.shape[0], state["bias"].shape[0]
            bias = torch.cat([state["bias"], new_bias])
            state["bias"] = bias
            mask = bias[None].repeat(n, 1)
            mask[:, cached:] += torch.triu(torch.full((n, n), low, dtype=dtype,
                                                      device=self.device), diagonal=1)
            pos = torch.arange(cached, cached + n, device=self.device)
            out = self.language_model(inputs_embeds=x[None], attention_mask=mask[None, None],
                                      position_ids=pos[None], past_key_values=state["past"],
                                      use_cache=True)
            state["past"] = out.past_key_values
            rows = out.last_hidden_state[0, n - len(ids):]  # the last prompt row, then drafts
            return self.lm_head(rows).argmax(dim=-1).tolist()

        def rewind(n_text: int) -> None:
            keep = n_prompt - 1 + n_text
            state["past"].crop(keep - state["bias"].shape[0])  # a negative count: drop them
            state["bias"] = state["bias"][:keep]

        return ops.greedy_decode(run, rewind, self.bos_id, self.eos_ids,
                                 self.cfg.max_caption_len, drafts)
