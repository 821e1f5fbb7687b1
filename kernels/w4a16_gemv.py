"""W4A16 for decoding (a few rows): a split-K GEMV on CUDA cores. There is no tensor-core tile to fill at M=1,
and measured on an H200 the loop was bound by instructions per code rather than by HBM (the same loop without
its arithmetic streamed the weights twice as fast), so each code costs one AND and one fused multiply-add."""

from __future__ import annotations

from kernels.split_k import store_split_k
from kernels.triton_support import triton
from kernels.tuning import autotuner_do_bench

if triton is not None:
    import triton.language as tl

# Decoding batches up to this many rows take the GEMV kernel (one weight pass per row, the passes after the
# first mostly from L2, is still cheaper there than a 16-row tensor-core tile).
GEMV_MAX_ROWS = 4


if triton is not None:

    @triton.jit
    def _w4a16_gemv_kernel(
        x_ptr, packed_ptr, scale_ptr, zero_ptr, bias_ptr, out_ptr, sums_ptr, arrivals_ptr,
        N, K, stride_xm, stride_pk, stride_sn, stride_sg, stride_zn, stride_zg, stride_om,
        GROUP_SIZE: tl.constexpr, HAS_ZERO: tl.constexpr, HAS_BIAS: tl.constexpr,
        BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, SPLIT_K: tl.constexpr,
    ):
        """One input row per program row; the K loop reduces the codes of [BLOCK_K / 8, BLOCK_N] words one nibble
        position at a time (constant masks), and the sums stay per word until the loop ends, so no reduction
        crosses threads inside it. Scales are applied per word row, so a block may span several groups: narrow,
        tall blocks keep enough bytes in flight without splitting K (on an H200 they were the fastest at M=1 from
        4096 x 4096 up; the 1024-wide projections still split K).

        Split-K in one launch: the K slices of a tile add their fp32 sums into a workspace and count in; the
        last to arrive writes the tile out in the output dtype and zeroes its workspace and counter again, so
        no memset or conversion kernel is needed around the call (at decode sizes each costs as much as the
        matmul)."""
        row = tl.program_id(0)
        cols = tl.program_id(1) * BLOCK_N + tl.arange(0, BLOCK_N)
        split = tl.program_id(2)
        col_ok = cols < N
        words = tl.arange(0, BLOCK_K // 8)
        acc = tl.zeros((BLOCK_K // 8, BLOCK_N), dtype=tl.float32)
        step = BLOCK_K * SPLIT_K
        k0 = split * BLOCK_K
        word_rows = k0 // 8 + words
        packed = tl.load(packed_ptr + word_rows[:, None] * stride_pk + cols[None, :],
                         mask=(word_rows < K // 8)[:, None] & col_ok[None, :], other=0)
        for _ in range(tl.cdiv(K - k0, step)):
            # the next block's words are requested before this block is computed, so two are in flight
            next_rows = (k0 + step) // 8 + words
            upcoming = tl.load(packed_ptr + next_rows[:, None] * stride_pk + cols[None, :],
                               mask=(next_rows < K // 8)[:, None] & col_ok[None, :], other=0)
            groups = (k0 + words * 8) // GROUP_SIZE  # each word row's group: a block may span several
            partial = tl.zeros((BLOCK_K // 8, BLOCK_N), dtype=tl.float32)
            x_sum = tl.zeros((BLOCK_K // 8,), dtype=tl.float32)
            high = packed >> 8  # nibbles 6 and 7 moved to bits 16..23
            for nibble in tl.static_range(8):
                ks = k0 + words * 8 + nibble
                x = tl.load(x_ptr + row * stride_xm + ks, mask=ks < K, other=0.0).to(tl.float32)
                # a nibble masked in place at bits b..b+3 (b <= 20) reads as the fp32 denormal nibble * 2^(b - 149):
                # one AND per code; x is pre-scaled by 2^(96 - b), so every product is nibble * x * 2^-53
                if nibble < 6:
                    bits = packed & (0xF << (4 * nibble))
                    x_scaled = x * (2.0 ** (96 - 4 * nibble))
                else:
                    bits = high & (0xF << (4 * nibble - 8))
                    x_scaled = x * (2.0 ** (104 - 4 * nibble))
                partial += bits.to(tl.float32, bitcast=True) * x_scaled[:, None]
                x_sum += x
            # per word row: contiguous along the columns for group-major scales, so one vector load per thread
            group_mask = (groups < K // GROUP_SIZE)[:, None] & col_ok[None, :]
            offset = 8.0  # codes are stored + 8
            if HAS_ZERO:
                offset += tl.load(zero_ptr + cols[None, :] * stride_zn + groups[:, None] * stride_zg,
                                  mask=group_mask, other=0).to(tl.float32)
            scale = tl.load(scale_ptr + cols[None, :] * stride_sn + groups[:, None] * stride_sg,
                            mask=group_mask, other=0.0).to(tl.float32)
            acc += (partial * 2.0 ** 53 - x_sum[:, None] * offset) * scale
            packed = upcoming
            k0 += step
        total = tl.sum(acc, axis=0)
        tile = row * tl.num_programs(1) + tl.program_id(1)
        store_split_k(total, out_ptr + row * stride_om + cols, sums_ptr + row * N + cols, col_ok,
                      bias_ptr + cols, col_ok, arrivals_ptr + tile, HAS_BIAS, SPLIT_K)

    _GEMV_CONFIGS = [
        triton.Config({"BLOCK_N": n, "BLOCK_K": k, "SPLIT_K": s}, num_warps=w)
        for n, k, s, w in [
            (128, 128, 8, 4), (128, 128, 4, 4), (128, 128, 16, 4), (256, 128, 8, 8), (64, 128, 16, 4),
            (64, 128, 8, 4), (128, 64, 8, 4), (128, 64, 16, 4), (256, 64, 8, 4), (256, 64, 16, 4), (128, 128, 2, 4),
            # small layers (a decoder's 4096-wide projections): more, shorter programs keep enough loads in flight
            (64, 64, 32, 4), (64, 128, 32, 4), (128, 64, 32, 4), (32, 128, 16, 2), (64, 64, 16, 2), (32, 64, 32, 2),
            # blocks spanning several groups: narrow tiles with a long K stride, enough bytes in flight per program
            # without split-K's atomics
            (16, 512, 1, 4), (16, 1024, 1, 4), (32, 512, 1, 4), (32, 1024, 1, 8), (64, 512, 1, 8), (16, 512, 2, 4),
            (32, 512, 2, 4), (32, 256, 2, 2), (64, 256, 2, 4), (32, 256, 4, 4), (64, 256, 4, 4), (16, 256, 4, 2),
            (128, 256, 4, 8), (128, 512, 2, 8), (64, 512, 4, 8), (16, 2048, 1, 8), (32, 2048, 1, 8), (64, 1024, 1, 8),
        ]
    ]

    _w4a16_gemv_autotuned = triton.autotune(
        configs=_GEMV_CONFIGS, key=["N", "K", "GROUP_SIZE", "HAS_ZERO"], do_bench=autotuner_do_bench,
    )(_w4a16_gemv_kernel)


def run_gemv(args: tuple, m: int, n: int, k: int, strides: tuple, flags: dict, pinned: dict | None) -> None:
    """One program row per input row; autotuned per (N, K, group) unless `pinned` gives the tile."""
    def grid(meta: dict) -> tuple[int, int, int]:
        return (m, triton.cdiv(n, meta["BLOCK_N"]), meta["SPLIT_K"])

    if pinned is None:
        _w4a16_gemv_autotuned[grid](*args, n, k, *strides, **flags)
    else:
        pinned = {"BLOCK_N": 32, "BLOCK_K": 32, "SPLIT_K": 1, **pinned}
        _w4a16_gemv_kernel[grid(pinned)](*args, n, k, *strides, **flags, **pinned, num_warps=4)
