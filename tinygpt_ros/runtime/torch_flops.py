"""A light run-time FLOP counter for torch kernels: matmuls and convolutions as they execute.

Why not torch's `FlopCounterMode`: it works at the dispatcher and decomposes in Python every op
it has no formula for (layer norm, softmax, GELU ...), which made a TinyGPT frame about 40x
slower here, and even a bare dispatch-level mode was about 20x slower. Our networks compute
with `nn.Linear`, `nn.Conv2d` and `@` only (attention is written as explicit matmuls), so this
mode sits one level up (`TorchFunctionMode`): it sees each linear, conv and matmul call with
its real operand shapes and adds 2 FLOPs per multiply-add (the convention of `spec/flops.py`;
biases, norms, softmax and elementwise ops count 0 there too).
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode


def _matmul_flops(a: torch.Tensor, b: torch.Tensor) -> float:
    """2 * batch * m * k * n for torch.matmul semantics (1-D operands promoted, batch broadcast)."""
    sa, sb = tuple(a.shape), tuple(b.shape)
    if len(sa) == 1:
        sa = (1, *sa)
    if len(sb) == 1:
        sb = (*sb, 1)
    batch = torch.broadcast_shapes(sa[:-2], sb[:-2])
    return 2.0 * math.prod(batch) * sa[-2] * sa[-1] * sb[-1]


def _linear_flops(x: torch.Tensor, weight: torch.Tensor) -> float:
    return 2.0 * (x.numel() // x.shape[-1]) * weight.shape[0] * weight.shape[1]


def _conv_flops(x: torch.Tensor, weight: torch.Tensor, out: torch.Tensor) -> float:
    """2 * output elements * (in_channels / groups) * kernel area."""
    return 2.0 * out.numel() * math.prod(weight.shape[1:])


_MATMULS = {torch.matmul, torch.Tensor.matmul, torch.Tensor.__matmul__, torch.bmm,
            torch.Tensor.bmm, torch.mm, torch.Tensor.mm}
_CONVS = {F.conv1d, F.conv2d, F.conv3d}


class FlopMeter(TorchFunctionMode):
    """`with FlopMeter() as m: ...` then `m.total`: FLOPs of the linears, convs and matmuls
    that ran inside, from their operands' shapes."""

    def __init__(self) -> None:
        super().__init__()
        self.total = 0.0

    def __torch_function__(self, func: Any, types: Any, args: tuple = (),
                           kwargs: dict | None = None) -> Any:
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        if func is F.linear:
            w = kwargs.get("weight", args[1] if len(args) > 1 else None)
            self.total += _linear_flops(args[0], w)
        elif func in _MATMULS:
            self.total += _matmul_flops(args[0], args[1] if len(args) > 1 else kwargs["other"])
        elif func in _CONVS:
            w = kwargs.get("weight", args[1] if len(args) > 1 else None)
            self.total += _conv_flops(args[0], w, out)
        return out
