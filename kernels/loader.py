"""Load a compressed checkpoint for inference on Shrinkray's kernels: transformers reads the directory (the
quantized Linears arrive holding their compressed tensors, never dense weights), then every Linear is swapped
for the kernel module its `quantization_scheme` calls for. Dense Linears whose weights are 2:4 sparse (what
the 2of4 presets write) get the sparse kernel."""

from __future__ import annotations

import math
from collections import Counter
from pathlib import Path

import torch
from compressed_tensors.compressors.pack_quantized.helpers import unpack_from_int32
from torch import nn
from transformers import AutoModelForCausalLM, PreTrainedModel

from compress.model_io import inspect_model_dir
from kernels.attention_backend import use_decode_attention
from kernels.fusion import fuse_sibling_projections
from kernels.linear import Int4Linear, Int8Linear, Sparse24Linear
from kernels.self_check import check_kernels

KERNEL_GROUP = 128  # the int4 kernels' largest K block; longer groups (per-channel) are split into these


class UnsupportedScheme(ValueError):
    """A layer's quantization scheme has no kernel here."""


def is_24_sparse(weight: torch.Tensor) -> bool:
    """At most two nonzeros in every group of four along K (and K a multiple of 32, the storage's unit)."""
    n, k = weight.shape
    return k % 32 == 0 and bool(((weight.reshape(n, k // 4, 4) != 0).sum(-1) <= 2).all())


def _int_codes(module: nn.Module, fmt: str, bits: int) -> torch.Tensor:
    """The int8 codes [N, K] of a quantized Linear, unpacked if the format packs them."""
    if fmt == "pack-quantized":
        shape = torch.Size(module.weight_shape.tolist())
        return unpack_from_int32(module.weight_packed, bits, shape)
    return module.weight.to(torch.int8)


def _zero_points(module: nn.Module, fmt: str, bits: int, scale_shape: torch.Size) -> torch.Tensor | None:
    zero = getattr(module, "weight_zero_point", None)
    if zero is None:
        return None
    if fmt == "pack-quantized" and zero.shape != scale_shape:  # packed along the output dimension
        zero = unpack_from_int32(zero, bits, scale_shape, packed_dim=0)
    return zero.to(torch.int8)


def _int4_module(module: nn.Module, name: str, scheme: object, dtype: torch.dtype) -> nn.Module:
    args = scheme.weights
    fmt = str(getattr(scheme.format, "value", scheme.format))
    codes = _int_codes(module, fmt, args.num_bits)
    k = codes.shape[1]
    scale = module.weight_scale.reshape(codes.shape[0], -1)
    group = k // scale.shape[1]
    # a kernel group must be a multiple of 32 no longer than KERNEL_GROUP: longer groups repeat their scale
    kernel_group = math.gcd(group, KERNEL_GROUP)
    if kernel_group % 32 or k % 32:
        raise UnsupportedScheme(f"{name}: int4 kernels need K and the group size to be multiples of 32 "
                                f"(K={k}, group {group})")
    zero = _zero_points(module, fmt, args.num_bits, scale.shape)
    repeat = group // kernel_group
    scale = scale.repeat_interleave(repeat, dim=1)
    zero = zero.repeat_interleave(repeat, dim=1) if zero is not None else None
    bias = module.bias.detach() if module.bias is not None else None
    group_index = getattr(module, "weight_g_idx", None)
    if zero is None and group_index is None and is_24_sparse(codes):
        return Sparse24Linear(codes, bias, scale=scale, group_size=kernel_group, dtype=dtype)
    return Int4Linear(codes, scale, kernel_group, zero, bias, group_index, dtype)


def _int8_module(module: nn.Module, name: str, scheme: object, dtype: torch.dtype) -> nn.Module:
    args, acts = scheme.weights, scheme.input_activations
    fmt = str(getattr(scheme.format, "value", scheme.format))
    if args.strategy not in ("channel", "tensor") or not args.symmetric:
        raise UnsupportedScheme(f"{name}: 8-bit kernels take symmetric per-channel or per-tensor weight scales")
    if acts is not None and (not acts.dynamic or acts.strategy != "token" or acts.type != args.type):
        raise UnsupportedScheme(f"{name}: 8-bit kernels quantize activations dynamically per token, to the "
                                f"weight's type")
    weight = module.weight if args.type == "float" else _int_codes(module, fmt, 8)
    bias = module.bias.detach() if module.bias is not None else None
    return Int8Linear(weight, module.weight_scale, acts is not None, bias, dtype)


def kernel_module(module: nn.Linear, name: str, dtype: torch.dtype) -> nn.Module | None:
    """The kernel module for one Linear, or None where the dense Linear is kept."""
    scheme = getattr(module, "quantization_scheme", None)
    if scheme is None:
        weight = module.weight.detach()
        if weight.dim() == 2 and weight.is_floating_point() and (weight == 0).any() and is_24_sparse(weight):
            bias = module.bias.detach() if module.bias is not None else None
            return Sparse24Linear(weight, bias, dtype=dtype)
        return None
    args = scheme.weights
    if args is None or scheme.output_activations is not None:
        raise UnsupportedScheme(f"{name}: only weight (and input activation) quantization has kernels")
    if args.type == "int" and args.num_bits <= 4 and scheme.input_activations is None:
        return _int4_module(module, name, scheme, dtype)  # int2/int3 codes fit the int4 kernel exactly
    if args.num_bits == 8:
        return _int8_module(module, name, scheme, dtype)
    raise UnsupportedScheme(f"{name}: no kernel for {args.num_bits}-bit {args.type} weights"
                            + (" with quantized activations" if scheme.input_activations is not None else ""))


def swap_in_kernels(model: nn.Module, dtype: torch.dtype = torch.bfloat16) -> dict[str, int]:
    """Replace every Linear that has a kernel, in place; returns how many layers each kernel runs."""
    used: Counter[str] = Counter()
    for name, module in list(model.named_modules()):
        if not isinstance(module, nn.Linear):
            continue
        replacement = kernel_module(module, name, dtype)
        if replacement is None:
            used["dense"] += 1
            continue
        parent_name, _, child = name.rpartition(".")
        setattr(model.get_submodule(parent_name) if parent_name else model, child, replacement)
        used[replacement.kernel] += 1
    return dict(used)


def load_for_inference(
    path: Path, device: torch.device | str, dtype: torch.dtype = torch.bfloat16
) -> tuple[PreTrainedModel, dict[str, int]]:
    """The model in `path` on `device` with its compressed layers on kernels (each kind checked against its
    reference, kernels/self_check.py; sibling projections fused, kernels/fusion.py) and its decode steps' attention
    on Shrinkray's kernel where it runs on SDPA (kernels/attention_backend.py), and how many layers each
    kernel runs."""
    inspect_model_dir(path)
    model = AutoModelForCausalLM.from_pretrained(
        path, dtype=dtype, use_safetensors=True, trust_remote_code=False, local_files_only=True
    )
    model.to(device)
    with torch.no_grad():
        used = swap_in_kernels(model, dtype)
    check_kernels(model)
    model.eval()
    for kernel, fused in fuse_sibling_projections(model).items():
        used[kernel] -= fused
        used[f"{kernel}-fused"] = fused
    use_decode_attention(model)
    return model, {kernel: count for kernel, count in used.items() if count}
