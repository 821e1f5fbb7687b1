"""8-bit weight matmuls: y = (x_codes · W_codesᵀ) * x_scale[m] * w_scale[n], the scales applied once in the
epilogue to the int32 (int8) or fp32 (FP8) accumulator, so the tensor cores run on 8-bit operands.

The weight stays in the checkpoint's layout, [N, K] row-major: that is K-major for the second operand, which
Hopper's 8-bit tensor-core instructions require. With bf16/fp16 activations (weight-only W8A16) the 8-bit
tile is widened to the activation dtype in registers and only the weight's bytes cross HBM.

GPUs before sm_89 (A100, A10, ...) have no FP8 tensor cores and Triton has no FP8 type there: FP8 weights then
run weight-only, read as bytes and rebuilt exactly by integer arithmetic (`fp8_tensor_cores`, `_e4m3_value`).
"""

from __future__ import annotations

import functools

import torch

from kernels.dependent_launch import allow_next_launch, launch_options, wait_for_previous
from kernels.split_k import split_k_workspace, store_split_k
from kernels.triton_support import interpreted, require_triton, triton
from kernels.tuning import autotune, second_is_faster
from kernels.w8a8_tma import scaled_matmul_tma, tma_eligible

if triton is not None:
    import triton.language as tl

    from kernels.w8a8_tma import tile_position

WEIGHT_DTYPES = (torch.int8, torch.float8_e4m3fn)
TMA_FROM_ROWS = 33  # from the 64-row bucket on, W8A8 may run the persistent TMA kernel (w8a8_tma.py) on Hopper
ACTIVATION_DTYPES = (torch.int8, torch.float8_e4m3fn, torch.bfloat16, torch.float16)


def scaled_matmul_reference(
    x: torch.Tensor, x_scale: torch.Tensor | None, weight: torch.Tensor, w_scale: torch.Tensor,
    out_dtype: torch.dtype, bias: torch.Tensor | None = None,
) -> torch.Tensor:
    """fp32 (x * x_scale) @ (weight * w_scale)ᵀ (+ bias), cast to out_dtype."""
    xs = x.float() if x_scale is None else x.float() * x_scale.float()[:, None]
    y = xs @ (weight.float() * w_scale.float()[:, None]).T
    if bias is not None:
        y = y + bias.float()
    return y.to(out_dtype)


@functools.cache
def fp8_tensor_cores(device: torch.device) -> bool:
    """Whether `device` multiplies FP8 natively: CUDA from sm_89, or Triton's CPU interpreter, which emulates it."""
    return device.type != "cuda" or torch.cuda.get_device_capability(device) >= (8, 9)


