"""FP8 E4M3 weight codes in compressed-tensors' convention: one scale per output channel, scale = absmax / 448
(E4M3's largest finite value), codes = w / scale cast to float8_e4m3fn (round to nearest even)."""

from __future__ import annotations

import torch

FP8_MAX = torch.finfo(torch.float8_e4m3fn).max


def quantize_fp8_weight(
    w: torch.Tensor, scale_dtype: torch.dtype = torch.bfloat16
) -> tuple[torch.Tensor, torch.Tensor]:
    """(codes float8_e4m3fn [out, in], scale fp32 [out, 1]); scales are rounded to `scale_dtype` before the codes
    are computed, so a checkpoint storing them in that dtype dequantizes to exactly these weights."""
    absmax = w.float().abs().amax(dim=1, keepdim=True)
    scale = (absmax / FP8_MAX).clamp(min=torch.finfo(torch.float16).tiny).to(scale_dtype).float()
    codes = (w.float() / scale).clamp(-FP8_MAX, FP8_MAX).to(torch.float8_e4m3fn)
    return codes, scale
