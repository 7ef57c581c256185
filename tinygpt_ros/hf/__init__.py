"""Pretrained Hugging Face captioners behind the streaming engine (checkpoint checks, the GIT
family's kernels, the gated CLIP tower, the numpy ANC router)."""
