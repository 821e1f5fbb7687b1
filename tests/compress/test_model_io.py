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


@pytest.mark.parametrize("name", ["config.json", "tokenizer_config.json"])
def test_remote_code_is_refused(random_model_dir: Path, name: str) -> None:
    path = random_model_dir / name
    document = json.loads(path.read_text()) if path.is_file() else {}
    document["auto_map"] = {"AutoModelForCausalLM": "modeling_evil.EvilModel"}
    path.write_text(json.dumps(document))
    with pytest.raises(ModelRejected, match=f"{name} asks for remote code"):
        inspect_model_dir(random_model_dir)


@pytest.mark.parametrize("name, content, reason", [
    ("config.json", b'{"model_type": "llama", ', "config.json is not valid JSON"),
    ("config.json", b"[1, 2]", "must hold a JSON object"),
    ("tokenizer_config.json", b"\xff\xfe", "tokenizer_config.json is not valid JSON"),
    ("config.json", b'{"pad": "' + b"x" * (1 << 20) + b'"}', "the limit is 1048576"),
    ("model.safetensors", b"\xff" * 8 + b"{}", "model.safetensors is not a readable safetensors file"),
    ("model.safetensors", b"\x04", "not a readable safetensors file"),
])
def test_malformed_or_oversized_files_are_refused_with_their_name(random_model_dir: Path, name: str,
                                                                  content: bytes, reason: str) -> None:
    (random_model_dir / name).write_bytes(content)
    with pytest.raises(ModelRejected, match=reason):
        inspect_model_dir(random_model_dir)


def test_links_out_of_the_model_directory_are_refused(random_model_dir: Path, tmp_path: Path) -> None:
    secret = tmp_path / "credentials"
    secret.write_text("aws_secret_access_key = hunter2")
    (random_model_dir / "tokenizer.model").symlink_to(secret)
    with pytest.raises(ModelRejected, match="tokenizer.model is a link to a file outside"):
        inspect_model_dir(random_model_dir)
    (random_model_dir / "tokenizer.model").unlink()
    (random_model_dir / "extra").symlink_to(tmp_path, target_is_directory=True)
    with pytest.raises(ModelRejected, match="extra is a link"):
        inspect_model_dir(random_model_dir)
    (random_model_dir / "extra").unlink()
    (random_model_dir / "config-link.json").symlink_to(random_model_dir / "config.json")  # inside: fine
    assert "config-link.json" in inspect_model_dir(random_model_dir).files


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
