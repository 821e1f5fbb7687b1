"""W4A16 for decoding, the second GEMV: column strips whose word rows all stay in one thread.

The split-K GEMV (kernels/w4a16_gemv.py) spreads a tile's word rows over threads, so each word row pays its own
scale multiply and its own x loads, and the partial sums stay per word until the loop ends (121 registers a
thread, 3.5-3.9 SASS instructions per code). Here a program owns PAIRS column pairs, PAIRS / 128 per warp, four
words a thread, and walks units of SEG word rows of one quad block: every code of a unit meets its input
column in a chain of fused multiply-adds held in the thread, the scale and the -8 offset are applied once per
unit and group, and x arrives as scalars (broadcast loads, one integer multiply-add each to fp32 and to the
exponent the denormal trick needs): about 2.5 instructions per code and 64 registers. On an H200 it took
4096 x 28672 at one row from 26.7 to 23.0 us and 8192 x 28672 from 44.9 to 38.7, but narrow outputs have too
few strips to fill the GPU (14336 x 4096: 16.3 against 14.8), so kernels/w4a16.py times both GEMVs per shape.

The codes' float trick is the split-K GEMV's: a nibble masked in place at bits b..b+3 reads as the fp32 number
nibble * 2^(b - 149), x pre-scaled by 2^(96 - b) makes every product nibble * x * 2^-53, and 2^53 comes back
once at the end. Codes are stored + 8 (+ the zero point), so each unit's sum starts from
-(8 + z) * sum(x) * 2^-53."""

from __future__ import annotations

import torch

from kernels.dependent_launch import allow_next_launch, launch_options, wait_for_previous
from kernels.triton_support import triton
from kernels.tuning import autotune
from kernels.w4a16_gemv import load_pair_scales, scales_paired, store_pair_columns

