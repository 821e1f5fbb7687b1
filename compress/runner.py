"""The layer-by-layer runner: one decoder layer on the compute device at a time, the rest on the CPU.

Inputs to layer 0 are captured once for every calibration window; each layer then runs them, the
methods see its Linears' inputs, and its outputs (recomputed from the compressed layer) feed the next.
That bounds device memory by one layer plus the activations, whatever the model's size.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from compressed_tensors.quantization import QuantizationStatus, apply_quantization_config
from compressed_tensors.utils import match_named_modules
from torch import nn

from compress.errors import Cancelled, CompressError, RecipeError
from compress.layers import find_decoder_layers, move_all_but
from compress.methods import METHODS, LayerMethod, QuantizedWeight
from compress.quantize import dequantize_weight
from compress.recipes import Recipe, WeightQuantModifier
from compress.schemes import quantization_config

Progress = Callable[[int, int, str], None]
ShouldStop = Callable[[], bool]
Batch = tuple[torch.Tensor, dict]
# Layer inputs move to the device one batch at a time; 8 windows of 512 tokens keep a 4096-wide model's
# activations near 64 MiB per tensor.
BATCH_SIZE = 8
OFFLOAD = torch.device("cpu")


class _Captured(Exception):
    """Raised by the layer-0 hook once its inputs are recorded: nothing after the embedding needs to run."""


@dataclass
class CompressSummary:
    layers: int
    modules: int
    methods: dict[str, int]
    mean_relative_error: float
    seconds: float
    per_layer_seconds: list[float] = field(default_factory=list)


def _to(value: object, device: torch.device) -> object:
    if isinstance(value, torch.Tensor):
        return value.to(device)
    if isinstance(value, tuple | list):
        return type(value)(_to(item, device) for item in value)
    if isinstance(value, dict):
        return {key: _to(item, device) for key, item in value.items()}
    return value


@torch.no_grad()
def _capture_inputs(
    model: nn.Module, layers: nn.ModuleList, calib_ids: torch.Tensor, device: torch.device
) -> list[Batch]:
    """Hidden states and kwargs (position embeddings, mask...) entering layer 0, per batch, on CPU."""
    assert calib_ids.dim() == 2 and calib_ids.dtype == torch.long, (calib_ids.shape, calib_ids.dtype)
    captured: list[Batch] = []

    def hook(_module: nn.Module, args: tuple, kwargs: dict) -> None:
        hidden = args[0] if args else kwargs.pop("hidden_states")
        kept = {key: _to(value, OFFLOAD) for key, value in kwargs.items() if key != "past_key_values"}
        captured.append((hidden.to(OFFLOAD), kept))
        raise _Captured

    handle = layers[0].register_forward_pre_hook(hook, with_kwargs=True)
    move_all_but(model, layers, device)
    try:
        for batch in calib_ids.split(BATCH_SIZE):
            try:
                model(input_ids=batch.to(device), use_cache=False)
            except _Captured:
                pass
    finally:
        handle.remove()
        move_all_but(model, layers, OFFLOAD)
    return captured


@torch.no_grad()
def _run_layer(layer: nn.Module, inputs: list[Batch], device: torch.device) -> list[Batch]:
    outputs = []
    for hidden, kwargs in inputs:
        out = layer(hidden.to(device), **_to(kwargs, device))
        out = out[0] if isinstance(out, tuple) else out
        outputs.append((out.to(OFFLOAD), kwargs))
    return outputs


Visit = Callable[[str, nn.Module, list[Batch] | None], list[Batch] | None]


def _sequential(
    model: nn.Module,
    calib_ids: torch.Tensor | None,
    device: torch.device,
    visit: Visit,
    progress: Progress | None,
    should_stop: ShouldStop | None,
    stage: str,
) -> list[float]:
    """Walk the decoder layers; visit(prefix, layer, inputs) may return the layer's outputs to save a pass."""
    prefix, layers = find_decoder_layers(model)
    inputs = _capture_inputs(model, layers, calib_ids, device) if calib_ids is not None else None
    seconds = []
    for index, layer in enumerate(layers):
        if should_stop is not None and should_stop():
            raise Cancelled(f"{stage} stopped before layer {index} of {len(layers)}")
        started = time.perf_counter()
        layer.to(device)
        try:
            outputs = visit(f"{prefix}.{index}", layer, inputs)
            if inputs is not None:
                inputs = outputs if outputs is not None else _run_layer(layer, inputs, device)
        finally:
            layer.to(OFFLOAD)
        seconds.append(time.perf_counter() - started)
        if progress is not None:
            progress(index + 1, len(layers), f"{stage} layer {index + 1}/{len(layers)}")
    return seconds


def calibrate(
    model: nn.Module,
    calib_ids: torch.LongTensor,
    recipe: Recipe,
    device: torch.device,
    progress: Progress | None = None,
    should_stop: ShouldStop | None = None,
) -> dict[str, torch.Tensor]:
    """Per-Linear input statistics: f"{name}.input_absmax" and f"{name}.input_sqnorm" per channel."""
    stats: dict[str, torch.Tensor] = {}

    def observe(name: str) -> Callable:
        def hook(_module: nn.Module, args: tuple, _output: torch.Tensor) -> None:
            x = args[0].detach().flatten(0, -2).float()
            absmax, sqnorm = x.abs().amax(dim=0).to(OFFLOAD), x.square().sum(dim=0).to(OFFLOAD)
            if f"{name}.input_absmax" in stats:
                absmax = torch.maximum(absmax, stats[f"{name}.input_absmax"])
                sqnorm = sqnorm + stats[f"{name}.input_sqnorm"]
            stats[f"{name}.input_absmax"], stats[f"{name}.input_sqnorm"] = absmax, sqnorm

        return hook

    def visit(prefix: str, layer: nn.Module, inputs: list[Batch] | None) -> list[Batch]:
        handles = [
            module.register_forward_hook(observe(f"{prefix}.{name}"))
            for name, module in layer.named_modules()
            if isinstance(module, nn.Linear)
        ]
        try:
            return _run_layer(layer, inputs, device)
        finally:
            for handle in handles:
                handle.remove()

    model.eval()
    _sequential(model, calib_ids, device, visit, progress, should_stop, "calibrate")
    return stats


