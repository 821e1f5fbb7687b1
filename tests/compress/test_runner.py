from __future__ import annotations

import pytest
import torch
from torch import nn

from compress.errors import Cancelled, RecipeError
from compress.layers import find_decoder_layers
from compress.recipes import resolve_recipe
from compress.runner import calibrate, compress_model

# A distinct spelling of the CPU lets the spy tell "to the compute device" from "back to the host".
COMPUTE = torch.device("cpu", 0)


def _spy_residency(model: nn.Module) -> tuple[list[str], set[int]]:
    """Record every layer forward with the set of layers that sat on the compute device at that moment."""
    _, layers = find_decoder_layers(model)
    resident: set[int] = set()
    log: list[str] = []
    for index, layer in enumerate(layers):
        real_to = layer.to

        def to(*args, index=index, real_to=real_to, **kwargs):  # type: ignore[no-untyped-def]
            device = torch.device(args[0]) if args else kwargs["device"]
            (resident.add if device == COMPUTE else resident.discard)(index)
            return real_to(*args, **kwargs)

        layer.to = to  # type: ignore[method-assign]
        layer.register_forward_hook(  # after the forward: the layer-0 capture never completes one
            lambda _m, _a, _o, index=index: log.append(f"{index} ran with {sorted(resident)} on device")
        )
    return log, resident


def test_calibrate_keeps_one_layer_on_the_device(random_model, calib_windows) -> None:  # type: ignore[no-untyped-def]
    model, _ = random_model
    log, resident = _spy_residency(model)
    progress: list[tuple[int, int]] = []
    stats = calibrate(
        model,
        calib_windows,
        resolve_recipe("w4a16-rtn"),
        COMPUTE,
        progress=lambda done, total, _msg: progress.append((done, total)),
    )
    n_batches = -(-calib_windows.shape[0] // 8)
    assert log == [f"{i} ran with [{i}] on device" for i in range(2) for _ in range(n_batches)]
    assert resident == set() and progress == [(1, 2), (2, 2)]
    absmax = stats["model.layers.1.mlp.down_proj.input_absmax"]
    assert absmax.shape == (128,) and absmax.dtype == torch.float32 and absmax.min() >= 0
    assert len(stats) == 2 * 7 * 2
    assert all(key.endswith(("input_absmax", "input_sqnorm")) for key in stats)


def test_compress_quantizes_every_targeted_linear(random_model, calib_windows, int4_recipe) -> None:  # type: ignore[no-untyped-def]
    model, _ = random_model
    before = {
        name: m.weight.detach().clone() for name, m in model.named_modules() if isinstance(m, nn.Linear)
    }
    _, resident = _spy_residency(model)
    progress: list[int] = []
    summary = compress_model(
        model,
        int4_recipe,
        calib_windows,
        {},
        COMPUTE,
        progress=lambda done, _total, _msg: progress.append(done),
    )
    assert summary.layers == 2 and summary.modules == 14 and summary.methods == {"rtn": 14}
    assert 0 < summary.mean_relative_error < 0.5 and progress == [1, 2] and resident == set()
    down = model.model.layers[0].mlp.down_proj
    assert down.weight_scale.shape == (64, 4)  # in_features 128, groups of 32
    assert all(len(torch.unique(group)) <= 16 for group in down.weight[0].split(32))
    assert not torch.equal(down.weight, before["model.layers.0.mlp.down_proj"])
    assert torch.equal(model.lm_head.weight, before["lm_head"])
    assert not any(m._forward_hooks for m in model.modules() if isinstance(m, nn.Linear))
    assert not any(layer._forward_pre_hooks for layer in model.model.layers)


def test_cancelled_between_layers(random_model, calib_windows) -> None:  # type: ignore[no-untyped-def]
    model, _ = random_model
    calls: list[int] = []

    def stop_after_first() -> bool:
        calls.append(1)
        return len(calls) > 1

    with pytest.raises(Cancelled, match="before layer 1 of 2"):
        compress_model(
            model, resolve_recipe("w8a16-rtn"), calib_windows, {}, COMPUTE, should_stop=stop_after_first
        )
    with pytest.raises(Cancelled):
        calibrate(model, calib_windows, resolve_recipe("w8a16-rtn"), COMPUTE, should_stop=lambda: True)


def test_targets_outside_decoder_layers_are_an_error(random_model) -> None:  # type: ignore[no-untyped-def]
    recipe = resolve_recipe(recipe={"modifiers": [{"method": "rtn", "bits": 8, "ignore": []}]})
    with pytest.raises(RecipeError, match="lm_head is outside the decoder layers"):
        compress_model(random_model[0], recipe, None, {}, torch.device("cpu"))


def test_group_size_is_checked_against_the_real_layers(random_model) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(
        RecipeError, match="128 does not divide the input width 64 of model.layers.0.self_attn.q_proj"
    ):
        compress_model(random_model[0], resolve_recipe("w4a16-rtn"), None, {}, torch.device("cpu"))


def test_a_loaded_mixture_of_stacked_experts_is_refused() -> None:
    from transformers import MixtralConfig, MixtralForCausalLM

    config = MixtralConfig(vocab_size=256, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                           num_attention_heads=4, num_key_value_heads=2, num_local_experts=4)
    with pytest.raises(RecipeError, match=r"model\.layers\.0\.mlp\.experts\.\w+ is a \[4, \d+, \d+\] weight") as caught:
        compress_model(MixtralForCausalLM(config), resolve_recipe("w8a16-rtn"), None, {}, torch.device("cpu"))
    assert caught.value.field == "model"


def test_layer_kwargs_move_to_the_compute_device_however_nested() -> None:
    from compress.runner import _to

    cpu = torch.ones(2)
    moved = _to({"position_embeddings": (cpu, cpu), "mask": [cpu], "flag": True}, torch.device("meta"))
    assert moved["flag"] is True
    assert all(t.device.type == "meta" for t in (*moved["position_embeddings"], *moved["mask"]))


def test_linears_reading_one_input_are_compressed_as_one_matrix(random_model, calib_windows, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    import compress.methods.gptq as gptq

    shapes: list[tuple[int, int]] = []
    real = gptq.gptq_quantize
    monkeypatch.setattr(gptq, "gptq_quantize", lambda w, *a, **k: shapes.append(tuple(w.shape)) or real(w, *a, **k))
    model, _ = random_model
    config = model.config
    head_dim = config.hidden_size // config.num_attention_heads
    qkv_rows = config.hidden_size + 2 * config.num_key_value_heads * head_dim
    recipe = resolve_recipe(recipe={"modifiers": [{"method": "gptq", "bits": 4, "group_size": 32}]})
    summary = compress_model(model, recipe, calib_windows[:4], {}, torch.device("cpu"))
    assert summary.methods == {"gptq": 14}
    per_layer = [(qkv_rows, config.hidden_size), (config.hidden_size, config.hidden_size),
                 (2 * config.intermediate_size, config.hidden_size), (config.hidden_size, config.intermediate_size)]
    assert shapes == per_layer * config.num_hidden_layers
