"""The kernels registered as torch operators (`torch.ops.shrinkray.*`), so torch.compile treats each launch as one
opaque call (no tracing into launchers and autotuners) and the compressed Linear modules compile and capture
into CUDA graphs like any torch layer. Each operator declares its output shapes for compile's fake tensors."""

from __future__ import annotations

import torch

from kernels.act_quant import quantize_per_token
from kernels.decode_attention import decode_attention
from kernels.sparse24 import sparse24_matmul
from kernels.w4a16 import w4a16_matmul
from kernels.w8a8 import scaled_matmul


@torch.library.custom_op("shrinkray::w4a16_matmul", mutates_args=())
def w4a16_op(x: torch.Tensor, packed: torch.Tensor, scale: torch.Tensor, group_size: int,
             zero_point: torch.Tensor | None, bias: torch.Tensor | None, gated: bool = False) -> torch.Tensor:
    return w4a16_matmul(x, packed, scale, group_size, zero_point, bias, gated=gated)


@w4a16_op.register_fake
def _(x, packed, scale, group_size, zero_point, bias, gated=False):  # type: ignore[no-untyped-def]
    return x.new_empty(x.shape[0], scale.shape[0] // 2 if gated else scale.shape[0])


@torch.library.custom_op("shrinkray::quantize_per_token", mutates_args=())
def quantize_per_token_op(x: torch.Tensor, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    return quantize_per_token(x, dtype)


@quantize_per_token_op.register_fake
def _(x, dtype):  # type: ignore[no-untyped-def]
    return x.new_empty(x.shape, dtype=dtype), x.new_empty(x.shape[0], dtype=torch.float32)


@torch.library.custom_op("shrinkray::scaled_matmul", mutates_args=())
def scaled_matmul_op(x: torch.Tensor, x_scale: torch.Tensor | None, weight: torch.Tensor, w_scale: torch.Tensor,
                     out_dtype: torch.dtype, bias: torch.Tensor | None) -> torch.Tensor:
    return scaled_matmul(x, x_scale, weight, w_scale, out_dtype, bias)


@scaled_matmul_op.register_fake
def _(x, x_scale, weight, w_scale, out_dtype, bias):  # type: ignore[no-untyped-def]
    return x.new_empty(x.shape[0], weight.shape[0], dtype=out_dtype)


@torch.library.custom_op("shrinkray::sparse24_matmul", mutates_args=())
def sparse24_op(x: torch.Tensor, words: torch.Tensor, positions: torch.Tensor, scale: torch.Tensor | None,
                group_size: int, bias: torch.Tensor | None) -> torch.Tensor:
    return sparse24_matmul(x, words, positions, scale, group_size, bias)


@sparse24_op.register_fake
def _(x, words, positions, scale, group_size, bias):  # type: ignore[no-untyped-def]
    return x.new_empty(x.shape[0], positions.shape[1])


@torch.library.custom_op("shrinkray::decode_attention", mutates_args=())
def decode_attention_op(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, mask: torch.Tensor | None,
                        scale: float) -> torch.Tensor:
    return decode_attention(query, key, value, mask, scale)


@decode_attention_op.register_fake
def _(query, key, value, mask, scale):  # type: ignore[no-untyped-def]
    batch, heads, _, head_dim = query.shape
    return query.new_empty(batch, 1, heads, head_dim)
