"""W4A16: y = x · Wᵀ with int4 weights (kernels/int4_layout.py) and one bf16/fp16 scale per group of input
columns. Four paths: two GEMVs for decoding (kernels/w4a16_gemv.py, split-K over tiles, for narrow outputs;
kernels/w4a16_strip_gemv.py, column strips, for wide ones), a tensor-core kernel that dequantizes each tile in
registers (here), and dequantize-then-cuBLAS (kernels/w4a16_dequantize.py). Up to GEMV_CANDIDATE_ROWS rows the
faster GEMV and the tensor-core kernel compete, from DEQUANTIZE_CANDIDATE_ROWS the tensor-core kernel and
dequantize-then-cuBLAS: each pair is timed on the first call per shape, the faster kept.

Split-K spreads one output tile's K loop over several programs that add into a shared fp32 workspace
(kernels/split_k.py), so small M has enough programs in flight.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from kernels.dependent_launch import allow_next_launch, launch_options, wait_for_previous
from kernels.gated import gate_pairs, gate_pairs_reference
from kernels.int4_layout import QUAD_BLOCK, dequantize_int4, group_nibbles, kernel_layout_shape
from kernels.split_k import split_k_workspace, store_split_k
from kernels.triton_support import interpreted, require_triton, triton
from kernels.tuning import autotune, second_is_faster
from kernels.w4a16_dequantize import dequantize_to_kn
from kernels.w4a16_gemv import GEMV_CANDIDATE_ROWS, run_gemv
from kernels.w4a16_strip_gemv import run_strip_gemv

if triton is not None:
    import triton.language as tl

def w4a16_reference(
    x: torch.Tensor, packed: torch.Tensor, scale: torch.Tensor, group_size: int,
    zero_point: torch.Tensor | None = None, bias: torch.Tensor | None = None, gated: bool = False,
) -> torch.Tensor:
    """Plain torch on the checkpoint layout: dequantize the whole weight in fp32, then matmul (and with `gated`,
    silu(gate) * up of each column pair); x's dtype out."""
    y = x.float() @ dequantize_int4(packed, scale, group_size, x.shape[-1], zero_point).T
    y = y if bias is None else y + bias.float()
    return (gate_pairs_reference(y) if gated else y).to(x.dtype)


# Codes become floats without a conversion instruction: a nibble OR-ed under the exponent bits of a half float
# is that float's low mantissa, so the float is BASE + nibble exactly; BASE + 8 (+ zero point) is then taken off
# exactly and the scale applied, one rounding per weight, as dequantizing to x's dtype would.
MAGIC_BITS = (0x4300, 0x6400)  # bf16 128.0, fp16 1024.0: BASE for each, indexed by the kernel's FP16


def _unpack_asm(shift: int, magic: int) -> str:
    """Two codes (one in each 16-bit half of a register) at bits shift .. shift + 3 to two half floats
    BASE + code: one shift and one three-input logic op per pair of weights."""
    source = "$1" if shift == 0 else "t"
    head = "" if shift == 0 else f"shr.b32 t, $1, {shift}; "
    return f"{{.reg .b32 t; {head}lop3.b32 $0, {source}, 0x000F000F, {magic * 0x10001:#x}, 0xea;}}"


def _offset_asm(fma: str, one: int) -> str:
    """BASE + code + offset for two half floats, exact (small integers): the integer code, scaled after the dot."""
    return f"{{.reg .b32 one; mov.b32 one, {one * 0x10001:#x}; {fma} $0, $1, one, $2;}}"


def _scale_asm(fma: str, one: int) -> str:
    """(BASE + code + offset) * scale for two half floats: offset = -(BASE + 8 + zero point) cancels exactly, so
    the product is the one rounding (the second fma adds -0.0)."""
    return (f"{{.reg .b32 d, one, zero; mov.b32 one, {one * 0x10001:#x}; mov.b32 zero, 0x80008000; "
            f"{fma} d, $1, one, $2; {fma} $0, d, $3, zero;}}")


