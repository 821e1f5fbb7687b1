from __future__ import annotations

from pathlib import Path

import pytest
from safetensors import safe_open

from compress.model_io import inspect_model_dir, load_model
from shrinkray import demo_model


def test_demo_model_is_deterministic_cached_and_loadable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(demo_model, "STEPS", 3)  # the layout and determinism, not the training, are tested
    first = demo_model.build_demo_model(tmp_path / "a")
    second = demo_model.build_demo_model(tmp_path / "b")
    assert (
        inspect_model_dir(first).files["model.safetensors"]
        == inspect_model_dir(second).files["model.safetensors"]
    )
    mtime = (first / "model.safetensors").stat().st_mtime_ns
    assert (
        demo_model.build_demo_model(first) == first
        and (first / "model.safetensors").stat().st_mtime_ns == mtime
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a", "b"]
    with safe_open(str(first / "model.safetensors"), "pt") as handle:
        assert handle.get_tensor("model.embed_tokens.weight").dtype.is_floating_point
    model, tokenizer = load_model(first)
    assert len(tokenizer) == demo_model.VOCAB_SIZE == model.config.vocab_size
    assert (
        tokenizer.decode(tokenizer("To be, or not", add_special_tokens=False)["input_ids"]) == "To be, or not"
    )
