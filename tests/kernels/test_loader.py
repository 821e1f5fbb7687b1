"""Checkpoints written by compress/ loaded onto the kernels: every Linear gets the kernel its scheme calls
for, and the model computes what the checkpoint means (transformers' dequantized model, with the activation
quantization the scheme asks for)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from compressed_tensors.quantization import disable_quantization
from torch import nn

from compress.float8 import fake_quantize_per_token_fp8, fake_quantize_per_token_int8
from compress.model_io import load_model
from kernels.fusion import GatedMLP, ProjectionColumns
from kernels.linear import Int4Linear
from kernels.loader import UnsupportedScheme, load_for_inference
from kernels.self_check import KernelMismatch
from tests.compress.conftest import build_random_llama, build_random_model
from tests.kernels.helpers import DEVICE, compressed_checkpoint, relative_error


def _fused(kernel: str) -> dict[str, int]:
    """Two decoder layers: o_proj and down_proj alone, q/k/v and gate/up fused (kernels/fusion.py)."""
    return {kernel: 4, f"{kernel}-fused": 10}


RECIPES = {
    "w4a16": ([{"method": "rtn", "bits": 4, "group_size": 32}], _fused("w4a16"), None),
    "w4a16-asym": ([{"method": "rtn", "bits": 4, "group_size": 32, "symmetric": False}], _fused("w4a16"), None),
    "w3a16-channel": ([{"method": "rtn", "bits": 3, "group_size": None}], _fused("w4a16"), None),
    "w8a8-int8": ([{"method": "rtn", "bits": 8, "activations": "int8"}], _fused("w8a8-int8"),
                  fake_quantize_per_token_int8),
    "w8a8-fp8": ([{"method": "rtn", "bits": 8, "type": "float", "activations": "fp8"}], _fused("w8a8-fp8"),
                 fake_quantize_per_token_fp8),
    "w8a16": ([{"method": "rtn", "bits": 8}], _fused("w8a16-int8"), None),
    "2of4": ([{"method": "wanda", "pattern": "2:4"}], {"2:4": 14}, None),
    "2of4-w4a16": ([{"method": "wanda", "pattern": "2:4"}, {"method": "rtn", "bits": 4, "group_size": 32}],
                   {"2:4-w4a16": 14}, None),
}


@pytest.fixture(scope="module")
def base_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_random_llama(tmp_path_factory.mktemp("base") / "model")


def _with_activation_quantization(model: nn.Module, fake_quantize) -> None:  # type: ignore[no-untyped-def]
    for name, module in model.named_modules():
        if isinstance(module, nn.Linear) and name != "lm_head":
            module.register_forward_pre_hook(lambda _, inputs: (fake_quantize(inputs[0]),))


@pytest.mark.parametrize("name", list(RECIPES))
def test_checkpoint_runs_on_its_kernels(name: str, base_model: Path, tmp_path: Path) -> None:
    modifiers, expected_kernels, fake_quantize = RECIPES[name]
    path = compressed_checkpoint(base_model, modifiers, tmp_path / name)
    model, used = load_for_inference(path, DEVICE)
    assert used == {**expected_kernels, "dense": 1}  # lm_head stays dense
    assert [name for name, m in model.named_modules() if isinstance(m, nn.Linear)] == ["lm_head"]
    # fused siblings are views of one output, or for W4A16 a gated MLP's gate and up (with its SiLU) in one layer
    assert sum(isinstance(m, ProjectionColumns) for m in model.modules()) + 2 * sum(
        isinstance(m, GatedMLP) for m in model.modules()) == sum(
        count for kernel, count in expected_kernels.items() if kernel.endswith("-fused"))
    reference, _ = load_model(path, dtype=torch.bfloat16)  # the same compute dtype as the kernels
    if fake_quantize is not None:
        _with_activation_quantization(reference, fake_quantize)
    tokens = torch.randint(0, model.config.vocab_size, (2, 12), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        got = model(input_ids=tokens.to(DEVICE)).logits
        expected = reference(input_ids=tokens).logits
    assert got.dtype == torch.bfloat16
    error = relative_error(got.cpu(), expected)
    print(f"{name}: relative logits error {error:.2e}")
    # bf16 sums in another order; 8-bit activation codes flip at rounding ties and amplify that on a random model
    assert error < (3e-2 if fake_quantize is not None else 1e-2)


def test_an_fp8_checkpoint_runs_weight_only_on_a_gpu_without_fp8(base_model: Path, tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """On an A100 (no FP8 tensor cores) a W8A8 FP8 checkpoint still loads and runs: its weights read as bytes,
    activations unquantized, the kernels named for what runs, and the logits those of the dequantized model."""
    from kernels import linear, w8a8

    path = compressed_checkpoint(base_model, RECIPES["w8a8-fp8"][0], tmp_path / "fp8")
    monkeypatch.setattr(w8a8, "fp8_tensor_cores", lambda device: False)
    monkeypatch.setattr(linear, "fp8_tensor_cores", lambda device: False)
    model, used = load_for_inference(path, DEVICE)
    assert used == {**_fused("w8a16-fp8"), "dense": 1}
    reference, _ = load_model(path, dtype=torch.bfloat16)
    reference.apply(disable_quantization)  # compressed-tensors would quantize its activations: weight-only here
    tokens = torch.randint(0, model.config.vocab_size, (2, 12), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        got = model(input_ids=tokens.to(DEVICE)).logits
        expected = reference(input_ids=tokens).logits
    assert relative_error(got.cpu(), expected) < 1e-2


# architectures whose layers differ from Llama's where the loader and the fusion look: biased q/k/v (Qwen2),
# projections the checkpoint already fuses (Phi-3), biases everywhere with LayerNorm and fc1/fc2 (OPT), a norm
# scaled by 1 + w and tied embeddings (Gemma)
ARCHITECTURES = {
    "qwen2": {},
    "phi3": {"pad_token_id": 0},
    "opt": {"ffn_dim": 128, "word_embed_proj_dim": 64},
    "gemma": {"head_dim": 16},
}


@pytest.mark.parametrize("model_type", list(ARCHITECTURES))
def test_other_architectures_run_on_their_kernels(model_type: str, tmp_path: Path) -> None:
    base = build_random_model(tmp_path / "base", model_type, vary_vectors=True, **ARCHITECTURES[model_type])
    path = compressed_checkpoint(base, RECIPES["w4a16-asym"][0], tmp_path / "w4a16")
    model, used = load_for_inference(path, DEVICE)
    assert [name for name, m in model.named_modules() if isinstance(m, nn.Linear)] == ["lm_head"]
    assert set(used) <= {"w4a16", "w4a16-fused", "dense"} and used["dense"] == 1
    reference, _ = load_model(path, dtype=torch.bfloat16)
    tokens = torch.randint(0, model.config.vocab_size, (2, 12), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        got = model(input_ids=tokens.to(DEVICE)).logits
        expected = reference(input_ids=tokens).logits
    error = relative_error(got.cpu(), expected)
    print(f"{model_type}: {used}, relative logits error {error:.2e}")
    assert error < 1e-2


def test_a_scheme_without_a_kernel_is_named(base_model: Path, tmp_path: Path) -> None:
    path = compressed_checkpoint(base_model, [{"method": "rtn", "bits": 4, "group_size": 32, "activations": "int8"}],
                       tmp_path / "w4a8")
    with pytest.raises(UnsupportedScheme, match=r"model\.layers\.0\..*quantized activations"):
        load_for_inference(path, DEVICE)


def test_loading_refuses_a_kernel_that_disagrees_with_its_reference(
    base_model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = compressed_checkpoint(base_model, RECIPES["w4a16"][0], tmp_path / "w4a16")
    kernel = Int4Linear.run_kernel
    monkeypatch.setattr(Int4Linear, "run_kernel", lambda self, x: -kernel(self, x))
    with pytest.raises(KernelMismatch, match="w4a16 kernel disagrees"):
        load_for_inference(path, DEVICE)
