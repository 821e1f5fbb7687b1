"""The interface every compression method implements; the runner calls it one Linear at a time."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

from compress.recipes import WeightQuantModifier


@dataclass(frozen=True)
class QuantizedWeight:
    """Codes in compressed-tensors' layout: q [out, in] int8, scale/zero_point [out, groups]."""

    q: torch.Tensor
    scale: torch.Tensor
    zero_point: torch.Tensor


class LayerMethod(ABC):
    """One instance per targeted Linear, created while its decoder layer sits on the compute device.

    The runner calls add_batch with that Linear's inputs for every calibration batch (only when
    `needs_activations`), then quantize() once. GPTQ-style methods accumulate XᵀX in add_batch.
    """

    needs_activations: ClassVar[bool] = False

    def __init__(
        self, modifier: WeightQuantModifier, module: nn.Linear, stats: Mapping[str, torch.Tensor]
    ) -> None:
        assert isinstance(module, nn.Linear), type(module)
        self.modifier = modifier
        self.module = module
        self.stats = stats

    def add_batch(self, inputs: torch.Tensor) -> None:
        """Inputs [..., in_features] of one calibration batch; methods that need activations override this."""
        raise NotImplementedError(f"{type(self).__name__} does not use activations")

    @abstractmethod
    def quantize(self) -> QuantizedWeight:
        """The quantized weight; the runner writes it into the module."""
