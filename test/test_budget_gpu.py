"""The gpu_share budget mode: which GPU timing an engine picks (pure selection logic, since this
machine has no GPU), the controller's cost in that mode, and the refusal on a CPU engine."""

from __future__ import annotations

from pathlib import Path

import pytest

from tinygpt_ros.runtime.budget import BudgetController
from tinygpt_ros.runtime.gpu_share import GpuTimingChoice, choose_gpu_timing
from tinygpt_ros.spec.config import NUM_TOKENS, Knobs
from tinygpt_ros.spec.types import ComputeRecord

MODEL_DIR = str(Path(__file__).resolve().parent.parent / "models" / "tinygpt")
CUDA = "CUDAExecutionProvider"
TRT = "TensorrtExecutionProvider"
CPU = "CPUExecutionProvider"


@pytest.mark.parametrize(("backend", "device", "providers", "events", "nvml", "source"), [
    ("torch", "cuda:0", (), True, True, "cuda_events"),  # events beat NVML
    ("torch", "cuda:0", (), False, True, "nvml"),
    ("torch", "cuda:0", (), False, False, None),
    ("torch", "cpu", (), True, True, None),  # a CPU device has no GPU time to hold
    ("onnxruntime", "cpu", (TRT, CUDA, CPU), False, True, "nvml"),
    ("onnxruntime", "cpu", (CUDA, CPU), True, True, "nvml"),  # no events on ORT's streams
    ("onnxruntime", "cpu", (CUDA, CPU), False, False, None),
    ("onnxruntime", "cpu", (CPU,), False, True, None),  # GPU present, engine on the CPU
    ("onnxruntime", "cpu", (CPU, CUDA), False, True, None),  # CPU preferred: not on the GPU
    ("hf", "cuda", (), True, True, None),
])
def test_gpu_timing_selection(backend, device, providers, events, nvml, source):
    choice = choose_gpu_timing(backend, device, providers, cuda_events=events, nvml=nvml)
    assert choice.source == source
    assert choice.reason  # always says why


def record(busy_ms: float | None) -> ComputeRecord:
    return ComputeRecord(0, "frame", NUM_TOKENS, 10, 10, "small", flops={"encoder": 1e8},
                         latency_ms={"encoder": 20.0}, gpu_busy_ms=busy_ms)


def test_gpu_share_cost_is_busy_time_over_the_frame_period():
    ctl = BudgetController(gpu_timing="cuda_events")
    ctl.configure("gpu_share", 20.0)
    for i in range(4):  # 10 ms busy per frame at 30 Hz: 30% of the GPU
        ctl.plan("frame", Knobs())
        d = ctl.observe("frame", record(10.0), stamp_us=i * 33_333)
    assert d is not None and d["budget_unit"] == "%"
    assert d["budget_cost"] == pytest.approx(30.0, rel=1e-3)
    ctl.plan("frame", Knobs())
    assert ctl.level("frame") > 0  # over 20 %: tightens
    with pytest.raises(ValueError, match="100"):
        ctl.configure("gpu_share", 150.0)
    assert (ctl.mode, ctl.target) == ("gpu_share", 20.0)


def test_gpu_share_is_refused_without_gpu_timing_and_keeps_the_old_setting():
    ctl = BudgetController("flops", 0.1)
    ctl.gpu_refusal = "the torch engine runs on cpu, not a GPU"
    with pytest.raises(ValueError, match="gpu_share unavailable: the torch engine runs on cpu"):
        ctl.configure("gpu_share", 50.0)
    assert (ctl.mode, ctl.target) == ("flops", 0.1)


@pytest.mark.parametrize("backend", ["onnxruntime", "torch"])
def test_cpu_engines_refuse_gpu_share_with_the_reason(backend):
    from tinygpt_ros.deploy.factory import load_engine

    engine = load_engine(MODEL_DIR, backend=backend)
    try:
        assert engine.budget.gpu_timing is None
        with pytest.raises(ValueError, match="not a GPU"):
            engine.budget.configure("gpu_share", 50.0)
        assert engine.budget.mode == "off"
    finally:
        engine.close()


def test_engine_records_gpu_busy_time_from_its_timer_only_in_gpu_share_mode():
    """The engine brackets each step with the chosen timer (a stand-in clock here: the CUDA
    and NVML timers need a GPU) and the controller holds the share it reports."""
    import numpy as np

    from tinygpt_ros.deploy.factory import load_engine

    class FixedTimer:
        calls = 0

        def start(self) -> None:
            FixedTimer.calls += 1

        def stop(self) -> float:
            return 25.0

    engine = load_engine(MODEL_DIR, backend="onnxruntime")
    engine.use_gpu_timing(GpuTimingChoice("cuda_events", "stand-in clock"), FixedTimer())
    assert engine.budget.gpu_timing == "cuda_events"
    frame = np.zeros((48, 64, 3), np.uint8)
    res = engine.process_frame(frame, 0)
    assert res.record.gpu_busy_ms is None and FixedTimer.calls == 0  # other modes: not timed
    engine.budget.configure("gpu_share", 10.0)
    for i in range(1, 5):
        res = engine.process_frame(frame, i * 100_000)
    assert res.record.gpu_busy_ms == 25.0 and FixedTimer.calls == 4
    assert res.budget["budget_cost"] == pytest.approx(25.0, rel=1e-3)  # 25 ms of 100 ms
    engine.close()
