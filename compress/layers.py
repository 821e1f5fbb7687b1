"""Finding a causal LM's decoder layers and moving everything else, generically (no per-model tables)."""

from __future__ import annotations

import torch
from torch import nn

from compress.errors import CompressError


def find_decoder_layers(model: nn.Module) -> tuple[str, nn.ModuleList]:
    """(dotted name, ModuleList) of the decoder stack: the longest ModuleList of one repeated block class."""
    expected = getattr(getattr(model, "config", None), "num_hidden_layers", None)
    best: tuple[str, nn.ModuleList] | None = None
    for name, module in model.named_modules():
        if not isinstance(module, nn.ModuleList) or len(module) == 0:
            continue
        if len({type(block) for block in module}) != 1:
            continue
        if best is None or len(module) > len(best[1]):
            best = (name, module)
    if best is None or (expected is not None and len(best[1]) != expected):
        raise CompressError(f"cannot find the {expected} decoder layers of {type(model).__name__}")
    return best


def move_all_but(model: nn.Module, skip: nn.Module, device: torch.device) -> None:
    """Move every parameter and buffer of model except those under `skip` (the decoder layers)."""

    def visit(module: nn.Module) -> None:
        if module is skip:
            return
        for child in module.children():
            visit(child)
        module._apply(lambda tensor: tensor.to(device), recurse=False)

    visit(model)
