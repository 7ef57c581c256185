"""Streaming TinyGPT engine (torch reference), and `load_engine`, the factory the ROS node calls.

The streaming logic (STTF gating, ANC routing with hysteresis, temporal fusion, caption reuse,
FLOPs and records) is `streaming.StreamingEngine`, shared with the onnxruntime engine; this
engine plugs the torch model in through `torch_kernels.TorchKernels`.

Bad input raises ValueError before any state is touched, so the next good frame works.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .config import Knobs
from .model import TinyGPT
from .streaming import STATIC_THRESHOLD, StreamingEngine
from .tokenizer import Tokenizer
from .torch_kernels import TorchKernels


class TorchEngine(StreamingEngine):
    """Reference engine on torch (CPU or CUDA). Implements `types.Engine`."""

    backend = "torch"

    def __init__(
        self,
        model: TinyGPT,
        tokenizer: Tokenizer,
        gesture_classes: list[str],
        knobs: Knobs | None = None,
        device: str = "cpu",
        beam_size: int = 1,
    ) -> None:
        kernels = TorchKernels(model, tokenizer, device=device, beam_size=beam_size)
        self.model = kernels.model
        self.device = kernels.device
        self.beam_size = beam_size
        super().__init__(kernels, tokenizer, gesture_classes, knobs)

    @classmethod
    def from_dir(cls, model_dir: str | Path, device: str = "cpu", **kwargs: Any) -> TorchEngine:
        from .weights import ModelLoadError, load_model_files

        loaded = load_model_files(model_dir)
        try:
            model = TinyGPT(loaded.config)
            model.load_state_dict(loaded.state_dict)
        except (RuntimeError, ValueError, KeyError) as exc:
            raise ModelLoadError(
                f"model in {model_dir}: weights do not fit the manifest's config ({exc})"
            ) from exc
        return cls(model, loaded.tokenizer, loaded.gesture_classes, device=device, **kwargs)


BACKENDS = ("torch", "onnxruntime")


def load_engine(model_dir: str | Path, backend: str = "torch", **options: Any):
    """The factory the ROS node calls. Raises ModelLoadError for a missing or corrupt model.

    torch: options device, beam_size, knobs (others, e.g. precision/providers, are ignored).
    onnxruntime: see `onnx_engine.OnnxEngine.from_dir` (precision, providers, ...).
    """
    if backend == "torch":
        opts = {k: v for k, v in options.items() if k in ("device", "beam_size", "knobs")}
        return TorchEngine.from_dir(model_dir, **opts)
    if backend == "onnxruntime":
        from .onnx_engine import OnnxEngine

        return OnnxEngine.from_dir(model_dir, **options)
    raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")


__all__ = ["BACKENDS", "STATIC_THRESHOLD", "TorchEngine", "load_engine"]
