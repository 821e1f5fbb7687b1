"""W4A16: y = x · Wᵀ with int4 weights (kernels/int4_layout.py) and one bf16/fp16 scale per group of input
columns. The launcher picks the path by the number of rows: a split-K GEMV for decoding (kernels/w4a16_gemv.py),
a tensor-core kernel that dequantizes each tile in registers (here), and from DEQUANTIZE_CANDIDATE_ROWS whichever
of that kernel and dequantize-then-cuBLAS (kernels/w4a16_dequantize.py) timed faster for the shape.

Split-K spreads one output tile's K loop over several programs that add into a shared fp32 workspace
(kernels/split_k.py), so small M has enough programs in flight.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from kernels.int4_layout import PACK, dequantize_int4
from kernels.split_k import split_k_workspace, store_split_k
from kernels.triton_support import interpreted, require_triton, triton
from kernels.tuning import autotuner_do_bench, cold_time_ms
from kernels.w4a16_dequantize import dequantize_to_kn
from kernels.w4a16_gemv import GEMV_MAX_ROWS, run_gemv

if triton is not None:
    import triton.language as tl

def w4a16_reference(
    x: torch.Tensor, packed: torch.Tensor, scale: torch.Tensor, group_size: int,
    zero_point: torch.Tensor | None = None, bias: torch.Tensor | None = None,
) -> torch.Tensor:
    """Plain torch on the checkpoint layout: dequantize the whole weight in fp32, then matmul; x's dtype out."""
    y = x.float() @ dequantize_int4(packed, scale, group_size, x.shape[-1], zero_point).T
    return (y if bias is None else y + bias.float()).to(x.dtype)


# Codes become floats without a conversion instruction (those run at a quarter of the rate of integer and
# float ops, and one per weight was what bounded both kernels): a nibble OR-ed under the exponent bits of a
# float is that float's low mantissa, so the float is BASE + nibble exactly. The constant BASE + 8 (+ zero
# point) is taken off once per group as that offset times the group's sum of x, not once per weight.
HALF_MAGIC = {torch.bfloat16: (0x4300, 128.0), torch.float16: (0x6400, 1024.0)}  # bits of BASE, BASE

