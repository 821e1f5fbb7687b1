"""How int4 weights are laid out. Checkpoints hold compressed-tensors "pack-quantized" weights: eight 4-bit codes
per int32 along the input dimension (little-endian nibbles, stored as code + 8), [N, K / 8]. The kernels read
them repacked once at load time into the quad layout (to_kernel_layout / pack_kernel_layout):

int16 [K' / 4, N'] (K' = K rounded up to QUAD_BLOCK, N' = N rounded up to even), four codes of one output column
per element. Input column k = QUAD_BLOCK·b + 32·j + r of output column n sits in row 32·b + r, column n, bits
4j .. 4j + 3 (stored + 8). So a tile's rows are contiguous along N, and one shift and mask of a tile gives the
codes of 32 consecutive input columns: the tensor-core kernel dequantizes with elementwise operations alone,
which lets Triton keep the dequantized tile in registers as the MMA's first operand instead of staging it in
shared memory. Two neighbouring columns form one int32, which the GEMV reads as [K' / 4, N' / 2] words."""

from __future__ import annotations

import torch

QUAD_BLOCK = 128  # input columns per row block of the quad layout (4 nibble positions x 32 rows)
QUAD_ROWS = QUAD_BLOCK // 4


def unpack_int4(packed: torch.Tensor, in_features: int) -> torch.Tensor:
    """int8 codes [N, K] in [-8, 7] from packed int32 [N, K / 8] (little-endian nibbles, offset by 8)."""
    shifts = torch.arange(0, 32, 4, device=packed.device, dtype=torch.int32)
    nibbles = (packed.unsqueeze(-1) >> shifts) & 0xF
    return (nibbles.reshape(packed.shape[0], -1)[:, :in_features] - 8).to(torch.int8)


def group_nibbles(group_size: int) -> int:
    """How many of a row block's 4 nibble positions (32 input columns each) share one scale: all 4 for groups of
    whole blocks, group_size / 32 for groups that divide a block, else 1 (a block straddles two groups, as with
    96 or 192). 32 divides every group size the kernels take, so one position never spans two groups."""
    if group_size % QUAD_BLOCK == 0:
        return 4
    return group_size // QUAD_ROWS if QUAD_BLOCK % group_size == 0 else 1


def kernel_layout_shape(in_features: int, out_features: int) -> tuple[int, int]:
    """The quad layout's [K' / 4, N'] for a [N, K] weight."""
    rows = -(-in_features // QUAD_BLOCK) * QUAD_ROWS
    return rows, out_features + out_features % 2


def pack_kernel_layout(codes: torch.Tensor) -> torch.Tensor:
    """int8 codes [N, K] in [-8, 7] into the quad layout (padding codes are 0: a zero weight)."""
    n, k = codes.shape
    rows, columns = kernel_layout_shape(k, n)
    stored = torch.full((columns, rows * 4), 8, dtype=torch.int32, device=codes.device)
    stored[:n, :k] = codes.to(torch.int32) + 8
    # [N', K'] -> [blocks, 4 (j), 32 (r), N']: k = QUAD_BLOCK·b + 32·j + r
    blocked = stored.T.reshape(rows // QUAD_ROWS, 4, QUAD_ROWS, columns)
    shifts = torch.arange(0, 16, 4, device=codes.device, dtype=torch.int32)
    words = (blocked << shifts[None, :, None, None]).sum(dim=1, dtype=torch.int32).reshape(rows, columns)
    return torch.where(words >= 1 << 15, words - (1 << 16), words).to(torch.int16).contiguous()


def unpack_kernel_layout(packed: torch.Tensor, in_features: int, out_features: int) -> torch.Tensor:
    """int8 codes [N, K] back from the quad layout."""
    rows, columns = packed.shape
    shifts = torch.arange(0, 16, 4, device=packed.device, dtype=torch.int32)
    nibbles = (packed.to(torch.int32)[:, None, :] >> shifts[None, :, None]) & 0xF  # [rows, 4 (j), N']
    blocked = nibbles.reshape(rows // QUAD_ROWS, QUAD_ROWS, 4, columns).transpose(1, 2)
    return (blocked.reshape(rows * 4, columns).T[:out_features, :in_features] - 8).to(torch.int8).contiguous()


def to_kernel_layout(packed: torch.Tensor, in_features: int) -> torch.Tensor:
    """The checkpoint's [N, K / 8] words repacked into the quad layout."""
    return pack_kernel_layout(unpack_int4(packed, in_features))


def dequantize_int4(
    packed: torch.Tensor, scale: torch.Tensor, group_size: int, in_features: int,
    zero_point: torch.Tensor | None = None,
) -> torch.Tensor:
    """fp32 [N, K] weight from the checkpoint layout [N, K / 8]."""
    return dequantize_codes(unpack_int4(packed, in_features), scale, group_size, zero_point)


def dequantize_codes(codes: torch.Tensor, scale: torch.Tensor, group_size: int,
                     zero_point: torch.Tensor | None = None) -> torch.Tensor:
    """fp32 [N, K] weight from int8 codes [N, K] and [N, K / G] scales (and zero points)."""
    k = codes.shape[1]
    weight = codes.float()
    if zero_point is not None:
        weight = weight - zero_point.float().repeat_interleave(group_size, dim=1)[:, :k]
    return weight * scale.float().repeat_interleave(group_size, dim=1)[:, :k]
