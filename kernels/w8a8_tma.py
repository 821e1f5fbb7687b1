"""W8A8 (int8 and FP8) at prefill sizes: a persistent matmul whose operand tiles arrive by TMA.

From a few dozen rows on (w8a8.TMA_FROM_ROWS), an 8-bit matmul leans on the tensor cores as much as on
HBM, and what the pointer kernel in w8a8.py lacks there is the Hopper copy engine: TMA moves each tile into
shared memory with one instruction (no address arithmetic, no masks: out-of-bounds rows and columns arrive as
zeros) while the warps keep the tensor cores busy. One program per SM walks the output tiles in grouped order, so the
launch has no tail wave of half-idle SMs and the next tile's loads start under the current tile's epilogue;
outputs with too few tiles for the SMs split K as well.

TMA needs 16-byte aligned bases and row strides (`tma_eligible`); anything else stays on the pointer kernel.
Where both can run, w8a8.scaled_matmul times them once per shape and keeps the faster (on an H200 the pointer
kernel won on 4096-wide outputs at 64 rows)."""

from __future__ import annotations

import torch

from kernels.dependent_launch import allow_next_launch, launch_options, wait_for_previous
from kernels.split_k import split_k_workspace, store_split_k
from kernels.triton_support import interpreted, triton
from kernels.tuning import autotune

if triton is not None:
    import triton.language as tl
    from triton.tools.tensor_descriptor import TensorDescriptor


def tma_eligible(x: torch.Tensor, weight: torch.Tensor) -> bool:
    """Both operands 8-bit codes of one type, with the 16-byte alignment a TMA descriptor requires."""
    return (x.dtype == weight.dtype and x.data_ptr() % 16 == 0 and weight.data_ptr() % 16 == 0
            and (x.stride(0) * x.element_size()) % 16 == 0 and (weight.stride(0) * weight.element_size()) % 16 == 0)


if triton is not None:

    @triton.jit
    def tile_position(tile, tiles_m, tiles_n, GROUP_M: tl.constexpr):
        """(row tile, column tile) of output tile `tile` in grouped order: GROUP_M row tiles share each weight
        tile while it is still in L2 (the pointer kernel in w8a8.py walks the same order)."""
        per_group = GROUP_M * tiles_n
        first_m = (tile // per_group) * GROUP_M
        group_rows = min(tiles_m - first_m, GROUP_M)
        return first_m + (tile % per_group) % group_rows, (tile % per_group) // group_rows

    @triton.jit
    def _scaled_matmul_tma_kernel(
        x_desc, w_desc, xs_ptr, ws_ptr, bias_ptr, out_ptr, sums_ptr, arrivals_ptr, M, N, K, stride_om,
        M_BUCKET, INT8: tl.constexpr, HAS_BIAS: tl.constexpr, UPCAST: tl.constexpr,
        BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, GROUP_M: tl.constexpr,
        SPLIT_K: tl.constexpr,
        DEPENDENT: tl.constexpr,  # launched dependent on the previous kernel (kernels/dependent_launch.py)
    ):
        """Work unit u is K slice u % SPLIT_K of tile u // SPLIT_K: a narrow output (N = 4096) has too few tiles
        to fill the SMs, and its slices meet in the split-K workspace (kernels/split_k.py)."""
        allow_next_launch(DEPENDENT)
        wait_for_previous(DEPENDENT)
        tiles_m = tl.cdiv(M, BLOCK_M)
        tiles_n = tl.cdiv(N, BLOCK_N)
        steps = tl.cdiv(K, BLOCK_K)
        per_split = tl.cdiv(steps, SPLIT_K)
        for unit in tl.range(tl.program_id(0), tiles_m * tiles_n * SPLIT_K, tl.num_programs(0), flatten=True):
            tile = unit // SPLIT_K
            first = (unit % SPLIT_K) * per_split
            tile_m, tile_n = tile_position(tile, tiles_m, tiles_n, GROUP_M)
            if INT8 and not UPCAST:
                acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.int32)
            else:
                acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
            for step in range(first, min(first + per_split, steps)):
                x = x_desc.load([tile_m * BLOCK_M, step * BLOCK_K])
                w = w_desc.load([tile_n * BLOCK_N, step * BLOCK_K])
                if UPCAST:  # the interpreter's 8-bit dots are checked in fp32 (exact for these integer products)
                    acc += tl.dot(x.to(tl.float32), tl.trans(w.to(tl.float32)))
                elif INT8:
                    acc = tl.dot(x, tl.trans(w), acc, out_dtype=tl.int32)
                else:
                    acc = tl.dot(x, tl.trans(w), acc)
            rows = tile_m * BLOCK_M + tl.arange(0, BLOCK_M)
            cols = tile_n * BLOCK_N + tl.arange(0, BLOCK_N)
            row_ok = rows < M
            col_ok = cols < N
            y = acc.to(tl.float32) * tl.load(ws_ptr + cols, mask=col_ok, other=0.0)[None, :]
            y = y * tl.load(xs_ptr + rows, mask=row_ok, other=0.0)[:, None]
            store_split_k(y, out_ptr + rows[:, None] * stride_om + cols[None, :],
                          sums_ptr + rows[:, None] * N + cols[None, :], row_ok[:, None] & col_ok[None, :],
                          bias_ptr + cols[None, :], col_ok[None, :], arrivals_ptr + tile, HAS_BIAS, SPLIT_K)

    def _block_shapes(nargs: dict) -> None:
        """A descriptor's box is the config's tile: set before every launch the autotuner makes."""
        nargs["x_desc"].block_shape = [nargs["BLOCK_M"], nargs["BLOCK_K"]]
        nargs["w_desc"].block_shape = [nargs["BLOCK_N"], nargs["BLOCK_K"]]

    _CONFIGS = [
        triton.Config({"BLOCK_M": m, "BLOCK_N": n, "BLOCK_K": k, "SPLIT_K": split, "GROUP_M": 8}, num_warps=w,
                      num_stages=st, pre_hook=_block_shapes)
        for m, n, k, split, w, st in [  # the leaders of a sweep over 13 tiles at M = 64, 128, 256 (H200, FP8)
            (64, 256, 128, 1, 8, 4), (64, 256, 128, 1, 4, 4), (64, 128, 256, 1, 4, 3), (128, 256, 128, 1, 8, 4),
            (128, 256, 128, 1, 8, 3), (128, 256, 64, 1, 8, 4), (128, 128, 256, 1, 8, 3), (128, 128, 128, 1, 4, 4),
            (256, 128, 128, 1, 8, 3),
            # K slices for narrow outputs (N = 4096: 16 to 32 tiles for 132 SMs)
            (64, 128, 128, 4, 4, 4), (64, 128, 256, 2, 4, 3), (64, 256, 128, 2, 8, 4), (128, 128, 128, 2, 4, 4),
            (128, 256, 128, 2, 8, 4), (128, 128, 128, 4, 8, 4), (128, 128, 256, 4, 8, 3), (64, 128, 256, 4, 4, 3),
            (64, 128, 128, 8, 4, 4), (128, 64, 128, 4, 4, 4),
        ]
    ]

    def _prune(configs: list, named_args: dict, **kwargs: object) -> list:
        """Tiles taller than the (bucketed) M only waste the tensor cores."""
        m_bucket = int({**named_args, **kwargs}["M_BUCKET"])
        return [c for c in configs if c.kwargs["BLOCK_M"] <= max(64, m_bucket)] or configs[:1]

    _scaled_matmul_tma_autotuned = autotune(_CONFIGS, ["M_BUCKET", "N", "K", "INT8"], _prune)(_scaled_matmul_tma_kernel)


