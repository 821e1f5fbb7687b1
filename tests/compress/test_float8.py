"""FP8 E4M3 weight codes and the per-token activation references, checked against compressed-tensors' own
scale computation and dequantization."""

from __future__ import annotations

import torch
from compressed_tensors.quantization import QuantizationArgs
from compressed_tensors.quantization.lifecycle.forward import dequantize, fake_quantize, quantize
from compressed_tensors.quantization.utils.helpers import calculate_qparams

from compress.float8 import (
    FP8_MAX,
    dequantize_fp8,
    fake_quantize_per_token_fp8,
    fake_quantize_per_token_int8,
    quantize_fp8_weight,
)

FP8_CHANNEL = QuantizationArgs(num_bits=8, type="float", strategy="channel", symmetric=True)


def _weight(seed: int = 0, shape: tuple[int, int] = (192, 256)) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    w = torch.randn(*shape, generator=generator) * 0.02
    w[3] *= 50  # one row far larger than the rest: per-channel scales keep the others precise
    return w


def test_fp8_weight_roundtrip_is_close_and_uses_the_full_range() -> None:
    w = _weight()
    q, scale = quantize_fp8_weight(w)
    assert q.dtype == torch.float8_e4m3fn and q.shape == w.shape
    assert scale.dtype == torch.float32 and scale.shape == (w.shape[0], 1)
    assert torch.equal(scale, scale.to(torch.bfloat16).float())  # bf16-exact, as the checkpoint stores it
    assert torch.isfinite(q.float()).all()
    assert torch.equal(q.float().abs().amax(dim=1), torch.full((w.shape[0],), FP8_MAX))
    approx = dequantize_fp8(q, scale)
    relative = ((approx - w).norm() / w.norm()).item()
    assert relative < 0.03, relative  # E4M3 keeps 3 mantissa bits: measured 2.6%
    normal = (w / scale).abs() >= 2**-6  # E4M3's smallest normal: below it the step is absolute, not relative
    assert ((approx - w).abs()[normal] <= w.abs()[normal] * 2**-4).all()  # half of a 2^-3 relative step


def test_zero_rows_stay_zero() -> None:
    w = _weight()
    w[5] = 0
    q, scale = quantize_fp8_weight(w)
    assert (scale > 0).all() and torch.isfinite(scale).all()
    assert torch.equal(dequantize_fp8(q, scale)[5], torch.zeros(w.shape[1]))


def test_scales_and_codes_match_compressed_tensors() -> None:
    w = _weight(1).to(torch.bfloat16)
    q, scale = quantize_fp8_weight(w)
    ct_scale, ct_zero = calculate_qparams(w.amin(dim=1, keepdim=True), w.amax(dim=1, keepdim=True), FP8_CHANNEL)
    assert ct_scale.dtype == torch.bfloat16 and torch.equal(ct_scale.float(), scale)
    ct_codes = quantize(w.float(), scale, ct_zero.float(), FP8_CHANNEL, dtype=torch.float8_e4m3fn)
    assert torch.equal(ct_codes.float(), q.float())
    # Loading the checkpoint: codes times the stored bf16 scale, in bf16.
    loaded = dequantize(q, scale.to(torch.bfloat16), ct_zero, FP8_CHANNEL)
    assert torch.equal(loaded, dequantize_fp8(q, scale).to(torch.bfloat16))


def test_per_token_fp8_matches_compressed_tensors_dynamic_tokens() -> None:
    x = torch.randn(2, 6, 64, generator=torch.Generator().manual_seed(2)) * torch.logspace(-2, 2, 6)[:, None]
    args = QuantizationArgs(num_bits=8, type="float", strategy="token", symmetric=True, dynamic=True)
    absmax = x.abs().amax(dim=-1, keepdim=True)
    scale, zero = calculate_qparams(-absmax, absmax, args)
    torch.testing.assert_close(fake_quantize_per_token_fp8(x), fake_quantize(x, scale, zero, args), rtol=0, atol=0)


def test_per_token_int8_error_is_bounded_per_token() -> None:
    x = torch.randn(32, 256, generator=torch.Generator().manual_seed(3)) * torch.logspace(-3, 3, 32)[:, None]
    approx = fake_quantize_per_token_int8(x)
    step = x.abs().amax(dim=-1, keepdim=True) / 127
    assert ((approx - x).abs() <= step / 2 * (1 + 1e-5)).all()  # half a step of its own token, at every scale
    torch.testing.assert_close(approx.abs().amax(dim=-1), x.abs().amax(dim=-1))  # absmax is code ±127, exact
    assert (((approx / step).round() - approx / step).abs() < 1e-3).all()  # on the integer grid


def test_per_token_scales_are_independent() -> None:
    for fake in (fake_quantize_per_token_int8, fake_quantize_per_token_fp8):
        x = torch.randn(8, 128, generator=torch.Generator().manual_seed(4))
        louder = x.clone()
        louder[2] *= 1000
        louder[5, 7] = 1e4  # an outlier inside one token
        before, after = fake(x), fake(louder)
        others = [0, 1, 3, 4, 6, 7]
        assert torch.equal(before[others], after[others]), fake.__name__
        assert not torch.equal(before[5], after[5]), fake.__name__


def test_activation_references_keep_dtype_and_zero_tokens() -> None:
    x = torch.randn(4, 64).to(torch.bfloat16)
    x[1] = 0
    for fake in (fake_quantize_per_token_int8, fake_quantize_per_token_fp8):
        out = fake(x)
        assert out.dtype == torch.bfloat16 and torch.isfinite(out).all()
        assert torch.equal(out[1], torch.zeros(64, dtype=torch.bfloat16))
