"""GPU busy time of one engine step, for the budget controller's `gpu_share` mode.

The mode holds the share of wall time the engine keeps the GPU busy (other nodes need the rest),
so it needs a measurement of GPU time, not of wall time. Which measurement depends on the
backend and what the machine has; `choose_gpu_timing` picks one (pure logic, unit-tested with
the probes given), and `make_gpu_timer` builds it:

- `cuda_events` (best): the torch engine on a CUDA device. A CUDA event is recorded on the
  current stream before the step and another after it; their elapsed time is the GPU time of
  the step's work on that stream (kernels plus any gaps between them inside the step).
- `nvml`: the onnxruntime engine on the CUDA or TensorRT provider (its kernels run on streams
  this process cannot put events on), or torch where events are unavailable: NVML's
  utilisation counter (share of its last sample period in which any kernel ran on the device)
  x the step's wall time. Coarser, and device-wide: other processes' kernels count too.
- none: no GPU (a CPU provider or device), or no way to read it: the mode is refused with the
  reason (`BudgetController.configure` raises ValueError, the node keeps the old value).

Only `cuda_events` and `nvml` need a GPU; nothing here imports torch or pynvml until a timer of
that kind is built.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

GPU_PROVIDERS = ("CUDAExecutionProvider", "TensorrtExecutionProvider")


class GpuTimer(Protocol):
    """Brackets one engine step: `start()` before it, `stop()` after it -> busy ms."""

    def start(self) -> None: ...

    def stop(self) -> float: ...


@dataclass(frozen=True)
class GpuTimingChoice:
    source: str | None  # "cuda_events" | "nvml" | None (unavailable)
    reason: str  # why this source, or why none


def choose_gpu_timing(backend: str, device: str = "cpu", providers: Sequence[str] = (), *,
                      cuda_events: bool = False, nvml: bool = False) -> GpuTimingChoice:
    """Which GPU timing an engine can use. `device`: the torch device; `providers`: the
    onnxruntime providers the sessions run on, first = preferred; `cuda_events` / `nvml`: what
    the machine offers (see `probe_cuda_events`, `probe_nvml`)."""
    if backend == "torch":
        if not str(device).startswith("cuda"):
            return GpuTimingChoice(None, f"the torch engine runs on {device}, not a GPU")
        if cuda_events:
            return GpuTimingChoice("cuda_events", f"CUDA events on {device}")
        if nvml:
            return GpuTimingChoice("nvml", f"NVML utilisation ({device}: no CUDA events)")
        return GpuTimingChoice(None, f"{device}: neither CUDA events nor NVML are available")
    if backend == "onnxruntime":
        gpu = [p for p in providers if p in GPU_PROVIDERS]
        if not gpu or providers[0] not in GPU_PROVIDERS:
            return GpuTimingChoice(None, "onnxruntime runs on "
                                   f"{providers[0] if providers else 'no provider'}, not a GPU")
        if nvml:
            return GpuTimingChoice("nvml", f"NVML utilisation ({providers[0]})")
        return GpuTimingChoice(None, f"{providers[0]}: NVML is not available (install "
                               "nvidia-ml-py) to read GPU busy time")
    return GpuTimingChoice(None, f"backend {backend!r} measures no GPU time")


def probe_cuda_events() -> bool:
    """torch with a usable CUDA device (the torch engine has imported torch already)."""
    try:
        import torch
    except ImportError:
        return False
    return bool(torch.cuda.is_available())


def probe_nvml() -> bool:
    """NVML importable (nvidia-ml-py) and at least one device."""
    try:
        import pynvml  # type: ignore[import-not-found]

        pynvml.nvmlInit()
        return pynvml.nvmlDeviceGetCount() > 0
    except Exception:  # no library, no driver, no device: all mean "not available"
        return False


class CudaEventTimer:
    """GPU time of the step on the current CUDA stream (torch events)."""

    def __init__(self) -> None:
        import torch

        self._cuda = torch.cuda
        self._begin: Any = None

    def start(self) -> None:
        self._begin = self._cuda.Event(enable_timing=True)
        self._begin.record()

    def stop(self) -> float:
        end = self._cuda.Event(enable_timing=True)
        end.record()
        end.synchronize()
        return float(self._begin.elapsed_time(end))


class NvmlTimer:
    """Device utilisation (NVML) x the step's wall time."""

    def __init__(self, index: int = 0) -> None:
        import pynvml  # type: ignore[import-not-found]

        pynvml.nvmlInit()
        self._nvml = pynvml
        self._handle = pynvml.nvmlDeviceGetHandleByIndex(index)
        self._t0 = 0.0

    def start(self) -> None:
        self._t0 = time.perf_counter()

    def stop(self) -> float:
        wall_ms = (time.perf_counter() - self._t0) * 1e3
        util = self._nvml.nvmlDeviceGetUtilizationRates(self._handle).gpu
        return wall_ms * float(util) / 100.0


def make_gpu_timer(choice: GpuTimingChoice) -> GpuTimer | None:
    if choice.source == "cuda_events":
        return CudaEventTimer()
    if choice.source == "nvml":
        return NvmlTimer()
    return None
