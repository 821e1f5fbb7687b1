"""W4A16: y = x · Wᵀ with int4 weights dequantized in registers inside the matmul, so only the packed bytes
cross HBM. Checkpoints hold compressed-tensors "pack-quantized" weights (eight 4-bit codes per int32 along the
input dimension, stored as code + 8, [N, K / 8]) and one bf16 scale per group of input columns; the kernel
reads them repacked once at load time to [K / 8, N] (to_kernel_layout), where a tile's words are contiguous
along N and unpack straight into the [K, N] operand of the dot, with no transpose.

Small M (decoding) is bound by reading the weights; split-K spreads one output tile's K loop over several
programs that add into an fp32 buffer, so the GPU has enough programs in flight to saturate HBM.
"""

from __future__ import annotations

import torch

from kernels.triton_support import interpreted, require_triton, triton

if triton is not None:
    import triton.language as tl

PACK = 8  # int4 codes per int32


def unpack_int4(packed: torch.Tensor, in_features: int) -> torch.Tensor:
    """int8 codes [N, K] in [-8, 7] from packed int32 [N, K / 8] (little-endian nibbles, offset by 8)."""
    shifts = torch.arange(0, 32, 4, device=packed.device, dtype=torch.int32)
    nibbles = (packed.unsqueeze(-1) >> shifts) & 0xF
    return (nibbles.reshape(packed.shape[0], -1)[:, :in_features] - 8).to(torch.int8)


