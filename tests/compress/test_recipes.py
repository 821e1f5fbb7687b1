from __future__ import annotations

import json

import pytest
import torch
import yaml

from compress.errors import RecipeError
from compress.recipes import PRESETS, Recipe, resolve_recipe, validate_recipe_for_model
from tests.conftest import SHARED_MODEL

SHARED_CONFIG = json.loads((SHARED_MODEL / "config.json").read_text())


def test_presets() -> None:
    w4, w8 = resolve_recipe("w4a16-rtn").modifiers[0], resolve_recipe("w8a16-rtn").modifiers[0]
    assert (w4.bits, w4.group_size, w4.symmetric) == (4, 128, True)
    assert (w8.bits, w8.group_size, w8.symmetric) == (8, None, True)
    resolve_recipe("w4a16-rtn").modifiers[0].bits = 8
    assert PRESETS["w4a16-rtn"].modifiers[0].bits == 4, "a resolved preset must be a copy"


def test_unknown_preset_lists_the_known_ones() -> None:
    with pytest.raises(RecipeError) as caught:
        resolve_recipe("w5a16")
    assert caught.value.field == "preset" and "w4a16-rtn" in caught.value.message


@pytest.mark.parametrize(
    ("recipe", "field"),
    [
        ({"modifiers": [{"method": "rtn", "bits": 5}]}, "recipe.modifiers.0.bits"),
        ({"modifiers": [{"method": "rtn", "bits": 4, "group_size": 0}]}, "recipe.modifiers.0.group_size"),
        ({"modifiers": [{"method": "rtn", "bits": 4, "grup_size": 64}]}, "recipe.modifiers.0.grup_size"),
        (
            {"modifiers": [{"method": "rtn", "bits": 4}, {"method": "nope", "bits": 4}]},
            "recipe.modifiers.1.method",
        ),
        (
            {"modifiers": [{"method": "rtn", "bits": 4}], "calibration": {"samples": 0}},
            "recipe.calibration.samples",
        ),
        ({"modifiers": []}, "recipe.modifiers"),
        ("modifiers: [{method: rtn, bits: 4}]\nvalidation: {seq_len: 1}", "recipe.validation.seq_len"),
    ],
)
def test_errors_name_the_field(recipe: object, field: str) -> None:
    with pytest.raises(RecipeError) as caught:
        resolve_recipe(recipe=recipe)
    assert caught.value.field == field
    assert str(caught.value).startswith(f"{field}: ")


def test_exactly_one_source() -> None:
    with pytest.raises(RecipeError):
        resolve_recipe()
    with pytest.raises(RecipeError):
        resolve_recipe("w4a16-rtn", {"modifiers": []})


def test_json_yaml_and_round_trip() -> None:
    text = json.dumps({"modifiers": [{"method": "rtn", "bits": 8, "group_size": 64}]})
    recipe = resolve_recipe(recipe=text)
    assert recipe.modifiers[0].group_size == 64 and recipe.calibration.samples == 128
    assert Recipe.model_validate(yaml.safe_load(recipe.to_yaml())) == recipe


def test_group_size_must_divide_the_widths_it_hits() -> None:
    validate_recipe_for_model(resolve_recipe("w4a16-rtn"), SHARED_CONFIG)
    bad = resolve_recipe(recipe={"modifiers": [{"method": "rtn", "bits": 4, "group_size": 512}]})
    with pytest.raises(RecipeError) as caught:
        validate_recipe_for_model(bad, SHARED_CONFIG)
    assert caught.value.field == "recipe.modifiers.0.group_size" and "q_proj" in caught.value.message
    only_down = resolve_recipe(
        recipe={
            "modifiers": [{"method": "rtn", "bits": 4, "group_size": 384, "targets": ["re:.*down_proj$"]}]
        }
    )
    validate_recipe_for_model(only_down, SHARED_CONFIG)
    odd_mlp = {**SHARED_CONFIG, "intermediate_size": 700}
    with pytest.raises(RecipeError, match="down_proj"):
        validate_recipe_for_model(resolve_recipe("w4a16-rtn"), odd_mlp)


@pytest.mark.parametrize("field", ["targets", "ignore"])
def test_a_layer_pattern_that_matches_nothing_is_rejected(field: str) -> None:
    recipe = resolve_recipe(recipe={"modifiers": [{"method": "gptq", "bits": 4, field: ["re:.*no_such_proj$"]}]})
    with pytest.raises(RecipeError) as caught:
        validate_recipe_for_model(recipe, SHARED_CONFIG)
    assert caught.value.field == f"recipe.modifiers.0.{field}" and "no_such_proj" in caught.value.message


def test_remote_code_architectures_are_refused() -> None:
    with pytest.raises(RecipeError) as caught:
        validate_recipe_for_model(resolve_recipe("w4a16"), {**SHARED_CONFIG, "auto_map": {"AutoModel": "x.Y"}})
    assert caught.value.field == "model"


SMALL = {"vocab_size": 256, "hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4,
         "num_key_value_heads": 2}
MIXTURES = {
    "mixtral": {**SMALL, "model_type": "mixtral", "intermediate_size": 128, "num_local_experts": 4},
    "qwen2_moe": {**SMALL, "model_type": "qwen2_moe", "intermediate_size": 128, "moe_intermediate_size": 32,
                  "num_experts": 4, "shared_expert_intermediate_size": 64},
}


