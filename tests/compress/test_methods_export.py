"""Every method through the runner and the export: the checkpoint loads with transformers, computes what the
in-memory compressed model computed, and keeps the method's promise (sparsity pattern, FP8 codes)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from torch import nn

from compress.quantize import integer_scales_of
from compress.recipes import resolve_recipe
from compress.runner import compress_model
from tests.compress.conftest import export_and_reload

CPU = torch.device("cpu")


def _decoder_linears(model: nn.Module) -> dict[str, nn.Linear]:
    return {name: m for name, m in model.named_modules() if isinstance(m, nn.Linear) and ".layers." in name}


@pytest.mark.parametrize(
    ("modifiers", "counts"),
    [
        ([{"method": "sparsegpt", "pattern": "2:4"}], {"sparsegpt": 14}),
        ([{"method": "wanda", "pattern": "2:4"}], {"wanda": 14}),
        ([{"method": "sparsegpt", "pattern": "2:4"}, {"method": "gptq", "bits": 4, "group_size": 32}],
         {"sparsegpt": 14, "gptq": 14}),
        ([{"method": "wanda", "pattern": "2:4"}, {"method": "rtn", "bits": 8}], {"wanda": 14, "rtn": 14}),
    ],
)
def test_two_of_four_survives_quantization_and_export(
    random_model, calib_windows, tmp_path: Path, modifiers: list, counts: dict
) -> None:  # type: ignore[no-untyped-def]
    model, tokenizer = random_model
    recipe = resolve_recipe(recipe={"modifiers": modifiers})
    summary = compress_model(model, recipe, calib_windows, {}, CPU)
    assert summary.methods == counts
    loaded = export_and_reload(model, tokenizer, recipe, calib_windows, tmp_path / "out")
    for name, linear in _decoder_linears(loaded).items():
        nonzero = (linear.weight != 0).reshape(linear.out_features, -1, 4).sum(dim=-1)
        assert torch.all(nonzero <= 2), name
        assert (nonzero == 2).float().mean() > 0.95, name  # kept weights are (almost never) rounded to 0


def test_unstructured_sparsity_hits_its_target(random_model, calib_windows, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    model, tokenizer = random_model
    recipe = resolve_recipe(recipe={"modifiers": [{"method": "sparsegpt", "sparsity": 0.5, "block_size": 32}]})
    compress_model(model, recipe, calib_windows, {}, CPU)
    loaded = export_and_reload(model, tokenizer, recipe, calib_windows, tmp_path / "out")
    for name, linear in _decoder_linears(loaded).items():
        assert (linear.weight == 0).float().mean().item() == pytest.approx(0.5, abs=0.01), name


@pytest.mark.parametrize("activations", [None, "fp8"])
def test_fp8_weights_are_stored_as_float8(random_model, calib_windows, tmp_path: Path, activations) -> None:  # type: ignore[no-untyped-def]
    model, tokenizer = random_model
    modifier = {"method": "rtn", "bits": 8, "type": "float", "activations": activations}
    recipe = resolve_recipe(recipe={"modifiers": [modifier]})
    compress_model(model, recipe, None, {}, CPU)
    export_and_reload(model, tokenizer, recipe, calib_windows, tmp_path / "out")
    with safe_open(str(tmp_path / "out" / "model.safetensors"), "pt") as handle:
        weight = handle.get_tensor("model.layers.0.mlp.down_proj.weight")
        scale = handle.get_tensor("model.layers.0.mlp.down_proj.weight_scale")
    assert weight.dtype == torch.float8_e4m3fn and scale.shape == (weight.shape[0], 1)
    assert weight.float().abs().amax(dim=1).min().item() == 448.0  # every row uses the full E4M3 range


def test_w4a8_integer_scales_survive_the_checkpoint(random_model, calib_windows, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    model, tokenizer = random_model
    modifier = {"method": "gptq", "bits": 4, "group_size": 16, "activations": "int8", "integer_scale": True}
    recipe = resolve_recipe(recipe={"modifiers": [modifier]})
    compress_model(model, recipe, calib_windows, {}, CPU)
    export_and_reload(model, tokenizer, recipe, calib_windows, tmp_path / "out")
    with safe_open(str(tmp_path / "out" / "model.safetensors"), "pt") as handle:
        scale = handle.get_tensor("model.layers.0.mlp.down_proj.weight_scale")
    assert scale.dtype == torch.float32
    integers = integer_scales_of(scale)
    assert torch.equal(integers, integers.round()) and integers.max() <= 2048
