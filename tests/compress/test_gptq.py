"""GPTQ against round-to-nearest on small matrices, and through export on a random Llama."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from compress.methods.gptq import gptq_quantize
from compress.quantize import dequantize_weight, quant_range, quantize_weight
from compress.recipes import resolve_recipe
from compress.runner import compress_model
from tests.compress.conftest import correlated_layer, export_and_reload, output_error

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def layer() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    return correlated_layer()


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
    assert output_error(inputs, weight, gptq) < 0.6 * output_error(inputs, weight, rtn)


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
    export_and_reload(model, tokenizer, recipe, calib_windows, tmp_path / "out")


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
    integer_error = output_error(inputs, weight, dequantize_weight(q, scale, zero_point, 32))
    plain_error = output_error(inputs, weight, dequantize_weight(*plain, 32))
    assert integer_error < 1.05 * plain_error, (integer_error, plain_error)