@pytest.mark.parametrize("name", list(MIXTURES))
def test_mixtures_of_stacked_experts_are_refused_before_any_compute(name: str) -> None:
    """transformers >= 5 holds each projection of all experts as one 3-D tensor, not Linear layers: compressing
    the rest would write a checkpoint that transformers cannot load."""
    with pytest.raises(RecipeError) as caught:
        validate_recipe_for_model(resolve_recipe("w4a16"), MIXTURES[name])
    assert caught.value.field == "model"
    assert "model.layers.0.mlp.experts." in caught.value.message and "not supported" in caught.value.message


def test_conv1d_projections_are_refused_by_name() -> None:
    gpt2 = {"model_type": "gpt2", "vocab_size": 256, "n_embd": 64, "n_layer": 2, "n_head": 4, "n_positions": 128}
    with pytest.raises(RecipeError) as caught:
        validate_recipe_for_model(resolve_recipe("w8a16"), gpt2)
    assert caught.value.field == "model" and "transformer.h.0.attn.c_attn is a transformers Conv1D" in (
        caught.value.message)


def test_convolution_weights_are_not_taken_for_experts() -> None:
    mamba = {"model_type": "mamba", "vocab_size": 256, "hidden_size": 64, "num_hidden_layers": 2, "state_size": 8}
    validate_recipe_for_model(resolve_recipe("w8a16"), mamba)  # conv1d weights are [C, 1, K]


@pytest.mark.parametrize(
    ("modifier", "field", "words"),
    [
        ({"method": "rtn", "bits": 4, "type": "float"}, "recipe.modifiers.0", "bits 8"),
        ({"method": "rtn", "bits": 8, "activations": "fp8"}, "recipe.modifiers.0", "fp8 activations"),
        ({"method": "gptq", "bits": 8, "type": "float"}, "recipe.modifiers.0", "rtn"),
        ({"method": "rtn", "bits": 4, "symmetric": False, "activations": "int8"}, "recipe.modifiers.0", "zero"),
        ({"method": "sparsegpt"}, "recipe.modifiers.0", "exactly one"),
        ({"method": "sparsegpt", "sparsity": 0.5, "pattern": "2:4"}, "recipe.modifiers.0", "exactly one"),
        ({"method": "wanda", "pattern": "4:4"}, "recipe.modifiers.0", "N must be below M"),
        ({"method": "wanda", "pattern": "2of4"}, "recipe.modifiers.0.pattern", "pattern"),
        ({"method": "sparsegpt", "sparsity": 1.0}, "recipe.modifiers.0.sparsity", "less than 1"),
        ({"method": "smoothquant", "alpha": 1.5}, "recipe.modifiers.0.alpha", "less than or equal to 1"),
    ],
)
def test_impossible_modifiers_are_rejected(modifier: dict, field: str, words: str) -> None:
    with pytest.raises(RecipeError) as caught:
        resolve_recipe(recipe={"modifiers": [modifier]})
    assert caught.value.field == field and words in caught.value.message, caught.value


def test_every_preset_validates_against_the_shared_model() -> None:
    for name in PRESETS:
        validate_recipe_for_model(resolve_recipe(name), SHARED_CONFIG)


def test_nm_groups_must_divide_the_width() -> None:
    config = {**SHARED_CONFIG, "hidden_size": 66, "num_attention_heads": 6, "num_key_value_heads": 6}
    with pytest.raises(RecipeError) as caught:
        validate_recipe_for_model(resolve_recipe(recipe={"modifiers": [{"method": "sparsegpt", "pattern": "2:4"}]}),
                                  config)
    assert caught.value.field == "recipe.modifiers.0.pattern" and "input width 66" in caught.value.message


def test_a_later_modifier_overrides_the_layers_it_names() -> None:
    from compress.recipes import assign_layers

    names = ["model.layers.0.self_attn.q_proj", "model.layers.0.mlp.down_proj"]
    recipe = resolve_recipe(recipe={"modifiers": [
        {"method": "gptq", "bits": 4, "group_size": 128},
        {"method": "rtn", "bits": 8, "targets": ["re:.*down_proj"]},
        {"method": "sparsegpt", "pattern": "2:4", "targets": ["q_proj"]},
    ]})
    assert assign_layers(recipe, names) == {
        names[0]: {"quantize": 0, "prune": 2},
        names[1]: {"quantize": 1},
    }
    shadowed = resolve_recipe(recipe={"modifiers": [{"method": "gptq", "bits": 4}, {"method": "rtn", "bits": 8}]})
    with pytest.raises(RecipeError) as caught:
        assign_layers(shadowed, names)
    assert caught.value.field == "recipe.modifiers.0.targets"


def test_concurrent_architecture_checks_leave_torch_default_dtype_alone() -> None:
    """transformers sets torch's process-wide default dtype around a build; the API checks submissions from
    several threads at once, which once left bfloat16 behind for everything that ran after."""
    from concurrent.futures import ThreadPoolExecutor

    from compress.recipes import _linear_shapes, linear_shapes

    base = json.loads((SHARED_MODEL / "config.json").read_text())
    configs = [{**base, "intermediate_size": 512 + 64 * i, "dtype": "bfloat16"} for i in range(12)]
    _linear_shapes.cache_clear()
    with ThreadPoolExecutor(max_workers=6) as pool:
        shapes = list(pool.map(linear_shapes, configs))
    assert torch.get_default_dtype() == torch.float32
    assert [s["model.layers.0.mlp.up_proj"][1] for s in shapes] == [512 + 64 * i for i in range(12)]
