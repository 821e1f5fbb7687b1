"""2:4 sparse weights for decoding (a few rows): a split-K GEMV on CUDA cores. The tensor-core kernel
(kernels/sparse24.py) rebuilds every dense weight, zeros included, to feed the MMA; at one row nothing fills the
MMA anyway, so here each kept value meets its own input column: per group of four, x's four values are read once
and each column's two kept values take theirs by a select on their stored positions. Two multiply-adds per group
and column, and only the kept values and their positions cross HBM: 9 of dense bf16's 16 bits per weight for
bf16/fp16 values, 3 (plus group scales) for int4 codes."""

from __future__ import annotations

import torch

from kernels.dependent_launch import allow_next_launch, launch_options, wait_for_previous
from kernels.split_k import store_split_k
from kernels.triton_support import triton
from kernels.tuning import autotune

if triton is not None:
    import triton.language as tl

# Decoding batches up to this many rows may take the GEMV (one pass over the weights per row, the passes after
# the first mostly from L2) or the 16-row tensor-core tile; sparse24_matmul times both per shape on the first call.
GEMV_CANDIDATE_ROWS = 8


if triton is not None:

    @triton.jit
    def _sparse24_gemv_kernel(
        x_ptr, words_ptr, positions_ptr, scale_ptr, bias_ptr, out_ptr, sums_ptr, arrivals_ptr,
        M,  # rows (one per program row): unused inside, but the autotuner's key (one row wants more K slices)
        N, K, stride_xm, stride_wk, stride_pk, stride_sn, stride_sg, stride_om,
        HAS_BIAS: tl.constexpr, FP16: tl.constexpr,
        INT4: tl.constexpr, GROUP_SIZE: tl.constexpr,  # int4 codes (+8, two per byte) with one scale per group
        MASKED: tl.constexpr,  # some step reaches past the last group: loads under masks
        BLOCK_N: tl.constexpr, BLOCK_G: tl.constexpr, SPLIT_K: tl.constexpr,
        DEPENDENT: tl.constexpr,  # launched dependent on the previous kernel (kernels/dependent_launch.py)
    ):
        """One input row per program row, BLOCK_N output columns, BLOCK_G groups of four input columns per step.
        In the pair layout (kernels/sparse24_layout.py) word row g holds group g, input columns 4g .. 4g + 3, and
        its positions are nibble (g // 16) % 2 of byte row 16 (g // 32) + g % 16. The per-group sums stay apart
        until the loop ends (no reduction across threads inside it). Int4 codes are scaled per group of four (a
        scale group holds whole groups of four). Split-K in one launch, as the W4A16 GEMV."""
        allow_next_launch(DEPENDENT)
        wait_for_previous(DEPENDENT)
        row = tl.program_id(0)
        cols = tl.program_id(1) * BLOCK_N + tl.arange(0, BLOCK_N)
        col_ok = cols < N
        groups_total = K // 4
        x_row = x_ptr + row * stride_xm
        acc = tl.zeros((BLOCK_G, BLOCK_N), dtype=tl.float32)
        for g0 in range(tl.program_id(2) * BLOCK_G, groups_total, BLOCK_G * SPLIT_K):
            groups = g0 + tl.arange(0, BLOCK_G)
            byte_rows = 16 * (groups // 32) + groups % 16
            if MASKED:
                ok = groups < groups_total
                tile_ok = ok[:, None] & col_ok[None, :]
                words = tl.load(words_ptr + groups[:, None] * stride_wk + cols[None, :], mask=tile_ok, other=0)
                packed = tl.load(positions_ptr + byte_rows[:, None] * stride_pk + cols[None, :], mask=tile_ok,
                                 other=0)
                x0 = tl.load(x_row + 4 * groups, mask=ok, other=0.0).to(tl.float32)
                x1 = tl.load(x_row + 4 * groups + 1, mask=ok, other=0.0).to(tl.float32)
                x2 = tl.load(x_row + 4 * groups + 2, mask=ok, other=0.0).to(tl.float32)
                x3 = tl.load(x_row + 4 * groups + 3, mask=ok, other=0.0).to(tl.float32)
            else:
                words = tl.load(words_ptr + groups[:, None] * stride_wk + cols[None, :], mask=col_ok[None, :],
                                other=0)
                packed = tl.load(positions_ptr + byte_rows[:, None] * stride_pk + cols[None, :],
                                 mask=col_ok[None, :], other=0)
                x0 = tl.load(x_row + 4 * groups).to(tl.float32)
                x1 = tl.load(x_row + 4 * groups + 1).to(tl.float32)
                x2 = tl.load(x_row + 4 * groups + 2).to(tl.float32)
                x3 = tl.load(x_row + 4 * groups + 3).to(tl.float32)
            nibbles = (packed.to(tl.int32) >> (4 * ((groups // 16) % 2))[:, None]) & 0xF
            first = nibbles & 3  # 0, 1 or 2
            second = nibbles >> 2  # 1, 2 or 3
            x_first = tl.where(first == 0, x0[:, None], tl.where(first == 1, x1[:, None], x2[:, None]))
            x_second = tl.where(second == 3, x3[:, None], tl.where(second == 2, x2[:, None], x1[:, None]))
            if INT4:
                # a code under the exponent bits of 2^23 reads as the float 2^23 + code: no int-to-float
                # conversion (a quarter-rate instruction), and the + 8 goes with the 2^23
                codes = words.to(tl.int32)
                low = ((codes & 0xF) | 0x4B000000).to(tl.float32, bitcast=True) - 8388616.0
                high = (((codes >> 4) & 0xF) | 0x4B000000).to(tl.float32, bitcast=True) - 8388616.0
                if GROUP_SIZE % (4 * BLOCK_G) == 0:  # the step lies in one group: one scale per column
                    scale = tl.load(scale_ptr + cols * stride_sn + (4 * g0 // GROUP_SIZE) * stride_sg, mask=col_ok,
                                    other=0.0).to(tl.float32)[None, :]
                else:
                    scale = tl.load(scale_ptr + cols[None, :] * stride_sn
                                    + tl.minimum(4 * groups // GROUP_SIZE, K // GROUP_SIZE - 1)[:, None] * stride_sg,
                                    mask=col_ok[None, :], other=0.0).to(tl.float32)
                acc += (low * x_first + high * x_second) * scale
            else:
                if FP16:
                    low = (words & 0xFFFF).to(tl.int16).to(tl.float16, bitcast=True).to(tl.float32)
                    high = (words >> 16).to(tl.int16).to(tl.float16, bitcast=True).to(tl.float32)
                else:  # bf16 to fp32 is a 16-bit shift
                    low = (words << 16).to(tl.float32, bitcast=True)
                    high = (words & -65536).to(tl.float32, bitcast=True)
                acc += low * x_first + high * x_second
        total = tl.sum(acc, axis=0)
        tile = row * tl.num_programs(1) + tl.program_id(1)
        store_split_k(total, out_ptr + row * stride_om + cols, sums_ptr + row * N + cols, col_ok, bias_ptr + cols,
                      col_ok, arrivals_ptr + tile, HAS_BIAS, SPLIT_K)

    _GEMV_CONFIGS = [
        triton.Config({"BLOCK_N": n, "BLOCK_G": g, "SPLIT_K": s}, num_warps=w)
        for n, g, s, w in [
            (64, 32, 4, 2), (64, 32, 8, 2), (64, 64, 4, 4), (128, 32, 4, 4), (128, 32, 8, 4), (128, 64, 2, 4),
            (128, 64, 4, 4), (256, 16, 8, 4), (256, 32, 4, 4), (256, 32, 8, 8), (256, 64, 2, 8), (32, 128, 2, 4),
            (32, 64, 4, 2), (64, 128, 1, 4), (64, 64, 16, 4), (128, 32, 16, 4), (128, 16, 32, 4),
        ]
    ]

    _sparse24_gemv_autotuned = autotune(_GEMV_CONFIGS, ["M", "N", "K", "FP16", "HAS_BIAS", "INT4", "GROUP_SIZE"])(
        triton.heuristics({"MASKED": lambda meta: (meta["K"] // 4) % meta["BLOCK_G"] != 0})(_sparse24_gemv_kernel))


def run_sparse24_gemv(x: torch.Tensor, words: torch.Tensor, positions: torch.Tensor, scale: torch.Tensor | None,
                      group_size: int, bias: torch.Tensor | None, out: torch.Tensor, sums: torch.Tensor,
                      arrivals: torch.Tensor, pinned: dict | None) -> None:
    """One program row per input row; autotuned per (M, N, K, dtype, group) unless `pinned` gives the tile. The
    caller (sparse24_matmul) has checked the operands; the split-K workspace covers M x cdiv(N, 16) tiles."""
    m, k = x.shape
    n = words.shape[1]
    int4 = scale is not None
    scale_arg = scale if int4 else words
    args = (x, words, positions, scale_arg, bias if bias is not None else out, out, sums, arrivals, m, n, k,
            x.stride(0), words.stride(0), positions.stride(0), *(scale.stride() if int4 else (0, 0)), out.stride(0))
    flags = {"HAS_BIAS": bias is not None, "FP16": x.dtype == torch.float16, "INT4": int4,
             "GROUP_SIZE": group_size if int4 else 32, **launch_options(x.device)}

    def grid(meta: dict) -> tuple[int, int, int]:
        return (m, triton.cdiv(n, meta["BLOCK_N"]), meta["SPLIT_K"])

    if pinned is None:
        _sparse24_gemv_autotuned[grid](*args, **flags)
    else:
        pinned = {"BLOCK_N": 32, "BLOCK_G": 32, "SPLIT_K": 1, "num_warps": 4, **pinned}
        if pinned["BLOCK_N"] < 16:
            raise ValueError("GEMV tiles are at least 16 columns wide (the split-K counters are sized for that)")
        _sparse24_gemv_kernel[grid(pinned)](*args, **flags, **pinned,
                                            MASKED=(k // 4) % pinned["BLOCK_G"] != 0)
