"""What a decoder layer's Linears read during calibration, grouped by the input tensor they share.

q/k/v read one tensor and gate/up another: such a group shares one Hessian and is compressed as one stacked
matrix, and the module that produced the tensor (a norm, usually) is where SmoothQuant and AWQ fold their
per-channel scales. Groups are found by tensor identity, with no per-architecture tables.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import nn

from compress.errors import CompressError
from compress.methods.hessian import HessianAccumulator


@dataclass
class InputGroup:
    """Linears (by name, in layer order) that read one tensor, and what was observed of it."""

    members: list[str]
    producer: str | None = None  # the layer submodule whose output is exactly this tensor
    hessian: HessianAccumulator | None = None
    absmax: torch.Tensor | None = None  # per input channel, over every calibration token
    sqnorm: torch.Tensor | None = None  # per input channel: Σx² over every calibration token
    samples: torch.Tensor | None = None  # [tokens, in] an evenly strided subset of the calibration tokens


class InputTracker:
    """Hooks one pass of a layer over the calibration batches; call end_batch() after each batch."""

    def __init__(
        self,
        layer: nn.Module,
        linears: dict[str, str],
        device: torch.device,
        hessian_for: set[str] = frozenset(),  # type: ignore[assignment]
        find_producers: bool = False,
        track_norms: bool = False,
        sample_tokens_per_batch: int = 0,
    ) -> None:
        """`linears` maps the layer's local submodule names to the model-wide names groups report."""
        self._layer = layer
        self._linears = linears
        self._device = device
        self._hessian_for = hessian_for
        self._find_producers = find_producers
        self._track_norms = track_norms
        self._sample_tokens = sample_tokens_per_batch
        self._leader: dict[str, str] = {}
        self._groups: dict[str, InputGroup] = {}
        self._samples: dict[str, list[torch.Tensor]] = {}
        self._inputs: list[tuple[str, torch.Tensor]] = []
        self._outputs: list[tuple[str, torch.Tensor]] = []

    @contextmanager
    def attached(self) -> Iterator[InputTracker]:
        handles = []
        for local, module in self._layer.named_modules():
            if local in self._linears:
                handles.append(module.register_forward_hook(self._record_input(self._linears[local])))
            elif self._find_producers and local:
                handles.append(module.register_forward_hook(self._record_output(local)))
        try:
            yield self
        finally:
            for handle in handles:
                handle.remove()

    def _record_input(self, name: str):  # type: ignore[no-untyped-def]
        def hook(_module: nn.Module, args: tuple, _output: object) -> None:
            self._inputs.append((name, args[0]))  # the object itself: identity tells shared inputs apart

        return hook

    def _record_output(self, name: str):  # type: ignore[no-untyped-def]
        def hook(_module: nn.Module, _args: tuple, output: object) -> None:
            if isinstance(output, torch.Tensor):
                self._outputs.append((name, output))

        return hook

    def end_batch(self) -> None:
        """Partition this batch's inputs by identity (the tensors are held until now, so no id is reused)."""
        seen: list[tuple[torch.Tensor, str]] = []
        for name, tensor in self._inputs:
            leader = next((first for other, first in seen if other is tensor), None)
            if leader is None:
                seen.append((tensor, name))
                leader = name
            if self._leader.setdefault(name, leader) != leader:
                raise CompressError(f"{name} shared its input with {self._leader[name]} in one batch, not the next")
            group = self._groups.setdefault(leader, InputGroup(members=[]))
            if name not in group.members:
                group.members.append(name)
        for tensor, leader in seen:
            self._observe(self._groups[leader], leader, tensor)
        self._inputs.clear()
        self._outputs.clear()

    def _observe(self, group: InputGroup, leader: str, tensor: torch.Tensor) -> None:
        if self._find_producers and group.producer is None:
            group.producer = next((name for name, output in self._outputs if output is tensor), None)
        if self._track_norms:
            rows = tensor.detach().flatten(0, -2).float()
            absmax, sqnorm = rows.abs().amax(dim=0).to(self._device), rows.square().sum(dim=0).to(self._device)
            group.absmax = absmax if group.absmax is None else torch.maximum(group.absmax, absmax)
            group.sqnorm = sqnorm if group.sqnorm is None else group.sqnorm + sqnorm
        if self._hessian_for.intersection(group.members):
            if group.hessian is None:
                group.hessian = HessianAccumulator(tensor.shape[-1], self._device)
            group.hessian.add(tensor)
        if self._sample_tokens:
            rows = tensor.detach().flatten(0, -2)
            stride = max(1, rows.shape[0] // self._sample_tokens)
            self._samples.setdefault(leader, []).append(rows[::stride][: self._sample_tokens].to(self._device))

    def groups(self, names: list[str]) -> list[InputGroup]:
        """Every name in exactly one group, in the order given; Linears that never ran stay alone."""
        result: dict[str, InputGroup] = {}
        for name in names:
            leader = self._leader.get(name, name)
            if leader not in result:
                result[leader] = self._groups.get(leader) or InputGroup(members=[])
                result[leader].members = []
                if leader in self._samples:
                    result[leader].samples = torch.cat(self._samples.pop(leader))
            result[leader].members.append(name)
        return list(result.values())
