"""`HfEngine`: the streaming engine (STTF, ANC, caption reuse, records) over a pretrained
Hugging Face captioner loaded from a local directory: GIT (`git.py`, torch or onnxruntime) or
LLaVA (`llava.py`, torch). The controller is the shared `streaming.StreamingEngine`; only the
kernels are the family's.

Loading never touches the network: HF_HUB_OFFLINE is set before transformers is imported and
every `from_pretrained` call passes `local_files_only=True`.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from tinygpt_ros.hf.checkpoint import check_checkpoint, force_offline, read_preprocessor
from tinygpt_ros.hf.common import HfTokenizer
from tinygpt_ros.hf.git import GitKernels
from tinygpt_ros.hf.llava import LlavaKernels, feature_depth
from tinygpt_ros.hf.router import ROUTER_FILE, RouterParams, load_router
from tinygpt_ros.hf.vision import tower_branches
from tinygpt_ros.model.weights import ModelLoadError
from tinygpt_ros.runtime.streaming import StreamingEngine
from tinygpt_ros.spec.config import Knobs

log = logging.getLogger(__name__)


def load_git(model_dir: str | Path) -> tuple[Any, Any, dict]:
    """(GitForCausalLM in eval mode, its tokenizer, preprocessor dict) from a local directory."""
    ckpt = check_checkpoint(model_dir)
    if ckpt.family != "git":
        raise ModelLoadError(f"checkpoint {ckpt.path}: family {ckpt.family!r} is not GIT")
    force_offline()
    import torch
    from transformers import GitForCausalLM
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # a ROS log is no place for progress bars
    try:
        model = GitForCausalLM.from_pretrained(ckpt.path, local_files_only=True,
                                               dtype=torch.float32)
    except (OSError, ValueError, RuntimeError, KeyError) as exc:
        raise ModelLoadError(f"checkpoint {ckpt.path}: transformers could not load it ({exc})"
                             ) from exc
    return model.eval(), load_tokenizer(ckpt.path), read_preprocessor(ckpt)


def load_llava(model_dir: str | Path) -> tuple[Any, Any, dict]:
    """(LlavaForConditionalGeneration in eval mode, its processor, image processor dict)."""
    ckpt = check_checkpoint(model_dir)
    if ckpt.family != "llava":
        raise ModelLoadError(f"checkpoint {ckpt.path}: family {ckpt.family!r} is not LLaVA")
    force_offline()
    import torch
    from transformers import AutoProcessor, LlavaForConditionalGeneration
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    try:
        model = LlavaForConditionalGeneration.from_pretrained(
            ckpt.path, local_files_only=True, dtype=torch.float32)
        processor = AutoProcessor.from_pretrained(ckpt.path, local_files_only=True)
    except (OSError, ValueError, RuntimeError, KeyError, TypeError) as exc:
        raise ModelLoadError(f"checkpoint {ckpt.path}: transformers could not load it ({exc})"
                             ) from exc
    return model.eval(), processor, read_preprocessor(ckpt)


def load_tokenizer(path: Path) -> Any:
    """The checkpoint's tokenizer, from local files only."""
    force_offline()
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(path, local_files_only=True)
    except (OSError, ValueError, RuntimeError, KeyError) as exc:
        raise ModelLoadError(f"checkpoint {path}: its tokenizer could not be loaded ({exc})"
                             ) from exc


class HfEngine(StreamingEngine):
    """`types.Engine` for a local transformers checkpoint (GIT or LLaVA)."""

    backend = "torch"

    def __init__(self, kernels: Any, tokenizer: HfTokenizer, knobs: Knobs | None = None) -> None:
        self.model = getattr(kernels, "model", None)  # None on onnxruntime
        self.device = getattr(kernels, "device", "cpu")
        super().__init__(kernels, tokenizer, [], knobs)  # type: ignore[arg-type]

    @property
    def intra_op_threads(self) -> int | None:
        """onnxruntime: the sessions' intra_op_num_threads (0 = its default), which the node
        reports next to its thread limits; torch: None (its threads are process-wide)."""
        sessions = list(getattr(self.kernels, "sessions", {}).values())
        return int(sessions[0].get_session_options().intra_op_num_threads) if sessions else None

    @classmethod
    def from_dir(cls, model_dir: str | Path, device: str = "cpu", knobs: Knobs | None = None,
                 router_path: str | Path | None = None, backend: str = "torch",
                 providers: list[str] | None = None, threads: int | None = None,
                 **kwargs: Any) -> HfEngine:
        """torch: the checkpoint's own modules; onnxruntime: the graphs `tinygpt-ros export`
        wrote into `<model_dir>/tinygpt_onnx/` (the tokenizer still comes from transformers).
        `threads`: onnxruntime's intra-op threads per session (the node's `intra_op_threads`;
        torch's are set process-wide by `runtime.threads`)."""
        ckpt = check_checkpoint(model_dir)
        if ckpt.family == "llava":
            if backend == "onnxruntime":
                log.warning("LLaVA has no ONNX export: serving %s on the torch backend",
                            model_dir)
            model, processor, pp = load_llava(model_dir)
            vconf = model.config.vision_config
            grids, depths = tower_branches(feature_depth(vconf.num_hidden_layers,
                                                         model.config.vision_feature_layer))
            router = _router(model_dir, router_path, depths, grids)
            kernels: Any = LlavaKernels(model, processor, pp, depths, router, device=device,
                                        grids=grids, **kwargs)
            engine = cls(kernels, HfTokenizer(processor.tokenizer, kernels.bos_id,
                                              min(kernels.eos_ids)), knobs)
            return engine
        if backend == "onnxruntime":
            from tinygpt_ros.hf.git_onnx import GitOnnxKernels

            tok = load_tokenizer(ckpt.path)
            grids, depths = tower_branches(
                int(ckpt.config["vision_config"]["num_hidden_layers"]))
            router = _router(model_dir, router_path, depths, grids)
            kernels = GitOnnxKernels(model_dir, ckpt.config, read_preprocessor(ckpt),
                                     router, providers, threads=threads, **kwargs)
        else:
            model, tok, pp = load_git(model_dir)
            grids, depths = tower_branches(model.config.vision_config.num_hidden_layers)
            router = _router(model_dir, router_path, depths, grids)
            kernels = GitKernels(model, pp, depths, router, device=device, grids=grids,
                                 **kwargs)
        engine = cls(kernels, HfTokenizer(tok, kernels.bos_id, min(kernels.eos_ids)), knobs)
        engine.backend = backend
        return engine


def _router(model_dir: str | Path, router_path: str | Path | None,
            depths: tuple[int, ...], grids: tuple[int, ...]) -> RouterParams | None:
    path = Path(router_path) if router_path else Path(model_dir) / ROUTER_FILE
    if router_path or path.is_file():
        log.info("ANC router from %s", path)
        return load_router(path, depths, grids)
    log.info("no %s in %s: ANC keeps the full tower until `tinygpt-ros train-router` "
             "writes one", ROUTER_FILE, model_dir)
    return None
