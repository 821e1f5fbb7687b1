"""2:4 sparse matmuls on compressed storage: of every four weights along K only the two kept ones are stored,
with 4 bits of positions per group, and the kernel rebuilds the dense tile in registers before a dense
tensor-core dot. What is saved is HBM traffic: bf16 weights drop from 16 to 9 bits each, int4 weights from
4 to 3 bits (plus scales), which is what decoding and medium batches are bound by.

compress/ writes 2:4 models densely, zeros included (compressed-tensors 0.20 writes no sparse formats), so
the layout here is built at load time by `compress_24` from the dense (or int4-coded) weight.
"""

from __future__ import annotations

import torch
from compressed_tensors.compressors.pack_quantized.helpers import pack_to_int32

from kernels.triton_support import interpreted, require_triton, triton
from kernels.tuning import autotuner_do_bench

if triton is not None:
    import triton.language as tl

GROUPS_PER_WORD = 8  # 4-bit position pairs per int32 of metadata, i.e. 32 weights of K


def compress_24(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(values [N, K / 2], meta int32 [N, K / 32]) of a [N, K] weight with at most two nonzeros in every
    group of four along K; each group's nibble is p0 | p1 << 2 with p0 < p1 the stored positions."""
    n, k = weight.shape
    if k % 32:
        raise ValueError(f"K={k} must be a multiple of 32 for 2:4 storage")
    groups = weight.reshape(n, k // 4, 4)
    nonzero = groups != 0
    if (nonzero.sum(-1) > 2).any():
        raise ValueError("weight is not 2:4 sparse: some group of four along K has more than two nonzeros")
    # keep the nonzeros, then the lowest free positions, in ascending order
    rank = nonzero.to(torch.int32) * 8 - torch.arange(4, device=weight.device, dtype=torch.int32)
    positions = rank.topk(2, dim=-1).indices.sort(dim=-1).values
    values = groups.gather(-1, positions).reshape(n, k // 2)
    nibbles = (positions[..., 0] | (positions[..., 1] << 2)).to(torch.int32)
    shifts = torch.arange(0, 32, 4, device=weight.device, dtype=torch.int32)
    meta = (nibbles.reshape(n, k // 32, GROUPS_PER_WORD) << shifts).sum(-1, dtype=torch.int32)
    return values.contiguous(), meta.contiguous()


def decompress_24(values: torch.Tensor, meta: torch.Tensor) -> torch.Tensor:
    """The dense [N, K] weight back from compress_24's storage."""
    n, half = values.shape
    shifts = torch.arange(0, 32, 4, device=meta.device, dtype=torch.int32)
    nibbles = ((meta.unsqueeze(-1) >> shifts) & 0xF).reshape(n, half // 2)
    positions = torch.stack([nibbles & 3, nibbles >> 2], dim=-1).long()
    dense = torch.zeros(n, half // 2, 4, device=values.device, dtype=values.dtype)
    dense.scatter_(-1, positions, values.reshape(n, half // 2, 2))
    return dense.reshape(n, 2 * half)


def to_kernel_layout_24(values: torch.Tensor, meta: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """compress_24's [N, ...] storage transposed to the kernel's K-major layout: values [K / 2, N] (int8 int4
    codes are packed eight per int32 along K, [K / 16, N]) and meta [K / 32, N]."""
    if values.dtype == torch.int8:
        kernel_values = pack_to_int32(values.T.contiguous(), 4, packed_dim=0)
    else:
        kernel_values = values.T.contiguous()
    return kernel_values, meta.T.contiguous()


def sparse24_reference(
    x: torch.Tensor, values: torch.Tensor, meta: torch.Tensor,
    scale: torch.Tensor | None = None, group_size: int = 0, bias: torch.Tensor | None = None,
) -> torch.Tensor:
    """fp32 x @ denseᵀ on compress_24's storage; with `scale`, values are int8 int4 codes dequantized per group
    of `group_size` input columns. Returns x's dtype."""
    weight = decompress_24(values, meta).float()
    if scale is not None:
        weight = weight * scale.float().repeat_interleave(group_size, dim=1)
    y = x.float() @ weight.T
    if bias is not None:
        y = y + bias.float()
    return y.to(x.dtype)


if triton is not None:

    @triton.jit
    def _sparse24_kernel(
        x_ptr, values_ptr, meta_ptr, scale_ptr, bias_ptr, out_ptr,
        M, N, K, stride_xm, stride_vk, stride_mk, stride_sn, stride_om,
        M_BUCKET: tl.constexpr, INT4: tl.constexpr, GROUP_SIZE: tl.constexpr, HAS_BIAS: tl.constexpr,
        UPCAST: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
        SPLIT_K: tl.constexpr,
    ):
        """Kernel layout is K-major like W4A16's: rows of values/meta along K, contiguous along N, so each load
        of a group's row is coalesced and the rebuilt [BLOCK_K / 4, 4, BLOCK_N] tile reshapes straight into
        the dot's [BLOCK_K, BLOCK_N] operand."""
        pid = tl.program_id(0)
        split = tl.program_id(1)
        tiles_n = tl.cdiv(N, BLOCK_N)
        rows = (pid // tiles_n) * BLOCK_M + tl.arange(0, BLOCK_M)
        cols = (pid % tiles_n) * BLOCK_N + tl.arange(0, BLOCK_N)
        row_ok = rows < M
        col_ok = cols < N
        groups = tl.arange(0, BLOCK_K // 4)
        position = tl.arange(0, 4)
        acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
        for k0 in range(split * BLOCK_K, K, BLOCK_K * SPLIT_K):
            ks = k0 + tl.arange(0, BLOCK_K)
            x = tl.load(x_ptr + rows[:, None] * stride_xm + ks[None, :], mask=row_ok[:, None] & (ks < K)[None, :],
                        other=0.0)
            tile_ok = ((k0 + 4 * groups) < K)[:, None] & col_ok[None, :]  # K is a multiple of 32, not of BLOCK_K
            word = tl.load(meta_ptr + (k0 // 32 + groups // 8)[:, None] * stride_mk + cols[None, :],
                           mask=tile_ok, other=0)
            nibble = (word >> ((groups % 8) * 4)[:, None]) & 0xF  # [BLOCK_K / 4, BLOCK_N]
            if INT4:  # group g keeps codes 2g and 2g + 1: word g // 4, nibbles 2 (g % 4) and 2 (g % 4) + 1
                packed = tl.load(values_ptr + (k0 // 16 + groups // 4)[:, None] * stride_vk + cols[None, :],
                                 mask=tile_ok, other=0)
                shift = ((groups % 4) * 8)[:, None]
                first = ((packed >> shift) & 0xF) - 8
                second = ((packed >> (shift + 4)) & 0xF) - 8
            else:
                kept = values_ptr + (k0 // 2 + 2 * groups)[:, None] * stride_vk + cols[None, :]
                first = tl.load(kept, mask=tile_ok, other=0.0)
                second = tl.load(kept + stride_vk, mask=tile_ok, other=0.0)
            p0 = (nibble & 3)[:, None, :] == position[None, :, None]
            p1 = (nibble >> 2)[:, None, :] == position[None, :, None]
            dense = tl.where(p0, first[:, None, :], tl.where(p1, second[:, None, :], tl.zeros_like(first)[:, None, :]))
            dense = tl.reshape(dense, (BLOCK_K, BLOCK_N))
            if UPCAST:  # Triton's interpreter mishandles bf16 dots; it checks the logic in fp32
                partial = tl.dot(x.to(tl.float32), dense.to(tl.float32))
            else:
                partial = tl.dot(x, dense.to(x_ptr.dtype.element_ty))
            if INT4:  # BLOCK_K divides GROUP_SIZE: one scale per output column for the whole block
                scale = tl.load(scale_ptr + cols * stride_sn + k0 // GROUP_SIZE, mask=col_ok, other=0.0)
                partial = partial * scale.to(tl.float32)[None, :]
            acc += partial
        if HAS_BIAS:
            if split == 0:
                acc += tl.load(bias_ptr + cols, mask=col_ok, other=0.0).to(tl.float32)[None, :]
        out = out_ptr + rows[:, None] * stride_om + cols[None, :]
        mask = row_ok[:, None] & col_ok[None, :]
        if SPLIT_K == 1:
            tl.store(out, acc.to(out_ptr.dtype.element_ty), mask=mask)
        else:
            tl.atomic_add(out, acc, mask=mask)

    _CONFIGS = [
        triton.Config({"BLOCK_M": m, "BLOCK_N": n, "BLOCK_K": k, "SPLIT_K": s}, num_warps=w, num_stages=st)
        for m, n, k, s, w, st in [
            (16, 64, 128, 1, 4, 4), (16, 64, 128, 4, 4, 4), (16, 128, 128, 2, 4, 4), (16, 32, 128, 8, 4, 4),
            (16, 64, 64, 8, 4, 4), (32, 64, 128, 2, 4, 4), (32, 128, 64, 1, 4, 4),
            (64, 64, 128, 1, 4, 4), (64, 128, 64, 1, 4, 4), (64, 128, 128, 1, 8, 3), (128, 128, 64, 1, 8, 3),
            (128, 256, 64, 1, 8, 3), (64, 256, 64, 1, 8, 3),
        ]
    ]

    def _prune(configs: list, named_args: dict, **kwargs: object) -> list:
        """BLOCK_K must divide the int4 group size; tiles taller than the (bucketed) M only waste tensor cores."""
        given = {**named_args, **kwargs}
        group_size, m_bucket = int(given["GROUP_SIZE"]), int(given["M_BUCKET"])
        kept = [c for c in configs if c.kwargs["BLOCK_M"] <= m_bucket
                and (not given["INT4"] or group_size % c.kwargs["BLOCK_K"] == 0)]
        return kept or configs[:1]

    _sparse24_autotuned = triton.autotune(
        configs=_CONFIGS, key=["M_BUCKET", "N", "K", "INT4", "GROUP_SIZE"],
        prune_configs_by={"early_config_prune": _prune}, reset_to_zero=["out_ptr"],
        do_bench=autotuner_do_bench,
    )(_sparse24_kernel)


def sparse24_matmul(
    x: torch.Tensor, values: torch.Tensor, meta: torch.Tensor, scale: torch.Tensor | None = None,
    group_size: int = 0, bias: torch.Tensor | None = None, out: torch.Tensor | None = None,
    config: dict | None = None,
) -> torch.Tensor:
    """x [M, K] bf16/fp16 times a 2:4 weight in the kernel layout (to_kernel_layout_24): values [K / 2, N] in
    x's dtype, or with `scale` [N, K / group_size] int4 codes as int32 [K / 16, N]; meta int32 [K / 32, N]."""
    require_triton()
    if x.dtype not in (torch.bfloat16, torch.float16) or x.dim() != 2 or x.stride(-1) != 1:
        raise ValueError(f"x must be a row-major 2-D bf16 or fp16 tensor, got {x.dtype} {tuple(x.shape)}")
    m, k = x.shape
    n = meta.shape[1]
    int4 = scale is not None
    if k % 32 or meta.shape != (k // 32, n) or meta.dtype != torch.int32 or meta.stride(-1) != 1:
        raise ValueError(f"meta must be a row-major int32 [{k // 32}, N] tensor and K={k} a multiple of 32")
    expected = ((k // 16, n), torch.int32) if int4 else ((k // 2, n), x.dtype)
    if (tuple(values.shape), values.dtype) != expected or values.stride(-1) != 1:
        raise ValueError(f"values must be row-major {expected[1]} {list(expected[0])}, got {values.dtype} "
                         f"{list(values.shape)}")
    if int4 and (not group_size or k % group_size or group_size % 32 or scale.shape != (n, k // group_size)
                 or scale.stride(-1) != 1):
        raise ValueError(f"scale must be row-major [{n}, K / group_size] with group_size a multiple of 32 "
                         f"dividing K={k}")
    if bias is not None and bias.shape != (n,):
        raise ValueError(f"bias must be [{n}]")
    if out is not None and (out.shape != (m, n) or out.dtype != x.dtype or out.stride(-1) != 1):
        raise ValueError(f"out must be a row-major [{m}, {n}] {x.dtype} tensor")
    split_k = (config or {}).get("SPLIT_K", 1)
    accumulate = config is None or split_k > 1
    target = torch.zeros(m, n, device=x.device, dtype=torch.float32) if accumulate else (
        out if out is not None else torch.empty(m, n, device=x.device, dtype=x.dtype))

    def grid(meta_args: dict) -> tuple[int, int]:
        return (triton.cdiv(m, meta_args["BLOCK_M"]) * triton.cdiv(n, meta_args["BLOCK_N"]), meta_args["SPLIT_K"])

    operands = (x, values, meta, scale if int4 else meta, bias if bias is not None else meta, target)
    strides = (x.stride(0), values.stride(0), meta.stride(0), scale.stride(0) if int4 else 0, target.stride(0))
    flags = {"INT4": int4, "GROUP_SIZE": group_size or 32, "HAS_BIAS": bias is not None}
    if config is None and x.is_cuda:
        _sparse24_autotuned[grid](*operands, m, n, k, *strides, **flags, M_BUCKET=max(16, triton.next_power_of_2(m)),
                                  UPCAST=False)
    else:
        config = {"BLOCK_M": 16, "BLOCK_N": 32, "BLOCK_K": 32, "SPLIT_K": 1, **(config or {})}
        _sparse24_kernel[grid(config)](*operands, m, n, k, *strides, **flags,
                                       M_BUCKET=max(16, triton.next_power_of_2(m)), UPCAST=interpreted(), **config)
    if target is out or (out is None and target.dtype == x.dtype):
        return target
    return target.to(x.dtype) if out is None else out.copy_(target)
