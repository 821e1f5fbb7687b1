"""The int4 weight dequantized into a dense [K, N] buffer in one pass: W4A16's prefill path, where cuBLAS on
the dequantized weight can beat dequantizing inside every tile of the fused matmul."""

from __future__ import annotations

import torch

from kernels.dependent_launch import allow_next_launch, launch_options, wait_for_previous
from kernels.int4_layout import QUAD_BLOCK
from kernels.triton_support import triton

if triton is not None:
    import triton.language as tl

if triton is not None:

    @triton.jit
    def _dequantize_kernel(
        packed_ptr, scale_ptr, zero_ptr, out_ptr, N, K, stride_pk, stride_sn, stride_sg, stride_zn, stride_zg,
        GROUP_SIZE: tl.constexpr, HAS_ZERO: tl.constexpr, BLOCK_N: tl.constexpr,
        DEPENDENT: tl.constexpr,  # launched dependent on the previous kernel (kernels/dependent_launch.py)
    ):
        """One quad-layout row block (128 input columns) of BLOCK_N output columns per program, written as [K, N]
        rows whole along N."""
        allow_next_launch(DEPENDENT)
        wait_for_previous(DEPENDENT)
        quads = tl.arange(0, 32)
        cols = tl.program_id(1) * BLOCK_N + tl.arange(0, BLOCK_N)
        col_ok = cols < N
        k0 = tl.program_id(0) * 128
        packed = tl.load(packed_ptr + (k0 // 4 + quads)[:, None] * stride_pk + cols[None, :], mask=col_ok[None, :],
                         other=0).to(tl.int32)
        for j in tl.static_range(4):
            ks = k0 + 32 * j + quads
            mask = (ks < K)[:, None] & col_ok[None, :]
            group = tl.minimum((k0 + 32 * j) // GROUP_SIZE, K // GROUP_SIZE - 1)  # past K nothing is stored
            codes = ((packed >> (4 * j)) & 0xF).to(tl.float32) - 8.0
            if HAS_ZERO:
                codes -= tl.load(zero_ptr + cols * stride_zn + group * stride_zg, mask=col_ok,
                                 other=0).to(tl.float32)[None, :]
            scale = tl.load(scale_ptr + cols * stride_sn + group * stride_sg, mask=col_ok, other=0.0).to(tl.float32)
            tl.store(out_ptr + ks[:, None] * N + cols[None, :], (codes * scale[None, :]).to(out_ptr.dtype.element_ty),
                     mask=mask)


def dequantize_to_kn(packed: torch.Tensor, scale: torch.Tensor, group_size: int, dtype: torch.dtype,
                     zero_point: torch.Tensor | None = None) -> torch.Tensor:
    """The int4 weight in the quad layout as a dense [K, N] tensor of `dtype` (one Triton pass), with scales
    [N, K / group_size]."""
    n, k = scale.shape[0], scale.shape[1] * group_size
    out = torch.empty(k, n, device=packed.device, dtype=dtype)
    zero = zero_point if zero_point is not None else scale
    _dequantize_kernel[(triton.cdiv(k, QUAD_BLOCK), triton.cdiv(n, 128))](
        packed, scale, zero, out, n, k, packed.stride(0), *scale.stride(), *zero.stride(), GROUP_SIZE=group_size,
        HAS_ZERO=zero_point is not None, BLOCK_N=128, num_warps=4, **launch_options(packed.device))
    return out
