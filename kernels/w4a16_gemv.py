"""W4A16 for decoding (a few rows): a split-K GEMV on CUDA cores, the one of the two GEMVs that suits narrow
outputs (kernels/w4a16_strip_gemv.py, the other, wide ones; kernels/w4a16.py times both per shape). There is no
tensor-core tile to fill at M=1, and measured on an H200 the loop was bound by instruction issue rather than by
HBM (the same loop without its arithmetic streamed the weights twice as fast; cutting its SASS from 4.6 to 3.6
instructions per code took 28672 x 8192 from 51.6 to 42.5 us), so each code costs one AND and one fused
multiply-add and little else: bench/ptx_census.py counts the loop."""

from __future__ import annotations

import math

import torch

from kernels.dependent_launch import allow_next_launch, launch_options, wait_for_previous
from kernels.gated import silu_times
from kernels.int4_layout import QUAD_BLOCK
from kernels.split_k import add_to_workspace, count_in, reset_count, store_split_k
from kernels.triton_support import triton
from kernels.tuning import autotune

if triton is not None:
    import triton.language as tl

# Decoding batches up to this many rows may take the GEMV (one weight pass per row, the passes after the first
# mostly from L2) or the 16-row tensor-core tile; kernels/w4a16.py times both per shape on the first call.
GEMV_CANDIDATE_ROWS = 8