if triton is not None:

    @triton.jit
    def _e4m3_value(bits):
        """FP8 E4M3 bytes as their exact fp32 values, by integer arithmetic: exponent and mantissa move under
        fp32's, and the product with 2^(127 - 7) restores the exponent bias (E4M3's subnormals land on fp32
        subnormals, which that product scales exactly). The NaN code (0x7F) is not kept: checkpoints hold none."""
        code = bits.to(tl.int32)
        return (((code & 0x7F) << 20) | ((code & 0x80) << 24)).to(tl.float32, bitcast=True) * 2.0 ** 120

    @triton.jit
    def _scaled_matmul_kernel(
        x_ptr, xs_ptr, w_ptr, ws_ptr, bias_ptr, out_ptr, sums_ptr, arrivals_ptr,
        M, N, K, stride_xm, stride_wn, stride_om,
        M_BUCKET, HAS_X_SCALE: tl.constexpr, HAS_BIAS: tl.constexpr, UPCAST: tl.constexpr,
        BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, SPLIT_K: tl.constexpr,
        GROUP_M: tl.constexpr,
        SWAP_AB: tl.constexpr = False,  # weight-only: the tile computed transposed (see below)
        DEPENDENT: tl.constexpr = False,  # launched dependent on the previous kernel (kernels/dependent_launch.py)
    ):
        """x · Wᵀ tile by tile. With SWAP_AB (weight-only) the tile is computed transposed, (W xᵀ)ᵀ, as the W4A16
        kernel does: the widened weight tile is then the MMA's first operand, which Hopper reads from registers,
        where as the second it went through shared memory on every step; and a short M is the narrow side."""
        allow_next_launch(DEPENDENT)
        wait_for_previous(DEPENDENT)
        pid = tl.program_id(0)
        split = tl.program_id(1)
        tile_m, tile_n = tile_position(pid, tl.cdiv(M, BLOCK_M), tl.cdiv(N, BLOCK_N), GROUP_M)
        rows = tile_m * BLOCK_M + tl.arange(0, BLOCK_M)
        cols = tile_n * BLOCK_N + tl.arange(0, BLOCK_N)
        row_ok = rows < M
        col_ok = cols < N
        if SWAP_AB:
            acc = tl.zeros((BLOCK_N, BLOCK_M), dtype=tl.float32)
        elif UPCAST or x_ptr.dtype.element_ty == tl.float8e4nv:
            acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
        elif x_ptr.dtype.element_ty == tl.int8:
            acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.int32)
        else:
            acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
        for k0 in range(split * BLOCK_K, K, BLOCK_K * SPLIT_K):
            ks = k0 + tl.arange(0, BLOCK_K)
            k_ok = ks < K
            x = tl.load(x_ptr + rows[:, None] * stride_xm + ks[None, :], mask=row_ok[:, None] & k_ok[None, :],
                        other=0.0)
            w = tl.load(w_ptr + cols[:, None] * stride_wn + ks[None, :], mask=col_ok[:, None] & k_ok[None, :],
                        other=0.0)
            if w_ptr.dtype.element_ty == tl.uint8:  # FP8 weights as bytes (no FP8 on this GPU), x bf16/fp16
                w = _e4m3_value(w)
            if SWAP_AB:
                if UPCAST:
                    acc += tl.dot(w.to(tl.float32), tl.trans(x.to(tl.float32)))
                else:
                    acc = tl.dot(w.to(x_ptr.dtype.element_ty), tl.trans(x), acc)
            elif UPCAST:  # the interpreter's dots are checked in fp32 (exact for these small integer products)
                acc += tl.dot(x.to(tl.float32), tl.trans(w.to(tl.float32)))
            elif x_ptr.dtype.element_ty == w_ptr.dtype.element_ty:
                acc += tl.dot(x, tl.trans(w))
            else:  # weight-only: widen the 8-bit weight tile to the activation dtype
                acc += tl.dot(x, tl.trans(w.to(x_ptr.dtype.element_ty)))
        if SWAP_AB:  # weight-only: no x scale
            y = acc * tl.load(ws_ptr + cols, mask=col_ok, other=0.0)[:, None]
            store_split_k(y, out_ptr + rows[None, :] * stride_om + cols[:, None],
                          sums_ptr + rows[None, :] * N + cols[:, None], row_ok[None, :] & col_ok[:, None],
                          bias_ptr + cols[:, None], col_ok[:, None], arrivals_ptr + pid, HAS_BIAS, SPLIT_K)
        else:
            y = acc.to(tl.float32) * tl.load(ws_ptr + cols, mask=col_ok, other=0.0)[None, :]
            if HAS_X_SCALE:
                y = y * tl.load(xs_ptr + rows, mask=row_ok, other=0.0)[:, None]
            store_split_k(y, out_ptr + rows[:, None] * stride_om + cols[None, :],
                          sums_ptr + rows[:, None] * N + cols[None, :], row_ok[:, None] & col_ok[None, :],
                          bias_ptr + cols[None, :], col_ok[None, :], arrivals_ptr + pid, HAS_BIAS, SPLIT_K)

    _CONFIGS = [
        triton.Config({"BLOCK_M": m, "BLOCK_N": n, "BLOCK_K": k, "SPLIT_K": s, "GROUP_M": 8},
                      num_warps=w, num_stages=st)
        for m, n, k, s, w, st in [
            (16, 64, 256, 1, 4, 4), (16, 64, 256, 2, 4, 4), (16, 128, 128, 4, 4, 4), (16, 64, 128, 8, 4, 4),
            (16, 128, 256, 1, 4, 4), (32, 64, 256, 2, 4, 4), (32, 128, 128, 1, 4, 4),
            (64, 64, 128, 1, 4, 4), (64, 128, 128, 1, 4, 4), (64, 128, 128, 2, 4, 4), (64, 256, 128, 1, 8, 3),
            (128, 128, 128, 1, 8, 3), (128, 256, 128, 1, 8, 3), (128, 128, 64, 1, 4, 4),
            (128, 256, 128, 1, 8, 4), (256, 128, 128, 1, 8, 3), (128, 128, 128, 1, 4, 4), (64, 256, 128, 1, 4, 4),
            (128, 256, 64, 1, 8, 4), (256, 128, 64, 1, 8, 4), (128, 128, 128, 1, 8, 4),
            # K slices for narrow outputs at prefill sizes (N = 4096: 32 tiles of 128 x 128 for 132 SMs)
            (128, 128, 128, 4, 8, 3), (64, 128, 128, 4, 4, 4), (128, 64, 128, 2, 4, 4),
            # narrow, deep tiles: 128 programs on a 4096-wide output without K slices (H200, int8, 64 rows: 4096 x
            # 4096 9.6 us and 14336 x 4096 23.9 us, against 11.6 and 29.7 for the best tiles above)
            (64, 32, 256, 1, 4, 4), (64, 64, 256, 1, 4, 4), (64, 32, 256, 2, 4, 4), (64, 32, 128, 4, 4, 4),
        ]
    ]

    def _prune(configs: list, named_args: dict, **kwargs: object) -> list:
        """Tiles taller than the (bucketed) M only waste the tensor cores."""
        m_bucket = int({**named_args, **kwargs}["M_BUCKET"])
        return [c for c in configs if c.kwargs["BLOCK_M"] <= max(16, m_bucket)] or configs[:1]

    _scaled_matmul_autotuned = autotune(_CONFIGS, ["M_BUCKET", "N", "K"], _prune)(_scaled_matmul_kernel)

    # weight-only (W8A16): the tiles above, and transposed ones whose BLOCK_N (64 rows a warp group) is the MMA's
    # long side
    _WEIGHT_ONLY_CONFIGS = _CONFIGS + [
        triton.Config({"BLOCK_M": m, "BLOCK_N": n, "BLOCK_K": k, "SPLIT_K": s, "GROUP_M": 8, "SWAP_AB": True},
                      num_warps=w, num_stages=st)
        for m, n, k, s, w, st in [
            (16, 128, 128, 4, 4, 4), (16, 64, 256, 2, 4, 4), (16, 128, 256, 2, 4, 3), (16, 256, 128, 2, 8, 3),
            (16, 64, 128, 8, 4, 4), (32, 128, 128, 2, 4, 4), (32, 64, 256, 2, 4, 4), (64, 128, 128, 1, 4, 4),
            (64, 128, 128, 2, 4, 4), (64, 64, 128, 4, 4, 4), (64, 256, 128, 1, 8, 3), (128, 128, 128, 1, 8, 3),
            (128, 64, 128, 2, 4, 4),
        ]
    ]
    _weight_only_autotuned = autotune(_WEIGHT_ONLY_CONFIGS, ["M_BUCKET", "N", "K"], _prune)(_scaled_matmul_kernel)