def to_kernel_layout(packed: torch.Tensor, in_features: int) -> torch.Tensor:
    """The checkpoint's [N, K / 8] words repacked to the kernel's [K / 8, N] (same nibble order along K)."""
    codes = unpack_int4(packed, in_features).T.contiguous().to(torch.int32) + 8
    shifts = torch.arange(0, 32, 4, device=packed.device, dtype=torch.int32)
    words = codes.reshape(in_features // PACK, PACK, -1) << shifts[None, :, None]
    return words.sum(dim=1, dtype=torch.int32).contiguous()


def dequantize_int4(
    packed: torch.Tensor, scale: torch.Tensor, group_size: int, in_features: int,
    zero_point: torch.Tensor | None = None,
) -> torch.Tensor:
    """fp32 [N, K] weight from the checkpoint layout [N, K / 8] (the kernel layout's transpose is the same)."""
    codes = unpack_int4(packed, in_features).float()
    if zero_point is not None:
        codes = codes - zero_point.float().repeat_interleave(group_size, dim=1)[:, :in_features]
    return codes * scale.float().repeat_interleave(group_size, dim=1)[:, :in_features]


def w4a16_reference(
    x: torch.Tensor, packed: torch.Tensor, scale: torch.Tensor, group_size: int,
    zero_point: torch.Tensor | None = None, bias: torch.Tensor | None = None,
) -> torch.Tensor:
    """Plain torch on the checkpoint layout: dequantize the whole weight in fp32, then matmul; x's dtype out."""
    y = x.float() @ dequantize_int4(packed, scale, group_size, x.shape[-1], zero_point).T
    return (y if bias is None else y + bias.float()).to(x.dtype)


if triton is not None:

    @triton.jit
    def _w4a16_kernel(
        x_ptr, packed_ptr, scale_ptr, zero_ptr, bias_ptr, out_ptr, sums_ptr, arrivals_ptr,
        M, N, K,
        stride_xm, stride_pk, stride_sn, stride_om,
        M_BUCKET: tl.constexpr,  # power of two ≥ M: the autotuner's key, one tuning per bucket
        GROUP_SIZE: tl.constexpr, HAS_ZERO: tl.constexpr, HAS_BIAS: tl.constexpr,
        BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, SPLIT_K: tl.constexpr,
        UPCAST: tl.constexpr,
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
            nibbles = (packed[:, None, :] >> shifts[None, :, None]) & 0xF  # [BLOCK_K / 8, 8, BLOCK_N]
            codes = tl.reshape(nibbles, (BLOCK_K, BLOCK_N)) - 8
            # BLOCK_K divides GROUP_SIZE, so the whole K block shares one scale (and zero point) per output column
            scale = tl.load(scale_ptr + cols * stride_sn + k0 // GROUP_SIZE, mask=col_ok, other=0.0)
            if HAS_ZERO:  # asymmetric: w = (q - z) * s, and q - z in [-15, 15] is still exact in bf16/fp16
                zero = tl.load(zero_ptr + cols * stride_sn + k0 // GROUP_SIZE, mask=col_ok, other=0)
                codes -= zero.to(tl.int32)[None, :]
            # codes (-8..7) are exact in bf16/fp16: the scale is applied to the block's fp32 partial sums instead
            if UPCAST:  # Triton's interpreter mishandles bf16 dots; it checks the logic in fp32
                partial = tl.dot(x.to(tl.float32), codes.to(tl.float32))
            else:
                partial = tl.dot(x, codes.to(x.dtype))
            acc += partial * scale.to(tl.float32)[None, :]
        out = out_ptr + rows[:, None] * stride_om + cols[None, :]
        mask = row_ok[:, None] & col_ok[None, :]
        if SPLIT_K == 1:
            if HAS_BIAS:
                acc += tl.load(bias_ptr + cols, mask=col_ok, other=0.0).to(tl.float32)[None, :]
            tl.store(out, acc.to(out_ptr.dtype.element_ty), mask=mask)
        else:  # one-launch split-K, as in the GEMV kernel below
            sums = sums_ptr + rows[:, None] * N + cols[None, :]
            tl.atomic_add(sums, acc, mask=mask)
            arrived = tl.atomic_add(arrivals_ptr + pid, 1)
            if arrived == SPLIT_K - 1:
                total = tl.load(sums, mask=mask, other=0.0, cache_modifier=".cg")
                if HAS_BIAS:
                    total += tl.load(bias_ptr + cols, mask=col_ok, other=0.0).to(tl.float32)[None, :]
                tl.store(out, total.to(out_ptr.dtype.element_ty), mask=mask)
                tl.store(sums, tl.zeros_like(total), mask=mask)
                tl.atomic_xchg(arrivals_ptr + pid, 0)

    _CONFIGS = [
        triton.Config({"BLOCK_M": m, "BLOCK_N": n, "BLOCK_K": k, "SPLIT_K": s}, num_warps=w, num_stages=st)
        for m, n, k, s, w, st in [
            (16, 64, 128, 1, 4, 4), (16, 64, 128, 2, 4, 4), (16, 64, 128, 4, 4, 4), (16, 128, 128, 4, 4, 4),
            (16, 32, 128, 4, 4, 4), (16, 64, 64, 8, 4, 4), (16, 128, 128, 2, 8, 3), (16, 256, 64, 1, 8, 3),
            (32, 64, 128, 2, 4, 4), (32, 128, 128, 1, 4, 4), (64, 128, 64, 1, 4, 4), (64, 128, 128, 1, 8, 3),
            (128, 128, 64, 1, 8, 3), (128, 256, 64, 1, 8, 3), (64, 256, 64, 1, 8, 4),
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
    )(_w4a16_kernel)


if triton is not None:

    @triton.jit
    def _w4a16_gemv_kernel(
        x_ptr, packed_ptr, scale_ptr, zero_ptr, bias_ptr, out_ptr, sums_ptr, arrivals_ptr,
        N, K, stride_xm, stride_pk, stride_sn, stride_om,
        GROUP_SIZE: tl.constexpr, HAS_ZERO: tl.constexpr, HAS_BIAS: tl.constexpr,
        BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, SPLIT_K: tl.constexpr,
    ):
        """One input row per program row (decoding): no tensor-core tile to fill, the K loop is a plain reduction
        over the unpacked [BLOCK_K / 8, 8, BLOCK_N] codes, so all the time goes into streaming the weights.

        Split-K in one launch: the K slices of a tile add their fp32 sums into a workspace and count in; the
        last to arrive writes the tile out in the output dtype and zeroes its workspace and counter again, so
        no memset or conversion kernel is needed around the call (at decode sizes each costs as much as the
        matmul)."""
        row = tl.program_id(0)
        cols = tl.program_id(1) * BLOCK_N + tl.arange(0, BLOCK_N)
        split = tl.program_id(2)
        col_ok = cols < N
        words = tl.arange(0, BLOCK_K // 8)
        nibble = tl.arange(0, 8)
        acc = tl.zeros((BLOCK_N,), dtype=tl.float32)
        for k0 in range(split * BLOCK_K, K, BLOCK_K * SPLIT_K):
            word_rows = k0 // 8 + words
            packed = tl.load(packed_ptr + word_rows[:, None] * stride_pk + cols[None, :],
                             mask=(word_rows < K // 8)[:, None] & col_ok[None, :], other=0)
            codes = ((packed[:, None, :] >> (nibble * 4)[None, :, None]) & 0xF) - 8
            if HAS_ZERO:
                zero = tl.load(zero_ptr + cols * stride_sn + k0 // GROUP_SIZE, mask=col_ok, other=0).to(tl.int32)
                codes -= zero[None, None, :]
            ks = k0 + words[:, None] * 8 + nibble[None, :]
            x = tl.load(x_ptr + row * stride_xm + ks, mask=ks < K, other=0.0).to(tl.float32)
            partial = tl.sum(tl.sum(codes.to(tl.float32) * x[:, :, None], axis=1), axis=0)
            scale = tl.load(scale_ptr + cols * stride_sn + k0 // GROUP_SIZE, mask=col_ok, other=0.0)
            acc += partial * scale.to(tl.float32)
        out = out_ptr + row * stride_om + cols
        if SPLIT_K == 1:
            if HAS_BIAS:
                acc += tl.load(bias_ptr + cols, mask=col_ok, other=0.0).to(tl.float32)
            tl.store(out, acc.to(out_ptr.dtype.element_ty), mask=col_ok)
        else:
            sums = sums_ptr + row * N + cols
            tl.atomic_add(sums, acc, mask=col_ok)
            tile = row * tl.num_programs(1) + tl.program_id(1)
            arrived = tl.atomic_add(arrivals_ptr + tile, 1)  # acq_rel: orders the sums before the count
            if arrived == SPLIT_K - 1:
                total = tl.load(sums, mask=col_ok, other=0.0, cache_modifier=".cg")
                if HAS_BIAS:
                    total += tl.load(bias_ptr + cols, mask=col_ok, other=0.0).to(tl.float32)
                tl.store(out, total.to(out_ptr.dtype.element_ty), mask=col_ok)
                tl.store(sums, tl.zeros_like(total), mask=col_ok)
                tl.atomic_xchg(arrivals_ptr + tile, 0)


_WORKSPACES: dict[torch.device, tuple[torch.Tensor, torch.Tensor]] = {}


def split_k_workspace(device: torch.device, sums: int, tiles: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Zeroed fp32 sums and int32 arrival counters, at least `sums` and `tiles` long, kept per device. Every
    kernel that uses them leaves them zeroed again, so they are allocated (and zeroed) once, outside any CUDA
    graph capture that follows; callers on one device must run on one stream."""
    held = _WORKSPACES.get(device)
    if held is None or held[0].numel() < sums or held[1].numel() < tiles:
        size = max(sums, 1 << 20, held[0].numel() if held else 0)
        count = max(tiles, 1 << 14, held[1].numel() if held else 0)
        held = (torch.zeros(size, device=device, dtype=torch.float32),
                torch.zeros(count, device=device, dtype=torch.int32))
        _WORKSPACES[device] = held
    return held


# Decoding batches up to this many rows take the GEMV kernel (one weight pass per row is still cheaper there
# than a 16-row tensor-core tile). The tile was the fastest of 36 (BLOCK_N x BLOCK_K x SPLIT_K) on the H100 at
# M=1 for 28672x8192, 14336x4096 and 4096x4096 (a sweep of 2026-11-25); BLOCK_K shrinks to smaller groups.
GEMV_MAX_ROWS = 4
GEMV_CONFIG = {"BLOCK_N": 128, "BLOCK_K": 128, "SPLIT_K": 8}


def w4a16_matmul(
    x: torch.Tensor, packed: torch.Tensor, scale: torch.Tensor, group_size: int,
    zero_point: torch.Tensor | None = None, bias: torch.Tensor | None = None, out: torch.Tensor | None = None,
    config: dict | None = None,
) -> torch.Tensor:
    """x [..., K] (bf16/fp16) times the int4 weight in kernel layout [K / 8, N] (to_kernel_layout) with scales
    [N, K / group_size] and, for asymmetric weights, int8 zero points of the same shape; out [..., N] in x's dtype.

    On CUDA the tile shape is autotuned per (M bucket, N, K); `config` pins one (tests, the interpreter)."""
    require_triton()
    if x.dtype not in (torch.bfloat16, torch.float16):
        raise ValueError(f"x must be bf16 or fp16, got {x.dtype}")
    if packed.dtype != torch.int32 or packed.dim() != 2 or packed.stride(-1) != 1:
        raise ValueError("packed must be a row-major int32 [K / 8, N] tensor (to_kernel_layout)")
    n, k = packed.shape[1], x.shape[-1]
    if packed.shape[0] * PACK != k or k % group_size or group_size % 32:
        raise ValueError(f"K={k}, packed {tuple(packed.shape)} and group_size {group_size} do not agree")
    if scale.shape != (n, k // group_size) or scale.stride(-1) != 1:
        raise ValueError(f"scale must be a row-major [{n}, {k // group_size}] tensor, got {tuple(scale.shape)}")
    if zero_point is not None and (zero_point.shape != scale.shape or zero_point.stride() != scale.stride()
                                   or zero_point.dtype != torch.int8):
        raise ValueError(f"zero_point must be int8 shaped and strided like scale {tuple(scale.shape)}")
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
    gemv = (config is None and x.is_cuda and m <= GEMV_MAX_ROWS) or bool((config or {}).get("GEMV"))
    if gemv:
        config = {**GEMV_CONFIG, "BLOCK_K": min(GEMV_CONFIG["BLOCK_K"], group_size),
                  **{key: value for key, value in (config or {}).items() if key != "GEMV"}}
        if group_size % config["BLOCK_K"]:
            raise ValueError(f"BLOCK_K {config['BLOCK_K']} must divide group_size {group_size}")
    split_k = (config or {}).get("SPLIT_K", 1)
    out2 = out.view(m, n) if out is not None else None
    operands = (x2, packed, scale, zero_point if zero_point is not None else scale,
                bias if bias is not None else scale)
    flags = {"GROUP_SIZE": group_size, "HAS_ZERO": zero_point is not None, "HAS_BIAS": bias is not None}
    target = out2 if out2 is not None else torch.empty(m, n, device=x.device, dtype=x.dtype)
    # tiles are never smaller than 16 x 16, so m * cdiv(n, 16) counters cover every tiling
    sums, arrivals = split_k_workspace(x.device, m * n, triton.cdiv(m, 16) * 16 * triton.cdiv(n, 16))
    args = (*operands, target, sums, arrivals)
    if gemv:
        tiles_n = triton.cdiv(n, config["BLOCK_N"])
        _w4a16_gemv_kernel[(m, tiles_n, split_k)](
            *args, n, k, x2.stride(0), packed.stride(0), scale.stride(0), target.stride(0), **flags,
            BLOCK_N=config["BLOCK_N"], BLOCK_K=config["BLOCK_K"], SPLIT_K=split_k, num_warps=4)
        return target.view(*x.shape[:-1], n)

    def grid(meta: dict) -> tuple[int, int]:
        return (triton.cdiv(m, meta["BLOCK_M"]) * triton.cdiv(n, meta["BLOCK_N"]), meta["SPLIT_K"])

    strides = (m, n, k, x2.stride(0), packed.stride(0), scale.stride(0), target.stride(0))
    bucket = max(16, triton.next_power_of_2(m))
    if config is None and x.is_cuda:
        _w4a16_autotuned[grid](*args, *strides, M_BUCKET=bucket, **flags, UPCAST=False)
    else:
        config = {"BLOCK_M": 16, "BLOCK_N": 32, "BLOCK_K": 32, "SPLIT_K": 1, **(config or {})}
        _w4a16_kernel[grid(config)](*args, *strides, M_BUCKET=bucket, **flags, UPCAST=interpreted(), **config)
    return target.view(*x.shape[:-1], n)
