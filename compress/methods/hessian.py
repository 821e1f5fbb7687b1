"""The second-order statistics GPTQ and SparseGPT share: H = 2XᵀX of a layer's inputs, and the factor of H⁻¹
that their column-by-column updates read."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch


class HessianAccumulator:
    """Running H = 2/n · Σ xxᵀ over every calibration token, in float32 whatever the model's dtype."""

    def __init__(self, columns: int, device: torch.device) -> None:
        self.hessian = torch.zeros(columns, columns, dtype=torch.float32, device=device)
        self.samples = 0

    def add(self, inputs: torch.Tensor) -> None:
        # bf16 and fp16 values are exact in TF32 (8 and 10 mantissa bits), so tensor cores lose nothing on them
        exact_in_tf32 = inputs.dtype in (torch.bfloat16, torch.float16)
        x = inputs.reshape(-1, inputs.shape[-1]).to(self.hessian.device, torch.float32)
        n = x.shape[0]
        self.hessian.mul_(self.samples / (self.samples + n))
        self.samples += n
        with _tf32(exact_in_tf32 and x.is_cuda):
            self.hessian.addmm_(x.t(), x, alpha=2.0 / self.samples)


@contextmanager
def _tf32(enabled: bool) -> Iterator[None]:
    previous = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = enabled
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32 = previous


def inverse_hessian_factor(hessian: torch.Tensor, damp: float) -> torch.Tensor:
    """Upper Cholesky factor of H⁻¹ (what the column updates read); dampening grows until H is positive
    definite, because a rank-deficient H (few tokens, dead channels) is common on small calibration sets."""
    diagonal = torch.arange(hessian.shape[0], device=hessian.device)
    mean_diagonal = hessian.diagonal().mean().clamp(min=1e-8)
    for attempt in range(6):
        damped = hessian.clone()
        damped[diagonal, diagonal] += damp * (10**attempt) * mean_diagonal
        factor, info = torch.linalg.cholesky_ex(damped)
        if info.item() == 0:
            inverse = torch.cholesky_inverse(factor)
            upper, info = torch.linalg.cholesky_ex(inverse, upper=True)
            if info.item() == 0:
                return upper.contiguous()  # row-major: the GPTQ kernel reads rows of it
    raise ArithmeticError("the Hessian stays singular even with 1e5 times the requested dampening")
