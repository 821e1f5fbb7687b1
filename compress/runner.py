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
from torch import nn

from compress.errors import Cancelled, CompressError, RecipeError
from compress.layer_inputs import InputGroup, InputTracker
from compress.layers import find_decoder_layers, move_all_but, unsupported_reason
from compress.methods import METHODS, LinearInputs, Method, QuantizedWeight
from compress.quantize import dequantize_weight
from compress.recipes import Recipe, assign_layers, check_widths
from compress.schemes import CHECKPOINT_DTYPE, quantization_config

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
    transformed: list[str] = field(default_factory=list)  # producers (norms) a smoothing method rescaled


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
    model: nn.Module, layers: nn.ModuleList, calib_ids: torch.Tensor, device: torch.device, home: torch.device
) -> list[Batch]:
    """Hidden states and kwargs (position embeddings, mask...) entering layer 0, per batch, kept on `home`."""
    assert calib_ids.dim() == 2 and calib_ids.dtype == torch.long, (calib_ids.shape, calib_ids.dtype)
    captured: list[Batch] = []

    def hook(_module: nn.Module, args: tuple, kwargs: dict) -> None:
        hidden = args[0] if args else kwargs.pop("hidden_states")
        kept = {key: _to(value, home) for key, value in kwargs.items() if key != "past_key_values"}
        captured.append((hidden.to(home), kept))
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
def _run_layer(
    layer: nn.Module, inputs: list[Batch], device: torch.device, after_batch: Callable[[], None] | None = None
) -> list[Batch]:
    """The layer's outputs for every batch, kept where its inputs are kept."""
    outputs = []
    for hidden, kwargs in inputs:
        out = layer(hidden.to(device), **_to(kwargs, device))
        out = out[0] if isinstance(out, tuple) else out
        outputs.append((out.to(hidden.device), kwargs))
        if after_batch is not None:
            after_batch()
    return outputs


def _activation_home(
    calib_ids: torch.Tensor, hidden_size: int, dtype: torch.dtype, device: torch.device
) -> torch.device:
    """Keep the calibration activations on the compute device when a layer's inputs and outputs take under 40%
    of its free memory: copying them to the host and back every layer costs more than the layer's work."""
    if device.type != "cuda":
        return OFFLOAD
    free, _total = torch.cuda.mem_get_info(device)
    activations = calib_ids.numel() * hidden_size * torch.tensor([], dtype=dtype).element_size()
    return device if 2 * activations < 0.4 * free else OFFLOAD


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
    inputs = None
    if calib_ids is not None:
        dtype = next(model.parameters()).dtype
        home = _activation_home(calib_ids, model.config.hidden_size, dtype, device)
        inputs = _capture_inputs(model, layers, calib_ids, device, home)
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


def _owners(model: nn.Module, recipe: Recipe, prefix: str) -> dict[str, dict[str, int]]:
    """assign_layers on the model's Linears, plus what only the loaded model can tell: everything compressed
    must sit inside a decoder layer, and group/N:M sizes must divide the widths."""
    unsupported = unsupported_reason(model)
    if unsupported is not None:
        raise RecipeError("model", unsupported)
    linears = {name: module for name, module in model.named_modules() if isinstance(module, nn.Linear)}
    owner = assign_layers(recipe, list(linears))
    if not owner:
        raise RecipeError("recipe.modifiers", "no Linear layer of the model matches any modifier's targets")
    for name, stages in owner.items():
        if not name.startswith(f"{prefix}."):
            index = next(iter(stages.values()))
            raise RecipeError(
                f"recipe.modifiers.{index}.ignore", f"{name} is outside the decoder layers; add it to ignore"
            )
    check_widths(recipe, owner, {name: module.in_features for name, module in linears.items()})
    return owner


