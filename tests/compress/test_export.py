from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors import safe_open

from compress.export import save_compressed
from compress.model_io import load_model
from compress.recipes import resolve_recipe
from compress.runner import compress_model
from tests.compress.conftest import INT4_G32

CPU = torch.device("cpu")


def _tensors(path: Path) -> dict[str, torch.Tensor]:
    with safe_open(str(path / "model.safetensors"), "pt") as handle:
        return {key: handle.get_tensor(key) for key in handle.keys()}


@pytest.mark.parametrize("recipe_data", [INT4_G32, {"modifiers": [{"method": "rtn", "bits": 8}]}])
def test_export_loads_with_transformers_and_matches_the_fake_quantized_model(
    random_model, calib_windows, tmp_path: Path, recipe_data: dict
) -> None:  # type: ignore[no-untyped-def]
    model, tokenizer = random_model
    recipe = resolve_recipe(recipe=recipe_data)
    compress_model(model, recipe, calib_windows, {}, CPU)
    with torch.no_grad():
        expected = model(input_ids=calib_windows[:2]).logits
    out = tmp_path / "out"
    save_compressed(model, tokenizer, recipe, out)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out", "random-llama"], "temp dir left behind"
    assert (out / "recipe.yaml").read_text() == recipe.to_yaml()
    assert not list(out.glob("*.bin"))
    loaded, _ = load_model(out)
    with torch.no_grad():
        got = loaded(input_ids=calib_windows[:2]).logits
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)
    tensors = _tensors(out)
    assert tensors["model.layers.0.mlp.up_proj.weight_packed"].dtype == torch.int32
    assert "model.layers.0.mlp.up_proj.weight" not in tensors and "lm_head.weight" in tensors


def test_packed_int4_is_at_least_2_5x_smaller(
    random_model, calib_windows, int4_recipe, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    model, tokenizer = random_model
    recipe = int4_recipe
    compress_model(model, recipe, calib_windows, {}, CPU)
    save_compressed(model, tokenizer, recipe, tmp_path / "out")
    original = _tensors(tmp_path / "random-llama")
    packed = _tensors(tmp_path / "out")
    layers = [key.removesuffix(".weight_packed") for key in packed if key.endswith(".weight_packed")]
    assert len(layers) == 14
    bf16_bytes = sum(original[f"{layer}.weight"].nbytes for layer in layers)
    stored = sum(t.nbytes for key, t in packed.items() if key.rsplit(".", 1)[0] in layers)
    assert original["model.layers.0.mlp.up_proj.weight"].dtype == torch.bfloat16
    assert bf16_bytes / stored >= 2.5, (bf16_bytes, stored)


def test_refuses_a_non_empty_destination(random_model, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "keep.txt").write_text("mine")
    from compress.errors import CompressError

    with pytest.raises(CompressError, match="not empty"):
        save_compressed(random_model[0], random_model[1], resolve_recipe("w4a16-rtn"), tmp_path / "out")


def test_w8a8_export_quantizes_activations_after_loading(random_model, calib_windows, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """int8 codes stored as int8, and the loaded model quantizes its Linear inputs per token at run time."""
    model, tokenizer = random_model
    recipe = resolve_recipe(recipe={"modifiers": [{"method": "rtn", "bits": 8, "activations": "int8"}]})
    compress_model(model, recipe, None, {}, CPU)
    with torch.no_grad():
        expected = model(input_ids=calib_windows[:2]).logits
    save_compressed(model, tokenizer, recipe, tmp_path / "out")
    tensors = _tensors(tmp_path / "out")
    assert tensors["model.layers.0.mlp.up_proj.weight"].dtype == torch.int8
    loaded, _ = load_model(tmp_path / "out")
    up = loaded.model.layers[0].mlp.up_proj
    x = torch.randn(3, up.in_features) * 4
    with torch.no_grad():
        unquantized_inputs = torch.nn.functional.linear(x, up.weight)
        assert not torch.allclose(up(x), unquantized_inputs, rtol=0, atol=1e-6)
        got = loaded(input_ids=calib_windows[:2]).logits
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)
