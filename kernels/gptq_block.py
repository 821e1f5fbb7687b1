"""GPTQ's inner loop over one block of columns, fused into one Triton launch.

Eager torch spends about ten kernel launches on every column (divide, round, clamp, dequantize, error,
rank-1 update...), which makes GPTQ on an 8B model launch-bound. Here each program owns a tile of rows
and walks the block's columns in registers, so a block costs one launch. The plain-torch reference
below is the same algorithm and is what runs on CPU.
"""

from __future__ import annotations

import torch

try:
    import triton
    import triton.language as tl
except ImportError:  # CPU-only installs: the reference path is used
    triton = None


def triton_available() -> bool:
    return triton is not None


def quantize_block_reference(
    block: torch.Tensor,
    h_inv_block: torch.Tensor,
    scale: torch.Tensor,
    zero_point: torch.Tensor,
    column_group: torch.Tensor,
    q_min: int,
    q_max: int,
    pruned: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(codes, errors), both fp32 [rows, columns], for one block.

    block [rows, columns] fp32 (not modified); h_inv_block the block's [columns, columns] slice of the upper
    Cholesky factor of H⁻¹; scale and zero_point [rows, groups] fp32; column_group [columns] the group of
    each column; pruned [rows, columns] bool marks weights that must dequantize to exactly zero.
    """
    block = block.clone()
    codes = torch.empty_like(block)
    errors = torch.empty_like(block)
    groups = column_group.tolist()
    for i, group in enumerate(groups):
        s, z = scale[:, group], zero_point[:, group]
        q = (block[:, i] / s).round_().add_(z).clamp_(q_min, q_max)
        if pruned is not None:
            q = torch.where(pruned[:, i], z, q)
        codes[:, i] = q
        error = (block[:, i] - (q - z) * s) / h_inv_block[i, i]
        block[:, i:].sub_(error.unsqueeze(1) * h_inv_block[i, i:].unsqueeze(0))
        errors[:, i] = error
    return codes, errors


if triton is not None:

    @triton.jit
    def _round_half_even(x):
        below = tl.floor(x)
        rest = x - below
        up = below + 1.0
        below_is_even = (below - 2.0 * tl.floor(below * 0.5)) == 0.0
        nearest = tl.where(rest > 0.5, up, below)
        return tl.where(rest == 0.5, tl.where(below_is_even, below, up), nearest)

    @triton.jit
    def _gptq_block_kernel(
        block_ptr, h_ptr, scale_ptr, zero_ptr, group_ptr, pruned_ptr, codes_ptr, errors_ptr,
        rows, columns, stride_block, stride_out, stride_h, stride_scale, stride_pruned,
        q_min, q_max,
        HAS_PRUNED: tl.constexpr, BLOCK_ROWS: tl.constexpr, BLOCK_COLUMNS: tl.constexpr,
    ):
        row = tl.program_id(0) * BLOCK_ROWS + tl.arange(0, BLOCK_ROWS)
        column = tl.arange(0, BLOCK_COLUMNS)
        row_ok = row < rows
        column_ok = column < columns
        tile_ok = row_ok[:, None] & column_ok[None, :]
        w = tl.load(block_ptr + row[:, None] * stride_block + column[None, :], mask=tile_ok, other=0.0)
        for i in range(0, columns):
            here = column[None, :] == i
            wi = tl.sum(tl.where(here, w, 0.0), axis=1)
            group = tl.load(group_ptr + i)
            s = tl.load(scale_ptr + row * stride_scale + group, mask=row_ok, other=1.0)
            z = tl.load(zero_ptr + row * stride_scale + group, mask=row_ok, other=0.0)
            q = tl.minimum(tl.maximum(_round_half_even(tl.div_rn(wi, s)) + z, q_min), q_max)
            if HAS_PRUNED:
                gone = tl.load(pruned_ptr + row * stride_pruned + i, mask=row_ok, other=0)
                q = tl.where(gone != 0, z, q)
            diagonal = tl.load(h_ptr + i * stride_h + i)
            error = tl.div_rn(wi - (q - z) * s, diagonal)
            h_row = tl.load(h_ptr + i * stride_h + column, mask=column_ok & (column >= i), other=0.0)
            w = w - error[:, None] * h_row[None, :]
            tl.store(codes_ptr + row * stride_out + i, q, mask=row_ok)
            tl.store(errors_ptr + row * stride_out + i, error, mask=row_ok)


def quantize_block(
    block: torch.Tensor,
    h_inv_block: torch.Tensor,
    scale: torch.Tensor,
    zero_point: torch.Tensor,
    column_group: torch.Tensor,
    q_min: int,
    q_max: int,
    pruned: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """quantize_block_reference in one Triton launch; the caller picks it for CUDA tensors (or under
    TRITON_INTERPRET=1 in tests)."""
    if triton is None:
        raise RuntimeError("triton is not installed")
    rows, columns = block.shape
    for name, tensor in (("block", block), ("h_inv_block", h_inv_block), ("scale", scale), ("zero_point", zero_point)):
        if tensor.dtype != torch.float32 or tensor.device != block.device or tensor.stride(-1) != 1:
            raise ValueError(f"{name} must be fp32, row-major, on {block.device}")
    if h_inv_block.shape != (columns, columns) or scale.shape != zero_point.shape or scale.shape[0] != rows:
        raise ValueError(f"shapes disagree: block {block.shape}, h {h_inv_block.shape}, scale {scale.shape}")
    if column_group.shape != (columns,):
        raise ValueError(f"column_group must be [{columns}], got {tuple(column_group.shape)}")
    if pruned is not None and (pruned.shape != block.shape or pruned.stride(-1) != 1):
        raise ValueError(f"pruned must be a row-major {tuple(block.shape)} mask")
    block_columns = triton.next_power_of_2(columns)
    if block_columns > 256:
        raise ValueError(f"at most 256 columns per block, got {columns}")
    codes = torch.empty(rows, columns, device=block.device)
    errors = torch.empty(rows, columns, device=block.device)
    pruned_arg = pruned.view(torch.uint8) if pruned is not None else block
    block_rows = 16
    _gptq_block_kernel[(triton.cdiv(rows, block_rows),)](
        block, h_inv_block, scale, zero_point, column_group.to(device=block.device, dtype=torch.int32),
        pruned_arg, codes, errors,
        rows, columns, block.stride(0), columns, h_inv_block.stride(0), scale.stride(0),
        pruned_arg.stride(0), float(q_min), float(q_max),
        HAS_PRUNED=pruned is not None, BLOCK_ROWS=block_rows, BLOCK_COLUMNS=block_columns,
        num_warps=4,
    )
    return codes, errors