def _assign(model: nn.Module, recipe: Recipe, prefix: str) -> dict[str, int]:
    """Module name -> index of the modifier that owns it; every match must sit inside a decoder layer."""
    owner: dict[str, int] = {}
    for index, modifier in enumerate(recipe.modifiers):
        for name, module in match_named_modules(model, modifier.targets, modifier.ignore):
            if not isinstance(module, nn.Linear):
                continue
            if name in owner:
                raise RecipeError(
                    f"recipe.modifiers.{index}.targets",
                    f"{name} is already targeted by modifier {owner[name]}",
                )
            if not name.startswith(f"{prefix}."):
                raise RecipeError(
                    f"recipe.modifiers.{index}.ignore",
                    f"{name} is outside the decoder layers; add it to ignore",
                )
            if modifier.group_size and module.in_features % modifier.group_size:
                raise RecipeError(
                    f"recipe.modifiers.{index}.group_size",
                    f"{modifier.group_size} does not divide the input width {module.in_features} of {name}",
                )
            owner[name] = index
    if not owner:
        raise RecipeError("recipe.modifiers", "no Linear layer of the model matches any modifier's targets")
    return owner


def _write(module: nn.Linear, result: QuantizedWeight, modifier: WeightQuantModifier) -> float:
    """Store codes as compressed-tensors expects: weight = dequantized codes, weight_scale/zero_point set."""
    weight = dequantize_weight(result.q, result.scale, result.zero_point, modifier.group_size)
    original = module.weight.data.float()
    error = ((weight - original).norm() / original.norm().clamp(min=1e-12)).item()
    module.weight.data.copy_(weight.to(module.weight.dtype))
    module.weight_scale.data.copy_(result.scale.reshape(module.weight_scale.shape))
    if hasattr(module, "weight_zero_point"):
        module.weight_zero_point.data.copy_(result.zero_point.reshape(module.weight_zero_point.shape))
    module.quantization_status = QuantizationStatus.FROZEN
    return error


def compress_model(
    model: nn.Module,
    recipe: Recipe,
    calib_ids: torch.LongTensor | None,
    stats: dict[str, torch.Tensor],
    device: torch.device,
    progress: Progress | None = None,
    should_stop: ShouldStop | None = None,
) -> CompressSummary:
    """Apply the recipe layer by layer; leaves compressed-tensors schemes set, weights fake-quantized."""
    started = time.perf_counter()
    prefix, _layers = find_decoder_layers(model)
    owner = _assign(model, recipe, prefix)
    modules = dict(model.named_modules())
    needs_activations = any(METHODS[m.method].needs_activations for m in recipe.modifiers)
    if needs_activations and calib_ids is None:
        raise CompressError("this recipe's methods need calibration windows")
    errors: list[float] = []
    counts: dict[str, int] = {}

    def visit(layer_prefix: str, layer: nn.Module, inputs: list[Batch] | None) -> None:
        names = [name for name in owner if name.startswith(f"{layer_prefix}.")]
        methods: dict[str, LayerMethod] = {}
        for name in names:
            modifier = recipe.modifiers[owner[name]]
            local = {
                key[len(name) + 1 :]: value for key, value in stats.items() if key.startswith(f"{name}.")
            }
            methods[name] = METHODS[modifier.method](modifier, modules[name], local)
        active = [name for name in names if methods[name].needs_activations]
        handles = [
            modules[name].register_forward_hook(
                lambda _m, args, _o, method=methods[name]: method.add_batch(args[0].detach())
            )
            for name in active
        ]
        try:
            if active:
                _run_layer(layer, inputs, device)
        finally:
            for handle in handles:
                handle.remove()
        for index, modifier in enumerate(recipe.modifiers):
            mine = [modules[name] for name in names if owner[name] == index]
            if mine:
                apply_quantization_config(
                    model, quantization_config(modifier), allowed_modules=mine, show_progress=False
                )
        for name in names:
            modifier = recipe.modifiers[owner[name]]
            errors.append(_write(modules[name], methods[name].quantize(), modifier))
            counts[modifier.method] = counts.get(modifier.method, 0) + 1

    model.eval()
    per_layer = _sequential(
        model, calib_ids if needs_activations else None, device, visit, progress, should_stop, "compress"
    )
    left = [
        name
        for name in owner
        if getattr(modules[name], "quantization_status", None) != QuantizationStatus.FROZEN
    ]
    if left:
        raise CompressError(f"layers left unprocessed: {', '.join(left)}")
    return CompressSummary(
        layers=len(per_layer),
        modules=len(owner),
        methods=counts,
        mean_relative_error=sum(errors) / len(errors),
        seconds=time.perf_counter() - started,
        per_layer_seconds=per_layer,
    )
