"""Recipe modifiers -> compressed-tensors quantization schemes: the one place that knows the stored format."""

from __future__ import annotations

import torch
from compressed_tensors.quantization import QuantizationArgs, QuantizationConfig, QuantizationScheme

from compress.recipes import WeightQuantModifier

# Checkpoints store scales in bf16 (what vLLM's w4a16 kernels read); quantizing with bf16-representable
# scales makes the stored checkpoint dequantize to exactly the weights the runner computed.
SCALE_DTYPE = torch.bfloat16
# The dtype of everything else the exported checkpoint stores (norms, unquantized and pruned-only weights).
CHECKPOINT_DTYPE = torch.bfloat16


def weight_args(modifier: WeightQuantModifier) -> QuantizationArgs:
    return QuantizationArgs(
        num_bits=modifier.bits,
        type=modifier.type,
        symmetric=modifier.symmetric,
        strategy="group" if modifier.group_size else "channel",
        group_size=modifier.group_size,
        scale_dtype=torch.float32 if modifier.integer_scale else None,
    )


def stored_scale_dtype(modifier: WeightQuantModifier) -> torch.dtype:
    """Integer scales are stored in fp32, where base x integer is exact; others in bf16."""
    return torch.float32 if modifier.integer_scale else SCALE_DTYPE


def activation_args(modifier: WeightQuantModifier) -> QuantizationArgs | None:
    """Dynamic per-token input quantization: the scale of each token is its absmax, computed at run time."""
    if modifier.activations is None:
        return None
    kind = "float" if modifier.activations == "fp8" else "int"
    return QuantizationArgs(num_bits=8, type=kind, symmetric=True, strategy="token", dynamic=True)


def storage_format(modifier: WeightQuantModifier) -> str:
    """FP8 codes are stored as float8_e4m3fn; 8-bit integer codes with quantized activations as int8 (what
    vLLM's W8A8 kernels read); other symmetric codes are packed into int32. Asymmetric ones stay int8, because
    transformers 5.24 with compressed-tensors 0.20 cannot load packed zero points back (measured: a shape
    mismatch on load)."""
    if modifier.type == "float":
        return "float-quantized"
    if not modifier.symmetric or (modifier.bits == 8 and modifier.activations is not None):
        return "int-quantized" if modifier.symmetric else "naive-quantized"
    return "pack-quantized"


def quantization_config(modifier: WeightQuantModifier) -> QuantizationConfig:
    scheme = QuantizationScheme(
        targets=modifier.targets,
        weights=weight_args(modifier),
        input_activations=activation_args(modifier),
        format=storage_format(modifier),
    )
    return QuantizationConfig(config_groups={"group_0": scheme}, ignore=modifier.ignore)
