"""Methods that fold per-channel scales into a norm and the Linears reading it before quantizing: SmoothQuant
(for int8 activations) and AWQ (for int4 weights). The runner checks the layer's output afterwards and undoes
a rescaling the producer cannot absorb."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import nn

from compress.methods.awq import apply_scales, search_scales
from compress.methods.base import LinearInputs, Method, QuantizedWeight, QuantizeMethod
from compress.methods.rtn import RTN
from compress.methods.smoothquant import apply_smoothing, smoothing_scales
from compress.recipes import AWQModifier, RTNModifier, SmoothQuantModifier
from compress.schemes import SCALE_DTYPE

if TYPE_CHECKING:  # layer_inputs imports the methods package (for the Hessian)
    from compress.layer_inputs import InputGroup


def _is_norm(producer: nn.Module, width: int) -> bool:
    """A module with one per-channel weight: what a scale can be folded into."""
    weight = getattr(producer, "weight", None)
    return isinstance(weight, torch.Tensor) and weight.dim() == 1 and weight.numel() == width


class SmoothQuant(Method[SmoothQuantModifier]):
    transforms = True

    def transform(self, group: InputGroup, producer: nn.Module, linears: list[nn.Linear]) -> bool:
        if group.absmax is None or not _is_norm(producer, linears[0].in_features):
            return False
        weights = [linear.weight.data for linear in linears]
        scales = smoothing_scales(group.absmax, [w.float() for w in weights], self.modifier.alpha)
        apply_smoothing(producer.weight.data, weights, scales.to(producer.weight.device))
        return True


class AWQ(QuantizeMethod[AWQModifier]):
    transforms = True

    @property
    def sample_tokens(self) -> int:  # type: ignore[override]
        return self.modifier.samples

    def transform(self, group: InputGroup, producer: nn.Module, linears: list[nn.Linear]) -> bool:
        m = self.modifier
        if group.samples is None or not _is_norm(producer, linears[0].in_features):
            return False
        weights = [linear.weight.data for linear in linears]
        scales = search_scales(group.samples.float(), [w.float() for w in weights], m.bits, m.group_size,
                               m.symmetric, m.grid, SCALE_DTYPE)
        apply_scales(producer.weight.data, getattr(producer, "bias", None), weights, scales)
        return True

    def quantize(self, weight: torch.Tensor, inputs: LinearInputs, pruned: torch.Tensor | None) -> QuantizedWeight:
        rounding = RTNModifier(**self.modifier.model_dump(include=set(RTNModifier.model_fields) - {"method"}))
        return RTN(rounding).quantize(weight, inputs, pruned)
