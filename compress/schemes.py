"""Recipe modifiers -> compressed-tensors quantization schemes: the one place that knows the stored format."""

from __future__ import annotations

import torch
from compressed_tensors.quantization import QuantizationArgs, QuantizationConfig, QuantizationScheme

from compress.recipes import WeightQuantModifier

# Checkpoints store scales in bf16 (what vLLM's w4a16 kernels read); quantizing with bf16-representable
# scales makes the stored checkpoint dequantize to exactly the weights the runner computed.
SCALE_DTYPE = torch.bfloat16


def weight_args(modifier: WeightQuantModifier) -> QuantizationArgs:
    return QuantizationArgs(
        num_bits=modifier.bits,
        type="int",
        symmetric=modifier.symmetric,
        strategy="group" if modifier.group_size else "channel",
        group_size=modifier.group_size,
    )


def storage_format(modifier: WeightQuantModifier) -> str:
    """Symmetric codes are packed into int32; asymmetric ones stay int8, because transformers 5.24 with
    compressed-tensors 0.20 cannot load packed zero points back (measured: a shape mismatch on load)."""
    return "pack-quantized" if modifier.symmetric else "naive-quantized"


def quantization_config(modifier: WeightQuantModifier) -> QuantizationConfig:
    scheme = QuantizationScheme(
        targets=modifier.targets, weights=weight_args(modifier), format=storage_format(modifier)
    )
    return QuantizationConfig(config_groups={"group_0": scheme}, ignore=modifier.ignore)
