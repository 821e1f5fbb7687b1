"""Fixtures for the compression library: the shared tiny model, the corpus, and throwaway random models."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
from transformers import AutoConfig, AutoModelForCausalLM

from compress.calibration import token_windows
from compress.model_io import load_model
from compress.recipes import Recipe, resolve_recipe
from tests.conftest import CORPUS, SHARED_MODEL


@pytest.fixture(scope="session")
def shared_model_dir() -> Path:
    return SHARED_MODEL


@pytest.fixture(scope="session")
def corpus() -> Path:
    return CORPUS


SMALL_DECODER = {"vocab_size": 2048, "hidden_size": 64, "intermediate_size": 128, "num_attention_heads": 4,
                 "num_key_value_heads": 2, "max_position_embeddings": 512}


def build_random_model(
    dest: Path, model_type: str = "llama", layers: int = 2, seed: int = 0, vary_vectors: bool = False,
    **fields: object,
) -> Path:
    """A random causal LM of any architecture transformers knows (hidden 64 unless `fields` say otherwise) with
    the shared model's tokenizer, saved in bf16 safetensors. transformers initializes biases to zero and norms to
    one; `vary_vectors` adds noise to every 1-D parameter so that a bias or norm weight dropped shows."""
    torch.manual_seed(seed)
    config = AutoConfig.for_model(model_type, **{**SMALL_DECODER, "num_hidden_layers": layers, **fields})
    model = AutoModelForCausalLM.from_config(config)
    if vary_vectors:
        with torch.no_grad():
            for parameter in model.parameters():
                if parameter.dim() == 1:
                    parameter.add_(torch.randn_like(parameter) * 0.1)
    model.to(torch.bfloat16).save_pretrained(dest)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(SHARED_MODEL / name, dest / name)
    return dest


def build_random_llama(dest: Path, layers: int = 2, seed: int = 0) -> Path:
    """A random Llama (hidden 64) with the shared model's tokenizer, saved in bf16 safetensors."""
    return build_random_model(dest, "llama", layers, seed)


@pytest.fixture
def random_model_dir(tmp_path: Path) -> Path:
    return build_random_llama(tmp_path / "random-llama")


@pytest.fixture
def random_model(random_model_dir: Path):  # type: ignore[no-untyped-def]
    return load_model(random_model_dir)


@pytest.fixture(scope="session")
def calib_text() -> str:
    return (CORPUS / "calib.txt").read_text(encoding="utf-8")


@pytest.fixture(scope="session")
def eval_text() -> str:
    return (CORPUS / "eval.txt").read_text(encoding="utf-8")


@pytest.fixture
def calib_windows(random_model, calib_text: str) -> torch.Tensor:  # type: ignore[no-untyped-def]
    return token_windows(random_model[1], calib_text, 64, 8)


def correlated_layer(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """A weight and correlated inputs with a few outlier channels, like a transformer's activations, and the
    inputs' Hessian: (weight [96, 256], inputs [2048, 256], H [256, 256])."""
    from compress.methods.hessian import HessianAccumulator

    torch.manual_seed(seed)
    inputs = torch.randn(2048, 32) @ torch.randn(32, 256) + 0.1 * torch.randn(2048, 256)
    inputs[:, :4] *= 8
    weight = torch.randn(96, 256) * 0.05
    accumulator = HessianAccumulator(256, torch.device("cpu"))
    for chunk in inputs.split(500):
        accumulator.add(chunk)
    return weight, inputs, accumulator.hessian


def output_error(inputs: torch.Tensor, weight: torch.Tensor, approx: torch.Tensor) -> float:
    """‖XWᵀ − XŴᵀ‖ / ‖XWᵀ‖."""
    return ((inputs @ weight.T - inputs @ approx.T).norm() / (inputs @ weight.T).norm()).item()


def export_and_reload(model, tokenizer, recipe: Recipe, windows: torch.Tensor, out: Path):  # type: ignore[no-untyped-def]
    """Save the compressed model, reload it with transformers and check it computes what the in-memory
    fake-quantized model computed; returns the reloaded model."""
    from compress.export import save_compressed

    with torch.no_grad():
        expected = model(input_ids=windows[:2]).logits
    save_compressed(model, tokenizer, recipe, out)
    loaded, _ = load_model(out)
    with torch.no_grad():
        got = loaded(input_ids=windows[:2]).logits
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)
    return loaded


INT4_G32 = {"modifiers": [{"method": "rtn", "bits": 4, "group_size": 32}]}


@pytest.fixture
def int4_recipe() -> Recipe:
    """int4 in groups of 32: the random model is only 64 wide, narrower than the presets' 128."""
    return resolve_recipe(recipe=INT4_G32)
