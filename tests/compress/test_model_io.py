from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from compress.errors import ModelRejected
from compress.model_io import copy_model_dir, inspect_model_dir, load_model


def test_inspects_the_shared_model_without_loading(shared_model_dir: Path) -> None:
    info = inspect_model_dir(shared_model_dir)
    assert info.architecture == "LlamaForCausalLM" and info.num_layers == 6
    assert set(info.files) >= {"config.json", "model.safetensors", "tokenizer.json"}
    assert all(len(digest) == 64 for digest in info.files.values())
    assert info.total_bytes == sum(p.stat().st_size for p in shared_model_dir.iterdir())


@pytest.mark.parametrize("name", ["pytorch_model.bin", "sub/weights.pt", "optimizer.pth", "x.pkl", "a.ckpt"])
def test_pickle_files_are_refused_by_name(random_model_dir: Path, name: str) -> None:
    (random_model_dir / name).parent.mkdir(parents=True, exist_ok=True)
    (random_model_dir / name).write_bytes(b"\x80\x04not really")
    with pytest.raises(ModelRejected, match="pickle checkpoints are refused") as caught:
        inspect_model_dir(random_model_dir)
    assert name in str(caught.value)


def test_remote_code_is_refused(random_model_dir: Path) -> None:
    config = json.loads((random_model_dir / "config.json").read_text())
    config["auto_map"] = {"AutoModelForCausalLM": "modeling_evil.EvilModel"}
    (random_model_dir / "config.json").write_text(json.dumps(config))
    with pytest.raises(ModelRejected, match="asks for remote code"):
        inspect_model_dir(random_model_dir)


def test_missing_pieces_are_refused(random_model_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(ModelRejected, match="does not exist"):
        inspect_model_dir(tmp_path / "nowhere")
    (random_model_dir / "model.safetensors").unlink()
    with pytest.raises(ModelRejected, match="safetensors"):
        inspect_model_dir(random_model_dir)
    (random_model_dir / "config.json").unlink()
    with pytest.raises(ModelRejected, match="config.json"):
        inspect_model_dir(random_model_dir)


def test_load_and_copy(random_model_dir: Path, tmp_path: Path) -> None:
    model, tokenizer = load_model(random_model_dir)
    assert model.dtype == torch.float32 and tokenizer("To be", add_special_tokens=False)["input_ids"]
    info = copy_model_dir(random_model_dir, tmp_path / "cache" / "copy")
    assert inspect_model_dir(tmp_path / "cache" / "copy").files == info.files
    assert [p.name for p in (tmp_path / "cache").iterdir()] == ["copy"]
