"""Streaming TinyGPT engine on torch: the reference backend.

The streaming logic (STTF gating, ANC routing with hysteresis, temporal fusion, caption reuse,
FLOPs and records) is `streaming.StreamingEngine`, shared with the onnxruntime engine; this
engine plugs the torch model in through `torch_kernels.TorchKernels`.

Bad input raises ValueError before any state is touched, so the next good frame works.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tinygpt_ros.model.tinygpt import TinyGPT
from tinygpt_ros.model.weights import ModelLoadError, load_model_files
from tinygpt_ros.runtime.gpu_share import choose_gpu_timing, probe_cuda_events, probe_nvml
from tinygpt_ros.runtime.streaming import STATIC_THRESHOLD, StreamingEngine
from tinygpt_ros.runtime.torch_kernels import TorchKernels
from tinygpt_ros.spec.config import Knobs
from tinygpt_ros.spec.tokenizer import Tokenizer


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
        count_flops: bool = False,
    ) -> None:
        kernels = TorchKernels(model, tokenizer, device=device, beam_size=beam_size,
                               count_flops=count_flops)
        self.model = kernels.model
        self.device = kernels.device
        self.beam_size = beam_size
        super().__init__(kernels, tokenizer, gesture_classes, knobs)
        on_gpu = self.device.type == "cuda"
        self.use_gpu_timing(choose_gpu_timing(
            "torch", str(self.device), cuda_events=on_gpu and probe_cuda_events(),
            nvml=on_gpu and probe_nvml()))

    @classmethod
    def from_dir(cls, model_dir: str | Path, device: str = "cpu", **kwargs: Any) -> TorchEngine:
        loaded = load_model_files(model_dir)
        try:
            model = TinyGPT(loaded.config)
            model.load_state_dict(loaded.state_dict)
        except (RuntimeError, ValueError, KeyError) as exc:
            raise ModelLoadError(
                f"model in {model_dir}: weights do not fit the manifest's config ({exc})"
            ) from exc
        return cls(model, loaded.tokenizer, loaded.gesture_classes, device=device, **kwargs)


__all__ = ["STATIC_THRESHOLD", "TorchEngine"]
