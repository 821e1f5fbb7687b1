"""Integer weight quantization primitives: pure tensor functions, fp32 math, compressed-tensors conventions.

A weight of shape [out, in] is split into groups of `group_size` input columns (or one group per output
row when group_size is None). Per group: q = clamp(round(w / scale) + zero_point, q_min, q_max) and
w ≈ (q - zero_point) * scale, with a signed range [-2^(b-1), 2^(b-1) - 1], as compressed-tensors stores it.
"""

from __future__ import annotations

import torch


def quant_range(bits: int) -> tuple[int, int]:
    """Signed integer range of a `bits`-wide code."""
    assert 2 <= bits <= 8, bits
    return -(2 ** (bits - 1)), 2 ** (bits - 1) - 1


def _grouped(w: torch.Tensor, group_size: int | None) -> torch.Tensor:
    """[out, in] -> [out, n_groups, group]."""
    assert w.dim() == 2, w.shape
    out_features, in_features = w.shape
    size = in_features if group_size is None else group_size
    assert in_features % size == 0, f"group_size {size} does not divide {in_features}"
    return w.reshape(out_features, in_features // size, size)


def quantize_weight(
    w: torch.Tensor,
    bits: int,
    group_size: int | None,
    symmetric: bool = True,
    scale_dtype: torch.dtype = torch.float32,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Round-to-nearest quantization of a [out, in] weight.

    Returns (q int8 [out, in], scale [out, n_groups] fp32, zero_point int8 [out, n_groups]).
    Scales are rounded to `scale_dtype` before the codes are computed, so a checkpoint that stores scales
    in that dtype dequantizes to exactly the same weights.
    """
    assert w.is_floating_point(), w.dtype
    q_min, q_max = quant_range(bits)
    groups = _grouped(w.float(), group_size)
    if symmetric:
        # absmax / q_max never clips; the unused code -2^(b-1) is the price (gpt-fast does the same).
        scale = groups.abs().amax(dim=-1) / q_max
        zero_point = torch.zeros_like(scale)
    else:
        low = groups.amin(dim=-1).clamp(max=0)
        high = groups.amax(dim=-1).clamp(min=0)
        scale = (high - low) / (q_max - q_min)
    scale = scale.clamp(min=torch.finfo(torch.float16).tiny).to(scale_dtype).float()
    if not symmetric:
        zero_point = (q_min - low / scale).round().clamp(q_min, q_max)
    q = (groups / scale[..., None]).round() + zero_point[..., None]
    q = q.clamp(q_min, q_max).reshape(w.shape).to(torch.int8)
    return q, scale, zero_point.to(torch.int8)


def dequantize_weight(
    q: torch.Tensor, scale: torch.Tensor, zero_point: torch.Tensor, group_size: int | None
) -> torch.Tensor:
    """Inverse of quantize_weight (and of FP8 codes, whose zero points are 0): fp32 [out, in] weights."""
    assert q.dim() == 2 and q.dtype in (torch.int8, torch.float8_e4m3fn), (q.shape, q.dtype)
    groups = _grouped(q.float(), group_size)
    assert scale.shape == groups.shape[:2] == zero_point.shape, (scale.shape, zero_point.shape, groups.shape)
    w = (groups - zero_point.float()[..., None]) * scale.float()[..., None]
    return w.reshape(q.shape)


def fake_quantize(
    w: torch.Tensor,
    bits: int,
    group_size: int | None,
    symmetric: bool = True,
    scale_dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """The weight the quantized checkpoint will compute with, in w's dtype."""
    q, scale, zero_point = quantize_weight(w, bits, group_size, symmetric, scale_dtype)
    return dequantize_weight(q, scale, zero_point, group_size).to(w.dtype)
