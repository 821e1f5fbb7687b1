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


def stacked_experts_reason(model: nn.Module) -> str | None:
    """Why a model cannot be compressed, if it holds a mixture of experts whose weights transformers (>= 5)
    stacks into one tensor per projection. Shrinkray compresses nn.Linear layers only, and transformers cannot
    load a compressed-tensors checkpoint that leaves such experts dense (it looks for their packed weights), so
    the model is refused before any compute. Convolutions (Mamba's conv1d) have 3-D weights too and are fine."""
    for module_name, module in model.named_modules():
        if isinstance(module, nn.modules.conv._ConvNd):
            continue
        for name, parameter in module.named_parameters(recurse=False):
            if parameter.dim() >= 3:
                return (f"{module_name}.{name} is a {list(parameter.shape)} weight stacked across experts: "
                        "mixture-of-experts models whose experts are not nn.Linear layers are not supported yet "
                        "(only Linear layers are compressed, and a checkpoint with dense stacked experts does not "
                        "load in transformers)")
    return None
