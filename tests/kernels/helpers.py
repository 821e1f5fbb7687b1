"""What the kernel tests share: the device they run on (CUDA when present, else Triton's interpreter on CPU),
seeded fresh inputs and poisoned output buffers."""

from __future__ import annotations

import torch

DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")


def randn(*shape: int, seed: int, dtype: torch.dtype = torch.bfloat16, scale: float = 1.0) -> torch.Tensor:
    return (torch.randn(*shape, generator=torch.Generator().manual_seed(seed)) * scale).to(dtype).to(DEVICE)


def poisoned(*shape: int, dtype: torch.dtype) -> torch.Tensor:
    """An output buffer full of NaN (or the extreme value for integer types), so an element the kernel fails
    to write shows up in the comparison."""
    if dtype.is_floating_point:
        return torch.full(shape, float("nan"), device=DEVICE).to(dtype)
    return torch.full(shape, torch.iinfo(dtype).min, dtype=dtype, device=DEVICE)


def relative_error(got: torch.Tensor, expected: torch.Tensor) -> float:
    return ((got.float() - expected.float()).norm() / expected.float().norm()).item()
