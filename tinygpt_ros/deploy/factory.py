"""`load_engine`: the one place a backend name becomes an engine (the ROS node, eval and bench
call it). Each backend is imported only when asked for, so the onnxruntime path never loads torch.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from tinygpt_ros.hf.checkpoint import is_hf_checkpoint, looks_like_hub_id

BACKENDS = ("torch", "onnxruntime")
log = logging.getLogger(__name__)


def load_engine(model_dir: str | Path, backend: str = "torch", **options: Any):
    """An engine for `model_dir` on `backend`. Raises ModelLoadError for a missing or corrupt
    model, ValueError for an unknown backend.

    torch: options device, beam_size, knobs, count_flops (others, e.g. precision/providers,
    are ignored).
    onnxruntime: see `onnx_engine.OnnxEngine.from_dir` (precision, providers, ...).

    A local transformers checkpoint (config.json, no manifest.json), or a hub id (which gets
    a ModelLoadError saying how to download it), goes to `hf.engine.HfEngine`; onnxruntime
    needs its `tinygpt-ros export` (without one the torch backend serves it, with a warning).
    """
    if is_hf_checkpoint(model_dir) or looks_like_hub_id(str(model_dir)):
        if backend not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
        from tinygpt_ros.hf.engine import HfEngine  # imports torch and transformers
        from tinygpt_ros.hf.git_onnx import EXPORT_DIR, EXPORT_FILE

        if backend == "onnxruntime" and not (Path(model_dir) / EXPORT_DIR / EXPORT_FILE).is_file():
            warn = options.get("logger") or log.warning
            warn(f"{model_dir} has no ONNX export: serving it on the torch backend (run "
                 f"`tinygpt-ros export --model {model_dir}` once to use onnxruntime)")
            backend = "torch"
        keep = ("device", "knobs", "router_path", "providers", "threads")
        opts = {k: v for k, v in options.items() if k in keep}
        return HfEngine.from_dir(model_dir, backend=backend, **opts)
    if backend == "torch":
        from tinygpt_ros.runtime.torch_engine import TorchEngine  # imports torch

        opts = {k: v for k, v in options.items()
                if k in ("device", "beam_size", "knobs", "count_flops")}
        return TorchEngine.from_dir(model_dir, **opts)
    if backend == "onnxruntime":
        from tinygpt_ros.deploy.onnx_engine import OnnxEngine  # numpy + onnxruntime only

        return OnnxEngine.from_dir(model_dir, **options)
    raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
