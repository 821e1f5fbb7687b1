"""SmoothQuant (Xiao et al. 2023, "SmoothQuant: Accurate and Efficient Post-Training Quantization for Large
Language Models"): activations have a few huge channels, weights do not; dividing those input channels by
s_j = max|X_j|^α / max|W_j|^(1-α) and multiplying the weights' columns by s_j moves the difficulty into the
weights. The division is folded into the norm that produces the input, so the network computes the same."""

from __future__ import annotations

import torch

SCALE_RANGE = (1e-5, 1e5)


def smoothing_scales(activation_absmax: torch.Tensor, weights: list[torch.Tensor], alpha: float = 0.5) -> torch.Tensor:
    """Per input channel scales [in] for Linears sharing one input; 1 where a channel is dead in either."""
    weight_absmax = torch.cat([w.float() for w in weights]).abs().amax(dim=0)
    activation_absmax = activation_absmax.float().to(weight_absmax.device)
    scales = activation_absmax.pow(alpha) / weight_absmax.pow(1 - alpha)
    usable = (activation_absmax > 0) & (weight_absmax > 0) & torch.isfinite(scales)
    return torch.where(usable, scales, torch.ones_like(scales)).clamp(*SCALE_RANGE)


@torch.no_grad()
def apply_smoothing(
    norm_weight: torch.Tensor,
    linear_weights: list[torch.Tensor],
    scales: torch.Tensor,
    norm_bias: torch.Tensor | None = None,
) -> None:
    """In place: the norm's weight (and a LayerNorm's bias) / s, each Linear's columns * s (in fp32, then back to
    each tensor's dtype)."""
    for norm_tensor in (norm_weight, norm_bias):
        if norm_tensor is not None:
            norm_tensor.copy_((norm_tensor.float() / scales.to(norm_tensor.device)).to(norm_tensor.dtype))
    for weight in linear_weights:
        weight.copy_((weight.float() * scales.to(weight.device)).to(weight.dtype))
