"""Round-to-nearest weight quantization: the data-free baseline."""

from __future__ import annotations

from compress.methods.base import LayerMethod, QuantizedWeight
from compress.quantize import quantize_weight
from compress.schemes import SCALE_DTYPE


class RTN(LayerMethod):
    def quantize(self) -> QuantizedWeight:
        m = self.modifier
        q, scale, zero_point = quantize_weight(
            self.module.weight.data, m.bits, m.group_size, m.symmetric, scale_dtype=SCALE_DTYPE
        )
        return QuantizedWeight(q, scale, zero_point)
