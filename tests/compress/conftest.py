"""Fixtures for the compression library: the shared tiny model, the corpus, and throwaway random models."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

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


def build_random_llama(dest: Path, layers: int = 2, seed: int = 0) -> Path:
    """A random Llama (hidden 64) with the shared model's tokenizer, saved in bf16 safetensors."""
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=2048,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
    )
    LlamaForCausalLM(config).to(torch.bfloat16).save_pretrained(dest)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(SHARED_MODEL / name, dest / name)
    return dest


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


INT4_G32 = {"modifiers": [{"method": "rtn", "bits": 4, "group_size": 32}]}


@pytest.fixture
def int4_recipe() -> Recipe:
    """int4 in groups of 32: the random model is only 64 wide, narrower than the presets' 128."""
    return resolve_recipe(recipe=INT4_G32)
