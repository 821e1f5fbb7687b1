"""The workspace of one-launch split-K: K slices of an output tile add fp32 partial sums into `sums` and count
in on `arrivals`; the last slice to arrive writes the tile in the output dtype and zeroes both again. No memset
before the call and no conversion after it (at decode sizes each would cost as much as the matmul)."""

from __future__ import annotations

import torch

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