if triton is not None:
    import triton.language as tl

    @triton.jit
    def _scaled_x(x_row, k, j: tl.constexpr, exponent: tl.constexpr, K, X_MASKED: tl.constexpr):
        """x[k] as fp32 times 2^exponent. bf16 bits shifted into fp32 with the exponent added in one integer
        multiply-add: exact for normal x below 2^32 (beyond, x * 2^96 overflows in either GEMV); zero and
        subnormal x come out below 2^-30, whose products with a code (< 2^-133) vanish in fp32 as the exact ones
        do. fp16 is converted and multiplied."""
        if x_row.dtype.element_ty == tl.bfloat16:
            bits_ptr = x_row.to(tl.pointer_type(tl.uint16)) + k + 32 * j
            if X_MASKED:
                bits = tl.load(bits_ptr, mask=k + 32 * j < K, other=0)
            else:
                bits = tl.load(bits_ptr)
            scaled = (bits.to(tl.uint32) * 65536 + (exponent << 23)).to(tl.float32, bitcast=True)
        else:
            if X_MASKED:
                value = tl.load(x_row + k + 32 * j, mask=k + 32 * j < K, other=0.0)
            else:
                value = tl.load(x_row + k + 32 * j)
            scaled = value.to(tl.float32) * (2.0 ** exponent)
        return scaled

    @triton.jit
    def _unit_partials(packed_ptr, x_row, b, r0, pairs, pair_ok, K, e0, o0, e1, o1, e2, o2, e3, o3,
                       stride_pk, GROUP_NIBBLES: tl.constexpr, X_MASKED: tl.constexpr,
                       PAIR_MASKED: tl.constexpr, SEG: tl.constexpr):
        """Adds word rows r0 .. r0 + SEG of quad block b into unscaled per-column sums, one pair (even e, odd o)
        per set of nibble positions that shares a scale (set j // GROUP_NIBBLES)."""
        for i in tl.static_range(SEG):
            row = b * 32 + r0 + i
            if PAIR_MASKED:
                words = tl.load(packed_ptr + row * stride_pk + pairs, mask=pair_ok, other=0)
            else:
                words = tl.load(packed_ptr + row * stride_pk + pairs)
            odd_words = words >> 16
            k = b * 128 + r0 + i  # the input column of nibble 0; nibble j is k + 32 j
            for j in tl.static_range(4):
                x_j = _scaled_x(x_row, k, j, 96 - 4 * j, K, X_MASKED)
                even = (words & (0xF << (4 * j))).to(tl.float32, bitcast=True) * x_j
                if j == 0:  # read in place at bits 16..19: a shift and mask of bits 0..3 compile to two ops
                    odd = (words & 0xF0000).to(tl.float32, bitcast=True) * _scaled_x(x_row, k, j, 80, K, X_MASKED)
                else:
                    odd = (odd_words & (0xF << (4 * j))).to(tl.float32, bitcast=True) * x_j
                if j // GROUP_NIBBLES == 0:
                    e0 += even
                    o0 += odd
                elif j // GROUP_NIBBLES == 1:
                    e1 += even
                    o1 += odd
                elif j // GROUP_NIBBLES == 2:
                    e2 += even
                    o2 += odd
                else:
                    e3 += even
                    o3 += odd
        return e0, o0, e1, o1, e2, o2, e3, o3

    @triton.jit
    def _add_scaled(acc_e, acc_o, part_e, part_o, x_sum, group, pairs, pair_ok, N, K, scale_ptr, zero_ptr,
                    stride_sn, stride_sg, stride_zn, stride_zg,
                    GROUP_SIZE: tl.constexpr, HAS_ZERO: tl.constexpr, PAIRED: tl.constexpr):
        """acc += (part - (8 + z) * x_sum * 2^-53) * scale for one group of every column pair (the scales past a
        ragged K read as zero)."""
        scale_e, scale_o, zero_e, zero_o = load_pair_scales(
            scale_ptr, zero_ptr, group, pairs, tl.zeros_like(pairs) + group < K // GROUP_SIZE, pair_ok, N,
            stride_sn, stride_sg, stride_zn, stride_zg, HAS_ZERO, PAIRED)
        if HAS_ZERO:
            acc_e += (part_e - (zero_e + 8.0) * (x_sum * 2.0 ** -53)) * scale_e
            acc_o += (part_o - (zero_o + 8.0) * (x_sum * 2.0 ** -53)) * scale_o
        else:
            offset = x_sum * (-8.0 * 2.0 ** -53)
            acc_e += (part_e + offset) * scale_e
            acc_o += (part_o + offset) * scale_o
        return acc_e, acc_o

    @triton.jit
    def _w4a16_strip_kernel(
        x_ptr, packed_ptr, scale_ptr, zero_ptr, bias_ptr, out_ptr, sums_ptr, arrivals_ptr,
        M,  # rows (one per program row): unused inside, but the autotuner's key
        N, K, stride_xm, stride_pk, stride_sn, stride_sg, stride_zn, stride_zg, stride_om,
        GROUP_SIZE: tl.constexpr, GROUP_NIBBLES: tl.constexpr, HAS_ZERO: tl.constexpr, HAS_BIAS: tl.constexpr,
        GATED: tl.constexpr,  # column pairs are (gate, up) of a gated MLP: the output is silu(gate) * up
        PAIRED: tl.constexpr,  # scales (and zero points) group-major with N even: read per column pair
        X_MASKED: tl.constexpr,  # K is ragged: the last quad block reaches past it
        PAIR_MASKED: tl.constexpr,  # the last strip reaches past the words of a row
        PAIRS: tl.constexpr, SEG: tl.constexpr, SPLIT_K: tl.constexpr,
        DEPENDENT: tl.constexpr,  # launched dependent on the previous kernel (kernels/dependent_launch.py)
    ):
        """One input row per program row. The quad layout is read as int32 words [K' / 4, N' / 2], each holding
        four codes of output column 2p (low half) and four of column 2p + 1 (high half). K is cut into units of
        SEG word rows of one quad block (4 x SEG input columns); the K slices of a strip take every SPLIT_K-th
        unit and add into the split-K workspace (kernels/split_k.py).

        The row stride is a run-time argument. As a constant it let every row's load take an immediate offset
        (2.55 SASS instructions per code against 2.63) but compiled every config again for each output width: on
        an H200 13-15 s per new width in a fresh worker, for times within 1.5% at each shape's fastest config."""
        allow_next_launch(DEPENDENT)
        row = tl.program_id(0)
        pairs = tl.program_id(1) * PAIRS + tl.arange(0, PAIRS)
        pair_ok = pairs < stride_pk
        x_row = x_ptr + row * stride_xm
        acc_e = tl.zeros((PAIRS,), dtype=tl.float32)
        acc_o = tl.zeros((PAIRS,), dtype=tl.float32)
        lanes = tl.arange(0, 4 * SEG)
        unit_cols = 32 * (lanes // SEG) + lanes % SEG  # a unit's input columns past b * 128 + r0, nibble-major
        lane_sets = lanes // (SEG * GROUP_NIBBLES)
        UNITS_PER_BLOCK: tl.constexpr = 32 // SEG
        wait_for_previous(DEPENDENT)
        for unit in range(tl.program_id(2), tl.cdiv(K, 128) * UNITS_PER_BLOCK, SPLIT_K):
            b = unit // UNITS_PER_BLOCK
            r0 = (unit % UNITS_PER_BLOCK) * SEG
            zero = tl.zeros((PAIRS,), dtype=tl.float32)
            e0, o0, e1, o1, e2, o2, e3, o3 = _unit_partials(
                packed_ptr, x_row, b, r0, pairs, pair_ok, K, zero, zero, zero, zero, zero, zero, zero, zero,
                stride_pk, GROUP_NIBBLES, X_MASKED, PAIR_MASKED, SEG)
            ks = b * 128 + r0 + unit_cols
            if X_MASKED:
                x_unit = tl.load(x_row + ks, mask=ks < K, other=0.0).to(tl.float32)
            else:
                x_unit = tl.load(x_row + ks).to(tl.float32)
            for s in tl.static_range(4 // GROUP_NIBBLES):
                if GROUP_NIBBLES == 4:
                    x_sum = tl.sum(x_unit)
                else:
                    x_sum = tl.sum(tl.where(lane_sets == s, x_unit, 0.0))
                if s == 0:
                    part_e, part_o = e0, o0
                elif s == 1:
                    part_e, part_o = e1, o1
                elif s == 2:
                    part_e, part_o = e2, o2
                else:
                    part_e, part_o = e3, o3
                group = (b * 128 + 32 * GROUP_NIBBLES * s) // GROUP_SIZE
                acc_e, acc_o = _add_scaled(acc_e, acc_o, part_e, part_o, x_sum, group, pairs, pair_ok, N, K,
                                           scale_ptr, zero_ptr, stride_sn, stride_sg, stride_zn, stride_zg,
                                           GROUP_SIZE, HAS_ZERO, PAIRED)
        store_pair_columns(acc_e, acc_o, pairs, row, out_ptr, sums_ptr, bias_ptr,
                           arrivals_ptr + row * tl.num_programs(1) + tl.program_id(1), N, stride_om, HAS_BIAS,
                           SPLIT_K, GATED)

    # PAIRS = 128 a warp (four words a thread, every word row of the unit in the thread); the picks of an H200
    # sweep at one row over 4096 x 4096 .. 8192 x 28672
    _STRIP_CONFIGS = [
        triton.Config({"PAIRS": p, "SEG": seg, "SPLIT_K": s}, num_warps=p // 128)
        for p, seg, s in [
            (128, 32, 32), (128, 16, 32), (256, 32, 32), (128, 32, 16),  # wide outputs
            (128, 8, 128), (128, 8, 64), (128, 16, 64),  # narrow ones: more, shorter K slices
        ]
    ]

    def _prune(configs: list, named_args: dict, **kwargs: object) -> list:
        """K slices beyond the units K has would only add zeros."""
        given = {**named_args, **kwargs}
        k = int(given["K"])
        kept = [c for c in configs if c.kwargs["SPLIT_K"] <= triton.cdiv(k, 128) * 32 // c.kwargs["SEG"]]
        return kept or configs[:1]

    _w4a16_strip_autotuned = autotune(_STRIP_CONFIGS, ["M", "N", "K", "GROUP_SIZE", "HAS_ZERO", "PAIRED", "GATED"],
                                       _prune)(
        triton.heuristics({"PAIR_MASKED": lambda meta: meta["stride_pk"] % meta["PAIRS"] != 0})(_w4a16_strip_kernel))


def run_strip_gemv(args: tuple, m: int, n: int, k: int, strides: tuple, flags: dict, pinned: dict | None) -> None:
    """As kernels/w4a16_gemv.py's run_gemv takes them (`args`, `strides`, `flags`); autotuned per (M, N, K, group)
    unless `pinned` gives PAIRS, SEG and SPLIT_K."""
    packed = args[1].view(torch.int32)
    args = (args[0], packed, *args[2:])
    scale, zero = args[2], args[3]
    flags = {**flags, "X_MASKED": k % 128 != 0, "PAIRED": scales_paired(n, scale, zero if flags["HAS_ZERO"] else None),
             **launch_options(packed.device)}
    strides = (strides[0], packed.stride(0), *strides[2:])

    def grid(meta: dict) -> tuple[int, int, int]:
        return (m, triton.cdiv(packed.shape[1], meta["PAIRS"]), meta["SPLIT_K"])

    if pinned is None:
        _w4a16_strip_autotuned[grid](*args, m, n, k, *strides, **flags)
    else:
        pinned = {"PAIRS": 128, "SEG": 32, "SPLIT_K": 1, **pinned}
        pinned.setdefault("num_warps", max(1, pinned["PAIRS"] // 128))
        _w4a16_strip_kernel[grid(pinned)](*args, m, n, k, *strides, **flags, **pinned,
                                          PAIR_MASKED=packed.shape[1] % pinned["PAIRS"] != 0)