def _programs(device: torch.device, tiles: int) -> int:
    """One program per SM (fewer when there are fewer tiles)."""
    if device.type != "cuda":
        return min(tiles, 4)  # the interpreter: a few programs, each walking several tiles
    return min(tiles, torch.cuda.get_device_properties(device).multi_processor_count)


def scaled_matmul_tma(
    x: torch.Tensor, x_scale: torch.Tensor, weight: torch.Tensor, w_scale: torch.Tensor,
    bias: torch.Tensor | None, out: torch.Tensor, config: dict | None = None,
) -> torch.Tensor:
    """out [M, N] = (x codes [M, K] · weight [N, K]ᵀ) * x_scale[m] * w_scale[n] (+ bias), both operands int8 or
    both FP8 (`tma_eligible`); arguments already checked by w8a8.scaled_matmul. `config` pins a tile (tests)."""
    m, k = x.shape
    n = weight.shape[0]
    x_desc = TensorDescriptor.from_tensor(x, [16, 16])  # boxes set per config (_block_shapes)
    w_desc = TensorDescriptor.from_tensor(weight, [16, 16])

    def grid(meta: dict) -> tuple[int]:
        units = triton.cdiv(m, meta["BLOCK_M"]) * triton.cdiv(n, meta["BLOCK_N"]) * meta["SPLIT_K"]
        return (_programs(x.device, units),)

    sums, arrivals = split_k_workspace(x.device, m * n, triton.cdiv(m, 16) * triton.cdiv(n, 16))
    args = (x_desc, w_desc, x_scale, w_scale, bias if bias is not None else w_scale, out, sums, arrivals,
            m, n, k, out.stride(0))
    flags = {"M_BUCKET": max(16, triton.next_power_of_2(m)), "INT8": weight.dtype == torch.int8,
             "HAS_BIAS": bias is not None, **launch_options(x.device)}
    if config is None:
        _scaled_matmul_tma_autotuned[grid](*args, **flags, UPCAST=False)
    else:
        config = {"GROUP_M": 4, "SPLIT_K": 1, **config}
        if config["BLOCK_M"] < 16 or config["BLOCK_N"] < 16:
            raise ValueError("tiles are at least 16 x 16 (the split-K counters are sized for that)")
        _block_shapes({"x_desc": x_desc, "w_desc": w_desc, **config})
        _scaled_matmul_tma_kernel[grid(config)](*args, **flags, UPCAST=interpreted(), **config)
    return out