@functools.cache
def _has_tma(device: torch.device) -> bool:
    return torch.cuda.get_device_capability(device)[0] >= 9


def _tma_candidate(x: torch.Tensor, x_scale: torch.Tensor | None, weight: torch.Tensor, config: dict | None) -> bool:
    """Pinned by `config["TMA"]` (tests); else quantized x of at least TMA_FROM_ROWS rows on a Hopper or later
    GPU, with operands a TMA descriptor can address."""
    if config is not None and config.get("TMA"):
        if x_scale is None or not tma_eligible(x, weight):
            raise ValueError("the TMA kernel takes 8-bit x and weight of one type, 16-byte aligned rows")
        return True
    return (config is None and x_scale is not None and x.is_cuda and x.shape[0] >= TMA_FROM_ROWS
            and _has_tma(x.device) and tma_eligible(x, weight))


def scaled_matmul(
    x: torch.Tensor, x_scale: torch.Tensor | None, weight: torch.Tensor, w_scale: torch.Tensor,
    out_dtype: torch.dtype = torch.bfloat16, bias: torch.Tensor | None = None, out: torch.Tensor | None = None,
    config: dict | None = None,
) -> torch.Tensor:
    """x [M, K] codes (int8/FP8, with fp32 per-row x_scale [M]) or bf16/fp16 (x_scale None) times the 8-bit
    weight [N, K] with fp32 per-channel w_scale [N]; out [M, N] in out_dtype. `config` pins a tile (tests;
    with "TMA": True, of the TMA kernel; with "FP8_BYTES": True, FP8 weights read as bytes, as on GPUs
    without FP8)."""
    require_triton()
    if weight.dtype not in WEIGHT_DTYPES or weight.dim() != 2 or weight.stride(-1) != 1:
        raise ValueError(f"weight must be a row-major int8 or float8_e4m3fn [N, K] tensor, got {weight.dtype}")
    if x.dtype not in ACTIVATION_DTYPES or x.dim() != 2 or x.stride(-1) != 1:
        raise ValueError(f"x must be a row-major 2-D int8, float8_e4m3fn, bf16 or fp16 tensor, got {x.dtype}")
    quantized_x = x.dtype in WEIGHT_DTYPES
    if quantized_x and x.dtype != weight.dtype:
        raise ValueError(f"x codes ({x.dtype}) and weight ({weight.dtype}) must be the same 8-bit type")
    if quantized_x != (x_scale is not None):
        raise ValueError("x_scale is required with 8-bit x and must be None with bf16/fp16 x")
    m, k = x.shape
    n = weight.shape[0]
    if weight.shape[1] != k:
        raise ValueError(f"x has K={k} but weight is {tuple(weight.shape)}")
    if w_scale.shape != (n,) or w_scale.dtype != torch.float32:
        raise ValueError(f"w_scale must be fp32 [{n}], got {w_scale.dtype} {tuple(w_scale.shape)}")
    if x_scale is not None and (x_scale.shape != (m,) or x_scale.dtype != torch.float32):
        raise ValueError(f"x_scale must be fp32 [{m}]")
    if bias is not None and bias.shape != (n,):
        raise ValueError(f"bias must be [{n}]")
    if out is not None and (out.shape != (m, n) or out.dtype != out_dtype or out.stride(-1) != 1):
        raise ValueError(f"out must be a row-major [{m}, {n}] {out_dtype} tensor")
    config = dict(config) if config is not None else None
    as_bytes = config.pop("FP8_BYTES", False) if config is not None else False
    if weight.dtype == torch.float8_e4m3fn and not fp8_tensor_cores(x.device):
        if quantized_x:
            raise ValueError(f"{x.device} has no FP8 tensor cores (they start at sm_89): give FP8 weights "
                             f"bf16/fp16 activations (weight-only)")
        as_bytes = True
    if as_bytes:
        if weight.dtype != torch.float8_e4m3fn or quantized_x:
            raise ValueError("FP8_BYTES reads FP8 weights as bytes for bf16/fp16 activations")
        weight = weight.view(torch.uint8)
    target = out if out is not None else torch.empty(m, n, device=x.device, dtype=out_dtype)
    if _tma_candidate(x, x_scale, weight, config):
        tile = None if config is None else {key: value for key, value in config.items() if key != "TMA"}

        def tma() -> None:
            scaled_matmul_tma(x, x_scale, weight, w_scale, bias, target, tile)

        def pointer() -> None:
            _pointer_matmul(x, x_scale, weight, w_scale, bias, target, None)

        key = ("tma or pointer", max(16, triton.next_power_of_2(m)), n, k, x.dtype, out_dtype, bias is not None,
               x.device)
        (pointer if tile is None and second_is_faster(key, tma, pointer) else tma)()
        return target
    return _pointer_matmul(x, x_scale, weight, w_scale, bias, target, config)


