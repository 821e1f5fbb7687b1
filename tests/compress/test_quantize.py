from __future__ import annotations

import pytest
import torch

from compress.quantize import dequantize_weight, fake_quantize, quant_range, quantize_weight


@pytest.mark.parametrize("bits", [4, 8])
@pytest.mark.parametrize("group_size", [None, 32, 128])
@pytest.mark.parametrize("symmetric", [True, False])
def test_round_trip_error_is_at_most_half_a_step(bits: int, group_size: int | None, symmetric: bool) -> None:
    w = torch.randn(48, 256, generator=torch.Generator().manual_seed(bits)) * 0.05 + 0.01
    q, scale, zero_point = quantize_weight(w, bits, group_size, symmetric)
    groups = 1 if group_size is None else 256 // group_size
    assert q.dtype == torch.int8 and q.shape == w.shape
    assert scale.shape == zero_point.shape == (48, groups)
    q_min, q_max = quant_range(bits)
    assert q.min() >= q_min and q.max() <= q_max
    if symmetric:
        assert torch.all(zero_point == 0)
    error = (dequantize_weight(q, scale, zero_point, group_size) - w).abs()
    bound = scale.repeat_interleave(256 // groups, dim=1) / 2
    assert torch.all(error <= bound * (1 + 1e-5) + 1e-8)
    assert error.max() > 0


def test_symmetric_codes_use_the_whole_range_and_keep_dtype() -> None:
    w = torch.randn(16, 64, dtype=torch.bfloat16)
    q, scale, _ = quantize_weight(w.float(), 3, 32, scale_dtype=torch.bfloat16)
    assert int(q.min()) == -4 and int(q.max()) == 3  # all eight int3 codes, the negative end included
    error = (dequantize_weight(q, scale, torch.zeros_like(q[:, :2]), 32) - w.float()).abs()
    # never more than half a step (plus the bf16 rounding of the scale)
    assert torch.all(error <= scale.repeat_interleave(32, dim=1) * (0.5 + 2**-6))
    assert fake_quantize(w, 8, None).dtype == torch.bfloat16


def test_shapes_are_checked() -> None:
    with pytest.raises(AssertionError, match="does not divide"):
        quantize_weight(torch.randn(4, 100), 4, 64)
    with pytest.raises(AssertionError):
        quantize_weight(torch.randn(4, 4, 4), 4, None)
    with pytest.raises(AssertionError):
        quantize_weight(torch.randint(0, 3, (4, 64)), 4, None)
