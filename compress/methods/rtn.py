"""Round-to-nearest weight quantization: the data-free baseline, and how FP8 weights are made."""

from __future__ import annotations

import torch

from compress.float8 import quantize_fp8_weight
from compress.methods.base import LinearInputs, QuantizedWeight, QuantizeMethod
from compress.quantize import integer_scale_base, quantize_weight
from compress.recipes import RTNModifier
from compress.schemes import SCALE_DTYPE


class RTN(QuantizeMethod[RTNModifier]):
    def quantize(self, weight: torch.Tensor, inputs: LinearInputs, pruned: torch.Tensor | None) -> QuantizedWeight:
        m = self.modifier
        if pruned is not None:
            weight = weight.masked_fill(pruned, 0.0)
        if m.type == "float":  # FP8 E4M3, one scale per output channel; zero is a code, so pruning survives
            q, scale = quantize_fp8_weight(weight, SCALE_DTYPE)
            return QuantizedWeight(q, scale, torch.zeros_like(scale, dtype=torch.int8))
        base = None
        if m.integer_scale:
            base = integer_scale_base(quantize_weight(weight, m.bits, m.group_size, m.symmetric)[1])
        q, scale, zero_point = quantize_weight(weight, m.bits, m.group_size, m.symmetric, SCALE_DTYPE, base)
        if pruned is not None:
            size = m.group_size or weight.shape[1]
            q = torch.where(pruned, zero_point.repeat_interleave(size, dim=1), q)
        return QuantizedWeight(q, scale, zero_point)
