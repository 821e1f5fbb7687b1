"""AWQ scale search for int4 g128 weights: never worse than plain rounding on the search data, clearly better
where a few input channels are large, and folding the scales leaves the full-precision function unchanged."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch

from compress.methods.awq import apply_scales, search_scales
from compress.quantize import fake_quantize

WIDTH, BITS, GROUP = 256, 4, 128


@pytest.fixture(autouse=True, scope="module")
def _one_thread() -> Iterator[None]:
    """A search is ~300 small ops; with two threads on a 2-core machine that is busy elsewhere, each op waits
    out a scheduler slice for its second thread (measured: 3.3 s a test instead of 0.05 s)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _inputs(seed: int, outliers: bool, tokens: int = 512, draw: int = 0) -> torch.Tensor:
    """Tokens of one layer: `seed` fixes which channels are large, `draw` which tokens are sampled."""
    x = torch.randn(tokens, WIDTH, generator=torch.Generator().manual_seed(1000 * draw + seed))
    if outliers:
        x[:, torch.randperm(WIDTH, generator=torch.Generator().manual_seed(seed))[:6]] *= 25
    return x


def _weights(seed: int) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(seed + 10_000)
    return [torch.randn(rows, WIDTH, generator=generator) * 0.02 for rows in (WIDTH, 128, 128)]


def _error(x: torch.Tensor, weights: list[torch.Tensor], quantized: list[torch.Tensor]) -> float:
    """Relative error of the concatenated outputs x Wᵀ, with x already divided by the scales if any."""
    exact = torch.cat([x @ w.T for w in weights], dim=1)
    return (torch.cat([x @ q.T for q in quantized], dim=1) - exact).norm().item() / exact.norm().item()


def _rtn_and_awq(x: torch.Tensor, weights: list[torch.Tensor], scales: torch.Tensor) -> tuple[float, float]:
    def quantize(w: torch.Tensor) -> torch.Tensor:
        return fake_quantize(w, BITS, GROUP, True, torch.bfloat16)

    rtn = _error(x, weights, [quantize(w) for w in weights])
    norm, scaled = torch.ones(WIDTH), [w.clone() for w in weights]
    apply_scales(norm, None, scaled, scales)
    exact = torch.cat([x @ w.T for w in weights], dim=1)
    awq_out = torch.cat([(x * norm) @ quantize(w).T for w in scaled], dim=1)
    return rtn, (awq_out - exact).norm().item() / exact.norm().item()


@pytest.mark.parametrize("outliers", [False, True])
@pytest.mark.parametrize("seed", range(3))
def test_awq_never_loses_to_rtn_on_its_search_data(seed: int, outliers: bool) -> None:
    x, weights = _inputs(seed, outliers), _weights(seed)
    scales = search_scales(x, weights, BITS, GROUP, symmetric=True)
    assert scales.shape == (WIDTH,) and torch.isfinite(scales).all() and (scales > 0).all()
    rtn, awq = _rtn_and_awq(x, weights, scales)
    assert awq <= rtn * (1 + 1e-5), (rtn, awq)


def test_awq_clearly_beats_rtn_with_outlier_channels_on_held_out_tokens() -> None:
    weights = _weights(0)
    scales = search_scales(_inputs(0, outliers=True), weights, BITS, GROUP, symmetric=True)
    held_out = _inputs(0, outliers=True, draw=1)  # the same outlier channels, other tokens
    rtn, awq = _rtn_and_awq(held_out, weights, scales)
    assert awq < 0.75 * rtn, (rtn, awq)  # measured: 10.9% -> 7.8% (absmax / 7.5 scales)


def test_asymmetric_search_never_loses_either() -> None:
    x, weights = _inputs(5, outliers=True), _weights(5)
    scales = search_scales(x, weights, BITS, GROUP, symmetric=False)
    rtn = _error(x, weights, [fake_quantize(w, BITS, GROUP, False, torch.bfloat16) for w in weights])
    awq = _error(x / scales, [w * scales for w in weights],
                 [fake_quantize(w * scales, BITS, GROUP, False, torch.bfloat16) for w in weights])
    assert awq <= rtn * (1 + 1e-5) and awq < 0.8 * rtn, (rtn, awq)  # measured: 10.2% -> 5.9%


@pytest.mark.parametrize("seed", range(2))
def test_falls_back_to_plain_rounding_when_mean_magnitude_misleads(seed: int) -> None:
    """Half the channels are dense ±1, half are rare spikes of 20: the spiky ones have the smaller mean |x| but
    the larger mean x², so any exponent > 0 shrinks the channels that matter (measured: +3% error at r = 0.05)."""
    generator = torch.Generator().manual_seed(seed)
    x = torch.randint(0, 2, (512, WIDTH), generator=generator).float() * 2 - 1
    spiky = torch.randperm(WIDTH, generator=generator)[: WIDTH // 2]
    x[:, spiky] *= (torch.rand(512, WIDTH // 2, generator=generator) < 0.02) * 20.0
    scales = search_scales(x, _weights(seed), BITS, GROUP, symmetric=True)
    assert torch.equal(scales, torch.ones(WIDTH))


def test_equal_channel_magnitudes_change_nothing() -> None:
    signs = torch.randint(0, 2, (512, WIDTH), generator=torch.Generator().manual_seed(6)).float() * 2 - 1
    scales = search_scales(3 * signs, _weights(6), BITS, GROUP, symmetric=True)
    assert torch.equal(scales, torch.ones(WIDTH))  # 3^r on every channel, normalised away: 1 means no change


def test_folding_into_a_norm_or_a_previous_linear_keeps_the_function() -> None:
    x, weights = _inputs(7, outliers=True), _weights(7)
    scales = search_scales(x, weights, BITS, GROUP, symmetric=True)
    # A norm producer: x = normalized * norm_weight.
    norm = torch.rand(WIDTH) + 0.5
    exact = [(x * norm) @ w.T for w in weights]
    scaled = [w.clone() for w in weights]
    apply_scales(norm, None, scaled, scales)
    for w, expected in zip(scaled, exact, strict=True):
        torch.testing.assert_close((x * norm) @ w.T, expected, rtol=1e-4, atol=1e-4)
    # A Linear producer (v_proj -> o_proj, up_proj -> down_proj): its rows are the next Linear's input channels.
    previous, bias = torch.randn(WIDTH, 64) * 0.1, torch.randn(WIDTH)
    hidden = torch.randn(128, 64)
    exact = [(hidden @ previous.T + bias) @ w.T for w in weights]
    scaled = [w.clone() for w in weights]
    apply_scales(previous, bias, scaled, scales)
    for w, expected in zip(scaled, exact, strict=True):
        torch.testing.assert_close((hidden @ previous.T + bias) @ w.T, expected, rtol=1e-4, atol=1e-4)