if triton is not None:

    @triton.jit
    def _nibble(j: tl.constexpr, x0, x1, x2, x3):
        """x of nibble position `j` (a compile-time choice among the four loaded)."""
        if j == 0:
            chosen = x0
        elif j == 1:
            chosen = x1
        elif j == 2:
            chosen = x2
        else:
            chosen = x3
        return chosen

    @triton.jit
    def load_pair_scales(scale_ptr, zero_ptr, group, pairs, group_ok, pair_ok, N, stride_sn, stride_sg,
                         stride_zn, stride_zg, HAS_ZERO: tl.constexpr, PAIRED: tl.constexpr):
        """fp32 scales (and zero points) of `group` for the even and odd column of each of `pairs` (broadcast
        against each other); masked ones read 0. Zero points come back as the scales when there are none."""
        if PAIRED:  # one 32-bit load holds a column pair's two scales (and a 16-bit one its zeros)
            mask = group_ok & pair_ok
            both = tl.load(scale_ptr.to(tl.pointer_type(tl.int32)) + group * (stride_sg // 2) + pairs, mask=mask,
                           other=0)
            if scale_ptr.dtype.element_ty == tl.bfloat16:  # bf16 to fp32 is a 16-bit shift
                scale_even = (both << 16).to(tl.float32, bitcast=True)
                scale_odd = (both & -65536).to(tl.float32, bitcast=True)
            else:
                scale_even = (both & 0xFFFF).to(tl.int16).to(tl.float16, bitcast=True).to(tl.float32)
                scale_odd = (both >> 16).to(tl.int16).to(tl.float16, bitcast=True).to(tl.float32)
            zero_even, zero_odd = scale_even, scale_odd
            if HAS_ZERO:
                zeros = tl.load(zero_ptr.to(tl.pointer_type(tl.int16)) + group * (stride_zg // 2) + pairs,
                                mask=mask, other=0).to(tl.int32)
                zero_even = ((zeros << 24) >> 24).to(tl.float32)
                zero_odd = (zeros >> 8).to(tl.float32)
        else:  # strided loads, one per column
            cols = 2 * pairs
            mask_even = group_ok & (cols < N)
            mask_odd = group_ok & (cols + 1 < N)
            scale_even = tl.load(scale_ptr + cols * stride_sn + group * stride_sg, mask=mask_even,
                                 other=0.0).to(tl.float32)
            scale_odd = tl.load(scale_ptr + (cols + 1) * stride_sn + group * stride_sg, mask=mask_odd,
                                other=0.0).to(tl.float32)
            zero_even, zero_odd = scale_even, scale_odd
            if HAS_ZERO:
                zero_even = tl.load(zero_ptr + cols * stride_zn + group * stride_zg, mask=mask_even,
                                    other=0).to(tl.float32)
                zero_odd = tl.load(zero_ptr + (cols + 1) * stride_zn + group * stride_zg, mask=mask_odd,
                                   other=0).to(tl.float32)
        return scale_even, scale_odd, zero_even, zero_odd

    @triton.jit
    def _store_gated(gate, up, pairs, pair_ok, out_ptrs, bias_ptr, HAS_BIAS: tl.constexpr):
        """silu(gate) * up (each + its bias, the gate's at the even column, the up's at the odd) in fp32, stored
        once in the output dtype."""
        if HAS_BIAS:
            gate += tl.load(bias_ptr + 2 * pairs, mask=pair_ok, other=0.0).to(tl.float32)
            up += tl.load(bias_ptr + 2 * pairs + 1, mask=pair_ok, other=0.0).to(tl.float32)
        tl.store(out_ptrs, silu_times(gate, up).to(out_ptrs.dtype.element_ty), mask=pair_ok)

    @triton.jit
    def store_pair_columns(even, odd, pairs, row, out_ptr, sums_ptr, bias_ptr, arrival_ptr, N, stride_om,
                           HAS_BIAS: tl.constexpr, SPLIT_K: tl.constexpr, GATED: tl.constexpr):
        """Writes per-pair fp32 sums (times 2^53, the codes' float trick undone) of one input row: even columns
        from `even`, odd from `odd`, through the split-K workspace when K is split. GATED: each pair is a gated
        MLP's gate and up column and the output holds silu(gate) * up, one column per pair ([M, N / 2]); split-K
        sums then keep the gates in the workspace's first N / 2 places of the row and the ups in the rest."""
        if GATED:
            gate = even * 2.0 ** 53
            up = odd * 2.0 ** 53
            pair_ok = pairs < N // 2
            out_ptrs = out_ptr + row * stride_om + pairs
            if SPLIT_K == 1:
                _store_gated(gate, up, pairs, pair_ok, out_ptrs, bias_ptr, HAS_BIAS)
            else:
                gate_sums = sums_ptr + row * N + pairs
                add_to_workspace(gate_sums, gate, pair_ok)
                add_to_workspace(gate_sums + N // 2, up, pair_ok)
                if count_in(arrival_ptr) == SPLIT_K - 1:
                    gate = tl.load(gate_sums, mask=pair_ok, other=0.0, cache_modifier=".cg")
                    up = tl.load(gate_sums + N // 2, mask=pair_ok, other=0.0, cache_modifier=".cg")
                    _store_gated(gate, up, pairs, pair_ok, out_ptrs, bias_ptr, HAS_BIAS)
                    tl.store(gate_sums, tl.zeros_like(gate), mask=pair_ok)
                    tl.store(gate_sums + N // 2, tl.zeros_like(up), mask=pair_ok)
                    reset_count(arrival_ptr)
        else:
            parity = tl.arange(0, 2)[:, None]  # [2, pairs]: even columns in row 0, odd in row 1
            total = tl.where(parity == 0, even[None, :], odd[None, :]) * 2.0 ** 53
            cols = 2 * pairs[None, :] + parity
            col_ok = cols < N
            store_split_k(total, out_ptr + row * stride_om + cols, sums_ptr + row * N + cols, col_ok,
                          bias_ptr + cols, col_ok, arrival_ptr, HAS_BIAS, SPLIT_K)

    @triton.jit
    def _next_step(word_rows, ks, STEP: tl.constexpr):
        """The next step's word rows and their nibble-0 input columns (whole quad blocks: 128 columns each)."""
        word_rows += STEP
        if STEP % 32 == 0:
            ks += 4 * STEP
        else:
            ks = (word_rows // 32) * 128 + word_rows % 32
        return word_rows, ks

    @triton.jit
    def _gemv_step(
        packed, ks, acc_even, acc_odd, x_ptr, scale_ptr, zero_ptr, row, pairs, pair_ok, N, K, stride_xm,
        stride_sn, stride_sg, stride_zn, stride_zg,
        GROUP_SIZE: tl.constexpr, GROUP_NIBBLES: tl.constexpr, HAS_ZERO: tl.constexpr, PAIRED: tl.constexpr,
        X_MASKED: tl.constexpr, ROWS: tl.constexpr, PAIRS: tl.constexpr,
    ):
        """Adds one step's [ROWS, PAIRS] word tile into the per-word sums; `ks` is each word row's input column
        of nibble 0 (its nibble j is column ks + 32 j).

        A nibble masked in place at bits b..b+3 (b <= 12) reads as the fp32 number nibble * 2^(b - 149): one AND
        per code, and x pre-scaled by 2^(96 - b) makes every product nibble * x * 2^-53. The odd column's
        nibbles are shifted down to the even column's bit positions (one shift per word), so both share the
        pre-scaled x. Codes are stored + 8 (+ the zero point): each group's sum starts from -(8 + z) * sum(x) *
        2^-53 instead of paying a correction per word, and the 2^53 is applied once, after the loop."""
        x_row = x_ptr + row * stride_xm + ks
        if X_MASKED:  # past K (the padded rows of a ragged K, the rows of a step past the end) x reads as zero
            x0 = tl.load(x_row, mask=ks < K, other=0.0).to(tl.float32)
            x1 = tl.load(x_row + 32, mask=ks + 32 < K, other=0.0).to(tl.float32)
            x2 = tl.load(x_row + 64, mask=ks + 64 < K, other=0.0).to(tl.float32)
            x3 = tl.load(x_row + 96, mask=ks + 96 < K, other=0.0).to(tl.float32)
        else:
            x0 = tl.load(x_row).to(tl.float32)
            x1 = tl.load(x_row + 32).to(tl.float32)
            x2 = tl.load(x_row + 64).to(tl.float32)
            x3 = tl.load(x_row + 96).to(tl.float32)
        odd_packed = packed >> 16
        for first in tl.static_range(0, 4, GROUP_NIBBLES):
            groups = (ks + 32 * first) // GROUP_SIZE
            if X_MASKED:
                group_ok = (groups < K // GROUP_SIZE)[:, None]
            else:
                group_ok = tl.full((ROWS, 1), 1, tl.int1)
            scale_even, scale_odd, zero_even, zero_odd = load_pair_scales(
                scale_ptr, zero_ptr, groups[:, None], pairs[None, :], group_ok, pair_ok[None, :], N,
                stride_sn, stride_sg, stride_zn, stride_zg, HAS_ZERO, PAIRED)
            x_sum = _nibble(first, x0, x1, x2, x3)
            for j in tl.static_range(first + 1, first + GROUP_NIBBLES):
                x_sum += _nibble(j, x0, x1, x2, x3)
            if HAS_ZERO:
                partial_even = x_sum[:, None] * ((zero_even + 8.0) * -(2.0 ** -53))
                partial_odd = x_sum[:, None] * ((zero_odd + 8.0) * -(2.0 ** -53))
            else:
                start = tl.broadcast_to((x_sum * (-8.0 * 2.0 ** -53))[:, None], (ROWS, PAIRS))
                partial_even = start
                partial_odd = start
            for j in tl.static_range(first, first + GROUP_NIBBLES):
                x_j = _nibble(j, x0, x1, x2, x3)
                x_scaled = (x_j * (2.0 ** (96 - 4 * j)))[:, None]
                partial_even += (packed & (0xF << (4 * j))).to(tl.float32, bitcast=True) * x_scaled
                if j == 0:  # read in place (bits 16..19): a shift and mask of bits 0..3 compile to two ops
                    partial_odd += (packed & 0xF0000).to(tl.float32, bitcast=True) * (x_j * 2.0 ** 80)[:, None]
                else:
                    partial_odd += (odd_packed & (0xF << (4 * j))).to(tl.float32, bitcast=True) * x_scaled
            acc_even += partial_even * scale_even
            acc_odd += partial_odd * scale_odd
        return acc_even, acc_odd

    @triton.jit
    def _w4a16_gemv_kernel(
        x_ptr, packed_ptr, scale_ptr, zero_ptr, bias_ptr, out_ptr, sums_ptr, arrivals_ptr,
        M,  # rows (one per program row): unused inside, but the autotuner's key: one row wants more K slices
        N, K, stride_xm, stride_pk, stride_sn, stride_sg, stride_zn, stride_zg, stride_om,
        GROUP_SIZE: tl.constexpr, GROUP_NIBBLES: tl.constexpr, HAS_ZERO: tl.constexpr, HAS_BIAS: tl.constexpr,
        GATED: tl.constexpr,  # column pairs are (gate, up) of a gated MLP: the output is silu(gate) * up
        PAIRED: tl.constexpr,  # scales (and zero points) group-major with N even: read per column pair
        X_MASKED: tl.constexpr,  # some step reaches past K (see _x_masked)
        BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, SPLIT_K: tl.constexpr, STAGES: tl.constexpr,
        DEPENDENT: tl.constexpr,  # launched dependent on the previous kernel (kernels/dependent_launch.py)
    ):
        """One input row per program row. The quad layout is read as int32 words [K' / 4, N' / 2], each holding
        four codes of output column 2p (low half) and four of column 2p + 1 (high half); a step takes
        BLOCK_K / 4 word rows (BLOCK_K codes of each column). The loop reduces the codes of a
        [BLOCK_K / 4, BLOCK_N / 2] word tile one nibble position at a time (constant masks), even and odd columns
        apart, and the sums stay per word until the loop ends, so no reduction crosses threads inside it. Scales
        are applied per word row and group (each nibble position's 32 input columns lie in one group), so a step
        may span several groups: narrow, tall tiles keep enough bytes in flight without splitting K. Tiles of
        fewer word rows than threads let Triton load x straight into the tile's row layout (a larger x vector
        is shuffled through shared memory, with barriers, every step).

        The next step's words are in flight while a step computes: STAGES = 0 requests them into registers a
        step ahead; STAGES > 1 lets Triton's pipeliner copy them asynchronously into shared memory, STAGES - 1
        steps ahead (more bytes in flight, no registers held for them).

        Split-K in one launch: the K slices of a tile add their fp32 sums into a workspace and count in; the
        last to arrive writes the tile out in the output dtype and zeroes its workspace and counter again, so
        no memset or conversion kernel is needed around the call (at decode sizes each costs as much as the
        matmul)."""
        allow_next_launch(DEPENDENT)
        ROWS: tl.constexpr = BLOCK_K // 4
        PAIRS: tl.constexpr = BLOCK_N // 2
        row = tl.program_id(0)
        pairs = tl.program_id(1) * PAIRS + tl.arange(0, PAIRS)
        pair_ok = pairs < stride_pk  # the words of a row (N' / 2: a multiple of 16 whenever N is of 32, which
        # Triton's specialization sees, so the mask is uniform across a vector and the loads stay vectorized)
        rows_total = tl.cdiv(K, 128) * 32
        acc_even = tl.zeros((ROWS, PAIRS), dtype=tl.float32)
        acc_odd = tl.zeros((ROWS, PAIRS), dtype=tl.float32)
        STEP: tl.constexpr = ROWS * SPLIT_K
        word_rows = tl.program_id(2) * ROWS + tl.arange(0, ROWS)
        ks = (word_rows // 32) * 128 + word_rows % 32  # input column of each word row's nibble 0
        steps = tl.cdiv(rows_total - tl.program_id(2) * ROWS, STEP)
        wait_for_previous(DEPENDENT)
        if STAGES == 0:
            packed = tl.load(packed_ptr + word_rows[:, None] * stride_pk + pairs[None, :],
                             mask=(word_rows < rows_total)[:, None] & pair_ok[None, :], other=0)
            for _ in range(steps):
                upcoming = tl.load(packed_ptr + (word_rows + STEP)[:, None] * stride_pk + pairs[None, :],
                                   mask=(word_rows + STEP < rows_total)[:, None] & pair_ok[None, :], other=0)
                acc_even, acc_odd = _gemv_step(
                    packed, ks, acc_even, acc_odd, x_ptr, scale_ptr, zero_ptr, row, pairs, pair_ok, N, K, stride_xm,
                    stride_sn, stride_sg, stride_zn, stride_zg, GROUP_SIZE, GROUP_NIBBLES, HAS_ZERO, PAIRED, X_MASKED,
                    ROWS, PAIRS)
                packed = upcoming
                word_rows, ks = _next_step(word_rows, ks, STEP)
        else:
            for _ in tl.range(steps, num_stages=STAGES):
                packed = tl.load(packed_ptr + word_rows[:, None] * stride_pk + pairs[None, :],
                                 mask=(word_rows < rows_total)[:, None] & pair_ok[None, :], other=0)
                acc_even, acc_odd = _gemv_step(
                    packed, ks, acc_even, acc_odd, x_ptr, scale_ptr, zero_ptr, row, pairs, pair_ok, N, K, stride_xm,
                    stride_sn, stride_sg, stride_zn, stride_zg, GROUP_SIZE, GROUP_NIBBLES, HAS_ZERO, PAIRED, X_MASKED,
                    ROWS, PAIRS)
                word_rows, ks = _next_step(word_rows, ks, STEP)
        store_pair_columns(tl.sum(acc_even, axis=0), tl.sum(acc_odd, axis=0), pairs, row, out_ptr, sums_ptr,
                           bias_ptr, arrivals_ptr + row * tl.num_programs(1) + tl.program_id(1), N, stride_om,
                           HAS_BIAS, SPLIT_K, GATED)

    # BLOCK_K codes per column per step, in BLOCK_K / 4 word rows of BLOCK_N / 2 words; fewer word rows than
    # threads (BLOCK_K / 4 < 32 * num_warps) keeps x out of shared memory
    _GEMV_CONFIGS = [
        triton.Config({"BLOCK_N": n, "BLOCK_K": k, "SPLIT_K": s, "STAGES": 0}, num_warps=w)
        for n, k, s, w in [
            # split-K over wide tiles
            (256, 64, 8, 4), (256, 64, 4, 4), (256, 64, 16, 4), (512, 64, 8, 8), (128, 64, 16, 4), (128, 64, 8, 4),
            (256, 32, 8, 4), (256, 32, 16, 4), (512, 32, 8, 4), (128, 32, 32, 4), (128, 64, 32, 4),
            (64, 64, 16, 2), (128, 32, 16, 2), (64, 32, 32, 2),
            # narrow, tall tiles spanning several groups: enough bytes in flight per program without the atomics,
            # and as many programs as the output has narrow column blocks
            (16, 256, 1, 4), (32, 256, 1, 4), (64, 256, 1, 4), (16, 512, 1, 8), (32, 512, 1, 8), (64, 512, 1, 8),
            (16, 128, 1, 2), (32, 128, 1, 2), (16, 256, 2, 4), (32, 256, 2, 4), (64, 256, 2, 4), (32, 128, 2, 2),
            (64, 128, 4, 4), (128, 128, 4, 4), (32, 128, 4, 2), (128, 256, 2, 8), (128, 256, 4, 8),
            # 16 warps on 256 word rows: twice the bytes in flight per program (4096 x 4096: 8.2 us, 9.3 before)
            (16, 1024, 1, 16), (32, 1024, 1, 16),
            # the same split-K tiles on 2 warps: 14336 x 4096 15.0 us against 16.6 on 4 (H200, one row)
            (128, 64, 32, 2), (64, 128, 8, 2), (64, 128, 4, 2),
        ]
    ] + [
        # the same tiles with the words copied asynchronously into shared memory, stages - 1 steps ahead
        triton.Config({"BLOCK_N": n, "BLOCK_K": k, "SPLIT_K": s, "STAGES": st}, num_warps=w)
        for n, k, s, w, st in [
            (32, 256, 1, 4, 3), (64, 256, 1, 4, 3), (32, 512, 1, 8, 3), (64, 512, 1, 8, 3), (128, 256, 1, 8, 3),
            (32, 128, 1, 2, 4), (64, 256, 2, 4, 3), (128, 128, 2, 4, 3), (128, 64, 8, 4, 3), (64, 64, 16, 2, 3),
        ]
    ]

    _w4a16_gemv_autotuned = autotune(_GEMV_CONFIGS, ["M", "N", "K", "GROUP_SIZE", "HAS_ZERO", "PAIRED", "GATED"])(
        triton.heuristics({"X_MASKED": lambda meta: _x_masked(meta["K"], meta["BLOCK_K"])})(_w4a16_gemv_kernel))


def _x_masked(k: int, block_k: int) -> bool:
    """Whether some step of BLOCK_K codes reaches past K (a ragged K, whose last quad block is padding, or a K
    that is not a multiple of BLOCK_K): only then are x and the scales read under masks."""
    return k % math.lcm(QUAD_BLOCK, block_k) != 0


def scales_paired(n: int, scale: torch.Tensor, zero: torch.Tensor | None) -> bool:
    """Whether the GEMVs may read a column pair's two scales (and zero points) with one load: group-major,
    N even, each group's row 4-byte aligned (load_pair_scales)."""
    return n % 2 == 0 and all(tensor.stride(0) == 1 and tensor.stride(1) % 2 == 0 and tensor.data_ptr() % 4 == 0
                              for tensor in ((scale, zero) if zero is not None else (scale,)))


def run_gemv(args: tuple, m: int, n: int, k: int, strides: tuple, flags: dict, pinned: dict | None) -> None:
    """One program row per input row; autotuned per (M, N, K, group) unless `pinned` gives the tile. `args` and
    `strides` as the tile kernel takes them: the quad layout is read here as int32 column pairs."""
    packed = args[1].view(torch.int32)
    args = (args[0], packed, *args[2:])
    strides = (strides[0], packed.stride(0), *strides[2:])
    scale, zero = args[2], args[3]
    flags = {**flags, "PAIRED": scales_paired(n, scale, zero if flags["HAS_ZERO"] else None)}

    def grid(meta: dict) -> tuple[int, int, int]:
        return (m, triton.cdiv(n, meta["BLOCK_N"]), meta["SPLIT_K"])

    flags = {**flags, **launch_options(packed.device)}
    if pinned is None:
        _w4a16_gemv_autotuned[grid](*args, m, n, k, *strides, **flags)
    else:
        pinned = {"BLOCK_N": 32, "BLOCK_K": 128, "SPLIT_K": 1, "STAGES": 0, "num_warps": 4, **pinned}
        _w4a16_gemv_kernel[grid(pinned)](*args, m, n, k, *strides, **flags, **pinned,
                                         X_MASKED=_x_masked(k, pinned["BLOCK_K"]))
