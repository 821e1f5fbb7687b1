"""2:4 sparse matmuls on compressed storage (kernels/sparse24_layout.py): of every four weights along K only the
two kept ones cross HBM, with their positions, and the kernel rebuilds the dense weights in registers for a dense
tensor-core dot. What is saved is HBM traffic: bf16 weights drop from 16 to 9 bits each, int4 weights from 4 to
3 bits (plus scales), which is what decoding and medium batches are bound by.

compress/ writes 2:4 models densely, zeros included (compressed-tensors 0.20 writes no sparse formats), so the
kernel layout is built at load time from the dense (or int4-coded) weight.
"""

from __future__ import annotations

import torch

from kernels.dependent_launch import allow_next_launch, launch_options, wait_for_previous
from kernels.sparse24_gemv import GEMV_CANDIDATE_ROWS, run_sparse24_gemv
from kernels.sparse24_layout import PAIR_BLOCK, decompress_24, pair_layout_rows
from kernels.split_k import split_k_workspace, store_split_k
from kernels.triton_support import interpreted, require_triton, triton
from kernels.tuning import autotune, second_is_faster

if triton is not None:
    import triton.language as tl


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
        x_ptr, words_ptr, positions_ptr, scale_ptr, bias_ptr, out_ptr, sums_ptr, arrivals_ptr,
        M, N, K, stride_xm, stride_wk, stride_pk, stride_sn, stride_sg, stride_om,
        M_BUCKET, INT4: tl.constexpr, GROUP_SIZE: tl.constexpr, HAS_BIAS: tl.constexpr,
        K_RAGGED: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, SPLIT_K: tl.constexpr,
        UPCAST: tl.constexpr,  # Triton's interpreter mishandles half-precision dots: it checks the logic in fp32
        DEPENDENT: tl.constexpr,  # launched dependent on the previous kernel (kernels/dependent_launch.py)
    ):
        """Computes the tile transposed, (W x^T)^T, like the W4A16 kernel: the rebuilt weights are the MMA's
        first operand, which Hopper reads from registers. Per half block (16 groups, 64 input columns) one load of
        words serves the four positions p; position p's weights are the first kept value where the group's first
        position is p, the second where its second is p, else zero, against x's columns 64·h + 4·q + p. Nothing
        between the loads and the MMA may depend on a position along K (an arange), or Triton stages the rebuilt
        tile through shared memory: hence halves, whose nibble shift is a constant."""
        allow_next_launch(DEPENDENT)
        wait_for_previous(DEPENDENT)
        pid = tl.program_id(0)
        split = tl.program_id(1)
        tiles_n = tl.cdiv(N, BLOCK_N)
        rows = (pid // tiles_n) * BLOCK_M + tl.arange(0, BLOCK_M)
        cols = (pid % tiles_n) * BLOCK_N + tl.arange(0, BLOCK_N)
        col_ok = cols < N
        # x and scales are read at clamped rows and columns (valid memory; what they feed is never stored)
        x_rows = x_ptr + tl.minimum(rows, M - 1)[:, None] * stride_xm
        words_cols = words_ptr + cols[:, None]
        positions_cols = positions_ptr + cols[:, None]
        scale_cols = scale_ptr + tl.minimum(cols, N - 1) * stride_sn
        dtype = x_ptr.dtype.element_ty
        quads = tl.arange(0, 16)
        acc = tl.zeros((BLOCK_N, BLOCK_M), dtype=tl.float32)
        for k0 in range(split * 128, K, 128 * SPLIT_K):
            packed = tl.load(positions_cols + (k0 // 8 + quads)[None, :] * stride_pk, mask=col_ok[:, None], other=0)
            for half in tl.static_range(2):  # groups 16·half + q: nibble `half` of byte q (a constant shift)
                nibble = (packed.to(tl.int32) >> (4 * half)) & 0xF
                first = nibble & 3
                second = nibble >> 2
                k_half = k0 + 64 * half
                words = tl.load(words_cols + (k_half // 4 + quads)[None, :] * stride_wk, mask=col_ok[:, None],
                                other=0)
                if INT4:
                    stored = words.to(tl.int32)
                    low = stored & 0xF
                    high = (stored >> 4) & 0xF
                    zero = 8  # the stored code of a zero weight
                    if GROUP_SIZE % 64 == 0:  # one scale per column for the half block
                        group = tl.minimum(k_half // GROUP_SIZE, K // GROUP_SIZE - 1)  # past K: the last group
                        scale = tl.load(scale_cols + group * stride_sg).to(tl.float32)[:, None]
                    else:
                        group = tl.minimum((k_half + 4 * quads) // GROUP_SIZE, K // GROUP_SIZE - 1)
                        scale = tl.load(scale_cols[:, None] + group[None, :] * stride_sg).to(tl.float32)
                else:
                    low = words & 0xFFFF
                    high = (words >> 16) & 0xFFFF
                    zero = 0
                ks = k_half + tl.arange(0, 64)
                if K_RAGGED:  # the last block reaches past K: x is zero there
                    x_half = tl.load(x_rows + ks[None, :], mask=(ks < K)[None, :], other=0.0)
                else:
                    x_half = tl.load(x_rows + ks[None, :])
                # x's column k_half + 4·q + p, with p = 2·i + j: one contiguous load, split per position
                x_even, x_odd = tl.split(tl.reshape(x_half, (BLOCK_M, 16, 2, 2)))
                x_0, x_2 = tl.split(x_even)
                x_1, x_3 = tl.split(x_odd)
                for p in tl.static_range(4):
                    if p == 0:  # a first position is never 3, a second never 0
                        bits = tl.where(first == 0, low, zero)
                    elif p == 3:
                        bits = tl.where(second == 3, high, zero)
                    else:
                        bits = tl.where(first == p, low, tl.where(second == p, high, zero))
                    if INT4:
                        weights = ((bits - 8).to(tl.float32) * scale).to(dtype)
                    else:
                        weights = bits.to(tl.int16).to(dtype, bitcast=True)
                    x = x_0 if p == 0 else (x_1 if p == 1 else (x_2 if p == 2 else x_3))
                    if UPCAST:
                        acc += tl.dot(weights.to(tl.float32), tl.trans(x.to(tl.float32)))
                    else:
                        acc = tl.dot(weights, tl.trans(x), acc)
        row_ok = rows < M
        store_split_k(acc, out_ptr + rows[None, :] * stride_om + cols[:, None],
                      sums_ptr + rows[None, :] * N + cols[:, None], row_ok[None, :] & col_ok[:, None],
                      bias_ptr + cols[:, None], col_ok[:, None], arrivals_ptr + pid, HAS_BIAS, SPLIT_K)

    _CONFIGS = [
        triton.Config({"BLOCK_M": m, "BLOCK_N": n, "SPLIT_K": s}, num_warps=w, num_stages=st)
        for m, n, s, w, st in [
            (16, 128, 4, 4, 3), (16, 64, 4, 4, 3), (16, 128, 2, 8, 3), (16, 64, 8, 4, 3), (32, 128, 2, 4, 3),
            (32, 64, 4, 4, 3), (64, 128, 1, 8, 3), (64, 128, 2, 4, 3), (64, 64, 2, 4, 3), (64, 256, 1, 8, 3),
            (128, 128, 1, 8, 3), (128, 64, 1, 4, 3), (128, 256, 1, 8, 3),
        ]
    ]

    def _prune(configs: list, named_args: dict, **kwargs: object) -> list:
        """Tiles taller than the (bucketed) M only waste the tensor cores."""
        m_bucket = int({**named_args, **kwargs}["M_BUCKET"])
        return [c for c in configs if c.kwargs["BLOCK_M"] <= m_bucket] or configs[:1]

    _sparse24_autotuned = autotune(_CONFIGS, ["M_BUCKET", "N", "K", "INT4", "GROUP_SIZE"], _prune)(_sparse24_kernel)


def sparse24_matmul(
    x: torch.Tensor, words: torch.Tensor, positions: torch.Tensor, scale: torch.Tensor | None = None,
    group_size: int = 0, bias: torch.Tensor | None = None, out: torch.Tensor | None = None,
    config: dict | None = None,
) -> torch.Tensor:
    """x [M, K] bf16/fp16 times a 2:4 weight in the pair layout (to_kernel_layout_24): words [K' / 4, N] int32
    (values in x's dtype) or, with `scale` [N, K / group_size], int8 (int4 codes); positions int8 [K' / 8, N].

    On CUDA, up to GEMV_CANDIDATE_ROWS rows run the faster of the GEMV (kernels/sparse24_gemv.py) and the
    tensor-core tile, timed once per shape; `config` pins a tile, or with {"GEMV": True, ...} a GEMV tile (tests,
    the interpreter)."""
    require_triton()
    if x.dtype not in (torch.bfloat16, torch.float16) or x.dim() != 2 or x.stride(-1) != 1:
        raise ValueError(f"x must be a row-major 2-D bf16 or fp16 tensor, got {x.dtype} {tuple(x.shape)}")
    m, k = x.shape
    n = positions.shape[1]
    rows = pair_layout_rows(k)
    int4 = scale is not None
    if k % 32 or positions.shape != (rows // 2, n) or positions.dtype != torch.int8 or not positions.is_contiguous():
        raise ValueError(f"positions must be a contiguous int8 [{rows // 2}, N] tensor and K={k} a multiple of 32")
    expected = torch.int8 if int4 else torch.int32
    if (tuple(words.shape), words.dtype) != ((rows, n), expected) or not words.is_contiguous():
        raise ValueError(f"words must be contiguous {expected} [{rows}, {n}], got {words.dtype} "
                         f"{list(words.shape)}")
    if int4 and (not group_size or k % group_size or group_size % 32 or scale.shape != (n, k // group_size)):
        raise ValueError(f"scale must be [{n}, K / group_size] with group_size a multiple of 32 dividing K={k}")
    if bias is not None and bias.shape != (n,):
        raise ValueError(f"bias must be [{n}]")
    if out is not None and (out.shape != (m, n) or out.dtype != x.dtype or out.stride(-1) != 1):
        raise ValueError(f"out must be a row-major [{m}, {n}] {x.dtype} tensor")
    target = out if out is not None else torch.empty(m, n, device=x.device, dtype=x.dtype)
    # tiles are never smaller than 16 x 16 and GEMV tiles one row by 16: this many counters cover either
    sums, arrivals = split_k_workspace(x.device, m * n, triton.cdiv(m, 16) * 16 * triton.cdiv(n, 16))
    pinned = dict(config or {})
    if pinned.pop("GEMV", False):
        run_sparse24_gemv(x, words, positions, scale, group_size, bias, target, sums, arrivals, pinned)
        return target

    def grid(meta: dict) -> tuple[int, int]:
        return (triton.cdiv(m, meta["BLOCK_M"]) * triton.cdiv(n, meta["BLOCK_N"]), meta["SPLIT_K"])

    scale_arg = scale if int4 else words
    args = (x, words, positions, scale_arg, bias if bias is not None else scale_arg, target, sums, arrivals, m, n, k,
            x.stride(0), words.stride(0), positions.stride(0), *(scale.stride() if int4 else (0, 0)), target.stride(0))
    flags = {"M_BUCKET": max(16, triton.next_power_of_2(m)), "INT4": int4, "GROUP_SIZE": group_size or 32,
             "HAS_BIAS": bias is not None, "K_RAGGED": k % PAIR_BLOCK != 0, **launch_options(x.device)}
    if config is None and x.is_cuda:
        def tile() -> None:
            _sparse24_autotuned[grid](*args, **flags, UPCAST=False)

        def gemv() -> None:
            run_sparse24_gemv(x, words, positions, scale, group_size, bias, target, sums, arrivals, None)

        chosen = tile
        if m <= GEMV_CANDIDATE_ROWS:
            key = ("2:4 gemv or tile", m, n, k, x.dtype, group_size, bias is not None, x.device)
            chosen = tile if second_is_faster(key, gemv, tile) else gemv
        chosen()
    else:
        config = {"BLOCK_M": 16, "BLOCK_N": 32, "SPLIT_K": 1, **(config or {})}
        if config["BLOCK_M"] < 16 or config["BLOCK_N"] < 16:
            raise ValueError("tiles are at least 16 x 16 (the split-K counters are sized for that)")
        _sparse24_kernel[grid(config)](*args, **flags, UPCAST=interpreted(), **config)
    return target
