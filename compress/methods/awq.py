"""AWQ (Lin et al. 2024, "AWQ: Activation-aware Weight Quantization for LLM Compression and Acceleration"): the
weights that meet large activations matter most, so scale those input channels up before rounding (they lose
relatively less) and fold the inverse scale into the producer. The scale is mean|x|^r per channel; the
exponent r is searched on calibration inputs for the smallest output error, with r = 0 (plain rounding) among
the candidates, so the result is never worse than RTN on the search data."""

from __future__ import annotations

import torch

from compress.quantize import fake_quantize


@torch.no_grad()
def search_scales(
    inputs: torch.Tensor,
    weights: list[torch.Tensor],
    bits: int,
    group_size: int | None,
    symmetric: bool,
    grid: int = 20,
    scale_dtype: torch.dtype = torch.bfloat16,
) -> torch.Tensor:
    """Per input channel scales [in] (all ones if no exponent beats plain rounding) for Linears sharing
    `inputs` [tokens, in]."""
    x = inputs.float()
    w = torch.cat([weight.float() for weight in weights]).to(x.device)
    mean_magnitude = x.abs().mean(dim=0).clamp(min=1e-4)
    best_error, best = float("inf"), torch.ones_like(mean_magnitude)
    for step in range(grid):
        scales = mean_magnitude.pow(step / grid)
        scales = scales / (scales.max() * scales.min()).sqrt()  # centred, so neither side's range explodes
        rounded = fake_quantize(w * scales, bits, group_size, symmetric, scale_dtype) / scales
        error = _output_error(x, w, rounded)
        if error < best_error:
            best_error, best = error, scales
    return best


def _output_error(x: torch.Tensor, w: torch.Tensor, approx: torch.Tensor, rows: int = 4096) -> float:
    """Σ (x wᵀ − x approxᵀ)², a block of output rows at a time: the full [tokens, out] product of a wide MLP
    would take gigabytes."""
    return sum(
        (x @ (w[start : start + rows] - approx[start : start + rows]).T).square().sum().item()
        for start in range(0, w.shape[0], rows)
    )


@torch.no_grad()
def apply_scales(
    previous_weight: torch.Tensor,
    previous_bias: torch.Tensor | None,
    linear_weights: list[torch.Tensor],
    scales: torch.Tensor,
) -> None:
    """In place: the producer's outputs / s (a norm's weight [in], or a Linear's rows [in, k], and its bias),
    the reading Linears' columns * s."""
    shape = (-1,) + (1,) * (previous_weight.dim() - 1)
    divided = previous_weight.float() / scales.view(shape).to(previous_weight.device)
    previous_weight.copy_(divided.to(previous_weight.dtype))
    if previous_bias is not None:
        previous_bias.data.copy_((previous_bias.float() / scales.to(previous_bias.device)).to(previous_bias.dtype))
    for weight in linear_weights:
        weight.copy_((weight.float() * scales.to(weight.device)).to(weight.dtype))
