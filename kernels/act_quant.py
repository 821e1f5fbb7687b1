"""Dynamic per-token activation quantization: one scale per row of x (absmax / the code range), then the
codes, in one kernel that reads x once (rows up to ROW_IN_REGISTERS) or twice instead of the four eager ops
torch needs (abs, amax, divide, round-and-cast). It feeds the int8 and FP8 W8A8 matmuls (w8a8.py), which take
the scales in their epilogue.
"""

from __future__ import annotations

import torch

from kernels.dependent_launch import allow_next_launch, launch_options, wait_for_previous
from kernels.triton_support import interpreted, require_triton, triton

if triton is not None:
    import triton.language as tl

CODE_MAX = {torch.int8: 127.0, torch.float8_e4m3fn: 448.0}


def quantize_per_token_reference(x: torch.Tensor, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """(codes [M, K] in dtype, scales [M] fp32) with x ≈ codes * scales[:, None]; an all-zero row gets scale 1."""
    x = x.float()
    absmax = x.abs().amax(dim=-1)
    scale = torch.where(absmax > 0, absmax / CODE_MAX[dtype], torch.ones_like(absmax))
    scaled = x / scale[:, None]
    if dtype == torch.int8:
        return scaled.round().clamp(-128, 127).to(torch.int8), scale
    return scaled.clamp(-CODE_MAX[dtype], CODE_MAX[dtype]).to(dtype), scale


ROW_IN_REGISTERS = 16384  # rows up to this long are read once, whole, by one program


if triton is not None:

    @triton.jit
    def _codes(x, CODE_MAX: tl.constexpr, TO_INT8: tl.constexpr):
        """x already divided by its row's scale, rounded and clamped to the code range (still fp32)."""
        if TO_INT8:  # round half away from zero; torch rounds ties to even, a one-code difference on exact ties
            x = tl.where(x >= 0, tl.floor(x + 0.5), tl.ceil(x - 0.5))
            return tl.minimum(tl.maximum(x, -128.0), 127.0)
        return tl.minimum(tl.maximum(x, -CODE_MAX), CODE_MAX)

    @triton.jit
    def _quantize_per_token_kernel(
        x_ptr, q_ptr, scale_ptr, K, stride_xm, stride_qm,
        CODE_MAX: tl.constexpr, TO_INT8: tl.constexpr, BLOCK_K: tl.constexpr, ONE_PASS: tl.constexpr,
        DEPENDENT: tl.constexpr,  # launched dependent on the previous kernel (kernels/dependent_launch.py)
    ):
        """One program per row. A row that fits in one block is read once with every load in flight (a decode
        step's single row otherwise waits on one dependent load after another); longer rows are read twice."""
        allow_next_launch(DEPENDENT)
        wait_for_previous(DEPENDENT)
        row = tl.program_id(0)
        if ONE_PASS:
            ks = tl.arange(0, BLOCK_K)
            x = tl.load(x_ptr + row * stride_xm + ks, mask=ks < K, other=0.0).to(tl.float32)
            peak = tl.max(tl.abs(x), axis=0)
        else:
            absmax = tl.zeros((BLOCK_K,), dtype=tl.float32)
            for k0 in range(0, K, BLOCK_K):
                ks = k0 + tl.arange(0, BLOCK_K)
                x = tl.load(x_ptr + row * stride_xm + ks, mask=ks < K, other=0.0).to(tl.float32)
                absmax = tl.maximum(absmax, tl.abs(x))
            peak = tl.max(absmax, axis=0)
        scale = tl.where(peak > 0, peak / CODE_MAX, 1.0)
        tl.store(scale_ptr + row, scale)
        if ONE_PASS:
            tl.store(q_ptr + row * stride_qm + ks, _codes(x / scale, CODE_MAX, TO_INT8).to(q_ptr.dtype.element_ty),
                     mask=ks < K)
        else:
            for k0 in range(0, K, BLOCK_K):
                ks = k0 + tl.arange(0, BLOCK_K)
                x = tl.load(x_ptr + row * stride_xm + ks, mask=ks < K, other=0.0).to(tl.float32)
                tl.store(q_ptr + row * stride_qm + ks,
                         _codes(x / scale, CODE_MAX, TO_INT8).to(q_ptr.dtype.element_ty), mask=ks < K)


def quantize_per_token(
    x: torch.Tensor, dtype: torch.dtype, out: tuple[torch.Tensor, torch.Tensor] | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Codes [M, K] (int8 or float8_e4m3fn) and fp32 scales [M] of a 2-D bf16/fp16/fp32 x; `out` reuses buffers."""
    require_triton()
    if dtype not in CODE_MAX:
        raise ValueError(f"dtype must be torch.int8 or torch.float8_e4m3fn, got {dtype}")
    if x.dim() != 2 or x.stride(-1) != 1:
        raise ValueError(f"x must be a row-major 2-D tensor, got shape {tuple(x.shape)}")
    m, k = x.shape
    if out is None:
        out = (torch.empty(m, k, device=x.device, dtype=dtype), torch.empty(m, device=x.device, dtype=torch.float32))
    codes, scales = out
    if codes.shape != (m, k) or codes.dtype != dtype or codes.stride(-1) != 1 or scales.shape != (m,):
        raise ValueError("out must be (codes [M, K] row-major in dtype, scales [M] fp32)")
    one_pass = k <= (64 if interpreted() else ROW_IN_REGISTERS)
    block = triton.next_power_of_2(k) if one_pass else (64 if interpreted() else 4096)
    # Triton's interpreter rounds fp32 -> fp8 wrongly (-126.6 became -64): there the kernel writes the clamped
    # fp32 values and torch casts them.
    staged = torch.empty(m, k, device=x.device) if interpreted() and dtype != torch.int8 else codes
    _quantize_per_token_kernel[(m,)](x, staged, scales, k, x.stride(0), staged.stride(0),
                                     CODE_MAX=CODE_MAX[dtype], TO_INT8=dtype == torch.int8, BLOCK_K=block,
                                     ONE_PASS=one_pass, num_warps=max(4, min(16, block // 1024)),
                                     **launch_options(x.device))
    if staged is not codes:
        codes.copy_(staged)
    return codes, scales
