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
    scale_base: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Round-to-nearest quantization of a [out, in] weight.

    Returns (q int8 [out, in], scale [out, n_groups] fp32, zero_point int8 [out, n_groups]).
    Scales are rounded to `scale_dtype` before the codes are computed, so a checkpoint that stores scales
    in that dtype dequantizes to exactly the same weights. With `scale_base` [out, 1] (see integer_scale_base)
    every scale is instead an integer multiple of its row's base.
    """
    assert w.is_floating_point(), w.dtype
    q_min, q_max = quant_range(bits)
    groups = _grouped(w.float(), group_size)
    if symmetric:
        # absmax / (q_max + 1/2) spreads the range over all 2^b codes, -2^(b-1) included (compressed-tensors'
        # convention); the largest positive weight rounds half a step down. absmax / q_max would leave one of the
        # eight int3 codes unused (measured: w3a16 ppl 40.32 vs 39.58 for llm-compressor on the shared model).
        scale = groups.abs().amax(dim=-1) / (q_max + 0.5)
        zero_point = torch.zeros_like(scale)
    else:
        low = groups.amin(dim=-1).clamp(max=0)
        high = groups.amax(dim=-1).clamp(min=0)
        scale = (high - low) / (q_max - q_min)
    scale = scale.clamp(min=torch.finfo(torch.float16).tiny)
    if scale_base is None:
        scale = scale.to(scale_dtype).float()
    else:  # integer scales: a whole multiple of the row's base, rounded up so nothing clips
        scale = torch.ceil(scale / scale_base) * scale_base
    if not symmetric:
        zero_point = (q_min - low / scale).round().clamp(q_min, q_max)
    q = (groups / scale[..., None]).round() + zero_point[..., None]
    q = q.clamp(q_min, q_max).reshape(w.shape).to(torch.int8)
    return q, scale, zero_point.to(torch.int8)


# Largest integer group scale: OdysseyLLM's amplifier; 1024 keeps the rounding-up of a scale under 0.1% for the
# row's largest groups, and integers this small times a power of two are exact in fp32.
INTEGER_SCALE_MAX = 1024


def integer_scale_base(group_scales: torch.Tensor) -> torch.Tensor:
    """Per-row power of two [out, 1] such that every group scale is about an integer ≤ INTEGER_SCALE_MAX times
    it ("Integer Scale", Li et al. 2024): a W4A8 kernel then accumulates a row's groups in integers and applies
    one float scale per row. GPTQ without act order sets later groups from updated weights, which may need an
    integer a little above the maximum, so kernels read the stored fp32 scales s with the base
    2^(ceil(log2(max(s) / INTEGER_SCALE_MAX)) - 1): s / base is then an exact integer ≤ 2 · INTEGER_SCALE_MAX."""
    largest = group_scales.float().amax(dim=-1, keepdim=True).clamp(min=torch.finfo(torch.float32).tiny)
    return torch.exp2(torch.ceil(torch.log2(largest / INTEGER_SCALE_MAX)))


def integer_scales_of(stored_scales: torch.Tensor) -> torch.Tensor:
    """The integers a kernel reads out of stored integer-scale group scales (see integer_scale_base)."""
    return stored_scales / (integer_scale_base(stored_scales) / 2)


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
