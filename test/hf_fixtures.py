"""Tiny randomly initialised Hugging Face checkpoints, built offline from configs and saved with
`save_pretrained`, so the real loading code is tested without downloads."""

from __future__ import annotations

import json
import os
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

WORDS = ["a", "the", "man", "woman", "dog", "cat", "on", "in", "with", "red", "blue", "car",
         "street", "table", "sitting", "standing", "of", "and", "is", "to", "at", "room"]


def tiny_bert_tokenizer():
    """A WordPiece tokenizer over a small vocabulary (GIT uses BERT's tokenizer)."""
    from transformers import BertTokenizer

    vocab = {w: i for i, w in enumerate(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS])}
    return BertTokenizer(vocab=vocab)


def git_config(vision_layers: int = 4, text_layers: int = 2, hidden: int = 32,
               vision_hidden: int = 32, image_size: int = 224, patch: int = 16,
               heads: int = 4, vision_heads: int = 4, vocab: int = 5 + len(WORDS)):
    from transformers import GitConfig

    return GitConfig(
        vision_config={"hidden_size": vision_hidden, "intermediate_size": 4 * vision_hidden,
                       "num_hidden_layers": vision_layers, "num_attention_heads": vision_heads,
                       "image_size": image_size, "patch_size": patch},
        vocab_size=vocab, hidden_size=hidden, num_hidden_layers=text_layers,
        num_attention_heads=heads, intermediate_size=4 * hidden, max_position_embeddings=64,
        bos_token_id=2, eos_token_id=3, pad_token_id=0)


def save_tiny_git(path: Path, seed: int = 0, **config) -> Path:
    """A random GitForCausalLM with a BERT tokenizer and a CLIP preprocessor config in `path`."""
    import torch
    from transformers import GitForCausalLM

    from tinygpt_ros.evaluation.hf_bench import clip_preprocessor_config

    torch.manual_seed(seed)
    model = GitForCausalLM(git_config(**config)).eval()
    with torch.no_grad():  # larger text weights than the init so captions vary with the image
        for p in model.git.encoder.parameters():
            if p.ndim == 2:
                p.mul_(8.0)
        model.git.visual_projection.visual_projection[0].weight.mul_(8.0)
    path.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(path)
    tiny_bert_tokenizer().save_pretrained(path)
    size = model.config.vision_config.image_size
    (path / "preprocessor_config.json").write_text(json.dumps(clip_preprocessor_config(size)))
    return path


LLAVA_SPECIALS = ["<pad>", "<unk>", "<s>", "</s>", "<image>"]
# A minimal chat template in the shape of llava's: the user turn with its image, then the
# assistant's turn (role names are words of the tiny vocabulary).
LLAVA_TEMPLATE = (
    "{% for m in messages %}{{ m['role'] }} : {% for c in m['content'] %}"
    "{% if c['type'] == 'image' %}<image> {% else %}{{ c['text'] }} {% endif %}{% endfor %}"
    "{% endfor %}{% if add_generation_prompt %}assistant : {% endif %}")
LLAVA_PROMPT_WORDS = ["user", "assistant", ":", "describe", "image", "in", "one", "sentence."]


