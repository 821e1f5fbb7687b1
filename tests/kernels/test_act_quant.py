"""Per-token activation quantization against its reference and against the semantics compress/ calibrates with."""

from __future__ import annotations

import pytest
import torch

from compress.float8 import fake_quantize_per_token_fp8, fake_quantize_per_token_int8
from kernels.act_quant import quantize_per_token, quantize_per_token_reference
from tests.kernels.helpers import DEVICE, poisoned, randn

FAKE_QUANTIZE = {torch.int8: fake_quantize_per_token_int8, torch.float8_e4m3fn: fake_quantize_per_token_fp8}


@pytest.mark.parametrize("dtype", [torch.int8, torch.float8_e4m3fn])
@pytest.mark.parametrize(("m", "k"), [(1, 64), (5, 100), (3, 257)])
def test_codes_and_scales_match_the_reference(dtype: torch.dtype, m: int, k: int) -> None:
    x = randn(m, k, seed=m * k, scale=3.0)
    x[0, 0] = 40.0  # an outlier sets its row's scale
    codes, scales = quantize_per_token(x, dtype, out=(poisoned(m, k, dtype=dtype), poisoned(m, dtype=torch.float32)))
    expected_codes, expected_scales = quantize_per_token_reference(x, dtype)
    torch.testing.assert_close(scales, expected_scales, rtol=1e-6, atol=0)
    # int8 may differ by one code on exact .5 ties (torch rounds them to even); FP8 must agree exactly
    difference = (codes.float() - expected_codes.float()).abs()
    assert difference.max() <= (1 if dtype == torch.int8 else 0)
    assert (difference > 0).float().mean() < 0.01
    dequantized = codes.float() * scales[:, None]
    torch.testing.assert_close(dequantized.to(x.dtype), FAKE_QUANTIZE[dtype](x), rtol=2e-2, atol=1e-2)


def test_an_all_zero_row_quantizes_to_zero_codes() -> None:
    x = torch.zeros(2, 64, dtype=torch.bfloat16, device=DEVICE)
    x[1] = 1.0
    codes, scales = quantize_per_token(x, torch.int8)
    assert torch.equal(codes[0].cpu(), torch.zeros(64, dtype=torch.int8)) and scales[0].item() == 1.0
    assert torch.equal(codes[1].cpu(), torch.full((64,), 127, dtype=torch.int8))


def test_bad_arguments_are_refused() -> None:
    x = randn(2, 64, seed=0)
    with pytest.raises(ValueError, match="dtype"):
        quantize_per_token(x, torch.int16)
    with pytest.raises(ValueError, match="2-D"):
        quantize_per_token(x.T, torch.int8)
    with pytest.raises(ValueError, match="out"):
        quantize_per_token(x, torch.int8, out=(poisoned(2, 32, dtype=torch.int8), poisoned(2, dtype=torch.float32)))
