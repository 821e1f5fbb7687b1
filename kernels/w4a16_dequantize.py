"""The int4 weight dequantized into a dense [K, N] buffer in one pass: W4A16's prefill path, where cuBLAS on
the dequantized weight can beat dequantizing inside every tile of the fused matmul."""

from __future__ import annotations

import torch

from kernels.int4_layout import PACK
from kernels.triton_support import triton

if triton is not None:
    import triton.language as tl

if triton is not None:

    @triton.jit
    def _dequantize_kernel(
        packed_ptr, scale_ptr, zero_ptr, out_ptr, N, K, stride_pk, stride_sn, stride_sg, stride_zn, stride_zg,
        GROUP_SIZE: tl.constexpr, HAS_ZERO: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
    ):
        """The weight in x's dtype as [K, N] (the kernel layout's orientation, rows written whole along N)."""
        words = tl.program_id(0) * (BLOCK_K // 8) + tl.arange(0, BLOCK_K // 8)
        cols = tl.program_id(1) * BLOCK_N + tl.arange(0, BLOCK_N)
        col_ok = cols < N
        packed = tl.load(packed_ptr + words[:, None] * stride_pk + cols[None, :],
                         mask=(words < K // 8)[:, None] & col_ok[None, :], other=0)
        # 0x4B000000 is 2^23, whose fp32 ulp is 1: OR-ing a nibble in gives 2^23 + nibble with no conversion
        nibbles = ((packed[:, None, :] >> (tl.arange(0, 8) * 4)[None, :, None]) & 0xF) | 0x4B000000
        codes = tl.reshape(nibbles, (BLOCK_K, BLOCK_N)).to(tl.float32, bitcast=True) - (2.0 ** 23 + 8)
        ks = tl.program_id(0) * BLOCK_K + tl.arange(0, BLOCK_K)
        groups = ks // GROUP_SIZE
        mask = (ks < K)[:, None] & col_ok[None, :]
        if HAS_ZERO:
            codes -= tl.load(zero_ptr + cols[None, :] * stride_zn + groups[:, None] * stride_zg, mask=mask,
                             other=0).to(tl.float32)
        scale = tl.load(scale_ptr + cols[None, :] * stride_sn + groups[:, None] * stride_sg, mask=mask, other=0.0)
        tl.store(out_ptr + ks[:, None] * N + cols[None, :], (codes * scale.to(tl.float32)).to(out_ptr.dtype.element_ty),
                 mask=mask)


def dequantize_to_kn(packed: torch.Tensor, scale: torch.Tensor, group_size: int, dtype: torch.dtype,
                     zero_point: torch.Tensor | None = None) -> torch.Tensor:
    """The int4 weight in kernel layout as a dense [K, N] tensor of `dtype` (one Triton pass)."""
    k, n = packed.shape[0] * PACK, packed.shape[1]
    out = torch.empty(k, n, device=packed.device, dtype=dtype)
    zero = zero_point if zero_point is not None else scale
    block_k = min(64, group_size)
    _dequantize_kernel[(triton.cdiv(k, block_k), triton.cdiv(n, 128))](
        packed, scale, zero, out, n, k, packed.stride(0), *scale.stride(), *zero.stride(), GROUP_SIZE=group_size,
        HAS_ZERO=zero_point is not None, BLOCK_N=128, BLOCK_K=block_k, num_warps=4)
    return out
