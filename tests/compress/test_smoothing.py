"""SmoothQuant and AWQ through the runner: only producers that scale their output by their weight are rescaled,
and rescaled models export and reload exactly (the math itself: test_smoothquant.py, test_awq.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from compress.recipes import resolve_recipe
from compress.runner import compress_model
from tests.compress.conftest import export_and_reload

CPU = torch.device("cpu")


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
    export_and_reload(model, tokenizer, recipe, calib_windows, tmp_path / "out")