def _write(module: nn.Linear, weight: torch.Tensor, result: QuantizedWeight | None, group_size: int | None) -> float:
    """Store the result as compressed-tensors expects: weight = the dequantized codes (or the pruned weight),
    weight_scale/zero_point set; returns the relative change of the weight."""
    if result is None:
        weight = weight.to(CHECKPOINT_DTYPE).float()  # stored unquantized: compute with what the file holds
    else:
        weight = dequantize_weight(result.q, result.scale, result.zero_point, group_size)
        module.weight_scale.data.copy_(result.scale.reshape(module.weight_scale.shape))
        if hasattr(module, "weight_zero_point"):
            module.weight_zero_point.data.copy_(result.zero_point.reshape(module.weight_zero_point.shape))
        module.quantization_status = QuantizationStatus.FROZEN
    original = module.weight.data.float()
    error = ((weight - original).norm() / original.norm().clamp(min=1e-12)).item()
    module.weight.data.copy_(weight.to(module.weight.dtype))
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
    """Apply the recipe layer by layer: prune, then quantize, each Linear by the modifiers assign_layers gives
    it. Leaves compressed-tensors schemes set and weights fake-quantized (and zero where pruned)."""
    started = time.perf_counter()
    prefix, _layers = find_decoder_layers(model)
    owner = _owners(model, recipe, prefix)
    modules = dict(model.named_modules())
    methods: list[Method] = [METHODS[modifier.method](modifier) for modifier in recipe.modifiers]
    needs_inputs = any(method.needs_inputs for method in methods)
    if needs_inputs and calib_ids is None:
        raise CompressError("this recipe's methods need calibration windows")
    errors: list[float] = []
    transformed: list[str] = []
    counts: dict[str, int] = {}

    def visit(layer_prefix: str, layer: nn.Module, inputs: list[Batch] | None) -> None:
        names = [name for name in owner if name.startswith(f"{layer_prefix}.")]
        local = {name[len(layer_prefix) + 1 :]: name for name in names}
        if inputs is not None and any(methods[i].transforms for name in names for i in owner[name].values()):
            _transform(layer, layer_prefix, names, inputs)
        groups = [InputGroup(members=[name]) for name in names]
        if inputs is not None:
            hessian_for = {name for name in names if any(methods[i].needs_hessian for i in owner[name].values())}
            norms = any(methods[i].needs_input_norms for name in names for i in owner[name].values())
            tracker = InputTracker(layer, local, device, hessian_for=hessian_for, track_norms=norms)
            with tracker.attached():
                _run_layer(layer, inputs, device, after_batch=tracker.end_batch)
            groups = tracker.groups(names)
        for index, modifier in enumerate(recipe.modifiers):
            mine = [modules[name] for name in names if owner[name].get("quantize") == index]
            if mine:
                apply_quantization_config(
                    model, quantization_config(modifier), allowed_modules=mine, show_progress=False
                )
        for group in groups:
            for members in _same_modifiers(group.members, owner):
                errors.extend(_compress_stack(members, group, owner[members[0]]))
                for index in owner[members[0]].values():
                    method = recipe.modifiers[index].method
                    counts[method] = counts.get(method, 0) + len(members)
            group.hessian = None  # free it before the next group's

    def _transform(layer: nn.Module, layer_prefix: str, names: list[str], inputs: list[Batch]) -> None:
        """Smoothing-style methods rescale a producer (a norm) and the Linears reading it; they see every Linear
        of the layer, so a producer is only rescaled when all its readers are theirs."""
        every_linear = {local: f"{layer_prefix}.{local}" for local, module in layer.named_modules()
                        if isinstance(module, nn.Linear)}
        wanting = [methods[i] for i in sorted({i for name in names for i in owner[name].values()})
                   if methods[i].transforms]
        samples = max(method.sample_tokens for method in wanting)
        tracker = InputTracker(layer, every_linear, device, find_producers=True, track_norms=True,
                               sample_tokens_per_batch=-(-samples // len(inputs)) if samples else 0)
        with tracker.attached():
            reference = _run_layer(layer, inputs[:1], device, after_batch=tracker.end_batch)[0][0]
            _run_layer(layer, inputs[1:], device, after_batch=tracker.end_batch)
        for group in tracker.groups(list(every_linear.values())):
            if group.producer is None:
                continue
            producer = layer.get_submodule(group.producer)
            linears = [modules[name] for name in group.members]
            for method in wanting:
                index = methods.index(method)
                if not all(owner.get(name, {}).get(method.modifier.stage) == index for name in group.members):
                    continue
                saved = [tensor.detach().clone() for tensor in _scaled_tensors(producer, linears)]
                if not method.transform(group, producer, linears):
                    continue
                if _output_drift(layer, inputs[0], reference, device) > TRANSFORM_TOLERANCE[reference.dtype]:
                    # the producer does not scale its output by its weight (Gemma's norm multiplies by 1 + w)
                    for tensor, before in zip(_scaled_tensors(producer, linears), saved, strict=True):
                        tensor.data.copy_(before)
                    continue
                for tensor in producer.parameters(recurse=False):  # exactly what the checkpoint will hold
                    tensor.data.copy_(tensor.data.to(CHECKPOINT_DTYPE))
                transformed.append(f"{layer_prefix}.{group.producer}")

    def _compress_stack(members: list[str], group: InputGroup, stages: dict[str, int]) -> list[float]:
        weight = torch.cat([modules[name].weight.data.to(device, torch.float32) for name in members])
        leader = members[0]
        linear_inputs = LinearInputs(
            hessian=group.hessian.hessian if group.hessian is not None else None,
            sqnorm=group.sqnorm if group.sqnorm is not None else _stat(stats, leader, "input_sqnorm", device),
            absmax=group.absmax if group.absmax is not None else _stat(stats, leader, "input_absmax", device),
        )
        pruned = None
        if "prune" in stages:
            result = methods[stages["prune"]].prune(weight, linear_inputs)
            weight, pruned = result.weight, result.pruned
        quantized, group_size = None, None
        if "quantize" in stages:
            quantized = methods[stages["quantize"]].quantize(weight, linear_inputs, pruned)
            group_size = getattr(recipe.modifiers[stages["quantize"]], "group_size", None)
        written = []
        start = 0
        for name in members:
            end = start + modules[name].out_features
            part = quantized.rows(start, end) if quantized is not None else None
            written.append(_write(modules[name], weight[start:end], part, group_size))
            start = end
        return written

    model.eval()
    per_layer = _sequential(
        model, calib_ids if needs_inputs else None, device, visit, progress, should_stop, "compress"
    )
    left = [
        name
        for name, stages in owner.items()
        if "quantize" in stages and getattr(modules[name], "quantization_status", None) != QuantizationStatus.FROZEN
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
        transformed=transformed,
    )


# Relative change of a layer's output a rescaling may cause by rounding the rescaled weights to their dtype.
TRANSFORM_TOLERANCE = {torch.float32: 1e-3, torch.bfloat16: 3e-2, torch.float16: 3e-2}


def _scaled_tensors(producer: nn.Module, linears: list[nn.Linear]) -> list[torch.Tensor]:
    return [*producer.parameters(recurse=False), *(linear.weight for linear in linears)]


@torch.no_grad()
def _output_drift(layer: nn.Module, batch: Batch, reference: torch.Tensor, device: torch.device) -> float:
    """Relative change of the layer's output on one batch: a rescaling must leave the function unchanged."""
    out = _run_layer(layer, [batch], device)[0][0]
    return ((out.float() - reference.float()).norm() / reference.float().norm().clamp(min=1e-12)).item()


def _same_modifiers(group: list[str], owner: dict[str, dict[str, int]]) -> list[list[str]]:
    """Split a shared-input group into runs with identical modifiers: those can be stacked into one matrix."""
    runs: dict[tuple, list[str]] = {}
    for name in group:
        runs.setdefault(tuple(sorted(owner[name].items())), []).append(name)
    return list(runs.values())


def _stat(stats: dict[str, torch.Tensor], name: str, key: str, device: torch.device) -> torch.Tensor | None:
    value = stats.get(f"{name}.{key}")
    return value.to(device) if value is not None else None
