"""SmoothQuant and AWQ: the rescaling leaves full-precision outputs unchanged and lowers the quantized error;
through the runner, only producers that scale their output by their weight are rescaled."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from compress.export import save_compressed
from compress.methods.awq import apply_scales, search_scales
from compress.methods.smoothquant import apply_smoothing, smoothing_scales
from compress.model_io import load_model
from compress.quantize import fake_quantize
from compress.recipes import resolve_recipe
from compress.runner import compress_model

CPU = torch.device("cpu")


def _outlier_inputs(seed: int, tokens: int = 512, width: int = 128) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(tokens, width, generator=generator)
    x[:, torch.randperm(width, generator=generator)[:4]] *= 40  # the few huge channels LLM activations have
    return x


def _weights(seed: int, rows: tuple[int, ...] = (128, 64, 64), width: int = 128) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(seed + 100)
    return [torch.randn(r, width, generator=generator) * 0.05 for r in rows]


def _per_token_int8(x: torch.Tensor) -> torch.Tensor:
    scale = x.abs().amax(dim=-1, keepdim=True).clamp(min=1e-8) / 127
    return (x / scale).round().clamp(-128, 127) * scale


def _relative(approx: torch.Tensor, exact: torch.Tensor) -> float:
    return ((approx - exact).norm() / exact.norm()).item()


def test_smoothing_keeps_the_function_and_helps_w8a8() -> None:
    x, weights = _outlier_inputs(0), _weights(0)
    norm = torch.rand(128) + 0.5
    exact = [(x * norm) @ w.T for w in weights]

    def w8a8_error(norm_weight: torch.Tensor, ws: list[torch.Tensor]) -> float:
        inputs = _per_token_int8(x * norm_weight)
        return sum(_relative(inputs @ fake_quantize(w, 8, None).T, e) for w, e in zip(ws, exact, strict=True))

    before = w8a8_error(norm, weights)
    scales = smoothing_scales((x * norm).abs().amax(dim=0), weights, alpha=0.8)
    smoothed_norm, smoothed = norm.clone(), [w.clone() for w in weights]
    apply_smoothing(smoothed_norm, smoothed, scales)
    for w, e in zip(smoothed, exact, strict=True):
        torch.testing.assert_close((x * smoothed_norm) @ w.T, e, rtol=1e-4, atol=1e-4)
    after = w8a8_error(smoothed_norm, smoothed)
    assert after < 0.5 * before, (before, after)


def test_dead_channels_keep_scale_one() -> None:
    absmax = torch.tensor([0.0, 2.0, 3.0])
    weights = [torch.tensor([[1.0, 0.0, 2.0]])]
    scales = smoothing_scales(absmax, weights, 0.5)
    assert scales[0] == 1 and scales[1] == 1 and torch.isfinite(scales).all()


@pytest.mark.parametrize("seed", range(4))
def test_awq_never_loses_to_rtn_and_keeps_the_function(seed: int) -> None:
    x, weights = _outlier_inputs(seed), _weights(seed)
    exact = torch.cat([x @ w.T for w in weights], dim=1)
    rtn = _relative(torch.cat([x @ fake_quantize(w, 4, 32).T for w in weights], dim=1), exact)
    scales = search_scales(x, weights, 4, 32, True, grid=20)
    assert torch.isfinite(scales).all() and (scales > 0).all()
    norm, scaled = torch.ones(128), [w.clone() for w in weights]
    apply_scales(norm, None, scaled, scales)
    torch.testing.assert_close(torch.cat([(x * norm) @ w.T for w in scaled], dim=1), exact, rtol=1e-4, atol=1e-3)
    awq = _relative(torch.cat([(x * norm) @ fake_quantize(w, 4, 32).T for w in scaled], dim=1), exact)
    assert awq <= rtn + 1e-6
    if seed == 0:
        assert awq < 0.8 * rtn, (awq, rtn)


def test_smoothquant_rescales_only_norms_that_multiply_by_their_weight(random_model, calib_windows) -> None:  # type: ignore[no-untyped-def]
    model, _ = random_model
    gemma_like = model.model.layers[0].input_layernorm  # output = normalized x * (1 + w): not scalable by w

    def plus_one(hidden: torch.Tensor, norm: nn.Module = gemma_like) -> torch.Tensor:
        variance = hidden.float().pow(2).mean(-1, keepdim=True)
        return (hidden * torch.rsqrt(variance + norm.variance_epsilon)) * (1 + norm.weight)

    gemma_like.forward = plus_one  # type: ignore[method-assign]
    before = gemma_like.weight.detach().clone()
    recipe = resolve_recipe(recipe={"modifiers": [{"method": "smoothquant", "alpha": 0.8},
                                                  {"method": "rtn", "bits": 8, "activations": "int8"}]})
    summary = compress_model(model, recipe, calib_windows, {}, CPU)
    assert summary.transformed == ["model.layers.0.post_attention_layernorm", "model.layers.1.input_layernorm",
                                   "model.layers.1.post_attention_layernorm"]
    assert torch.equal(gemma_like.weight, before)


@pytest.mark.parametrize(
    "modifiers",
    [
        [{"method": "smoothquant", "alpha": 0.8}, {"method": "gptq", "bits": 8, "activations": "int8"}],
        [{"method": "awq", "bits": 4, "group_size": 32, "samples": 256}],
    ],
)
def test_rescaled_exports_reload_and_match(random_model, calib_windows, tmp_path: Path, modifiers) -> None:  # type: ignore[no-untyped-def]
    model, tokenizer = random_model
    recipe = resolve_recipe(recipe={"modifiers": modifiers})
    summary = compress_model(model, recipe, calib_windows, {}, CPU)
    assert len(summary.transformed) == 4
    with torch.no_grad():
        expected = model(input_ids=calib_windows[:2]).logits
    save_compressed(model, tokenizer, recipe, tmp_path / "out")
    loaded, _ = load_model(tmp_path / "out")
    with torch.no_grad():
        got = loaded(input_ids=calib_windows[:2]).logits
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)