if triton is not None:

    @triton.jit
    def _w4a16_kernel(
        x_ptr, packed_ptr, scale_ptr, zero_ptr, bias_ptr, out_ptr, sums_ptr, arrivals_ptr,
        M, N, K,
        stride_xm, stride_pk, stride_sn, stride_sg, stride_zn, stride_zg, stride_om,
        M_BUCKET: tl.constexpr,  # power of two ≥ M: the autotuner's key, one tuning per bucket
        GROUP_SIZE: tl.constexpr, HAS_ZERO: tl.constexpr, HAS_BIAS: tl.constexpr,
        CODE_BITS: tl.constexpr, CODE_BASE: tl.constexpr,  # HALF_MAGIC of x's dtype
        BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, SPLIT_K: tl.constexpr,
        SWAP: tl.constexpr, UPCAST: tl.constexpr,
    ):
        pid = tl.program_id(0)
        split = tl.program_id(1)
        tiles_n = tl.cdiv(N, BLOCK_N)
        rows = (pid // tiles_n) * BLOCK_M + tl.arange(0, BLOCK_M)
        cols = (pid % tiles_n) * BLOCK_N + tl.arange(0, BLOCK_N)
        row_ok = rows < M
        col_ok = cols < N
        acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
        shifts = tl.arange(0, 8) * 4
        words = tl.arange(0, BLOCK_K // 8)
        for k0 in range(split * BLOCK_K, K, BLOCK_K * SPLIT_K):
            ks = k0 + tl.arange(0, BLOCK_K)
            k_ok = ks < K
            x = tl.load(x_ptr + rows[:, None] * stride_xm + ks[None, :],
                        mask=row_ok[:, None] & k_ok[None, :], other=0.0)
            word_rows = k0 // 8 + words
            packed = tl.load(packed_ptr + word_rows[:, None] * stride_pk + cols[None, :],
                             mask=(word_rows < tl.cdiv(K, 8))[:, None] & col_ok[None, :], other=0)
            bits = ((packed[:, None, :] >> shifts[None, :, None]) & 0xF) | CODE_BITS  # [BLOCK_K / 8, 8, BLOCK_N]
            codes = tl.reshape(bits, (BLOCK_K, BLOCK_N)).to(tl.int16).to(x_ptr.dtype.element_ty, bitcast=True)
            # BLOCK_K divides GROUP_SIZE, so the whole K block shares one scale (and zero point) per output column
            group = k0 // GROUP_SIZE
            scale = tl.load(scale_ptr + cols * stride_sn + group * stride_sg, mask=col_ok, other=0.0)
            offset = tl.full((BLOCK_N,), CODE_BASE + 8, tl.float32)
            if HAS_ZERO:  # asymmetric: w = (q - z) * s
                offset += tl.load(zero_ptr + cols * stride_zn + group * stride_zg, mask=col_ok, other=0).to(tl.float32)
            if UPCAST:  # Triton's interpreter mishandles bf16 dots; it checks the logic in fp32
                x, codes = x.to(tl.float32), codes.to(tl.float32)
            if SWAP:  # (W x^T)^T: the dequantized tile is the first operand and a short M the instruction's narrow side
                partial = tl.trans(tl.dot(tl.trans(codes), tl.trans(x)))
            else:
                partial = tl.dot(x, codes)
            partial -= tl.sum(x.to(tl.float32), axis=1)[:, None] * offset[None, :]
            acc += partial * scale.to(tl.float32)[None, :]
        store_split_k(acc, out_ptr + rows[:, None] * stride_om + cols[None, :],
                      sums_ptr + rows[:, None] * N + cols[None, :], row_ok[:, None] & col_ok[None, :],
                      bias_ptr + cols[None, :], col_ok[None, :], arrivals_ptr + pid, HAS_BIAS, SPLIT_K)

    _CONFIGS = [
        # measured on an H200: tiles of up to 32 rows are fastest swapped, taller ones plain
        triton.Config({"BLOCK_M": m, "BLOCK_N": n, "BLOCK_K": k, "SPLIT_K": s, "SWAP": m <= 32},
                      num_warps=w, num_stages=st)
        for m, n, k, s, w, st in [
            (16, 64, 128, 1, 4, 4), (16, 64, 128, 2, 4, 4), (16, 64, 128, 4, 4, 4), (16, 128, 128, 4, 4, 4),
            (16, 32, 128, 4, 4, 4), (16, 64, 64, 8, 4, 4), (16, 128, 128, 2, 8, 3), (16, 256, 64, 1, 8, 3),
            (32, 64, 128, 2, 4, 4), (32, 128, 128, 1, 4, 4), (64, 128, 64, 1, 4, 4), (64, 128, 128, 1, 8, 3),
            (64, 128, 128, 1, 4, 4), (64, 64, 128, 1, 4, 4),
        ]
    ]

    def _prune(configs: list, named_args: dict, **kwargs: object) -> list:
        """BLOCK_K must divide the group size; tiles taller than the (bucketed) M only waste the tensor cores."""
        given = {**named_args, **kwargs}  # triton versions differ in which holds the constexprs
        group_size, m_bucket = int(given["GROUP_SIZE"]), int(given["M_BUCKET"])
        kept = [c for c in configs if group_size % c.kwargs["BLOCK_K"] == 0 and c.kwargs["BLOCK_M"] <= m_bucket]
        return kept or configs[:1]

    _w4a16_autotuned = triton.autotune(
        configs=_CONFIGS, key=["M_BUCKET", "N", "K", "GROUP_SIZE"], prune_configs_by={"early_config_prune": _prune},
        do_bench=autotuner_do_bench,
    )(_w4a16_kernel)


# Prefill-sized batches can instead dequantize the weight once into a transient [K, N] buffer and run cuBLAS on
# it; which is faster depends on the GPU and the shape (on an H200 at 28672 x 8192 the fused kernel won at M=64
# and lost at M=256), so from this many rows both are timed on the first call per shape and the winner kept.
DEQUANTIZE_CANDIDATE_ROWS = 128
_PREFILL_CHOICE: dict[tuple, bool] = {}


def _dequantize_is_faster(key: tuple, fused: Callable[[], object], dequantized: Callable[[], object]) -> bool:
    """Whether `dequantized` beat `fused` when timed for this key (timed once; never inside a graph capture,
    where the fused kernel is taken)."""
    if key not in _PREFILL_CHOICE:
        if torch.cuda.is_current_stream_capturing():
            return False
        fused_ms = cold_time_ms(fused)
        _PREFILL_CHOICE[key] = cold_time_ms(dequantized) < fused_ms
    return _PREFILL_CHOICE[key]


def _check_group_tensor(name: str, tensor: torch.Tensor, shape: tuple[int, int]) -> None:
    """Scales and zero points may be strided either way: [N, K / G] as checkpoints hold them, or its transpose
    made contiguous (Int4Linear's choice: a tile's scales are then one contiguous row)."""
    if tensor.shape != shape or tensor.stride(0) < 1 or tensor.stride(1) < 1 or 1 not in tensor.stride():
        raise ValueError(f"{name} must be a dense {list(shape)} tensor (either stride order), got "
                         f"{tuple(tensor.shape)} with strides {tensor.stride()}")


def w4a16_matmul(
    x: torch.Tensor, packed: torch.Tensor, scale: torch.Tensor, group_size: int,
    zero_point: torch.Tensor | None = None, bias: torch.Tensor | None = None, out: torch.Tensor | None = None,
    config: dict | None = None,
) -> torch.Tensor:
    """x [..., K] (bf16/fp16) times the int4 weight in kernel layout [K / 8, N] (to_kernel_layout) with scales
    [N, K / group_size] and, for asymmetric weights, int8 zero points of the same shape; out [..., N] in x's dtype.

    On CUDA the tile shape is autotuned per (M bucket, N, K); `config` pins one (tests, the interpreter), and
    {"GEMV": True, ...} pins the GEMV kernel and {"DEQUANTIZE": True} the dequantize-then-matmul path."""
    require_triton()
    if x.dtype not in (torch.bfloat16, torch.float16):
        raise ValueError(f"x must be bf16 or fp16, got {x.dtype}")
    if packed.dtype != torch.int32 or packed.dim() != 2 or packed.stride(-1) != 1:
        raise ValueError("packed must be a row-major int32 [K / 8, N] tensor (to_kernel_layout)")
    n, k = packed.shape[1], x.shape[-1]
    if packed.shape[0] * PACK != k or k % group_size or group_size % 32:
        raise ValueError(f"K={k}, packed {tuple(packed.shape)} and group_size {group_size} do not agree")
    _check_group_tensor("scale", scale, (n, k // group_size))
    if zero_point is not None:
        _check_group_tensor("zero_point", zero_point, (n, k // group_size))
        if zero_point.dtype != torch.int8:
            raise ValueError(f"zero_point must be int8, got {zero_point.dtype}")
    if bias is not None and bias.shape != (n,):
        raise ValueError(f"bias must be [{n}]")
    if not (x.device == packed.device == scale.device):
        raise ValueError("x, packed and scale must be on one device")
    x2 = x.reshape(-1, k)
    if x2.stride(-1) != 1:
        x2 = x2.contiguous()
    m = x2.shape[0]
    if out is not None and (out.shape != (*x.shape[:-1], n) or out.dtype != x.dtype or not out.is_contiguous()):
        raise ValueError(f"out must be a contiguous {x.dtype} tensor of shape {(*x.shape[:-1], n)}")
    pinned = dict(config or {})
    gemv = bool(pinned.pop("GEMV", config is None and x.is_cuda and m <= GEMV_MAX_ROWS))
    if not gemv and "BLOCK_K" in pinned and group_size % pinned["BLOCK_K"]:  # the GEMV's blocks may span groups
        raise ValueError(f"BLOCK_K {pinned['BLOCK_K']} must divide group_size {group_size}")
    zero = zero_point if zero_point is not None else scale
    target = out.view(m, n) if out is not None else torch.empty(m, n, device=x.device, dtype=x.dtype)

    def dequantized() -> None:
        weight = dequantize_to_kn(packed, scale, group_size, x.dtype, zero_point)
        if bias is None:
            torch.matmul(x2, weight, out=target)
        else:
            torch.addmm(bias.to(x.dtype), x2, weight, out=target)

    if pinned.pop("DEQUANTIZE", False):
        dequantized()
        return target.view(*x.shape[:-1], n)
    # tiles are never smaller than 16 x 16, so m * cdiv(n, 16) counters cover every tiling
    sums, arrivals = split_k_workspace(x.device, m * n, triton.cdiv(m, 16) * 16 * triton.cdiv(n, 16))
    args = (x2, packed, scale, zero, bias if bias is not None else scale, target, sums, arrivals)
    strides = (x2.stride(0), packed.stride(0), *scale.stride(), *zero.stride(), target.stride(0))
    flags = {"GROUP_SIZE": group_size, "HAS_ZERO": zero_point is not None, "HAS_BIAS": bias is not None}
    tune = config is None and x.is_cuda
    if gemv:
        run_gemv(args, m, n, k, strides, flags, None if tune else pinned)
        return target.view(*x.shape[:-1], n)

    def grid(meta: dict) -> tuple[int, int]:
        return (triton.cdiv(m, meta["BLOCK_M"]) * triton.cdiv(n, meta["BLOCK_N"]), meta["SPLIT_K"])

    code_bits, code_base = HALF_MAGIC[x.dtype]
    flags.update(M_BUCKET=max(16, triton.next_power_of_2(m)), CODE_BITS=code_bits, CODE_BASE=code_base)
    if tune:
        def fused() -> None:
            _w4a16_autotuned[grid](*args, m, n, k, *strides, **flags, UPCAST=False)

        key = (flags["M_BUCKET"], n, k, group_size, x.dtype, zero_point is not None, x.device)
        if m >= DEQUANTIZE_CANDIDATE_ROWS and _dequantize_is_faster(key, fused, dequantized):
            dequantized()
        else:
            fused()
    else:
        pinned = {"BLOCK_M": 16, "BLOCK_N": 32, "BLOCK_K": 32, "SPLIT_K": 1, "SWAP": False, **pinned}
        _w4a16_kernel[grid(pinned)](*args, m, n, k, *strides, **flags, UPCAST=interpreted(), **pinned)
    return target.view(*x.shape[:-1], n)
