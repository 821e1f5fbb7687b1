"""Sibling W4A16 projections fused into one matmul (kernels/fusion.py): the model computes what it did before,
each sibling's columns come from one kernel call per input, and a fusion that would change the model is undone."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from transformers import LlamaConfig, LlamaForCausalLM

from compress.quantize import quantize_weight
from kernels.fusion import FusedProjections, GatedMLP, ProjectionColumns, fuse_sibling_projections
from kernels.linear import Int4Linear, Int8Linear
from tests.kernels.helpers import DEVICE, randn, relative_error


def _int4(n: int, k: int, seed: int, group_size: int = 32, group_index: torch.Tensor | None = None) -> Int4Linear:
    weight = torch.randn(n, k, generator=torch.Generator().manual_seed(seed)) * 0.05
    codes, scale, _ = quantize_weight(weight, 4, group_size, True, torch.bfloat16)
    bias = torch.randn(n, generator=torch.Generator().manual_seed(seed + 1)) if seed % 2 else None
    return Int4Linear(codes, scale, group_size, bias=bias, group_index=group_index).to(DEVICE)


def _int8(n: int, k: int, seed: int, quantize_activations: bool = True) -> Int8Linear:
    weight = torch.randn(n, k, generator=torch.Generator().manual_seed(seed)) * 0.05
    codes, scale, _ = quantize_weight(weight, 8, None, True, torch.bfloat16)
    bias = torch.randn(n, generator=torch.Generator().manual_seed(seed + 1)) if seed % 2 else None
    return Int8Linear(codes, scale, quantize_activations, bias).to(DEVICE)


def _random_llama() -> nn.Module:
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=256, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64)
    model = LlamaForCausalLM(config).to(torch.bfloat16)
    for name, module in list(model.named_modules()):
        if isinstance(module, nn.Linear) and name != "lm_head":
            parent, _, child = name.rpartition(".")
            codes, scale, _ = quantize_weight(module.weight.detach().float(), 4, 32, True, torch.bfloat16)
            setattr(model.get_submodule(parent), child, Int4Linear(codes, scale, 32))
    return model.to(DEVICE).eval()


def test_a_decoder_computes_the_same_with_its_projections_fused() -> None:
    model = _random_llama()
    tokens = torch.randint(0, 256, (2, 6), generator=torch.Generator().manual_seed(3)).to(DEVICE)
    with torch.no_grad():
        before = model(input_ids=tokens).logits
    assert fuse_sibling_projections(model) == {"w4a16": 10}  # per layer q, k, v, gate, up
    attention, mlp = model.model.layers[0].self_attn, model.model.layers[0].mlp
    assert all(isinstance(getattr(attention, name), ProjectionColumns) for name in ("q_proj", "k_proj", "v_proj"))
    assert attention.fused_q_proj_k_proj_v_proj.fused.out_features == 64 + 32 + 32
    # the MLP's gate, up and SiLU are one gated kernel layer in front of its down projection
    assert isinstance(mlp, GatedMLP) and mlp.gate_up.gated and mlp.gate_up.kernel == "w4a16-gated"
    assert (mlp.gate_up.in_features, mlp.gate_up.out_features, mlp.gate_up.dense_shape()) == (64, 128, (256, 64))
    assert isinstance(mlp.down_proj, Int4Linear) and not mlp.down_proj.gated
    with torch.no_grad():
        after = model(input_ids=tokens).logits
    assert relative_error(after, before) < 1e-2
    # every sibling took its columns, so nothing is held between calls (a compiled step sees one state)
    assert attention.fused_q_proj_k_proj_v_proj._input is None


def test_a_gated_pair_computes_silu_of_gate_times_up() -> None:
    """Biases (the gate's alone) and act order carried over; the reference path (no kernel) agrees too."""
    group_index = torch.randperm(128, generator=torch.Generator().manual_seed(2)) // 32
    gate, up = _int4(24, 128, 1, group_index=group_index), _int4(24, 128, 2, group_index=group_index)
    assert gate.bias is not None and up.bias is None
    paired = Int4Linear.gated_pair(gate, up)
    x = randn(3, 128, seed=6)
    expected = torch.nn.functional.silu(gate(x).float()) * up(x).float()
    assert paired(x).shape == (3, 24)
    assert relative_error(paired(x), expected) < 2e-2
    assert relative_error(paired.run_reference(x), expected) < 2e-2


def test_an_mlp_whose_activation_is_not_silu_keeps_plain_sibling_fusion() -> None:
    model = _random_llama()
    for layer in model.model.layers:
        layer.mlp.act_fn = nn.GELU()
    tokens = torch.randint(0, 256, (1, 5), generator=torch.Generator().manual_seed(4)).to(DEVICE)
    with torch.no_grad():
        before = model(input_ids=tokens).logits
    assert fuse_sibling_projections(model) == {"w4a16": 10}
    mlp = model.model.layers[1].mlp
    assert not isinstance(mlp, GatedMLP) and isinstance(mlp.gate_proj, ProjectionColumns)
    with torch.no_grad():
        assert relative_error(model(input_ids=tokens).logits, before) < 1e-2


def test_each_input_gets_its_own_product_and_act_order_is_kept() -> None:
    group_index = torch.randperm(128, generator=torch.Generator().manual_seed(5)) // 32
    siblings = [_int4(24, 128, seed, group_index=group_index) for seed in (1, 2)]
    assert siblings[0].permutation is not None
    shared = FusedProjections(siblings)
    x, other = randn(3, 128, seed=7), randn(3, 128, seed=8)
    # sibling 0 on x, sibling 1 on another tensor: the held product of x must not be reused for it
    first = ProjectionColumns(shared, 0)(x)
    second = ProjectionColumns(shared, 1)(other)
    assert relative_error(first, siblings[0](x)) < 1e-2
    assert relative_error(second, siblings[1](other)) < 1e-2


class _MutatesBetweenSiblings(nn.Module):
    """Changes its input in place between q and k: the same tensor object, other values."""

    def __init__(self) -> None:
        super().__init__()
        self.q_proj, self.k_proj, self.v_proj = (_int4(16, 64, seed) for seed in (2, 4, 6))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.clone()
        q = self.q_proj(x)
        x.mul_(-3)
        return torch.cat([q, self.k_proj(x), self.v_proj(x)], dim=-1)


def test_a_fusion_that_changes_the_output_is_undone() -> None:
    module = _MutatesBetweenSiblings()
    x = randn(2, 64, seed=9)
    with torch.no_grad():
        expected = module(x)
        fused = fuse_sibling_projections(module, logits=lambda probed: probed(x).float())
        got = module(x)
    assert fused == {}
    assert type(module.k_proj) is Int4Linear and not hasattr(module, "fused_q_proj_k_proj_v_proj")
    assert module.k_proj.packed.device.type == DEVICE.type  # moved back from where fusion parked it
    torch.testing.assert_close(got, expected)


@pytest.mark.parametrize("second", [
    lambda: _int4(16, 64, 3, group_size=64),  # another group size
    lambda: nn.Linear(64, 16).to(DEVICE),  # not a kernel layer
    lambda: _int8(16, 64, 3, quantize_activations=False),  # another kernel
])
def test_siblings_that_one_kernel_call_cannot_serve_stay_apart(second) -> None:  # type: ignore[no-untyped-def]
    module = nn.Module()
    module.gate_proj, module.up_proj = _int4(16, 64, 1), second()
    assert fuse_sibling_projections(module, logits=lambda probed: torch.ones(1)) == {}
    assert type(module.gate_proj) is Int4Linear


def test_the_probe_allows_for_the_models_own_run_to_run_noise() -> None:
    """Split-K sums arrive in any order on a GPU, and a deep random model amplifies that to percents: a probe
    that differs that much between two unfused runs must not veto the fusion."""
    module = nn.Module()
    module.gate_proj, module.up_proj = _int4(16, 64, 1), _int4(16, 64, 2)
    x = randn(2, 64, seed=4)
    noise = torch.Generator().manual_seed(0)

    def noisy_logits(probed: nn.Module) -> torch.Tensor:
        exact = torch.cat([probed.gate_proj(x), probed.up_proj(x)], dim=-1).float()
        return exact * (1 + 0.05 * torch.randn(exact.shape, generator=noise).to(exact.device))

    assert fuse_sibling_projections(module, logits=noisy_logits) == {"w4a16": 2}


@pytest.mark.parametrize("quantize_activations", [True, False])
def test_8_bit_siblings_share_one_call(quantize_activations: bool) -> None:
    """W8A8: x is quantized per token once for all siblings (its scale is per row, the same for each)."""
    siblings = [_int8(n, 64, seed, quantize_activations) for n, seed in ((32, 1), (16, 2), (16, 3))]
    module = nn.Module()
    module.q_proj, module.k_proj, module.v_proj = siblings
    x = randn(3, 64, seed=6)
    expected = [sibling(x) for sibling in siblings]

    def probe(probed: nn.Module) -> torch.Tensor:
        return torch.cat([probed.q_proj(x), probed.k_proj(x), probed.v_proj(x)], -1).float()

    kernel = "w8a8-int8" if quantize_activations else "w8a16-int8"
    assert fuse_sibling_projections(module, logits=probe) == {kernel: 3}
    assert module.k_proj.kernel == f"{kernel}-fused"
    for got, want in zip((module.q_proj(x), module.k_proj(x), module.v_proj(x)), expected, strict=True):
        torch.testing.assert_close(got, want)


def test_a_fused_model_that_fails_is_undone_and_shared_layers_stay() -> None:
    module = nn.Module()
    module.gate_proj, module.up_proj = _int4(16, 64, 1), _int4(16, 64, 2)
    x = randn(2, 64, seed=4)

    def probe(probed: nn.Module) -> torch.Tensor:
        if isinstance(probed.up_proj, ProjectionColumns):
            raise RuntimeError("the fused model broke")
        return torch.cat([probed.gate_proj(x), probed.up_proj(x)], -1).float()

    assert fuse_sibling_projections(module, logits=probe) == {}
    assert type(module.up_proj) is Int4Linear and not hasattr(module, "fused_gate_proj_up_proj")
    # one layer held by two blocks (weight sharing): fusing it in one block would leave the other calling a
    # layer parked off the GPU, so neither block fuses
    shared = nn.Module()
    shared.first, shared.second = nn.Module(), nn.Module()
    shared.first.gate_proj, shared.first.up_proj = module.gate_proj, module.up_proj
    shared.second.gate_proj, shared.second.up_proj = module.gate_proj, _int4(16, 64, 3)
    assert fuse_sibling_projections(shared, logits=lambda probed: torch.ones(1)) == {}


def test_a_gated_mlp_that_fails_the_probe_is_put_back() -> None:
    block = nn.Module()
    block.mlp = nn.Module()
    mlp = block.mlp
    mlp.gate_proj, mlp.up_proj, mlp.down_proj = _int4(32, 64, 1), _int4(32, 64, 2), _int4(64, 32, 3)
    mlp.act_fn = nn.SiLU()
    x = randn(2, 64, seed=4)

    def probe(probed: nn.Module) -> torch.Tensor:
        if isinstance(probed.mlp, GatedMLP):
            return probed.mlp(x).float() + 1.0  # a fused model that computes something else
        return probed.mlp.down_proj(probed.mlp.act_fn(probed.mlp.gate_proj(x)) * probed.mlp.up_proj(x)).float()

    assert fuse_sibling_projections(block, logits=probe) == {}
    assert block.mlp is mlp and type(mlp.gate_proj) is Int4Linear and type(mlp.up_proj) is Int4Linear
    assert mlp.up_proj.packed.device.type == DEVICE.type


def test_a_compiled_decode_step_runs_the_gated_layers() -> None:
    """torch.compile sees the gated layer as one operator whose output has half the layer's columns."""
    from kernels.decoding import GreedyDecoder

    model = _random_llama()
    assert fuse_sibling_projections(model) == {"w4a16": 10}
    prompt = torch.randint(0, 256, (1, 4), generator=torch.Generator().manual_seed(6)).to(DEVICE)
    eager = GreedyDecoder(model, prompt, new_tokens=3).decode()
    assert torch.equal(GreedyDecoder(model, prompt, new_tokens=3, compile_step=True).decode(), eager)
