"""Finding a causal LM's decoder layers, moving everything else, and what makes a model one Shrinkray cannot compress,
generically (no per-model tables)."""

from __future__ import annotations

import torch
from torch import nn
from transformers.pytorch_utils import Conv1D

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


def unsupported_reason(model: nn.Module) -> str | None:
    """Why Shrinkray cannot compress a model, if it cannot: it compresses nn.Linear layers only.

    - A mixture of experts whose weights transformers (>= 5) stacks into one tensor per projection: transformers
      cannot load a compressed-tensors checkpoint that leaves such experts dense (it looks for their packed
      weights). Convolutions (Mamba's conv1d) have 3-D weights too and are fine.
    - Projections held as transformers' Conv1D (GPT-2 and its kin), transposed Linears compressed-tensors does
      not target.
    The model is refused before any compute."""
    for module_name, module in model.named_modules():
        if isinstance(module, Conv1D):
            return (f"{module_name} is a transformers Conv1D layer (GPT-2 style): only nn.Linear layers are "
                    "compressed, so this architecture is not supported")
        if isinstance(module, nn.modules.conv._ConvNd):
            continue
        for name, parameter in module.named_parameters(recurse=False):
            if parameter.dim() >= 3:
                return (f"{module_name}.{name} is a {list(parameter.shape)} weight stacked across experts: "
                        "mixture-of-experts models whose experts are not nn.Linear layers are not supported yet "
                        "(only Linear layers are compressed, and a checkpoint with dense stacked experts does not "
                        "load in transformers)")
    return None
