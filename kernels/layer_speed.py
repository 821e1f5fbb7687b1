"""The layer part of a job's speed report: each distinct compressed layer of a loaded model (kernel and shape)
timed on its kernel against a dense matmul of the same shape in the activations' dtype, at decoding row counts.
Decode speed mixes the kernels with what both models share (attention, norms, the dense lm_head); these rows
are what the kernels alone gain, and their sum per decode step is the matmul time a token costs."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass

import torch
from torch import nn
from torch.nn import functional

from kernels.fusion import FusedProjections
from kernels.linear import CompressedLinear

TimeMs = Callable[[Callable[[], object]], float]


@dataclass
class LayerSpeed:
    kernel: str  # "w4a16", "w4a16-fused" (sibling projections stacked), "w4a16-gated" (gate, up and activation), ...
    in_features: int
    out_features: int
    layers: int  # how many of the model's layers have this kernel and shape
    rows: int
    kernel_us: float
    dense_us: float

    @property
    def speedup(self) -> float:
        return self.dense_us / self.kernel_us

    def as_dict(self) -> dict:
        return {**asdict(self), "speedup": self.speedup}


def _distinct_layers(model: nn.Module) -> dict[tuple[str, int, int], tuple[CompressedLinear, int]]:
    """(kernel label, in, out) -> (one such layer, how many the model has)."""
    fused = {id(module.fused) for module in model.modules() if isinstance(module, FusedProjections)}
    distinct: dict[tuple[str, int, int], tuple[CompressedLinear, int]] = {}
    for module in model.modules():
        if isinstance(module, CompressedLinear):
            label = f"{module.kernel}-fused" if id(module) in fused else module.kernel
            fan_out, fan_in = module.dense_shape()
            key = (label, fan_in, fan_out)
            first, count = distinct.get(key, (module, 0))
            distinct[key] = (first, count + 1)
    return distinct


@torch.no_grad()
def layer_speeds(model: nn.Module, time_ms: TimeMs, rows: tuple[int, ...]) -> list[LayerSpeed]:
    """Every distinct compressed layer at each row count (tokens per call), timed by `time_ms` (on GPU workers
    kernels.tuning.cold_time_ms: CUDA graph replay with the weights out of L2, as a decode step meets them)."""
    speeds = []
    for (label, fan_in, fan_out), (layer, count) in _distinct_layers(model).items():
        device = next(layer.buffers()).device
        dense = torch.randn(fan_out, fan_in, device=device, dtype=layer.dtype) / fan_in**0.5
        for m in rows:
            x = torch.randn(m, fan_in, device=device, dtype=layer.dtype)
            kernel_ms = time_ms(lambda layer=layer, x=x: layer(x))
            dense_ms = time_ms(lambda x=x, dense=dense: functional.linear(x, dense))
            speeds.append(LayerSpeed(label, fan_in, fan_out, count, m, kernel_ms * 1e3, dense_ms * 1e3))
    return speeds


def per_step(speeds: list[LayerSpeed]) -> list[dict]:
    """Per row count, the matmul time of one decode step (every compressed layer once) on kernels and dense."""
    totals = []
    for m in sorted({speed.rows for speed in speeds}):
        kernel_us = sum(speed.layers * speed.kernel_us for speed in speeds if speed.rows == m)
        dense_us = sum(speed.layers * speed.dense_us for speed in speeds if speed.rows == m)
        totals.append({"rows": m, "kernel_us": kernel_us, "dense_us": dense_us, "speedup": dense_us / kernel_us})
    return totals