def tiny_llava_tokenizer():
    """A WordLevel tokenizer (the `tokenizers` library) wrapped as a fast tokenizer."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    words = list(dict.fromkeys(WORDS + LLAVA_PROMPT_WORDS))
    vocab = {t: i for i, t in enumerate(LLAVA_SPECIALS + words)}
    tk = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tk.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(
        tokenizer_object=tk, bos_token="<s>", eos_token="</s>", pad_token="<pad>",
        unk_token="<unk>", extra_special_tokens={"image_token": "<image>"})


def save_tiny_llava(path: Path, seed: int = 0, tower: str = "clip", text: str = "qwen2",
                    vision_layers: int = 4, image_size: int = 224, patch: int = 16,
                    hidden: int = 32, vision_hidden: int = 32) -> Path:
    """A random LlavaForConditionalGeneration (CLIP or SigLIP tower, Qwen2 or Llama decoder)
    with a local tokenizer, image processor and chat template in `path`."""
    import torch
    from transformers import (
        CLIPImageProcessor,
        CLIPVisionConfig,
        LlamaConfig,
        LlavaConfig,
        LlavaForConditionalGeneration,
        LlavaProcessor,
        Qwen2Config,
        SiglipImageProcessor,
        SiglipVisionConfig,
    )

    tok = tiny_llava_tokenizer()
    vocab = len(tok)
    vision = dict(hidden_size=vision_hidden, intermediate_size=4 * vision_hidden,
                  num_hidden_layers=vision_layers, num_attention_heads=4,
                  image_size=image_size, patch_size=patch)
    text_kw = dict(vocab_size=vocab, hidden_size=hidden, intermediate_size=4 * hidden,
                   num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                   max_position_embeddings=512, bos_token_id=2, eos_token_id=3,
                   pad_token_id=0, tie_word_embeddings=False)
    text_config = Qwen2Config(**text_kw) if text == "qwen2" else LlamaConfig(**text_kw)
    if tower == "clip":
        vconf, strategy, layer = CLIPVisionConfig(**vision), "default", -2
        image_processor = CLIPImageProcessor(
            size={"shortest_edge": image_size},
            crop_size={"height": image_size, "width": image_size})
    else:
        vconf, strategy, layer = SiglipVisionConfig(**vision), "full", -1
        image_processor = SiglipImageProcessor(size={"height": image_size, "width": image_size})
    config = LlavaConfig(vision_config=vconf, text_config=text_config, image_token_id=4,
                         vision_feature_layer=layer, vision_feature_select_strategy=strategy,
                         projector_hidden_act="gelu")
    torch.manual_seed(seed)
    model = LlavaForConditionalGeneration(config).eval()
    with torch.no_grad():  # larger weights than the init so captions vary with the image
        for name, p in model.named_parameters():
            if p.ndim == 2 and "language_model" in name:
                p.mul_(2.0)
            elif p.ndim == 2 and "projector" in name:
                p.mul_(8.0)
    model.generation_config.eos_token_id = 3
    model.generation_config.bos_token_id = 2
    model.generation_config.pad_token_id = 0
    path.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(path)
    LlavaProcessor(image_processor=image_processor, tokenizer=tok, patch_size=patch,
                   vision_feature_select_strategy=strategy,
                   num_additional_image_tokens=1 if tower == "clip" else 0,
                   chat_template=LLAVA_TEMPLATE).save_pretrained(path)
    return path


def check_drafts(kernels, tokens) -> None:
    """A family's `decode` with drafts (`ops.drafting`) gives its plain greedy caption: with
    the caption itself as the draft in one pass, with one word changed in two, with a draft cut
    short or unrelated in any number. Some tokens are fused (size 3): the log(size) bias must
    apply to drafted rows as to stepped ones."""
    import numpy as np

    sizes = np.ones(len(tokens), np.float32)
    sizes[5:9] = 3.0
    plain = kernels.decode(tokens, sizes)
    max_len = kernels.cfg.max_caption_len
    assert len(plain.ids) >= 4, "the tiny model's caption is too short to test drafts"
    assert plain.passes == len(plain.ids) + (len(plain.ids) < max_len)
    exact = [*plain.ids, min(kernels.eos_ids)] if len(plain.ids) < max_len else plain.ids
    changed = list(exact)
    mid = len(changed) // 2
    changed[mid] = next(t for t in range(4, kernels.cfg.vocab_size)
                        if t != changed[mid] and t not in kernels.eos_ids)
    for i, d in enumerate([exact, changed, exact[:2], [7, 8, 9, 10, 11, 12]]):
        out = kernels.decode(tokens, sizes, [d])
        assert out.ids == plain.ids, (i, d)
        if i == 0:
            assert out.passes == 1
        if i == 1:
            assert out.passes == 2