def _pointer_matmul(
    x: torch.Tensor, x_scale: torch.Tensor | None, weight: torch.Tensor, w_scale: torch.Tensor,
    bias: torch.Tensor | None, target: torch.Tensor, config: dict | None,
) -> torch.Tensor:
    """The pointer kernel, autotuned on CUDA unless `config` pins a tile; arguments checked by scaled_matmul."""
    m, k = x.shape
    n = weight.shape[0]
    quantized_x = x_scale is not None
    sums, arrivals = split_k_workspace(x.device, m * n, triton.cdiv(m, 16) * triton.cdiv(n, 16))

    def grid(meta: dict) -> tuple[int, int]:
        return (triton.cdiv(m, meta["BLOCK_M"]) * triton.cdiv(n, meta["BLOCK_N"]), meta["SPLIT_K"])

    args = (x, x_scale if x_scale is not None else w_scale, weight, w_scale, bias if bias is not None else w_scale,
            target, sums, arrivals, m, n, k, x.stride(0), weight.stride(0), target.stride(0))
    flags = {"M_BUCKET": max(16, triton.next_power_of_2(m)), "HAS_X_SCALE": quantized_x,
             "HAS_BIAS": bias is not None, **launch_options(x.device)}
    if config is None and x.is_cuda:
        (_scaled_matmul_autotuned if quantized_x else _weight_only_autotuned)[grid](*args, **flags, UPCAST=False)
    else:
        config = {"BLOCK_M": 16, "BLOCK_N": 32, "BLOCK_K": 32, "SPLIT_K": 1, "GROUP_M": 4, **(config or {})}
        if config["BLOCK_M"] < 16 or config["BLOCK_N"] < 16:
            raise ValueError("tiles are at least 16 x 16 (the split-K counters are sized for that)")
        if config.get("SWAP_AB") and quantized_x:
            raise ValueError("SWAP_AB tiles are for weight-only (bf16/fp16 x)")
        _scaled_matmul_kernel[grid(config)](*args, **flags, UPCAST=interpreted(), **config)
    return target
