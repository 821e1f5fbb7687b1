"""The interfaces compression methods implement. The runner calls them once per group of Linears that read
the same input (q/k/v, gate/up), with those Linears' weights stacked along the output rows: every method
here treats rows independently, so one call on the stack equals one call per Linear, with fewer launches."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar, Generic, TypeVar

import torch
from torch import nn

from compress.recipes import BaseModifier

if TYPE_CHECKING:  # layer_inputs imports the methods package (for the Hessian)
    from compress.layer_inputs import InputGroup

ModifierT = TypeVar("ModifierT", bound=BaseModifier)


@dataclass(frozen=True)
class LinearInputs:
    """What calibration saw of the Linears' shared input: H = 2XᵀX over the calibration tokens (float32, on the
    compute device; None when no method of the group needs it) and per-channel Σx² and max|x| from the
    calibrate stage (None when that stage did not run)."""

    hessian: torch.Tensor | None
    sqnorm: torch.Tensor | None
    absmax: torch.Tensor | None


@dataclass(frozen=True)
class QuantizedWeight:
    """Codes in compressed-tensors' layout: q [out, in] int8, scale/zero_point [out, groups]."""

    q: torch.Tensor
    scale: torch.Tensor
    zero_point: torch.Tensor

    def rows(self, start: int, end: int) -> QuantizedWeight:
        return QuantizedWeight(self.q[start:end], self.scale[start:end], self.zero_point[start:end])


@dataclass(frozen=True)
class PrunedWeight:
    """A sparsified weight (fp32, exactly zero where `pruned` is True) and its mask."""

    weight: torch.Tensor
    pruned: torch.Tensor

    def rows(self, start: int, end: int) -> PrunedWeight:
        return PrunedWeight(self.weight[start:end], self.pruned[start:end])


class Method(ABC, Generic[ModifierT]):
    needs_hessian: ClassVar[bool] = False  # H = 2XᵀX of the inputs, accumulated in a pass over the layer
    needs_input_norms: ClassVar[bool] = False  # per-channel Σx² and max|x| of the inputs
    transforms: ClassVar[bool] = False  # rescales a producer and its Linears first (SmoothQuant, AWQ)
    sample_tokens: ClassVar[int] = 0  # input rows transform() wants to see

    def __init__(self, modifier: ModifierT) -> None:
        self.modifier = modifier

    @property
    def needs_inputs(self) -> bool:
        """Whether the runner must run the layer over the calibration windows for this method."""
        return self.needs_hessian or self.needs_input_norms or self.transforms

    def transform(self, group: InputGroup, producer: nn.Module, linears: list[nn.Linear]) -> bool:
        """Fold per-channel scales into `producer` (whose output is the Linears' whole input) and the Linears,
        leaving the full-precision function unchanged; True if it did."""
        raise NotImplementedError(f"{type(self).__name__} transforms nothing")


class QuantizeMethod(Method[ModifierT]):
    @abstractmethod
    def quantize(self, weight: torch.Tensor, inputs: LinearInputs, pruned: torch.Tensor | None) -> QuantizedWeight:
        """Codes for weight [out, in] (fp32, on the compute device); `pruned` weights must dequantize to 0."""


class PruneMethod(Method[ModifierT]):
    @abstractmethod
    def prune(self, weight: torch.Tensor, inputs: LinearInputs) -> PrunedWeight:
        """The sparsified weight [out, in] and its mask."""
