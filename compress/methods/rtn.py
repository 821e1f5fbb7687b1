"""Round-to-nearest weight quantization: the data-free baseline."""

from __future__ import annotations

import torch

from compress.methods.base import LinearInputs, QuantizedWeight, QuantizeMethod
from compress.quantize import quantize_weight
from compress.recipes import RTNModifier
from compress.schemes import SCALE_DTYPE


class RTN(QuantizeMethod[RTNModifier]):
    def quantize(self, weight: torch.Tensor, inputs: LinearInputs, pruned: torch.Tensor | None) -> QuantizedWeight:
        m = self.modifier
        if pruned is not None:
            weight = weight.masked_fill(pruned, 0.0)
        q, scale, zero_point = quantize_weight(weight, m.bits, m.group_size, m.symmetric, scale_dtype=SCALE_DTYPE)
        if pruned is not None:
            size = m.group_size or weight.shape[1]
            q = torch.where(pruned, zero_point.repeat_interleave(size, dim=1), q)
        return QuantizedWeight(q, scale, zero_point)
