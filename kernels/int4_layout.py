"""How int4 weights are laid out. Checkpoints hold compressed-tensors "pack-quantized" weights: eight 4-bit codes
per int32 along the input dimension (little-endian nibbles, stored as code + 8), [N, K / 8]. The kernels read
them repacked once at load time to [K / 8, N] (to_kernel_layout), where a tile's words are contiguous along N."""

from __future__ import annotations

import torch

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
