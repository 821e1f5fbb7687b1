"""How 2:4 sparse weights are stored. compress_24 keeps the two kept weights of every group of four along K and
their positions: values [N, K / 2] and 4 bits of positions per group, eight groups per int32, [N, K / 32].

The kernel reads a load-time repacking, the pair layout (to_kernel_layout_24), built like W4A16's quad layout
(kernels/int4_layout.py): rows run along K in blocks of 32 groups (PAIR_BLOCK = 128 input columns), columns
along N, so a tile is coalesced along N. Row 32·b + r holds group r of block b as one word: both kept values
(bf16/fp16 as an int32, low half the first; int4 codes as one byte, +8, low nibble the first). The positions
sit in a separate int8 array, row 16·b + q holding group q (low nibble) and group q + 16 (high nibble) of block
b, 9 bits per weight in all for bf16 and 3 for int4. The kernel rebuilds the dense weights of input columns
k = 128·b + 64·h + 4·q + p for one half block h and one position p at a time: every step from the loads to the
MMA operand is then elementwise on a [BLOCK_N, 16] tile (the nibble of half h a constant shift), which keeps
the rebuilt tile in registers."""

from __future__ import annotations

import torch

PAIR_BLOCK = 128  # input columns per block of the pair layout (32 groups of four)
GROUPS_PER_WORD = 8  # compress_24's meta: 4-bit position pairs per int32, i.e. 32 weights of K


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
    meta = (nibbles.reshape(n, k // 32, GROUPS_PER_WORD) << _nibble_shifts(weight.device)).sum(-1, dtype=torch.int32)
    return values.contiguous(), meta.contiguous()


def decompress_24(values: torch.Tensor, meta: torch.Tensor) -> torch.Tensor:
    """The dense [N, K] weight back from compress_24's storage."""
    n, half = values.shape
    positions = torch.stack([(nibbles := _nibbles(meta)) & 3, nibbles >> 2], dim=-1).long()
    dense = torch.zeros(n, half // 2, 4, device=values.device, dtype=values.dtype)
    dense.scatter_(-1, positions, values.reshape(n, half // 2, 2))
    return dense.reshape(n, 2 * half)


def pair_layout_rows(in_features: int) -> int:
    """Rows of the pair layout's words ([rows, N]); its positions have half as many."""
    return -(-in_features // PAIR_BLOCK) * (PAIR_BLOCK // 4)


def to_kernel_layout_24(values: torch.Tensor, meta: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """compress_24's storage in the pair layout: words [K' / 4, N] (int32 for bf16/fp16 values, int8 for int4
    codes given as int8 in [-8, 7]) and positions int8 [K' / 8, N], K' = K rounded up to PAIR_BLOCK (padding
    groups hold zero weights)."""
    n, half = values.shape
    groups, rows = half // 2, pair_layout_rows(2 * half)
    pairs = values.reshape(n, groups, 2)
    if values.dtype == torch.int8:
        stored = (pairs.to(torch.int32) + 8) & 0xF
        words = torch.full((rows, n), 0x88, dtype=torch.int32, device=values.device)
        words[:groups] = (stored[..., 0] | (stored[..., 1] << 4)).T
        words = torch.where(words >= 128, words - 256, words).to(torch.int8)
    else:
        halves = pairs.contiguous().view(torch.int16).to(torch.int32) & 0xFFFF
        words = torch.zeros((rows, n), dtype=torch.int32, device=values.device)
        words[:groups] = (halves[..., 0] | (halves[..., 1] << 16)).T
    nibbles = torch.zeros((rows, n), dtype=torch.int32, device=values.device)
    nibbles[:groups] = _nibbles(meta).T
    blocked = nibbles.reshape(rows // 32, 2, 16, n)  # group 32·b + 16·h + q -> byte 16·b + q, nibble h
    positions = blocked[:, 0] | (blocked[:, 1] << 4)
    positions = torch.where(positions >= 128, positions - 256, positions).to(torch.int8).reshape(rows // 2, n)
    return words.contiguous(), positions.contiguous()


def from_kernel_layout_24(words: torch.Tensor, positions: torch.Tensor, in_features: int,
                          dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """compress_24's (values, meta) back from the pair layout (values int8 codes when `words` is int8)."""
    rows, n = words.shape
    groups = in_features // 4
    if words.dtype == torch.int8:
        stored = words.to(torch.int32) & 0xFF
        pairs = torch.stack([stored & 0xF, stored >> 4], dim=-1) - 8
        values = pairs[:groups].to(torch.int8)
    else:
        halves = torch.stack([words & 0xFFFF, (words >> 16) & 0xFFFF], dim=-1)
        halves = torch.where(halves >= 1 << 15, halves - (1 << 16), halves)
        values = halves[:groups].to(torch.int16).view(dtype)
    values = values.transpose(0, 1).reshape(n, 2 * groups)
    stored = positions.to(torch.int32).reshape(rows // 32, 16, n) & 0xFF
    nibbles = torch.stack([stored & 0xF, stored >> 4], dim=1).reshape(rows, n)[:groups].T
    meta = (nibbles.reshape(n, groups // GROUPS_PER_WORD, GROUPS_PER_WORD) << _nibble_shifts(words.device)).sum(
        -1, dtype=torch.int32)
    return values.contiguous(), meta.contiguous()


def _nibble_shifts(device: torch.device) -> torch.Tensor:
    return torch.arange(0, 32, 4, device=device, dtype=torch.int32)


def _nibbles(meta: torch.Tensor) -> torch.Tensor:
    """Each group's position nibble, [N, K / 4], from compress_24's meta."""
    n = meta.shape[0]
    return ((meta.unsqueeze(-1) >> _nibble_shifts(meta.device)) & 0xF).reshape(n, -1)
