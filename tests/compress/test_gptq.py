"""GPTQ against round-to-nearest on small matrices, and through export on a random Llama."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from compress.export import save_compressed
from compress.methods.gptq import gptq_quantize
from compress.methods.hessian import HessianAccumulator
from compress.model_io import load_model
from compress.quantize import dequantize_weight, quant_range, quantize_weight
from compress.recipes import resolve_recipe
from compress.runner import compress_model

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def layer() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """A weight and correlated inputs with a few outlier channels, like a transformer's activations."""
    torch.manual_seed(0)
    inputs = torch.randn(2048, 32) @ torch.randn(32, 256) + 0.1 * torch.randn(2048, 256)
    inputs[:, :4] *= 8
    weight = torch.randn(96, 256) * 0.05
    accumulator = HessianAccumulator(256, CPU)
    for chunk in inputs.split(500):
        accumulator.add(chunk)
    return weight, inputs, accumulator.hessian


def _output_error(inputs: torch.Tensor, weight: torch.Tensor, approx: torch.Tensor) -> float:
    return ((inputs @ weight.T - inputs @ approx.T).norm() / (inputs @ weight.T).norm()).item()


def test_hessian_accumulator_is_the_mean_over_all_tokens(layer) -> None:  # type: ignore[no-untyped-def]
    _weight, inputs, hessian = layer
    torch.testing.assert_close(hessian, 2 * inputs.T @ inputs / inputs.shape[0], rtol=1e-4, atol=1e-3)


@pytest.mark.parametrize(
    ("bits", "group_size", "symmetric", "act_order"),
    [(4, 128, True, True), (4, 128, True, False), (3, 64, True, True), (4, None, True, True),
     (4, 32, False, False), (3, None, False, True), (8, None, True, True)],
)
def test_layer_output_error_is_below_rtn(layer, bits, group_size, symmetric, act_order) -> None:  # type: ignore[no-untyped-def]
    weight, inputs, hessian = layer
    rtn = dequantize_weight(*quantize_weight(weight, bits, group_size, symmetric, torch.bfloat16), group_size)
    q, scale, zero_point = gptq_quantize(weight, hessian, bits, group_size, symmetric, act_order, block_size=48)
    low, high = quant_range(bits)
    assert q.dtype == torch.int8 and int(q.min()) >= low and int(q.max()) <= high
    assert torch.equal(scale, scale.to(torch.bfloat16).float()), "scales must survive the bf16 checkpoint"
    gptq = dequantize_weight(q, scale, zero_point, group_size)
    assert _output_error(inputs, weight, gptq) < 0.6 * _output_error(inputs, weight, rtn)


def test_pruned_weights_stay_exactly_zero(layer) -> None:  # type: ignore[no-untyped-def]
    weight, _inputs, hessian = layer
    pruned = torch.zeros_like(weight, dtype=torch.bool)
    pruned.view(-1, 4)[:, :2] = True  # a 2:4 pattern
    q, scale, zero_point = gptq_quantize(weight, hessian, 4, 64, False, True, keep_zero=pruned)
    assert torch.all(dequantize_weight(q, scale, zero_point, 64)[pruned] == 0)


def test_dead_input_channels_do_not_break_the_factorisation(layer) -> None:  # type: ignore[no-untyped-def]
    weight, _inputs, hessian = layer
    hessian = hessian.clone()
    hessian[:, 7] = 0
    hessian[7, :] = 0
    q, scale, zero_point = gptq_quantize(weight, hessian, 4, 128)
    assert torch.isfinite(dequantize_weight(q, scale, zero_point, 128)).all()


@pytest.mark.parametrize(
    "recipe_data",
    [
        {"modifiers": [{"method": "gptq", "bits": 3, "group_size": 32}]},
        {"modifiers": [{"method": "gptq", "bits": 4, "group_size": 32, "symmetric": False, "act_order": False}]},
    ],
)
def test_gptq_export_loads_and_matches_the_fake_quantized_model(
    random_model, calib_windows, tmp_path: Path, recipe_data: dict
) -> None:  # type: ignore[no-untyped-def]
    model, tokenizer = random_model
    original = {name: module.weight.detach().clone() for name, module in model.named_modules()
                if name.endswith("up_proj")}
    recipe = resolve_recipe(recipe=recipe_data)
    summary = compress_model(model, recipe, calib_windows[:4], {}, CPU)
    assert summary.methods == {"gptq": 14}
    name = next(iter(original))
    assert not torch.equal(dict(model.named_modules())[name].weight, original[name])
    with torch.no_grad():
        expected = model(input_ids=calib_windows[:2]).logits
    save_compressed(model, tokenizer, recipe, tmp_path / "out")
    loaded, _ = load_model(tmp_path / "out")
    with torch.no_grad():
        got = loaded(input_ids=calib_windows[:2]).logits
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)


def test_bits_outside_the_supported_set_are_rejected() -> None:
    from compress.errors import RecipeError

    with pytest.raises(RecipeError) as caught:
        resolve_recipe(recipe={"modifiers": [{"method": "gptq", "bits": 2}]})
    assert caught.value.field == "recipe.modifiers.0.bits"


def test_rows_are_independent_so_layers_sharing_an_input_can_be_stacked(layer) -> None:  # type: ignore[no-untyped-def]
    weight, _inputs, hessian = layer
    first, second = weight[:40], weight[40:]
    stacked = gptq_quantize(weight, hessian, 4, 64)
    apart = [gptq_quantize(part, hessian, 4, 64) for part in (first, second)]
    for got, parts in zip(stacked, zip(*apart, strict=True), strict=True):
        assert torch.equal(got, torch.cat(parts))


@pytest.mark.parametrize("act_order", [True, False])
def test_integer_scales_are_a_power_of_two_times_small_integers(layer, act_order: bool) -> None:  # type: ignore[no-untyped-def]
    from compress.quantize import INTEGER_SCALE_MAX, integer_scales_of

    weight, inputs, hessian = layer
    q, scale, zero_point = gptq_quantize(weight, hessian, 4, 32, True, act_order, integer_scale=True)
    integers = integer_scales_of(scale)
    assert torch.equal(integers, integers.round()) and integers.max() <= 2 * INTEGER_SCALE_MAX
    plain = gptq_quantize(weight, hessian, 4, 32, True, act_order)
    integer_error = _output_error(inputs, weight, dequantize_weight(q, scale, zero_point, 32))
    plain_error = _output_error(inputs, weight, dequantize_weight(*plain, 32))
    assert integer_error < 1.05 * plain_error, (integer_error, plain_error)