if triton is not None:
    # indexed by 4 * FP16 (x's dtype) + the nibble position j
    _UNPACK = tl.constexpr(tuple(_unpack_asm(4 * j, magic) for magic in MAGIC_BITS for j in range(4)))
    _SCALE = tl.constexpr((_scale_asm("fma.rn.bf16x2", 0x3F80), _scale_asm("fma.rn.f16x2", 0x3C00)))
    _OFFSET = tl.constexpr((_offset_asm("fma.rn.bf16x2", 0x3F80), _offset_asm("fma.rn.f16x2", 0x3C00)))

    @triton.jit
    def _w4a16_kernel(
        x_ptr, packed_ptr, scale_ptr, zero_ptr, bias_ptr, out_ptr, sums_ptr, arrivals_ptr,
        M, N, K,
        stride_xm, stride_pk, stride_sn, stride_sg, stride_zn, stride_zg, stride_om,
        M_BUCKET,  # power of two ≥ M: the autotuner's key, one tuning per bucket (run time: one compile for all)
        GROUP_SIZE: tl.constexpr,
        GROUP_NIBBLES: tl.constexpr,  # nibble positions sharing a scale (kernels/int4_layout.py: group_nibbles)
        HAS_ZERO: tl.constexpr, HAS_BIAS: tl.constexpr, FP16: tl.constexpr,
        K_RAGGED: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, SPLIT_K: tl.constexpr,
        UPCAST: tl.constexpr,  # Triton's interpreter: no inline assembly, and half-precision dots mishandled
        DEPENDENT: tl.constexpr,  # launched dependent on the previous kernel (kernels/dependent_launch.py)
    ):
        """Computes the tile transposed, (W x^T)^T: the dequantized weight is the MMA's first operand, which
        Hopper's MMA reads from registers, and a short M is the instruction's narrow side. Each quad-layout row
        block holds 4 x 32 input columns; each nibble position is one 32-deep MMA step. Every op from the packed
        load to the MMA is elementwise, so Triton moves the operand layout conversion up to the load (ldmatrix
        of the packed tile) and dequantizes in registers.

        A tile of at most 16 x GROUP_NIBBLES rows (half a group's columns) takes the integer codes into the MMA and
        scales each group's partial product once, in fp32: BLOCK_M multiplies per column and group instead of one
        per weight. At equal counts (64 rows, group 128) it still ran faster on an H200 (28672 x 8192, M=64, 64 x
        128 tile: 79.0 against 117.9 us), and longer tiles were slower that way (128 rows: 156.7 against 129.5)."""
        allow_next_launch(DEPENDENT)
        wait_for_previous(DEPENDENT)
        SCALE_AFTER: tl.constexpr = BLOCK_M <= 16 * GROUP_NIBBLES
        pid = tl.program_id(0)
        split = tl.program_id(1)
        tiles_n = tl.cdiv(N, BLOCK_N)
        rows = (pid // tiles_n) * BLOCK_M + tl.arange(0, BLOCK_M)
        cols = (pid % tiles_n) * BLOCK_N + tl.arange(0, BLOCK_N)
        # x, scales and zero points are read at clamped rows and columns (valid memory; what they feed is never
        # stored): no masks and no mask arithmetic in the loop. The packed tile is masked instead: clamped
        # columns would hide its contiguity and lose the vectorized asynchronous copies.
        x_rows = x_ptr + tl.minimum(rows, M - 1)[:, None] * stride_xm
        packed_cols = packed_ptr + cols[:, None]
        col_ok = cols < N
        scale_cols = scale_ptr + tl.minimum(cols, N - 1) * stride_sn
        zero_cols = zero_ptr + tl.minimum(cols, N - 1) * stride_zn
        dtype = x_ptr.dtype.element_ty
        base = 1024.0 if FP16 else 128.0
        quads = tl.arange(0, 32)
        acc = tl.zeros((BLOCK_N, BLOCK_M), dtype=tl.float32)
        for k0 in range(split * 128, K, 128 * SPLIT_K):
            packed = tl.load(packed_cols + (k0 // 4 + quads)[None, :] * stride_pk, mask=col_ok[:, None], other=0)
            for j in tl.static_range(4):
                if j % GROUP_NIBBLES == 0:  # (past K, where x is zero, the last group)
                    group = tl.minimum((k0 + 32 * j) // GROUP_SIZE, K // GROUP_SIZE - 1)
                    scale = tl.load(scale_cols + group * stride_sg)
                    offset = tl.full((BLOCK_N,), -(base + 8), tl.float32)
                    if HAS_ZERO:  # asymmetric: w = (q - z) * s
                        offset -= tl.load(zero_cols + group * stride_zg).to(tl.float32)
                if UPCAST:  # the same arithmetic in fp32 (one rounding per weight unless scaled after), fp32 dot
                    weights = ((packed >> (4 * j)) & 0xF).to(tl.float32) + base + offset[:, None]
                    if not SCALE_AFTER:
                        weights = (weights * scale.to(tl.float32)[:, None]).to(dtype).to(tl.float32)
                else:
                    codes = tl.inline_asm_elementwise(_UNPACK[4 * FP16 + j], "=r,r", [packed], dtype=dtype,
                                                      is_pure=True, pack=2)
                    offsets = tl.broadcast_to(offset.to(dtype)[:, None], (BLOCK_N, 32))
                    if SCALE_AFTER:
                        weights = tl.inline_asm_elementwise(_OFFSET[FP16], "=r,r,r", [codes, offsets], dtype=dtype,
                                                            is_pure=True, pack=2)
                    else:
                        weights = tl.inline_asm_elementwise(
                            _SCALE[FP16], "=r,r,r,r", [codes, offsets, tl.broadcast_to(scale[:, None], (BLOCK_N, 32))],
                            dtype=dtype, is_pure=True, pack=2)
                ks = k0 + 32 * j + quads
                if K_RAGGED:  # the last quad block reaches past K: x is zero there (padding codes are not)
                    x = tl.load(x_rows + ks[None, :], mask=(ks < K)[None, :], other=0.0)
                else:
                    x = tl.load(x_rows + ks[None, :])
                if not SCALE_AFTER:
                    acc = tl.dot(weights, tl.trans(x.to(weights.dtype)), acc)
                elif j % GROUP_NIBBLES == 0:
                    partial = tl.dot(weights, tl.trans(x.to(weights.dtype)))
                else:
                    partial = tl.dot(weights, tl.trans(x.to(weights.dtype)), partial)
                if SCALE_AFTER and j % GROUP_NIBBLES == GROUP_NIBBLES - 1:
                    acc += partial * scale.to(tl.float32)[:, None]
        row_ok = rows < M
        store_split_k(acc, out_ptr + rows[None, :] * stride_om + cols[:, None],
                      sums_ptr + rows[None, :] * N + cols[:, None], row_ok[None, :] & col_ok[:, None],
                      bias_ptr + cols[:, None], col_ok[:, None], arrivals_ptr + pid, HAS_BIAS, SPLIT_K)

    _CONFIGS = [
        # measured on an H200 (28672 x 8192): split-K for short M, 128-row tiles from M=128
        triton.Config({"BLOCK_M": m, "BLOCK_N": n, "SPLIT_K": s}, num_warps=w, num_stages=st)
        for m, n, s, w, st in [
            (16, 256, 4, 4, 3), (16, 128, 4, 8, 3), (16, 128, 4, 4, 3), (16, 128, 2, 4, 3), (16, 64, 8, 4, 3),
            (16, 64, 4, 4, 3), (32, 256, 2, 4, 3), (32, 128, 4, 8, 3), (32, 64, 4, 4, 3), (64, 256, 2, 4, 3),
            (64, 128, 1, 8, 3), (64, 256, 2, 8, 3), (64, 64, 4, 4, 3), (128, 128, 1, 8, 3), (128, 64, 2, 8, 3),
            (64, 128, 1, 8, 4),
            # narrower tiles for the 4096-wide projections at prefill sizes (more programs on the SMs)
            (32, 64, 2, 4, 3), (64, 64, 2, 4, 3), (128, 64, 1, 4, 3),
            # 64-row tiles that scale after the MMA, one warp group (a pinned H200 sweep, M = 64..256)
            (64, 128, 1, 4, 3), (64, 64, 1, 4, 4), (64, 64, 2, 4, 4), (64, 64, 4, 4, 4), (64, 128, 2, 4, 3),
            (64, 128, 2, 8, 3),  # 14336 x 4096 at M=256: 77.6 us against 84.6 for the best tile above
            # K split in 3, 5 or 6: at 16 rows on 28672 x 8192 two slices filled 0.68 of the H200's program slots
            # (ncu), four 1.36 (in the run that added them 28672 x 8192 stayed at 50.1 us)
            (16, 128, 3, 4, 3), (16, 256, 5, 4, 3), (16, 256, 6, 4, 3), (16, 64, 3, 4, 3), (32, 128, 3, 4, 3),
        ]
    ]

    def _prune(configs: list, named_args: dict, **kwargs: object) -> list:
        """Tiles taller than the (bucketed) M only waste the tensor cores."""
        given = {**named_args, **kwargs}  # triton versions differ in which holds the constexprs
        m_bucket = int(given["M_BUCKET"])
        kept = [c for c in configs if c.kwargs["BLOCK_M"] <= m_bucket]
        return kept or configs[:1]

    _w4a16_autotuned = autotune(_CONFIGS, ["M_BUCKET", "N", "K", "GROUP_SIZE"], _prune)(_w4a16_kernel)


# Which path is faster depends on the GPU and the shape: on an H200 the quad-layout tensor-core kernel at 16 rows
# took about as long as the GEMV at one row on some shapes, and at 28672 x 8192 it beat dequantize-then-cuBLAS up
# to 256 rows while the kernels of an earlier layout lost from 256. So both candidates of a range are timed once.
DEQUANTIZE_CANDIDATE_ROWS = 128


def _check_group_tensor(name: str, tensor: torch.Tensor, shape: tuple[int, int]) -> None:
    """Scales and zero points may be strided either way: [N, K / G] as checkpoints hold them, or its transpose
    made contiguous (Int4Linear's choice: a tile's scales are then one contiguous row)."""
    if tensor.shape != shape or tensor.stride(0) < 1 or tensor.stride(1) < 1 or 1 not in tensor.stride():
        raise ValueError(f"{name} must be a dense {list(shape)} tensor (either stride order), got "
                         f"{tuple(tensor.shape)} with strides {tensor.stride()}")


def w4a16_matmul(
    x: torch.Tensor, packed: torch.Tensor, scale: torch.Tensor, group_size: int,
    zero_point: torch.Tensor | None = None, bias: torch.Tensor | None = None, out: torch.Tensor | None = None,
    config: dict | None = None, gated: bool = False,
) -> torch.Tensor:
    """x [..., K] (bf16/fp16) times the int4 weight in the quad layout (kernels/int4_layout.py) with scales
    [N, K / group_size] and, for asymmetric weights, int8 zero points of the same shape; out [..., N] in x's dtype.
    `gated`: the weight's column pairs are a gated MLP's (gate, up) and out [..., N / 2] is silu(gate) * up, applied
    as the decode GEMVs store (kernels/gated.py after the other paths).

    On CUDA the path is chosen by timing (see DEQUANTIZE_CANDIDATE_ROWS) and the tile shape autotuned per (M bucket,
    N, K); `config` pins a tile (tests, the interpreter), {"GEMV": True, ...} the split-K GEMV,
    {"STRIP": True, ...} the strip GEMV and {"DEQUANTIZE": True} the dequantize-then-matmul path."""
    require_triton()
    if x.dtype not in (torch.bfloat16, torch.float16):
        raise ValueError(f"x must be bf16 or fp16, got {x.dtype}")
    if scale.dim() != 2:
        raise ValueError(f"scale must be [N, K / group_size], got {tuple(scale.shape)}")
    n, k = scale.shape[0], x.shape[-1]
    if packed.dtype != torch.int16 or not packed.is_contiguous() or packed.shape != kernel_layout_shape(k, n):
        raise ValueError(f"packed must be a contiguous int16 {list(kernel_layout_shape(k, n))} tensor (the quad "
                         f"layout of a [{n}, {k}] weight), got {packed.dtype} {tuple(packed.shape)}")
    if k % group_size or group_size % 32:
        raise ValueError(f"group_size {group_size} must be a multiple of 32 that divides K={k}")
    _check_group_tensor("scale", scale, (n, k // group_size))
    if scale.dtype != x.dtype:  # the tile kernel applies scales as pairs of x's 16-bit floats
        raise ValueError(f"scale must have x's dtype {x.dtype}, got {scale.dtype}")
    if zero_point is not None:
        _check_group_tensor("zero_point", zero_point, (n, k // group_size))
        if zero_point.dtype != torch.int8:
            raise ValueError(f"zero_point must be int8, got {zero_point.dtype}")
    if bias is not None and bias.shape != (n,):
        raise ValueError(f"bias must be [{n}]")
    if gated and n % 2:
        raise ValueError(f"a gated weight holds (gate, up) column pairs: N must be even, got {n}")
    out_n = n // 2 if gated else n
    if not (x.device == packed.device == scale.device):
        raise ValueError("x, packed and scale must be on one device")
    x2 = x.reshape(-1, k)
    if x2.stride(-1) != 1:
        x2 = x2.contiguous()
    m = x2.shape[0]
    if out is not None and (out.shape != (*x.shape[:-1], out_n) or out.dtype != x.dtype or not out.is_contiguous()):
        raise ValueError(f"out must be a contiguous {x.dtype} tensor of shape {(*x.shape[:-1], out_n)}")
    pinned = dict(config or {})
    zero = zero_point if zero_point is not None else scale
    target = out.view(m, out_n) if out is not None else torch.empty(m, out_n, device=x.device, dtype=x.dtype)

    def whole(compute: Callable[[torch.Tensor], None]) -> None:
        """A path that writes all N columns: straight into target, or gated through a scratch output."""
        if not gated:
            compute(target)
            return
        pairs = torch.empty(m, n, device=x.device, dtype=x.dtype)
        compute(pairs)
        gate_pairs(pairs, target)

    def dequantized(output: torch.Tensor) -> None:
        weight = dequantize_to_kn(packed, scale, group_size, x.dtype, zero_point)
        if bias is None:
            torch.matmul(x2, weight, out=output)
        else:
            torch.addmm(bias.to(x.dtype), x2, weight, out=output)

    if pinned.pop("DEQUANTIZE", False):
        whole(dequantized)
        return target.view(*x.shape[:-1], out_n)
    # tiles are never smaller than 16 x 16, so m * cdiv(n, 16) counters cover every tiling
    sums, arrivals = split_k_workspace(x.device, m * n, triton.cdiv(m, 16) * 16 * triton.cdiv(n, 16))

    def kernel_args(output: torch.Tensor) -> tuple[tuple, tuple]:
        args = (x2, packed, scale, zero, bias if bias is not None else scale, output, sums, arrivals)
        return args, (x2.stride(0), packed.stride(0), *scale.stride(), *zero.stride(), output.stride(0))

    flags = {"GROUP_SIZE": group_size, "GROUP_NIBBLES": group_nibbles(group_size), "HAS_ZERO": zero_point is not None,
             "HAS_BIAS": bias is not None}
    gemv_flags = {**flags, "GATED": gated}
    args, strides = kernel_args(target)
    if pinned.pop("GEMV", False):
        run_gemv(args, m, n, k, strides, gemv_flags, pinned)
        return target.view(*x.shape[:-1], out_n)
    if pinned.pop("STRIP", False):
        run_strip_gemv(args, m, n, k, strides, gemv_flags, pinned)
        return target.view(*x.shape[:-1], out_n)

    def grid(meta: dict) -> tuple[int, int]:
        return (triton.cdiv(m, meta["BLOCK_M"]) * triton.cdiv(n, meta["BLOCK_N"]), meta["SPLIT_K"])

    tile_flags = {**flags, "M_BUCKET": max(16, triton.next_power_of_2(m)), "FP16": x.dtype == torch.float16,
                  "K_RAGGED": k % QUAD_BLOCK != 0, **launch_options(x.device)}
    if config is not None or not x.is_cuda:
        pinned = {"BLOCK_M": 16, "BLOCK_N": 32, "SPLIT_K": 1, **pinned}

        def pinned_tile(output: torch.Tensor) -> None:
            tile_args, tile_strides = kernel_args(output)
            _w4a16_kernel[grid(pinned)](*tile_args, m, n, k, *tile_strides, **tile_flags, UPCAST=interpreted(),
                                        **pinned)

        whole(pinned_tile)
        return target.view(*x.shape[:-1], out_n)

    def split_k_gemv() -> None:
        run_gemv(args, m, n, k, strides, gemv_flags, None)

    def strip_gemv() -> None:
        run_strip_gemv(args, m, n, k, strides, gemv_flags, None)

    def tile(output: torch.Tensor) -> None:
        tile_args, tile_strides = kernel_args(output)
        _w4a16_autotuned[grid](*tile_args, m, n, k, *tile_strides, **tile_flags, UPCAST=False)

    def fused() -> None:
        whole(tile)

    def dequantized_whole() -> None:
        whole(dequantized)

    shape = (n, k, group_size, x.dtype, zero_point is not None, bias is not None, gated, x.device)
    if m <= GEMV_CANDIDATE_ROWS:
        strip = second_is_faster(("split-K or strip gemv", m, *shape), split_k_gemv, strip_gemv)
        gemv = strip_gemv if strip else split_k_gemv
        chosen = fused if second_is_faster(("gemv or tile", m, *shape), gemv, fused) else gemv
    elif m >= DEQUANTIZE_CANDIDATE_ROWS:
        dequantize = second_is_faster(("tile or dequantize", tile_flags["M_BUCKET"], *shape), fused,
                                      dequantized_whole)
        chosen = dequantized_whole if dequantize else fused
    else:
        chosen = fused
    chosen()
    return target.view(*x.shape[:-1], out_n)
