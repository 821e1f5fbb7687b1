"""FP8 E4M3 weight codes in compressed-tensors' convention: one scale per output channel, scale = absmax / 448
(E4M3's largest finite value), codes = w / scale cast to float8_e4m3fn (round to nearest even); and references
for the dynamic per-token activation quantization a W8A8 checkpoint runs with.

compressed-tensors 0.20 computes the same weight scales: calculate_qparams takes max(|min|, |max|) / (range / 2),
which for FP8 is absmax / 448 (in the weight's dtype, so bf16 for a bf16 model: equal to ours rounded to bf16),
and its dequantize computes codes.to(scale.dtype) * scale, so a checkpoint of these codes and bf16 scales loads
to exactly dequantize_fp8(...) rounded to bf16. Its on-the-fly fake quantization divides in the weight's dtype
first, so for bf16 weights a few percent of its codes differ by one step from these (fp32 division).
"""

from __future__ import annotations

import torch

FP8_MAX = torch.finfo(torch.float8_e4m3fn).max
INT8_MAX = 127


def quantize_fp8_weight(
    w: torch.Tensor, scale_dtype: torch.dtype = torch.bfloat16
) -> tuple[torch.Tensor, torch.Tensor]:
    """(codes float8_e4m3fn [out, in], scale fp32 [out, 1]); scales are rounded to `scale_dtype` before the codes
    are computed, so a checkpoint storing them in that dtype dequantizes to exactly these weights."""
    absmax = w.float().abs().amax(dim=1, keepdim=True)
    scale = (absmax / FP8_MAX).clamp(min=torch.finfo(torch.float16).tiny).to(scale_dtype).float()
    codes = (w.float() / scale).clamp(-FP8_MAX, FP8_MAX).to(torch.float8_e4m3fn)
    return codes, scale


def dequantize_fp8(q: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """fp32 weights [out, in]: codes times their row's scale. The product of a 4-bit and an 8-bit significand is
    exact in fp32, so rounding it to bf16 matches compressed-tensors' bf16 product."""
    assert q.dtype == torch.float8_e4m3fn and scale.shape == (q.shape[0], 1), (q.dtype, q.shape, scale.shape)
    return q.float() * scale.float()


def _per_token_scale(x: torch.Tensor, code_max: float) -> torch.Tensor:
    """absmax / code_max over the last dim, in fp32; all-zero tokens get a tiny scale (their codes are 0)."""
    return (x.float().abs().amax(dim=-1, keepdim=True) / code_max).clamp(min=torch.finfo(torch.float32).tiny)


def fake_quantize_per_token_int8(x: torch.Tensor) -> torch.Tensor:
    """What a W8A8-int8 kernel computes with for `x` [..., hidden], in x's dtype: symmetric codes in [-128, 127]
    with scale = absmax / 127 per token, as vLLM's dynamic int8 quantization does. (compressed-tensors' own
    fake quantization divides by 127.5, half its signed range, so its absmax code rounds to 128 and clips.)"""
    scale = _per_token_scale(x, INT8_MAX)
    return ((x.float() / scale).round().clamp(-INT8_MAX - 1, INT8_MAX) * scale).to(x.dtype)


def fake_quantize_per_token_fp8(x: torch.Tensor) -> torch.Tensor:
    """What a W8A8-FP8 kernel computes with for `x` [..., hidden], in x's dtype: scale = absmax / 448 per token,
    values cast through float8_e4m3fn (compressed-tensors' dynamic "token" strategy computes the same scale)."""
    scale = _per_token_scale(x, FP8_MAX)
    codes = (x.float() / scale).clamp(-FP8_MAX, FP8_MAX).to(torch.float8_e4m3fn)
    return (codes.float() * scale).to(x.dtype)
