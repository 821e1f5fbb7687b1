"""SmoothQuant on an RMSNorm feeding q/k/v-like Linears: the smoothed block computes the same in fp32, and its
W8A8 (per-token int8 activations, per-channel int8 weights) error drops on activations with outlier channels."""

from __future__ import annotations

import torch
from torch import nn

from compress.float8 import fake_quantize_per_token_int8
from compress.methods.smoothquant import SCALE_RANGE, apply_smoothing, smoothing_scales
from compress.quantize import fake_quantize

WIDTH = 128


def _hidden(seed: int, tokens: int = 256) -> torch.Tensor:
    """Residual-stream-like inputs: a few channels ~30x larger in every token, as in LLM activations."""
    generator = torch.Generator().manual_seed(seed)
    h = torch.randn(tokens, WIDTH, generator=generator)
    h[:, [7, 40, 99]] *= 30
    return h


def _block(seed: int = 0) -> tuple[nn.RMSNorm, list[nn.Linear]]:
    torch.manual_seed(seed)
    norm = nn.RMSNorm(WIDTH, eps=1e-6)
    with torch.no_grad():
        norm.weight.uniform_(0.5, 1.5)
    return norm, [nn.Linear(WIDTH, out, bias=False) for out in (WIDTH, 64, 64)]


@torch.no_grad()
def _outputs(norm: nn.Module, linears: list[nn.Linear], h: torch.Tensor, w8a8: bool = False) -> list[torch.Tensor]:
    x = norm(h)
    if not w8a8:
        return [linear(x) for linear in linears]
    x = fake_quantize_per_token_int8(x)
    return [x @ fake_quantize(linear.weight, 8, None).T for linear in linears]


def _relative(approx: list[torch.Tensor], exact: list[torch.Tensor]) -> float:
    return (torch.cat(approx, dim=1) - torch.cat(exact, dim=1)).norm().item() / torch.cat(exact, dim=1).norm().item()


def _smooth(norm: nn.RMSNorm, linears: list[nn.Linear], alpha: float) -> torch.Tensor:
    with torch.no_grad():
        absmax = norm(_hidden(seed=100)).abs().amax(dim=0)  # calibration tokens, not the evaluation ones
    scales = smoothing_scales(absmax, [linear.weight.data for linear in linears], alpha)
    apply_smoothing(norm.weight.data, [linear.weight.data for linear in linears], scales)
    return scales


def test_smoothing_keeps_the_fp32_output() -> None:
    norm, linears = _block()
    h = _hidden(seed=1)
    exact = _outputs(norm, linears, h)
    scales = _smooth(norm, linears, alpha=0.5)
    assert not torch.allclose(scales, torch.ones_like(scales))
    for got, expected in zip(_outputs(norm, linears, h), exact, strict=True):
        torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


def test_smoothing_lowers_the_w8a8_error_on_outlier_channels() -> None:
    norm, linears = _block()
    h = _hidden(seed=1)
    exact = _outputs(norm, linears, h)
    before = _relative(_outputs(norm, linears, h, w8a8=True), exact)
    _smooth(norm, linears, alpha=0.5)
    after = _relative(_outputs(norm, linears, h, w8a8=True), exact)
    assert after < 0.5 * before, (before, after)  # measured: 2.20% -> 0.80%


def test_layernorm_bias_is_smoothed_too() -> None:
    torch.manual_seed(2)
    norm = nn.LayerNorm(WIDTH)
    with torch.no_grad():
        norm.weight.uniform_(0.5, 1.5)
        norm.bias.normal_()
    linears = [nn.Linear(WIDTH, 32) for _ in range(2)]
    h = _hidden(seed=3)
    exact = _outputs(norm, linears, h)
    with torch.no_grad():
        scales = smoothing_scales(norm(h).abs().amax(dim=0), [linear.weight.data for linear in linears], 0.5)
    apply_smoothing(norm.weight.data, [linear.weight.data for linear in linears], scales, norm.bias.data)
    for got, expected in zip(_outputs(norm, linears, h), exact, strict=True):
        torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


def test_scales_follow_the_formula_over_all_weights() -> None:
    absmax = torch.tensor([4.0, 1.0, 0.0, 9.0, 1e12])
    weights = [torch.tensor([[1.0, -2.0, 1.0, 0.0, 1.0]]), torch.tensor([[-0.25, 0.5, 3.0, 0.0, 1.0]])]
    scales = smoothing_scales(absmax, weights, alpha=0.5)
    # s_j = sqrt(absmax_j) / sqrt(max_i |W_ij|); a dead activation or weight channel keeps 1; huge ones are clamped.
    expected = torch.tensor([2.0, 1.0 / 2**0.5, 1.0, 1.0, SCALE_RANGE[1]])
    torch.testing.assert_close(scales, expected)
