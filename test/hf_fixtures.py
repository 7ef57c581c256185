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
    (path / "preprocessor_config.json").write_text(json.dumps({
        "image_processor_type": "CLIPImageProcessor", "do_resize": True,
        "size": {"shortest_edge": size}, "do_center_crop": True,
        "crop_size": {"height": size, "width": size}, "do_rescale": True,
        "rescale_factor": 1 / 255, "do_normalize": True,
        "image_mean": [0.48145466, 0.4578275, 0.40821073],
        "image_std": [0.26862954, 0.26130258, 0.27577711], "resample": 3}))
    return path
