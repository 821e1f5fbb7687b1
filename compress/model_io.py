"""Model directories: check one without loading it, load it safely, copy it into a cache.

Only safetensors are ever read and remote code is never run: a pickle checkpoint can execute code on
load, and `auto_map` asks transformers to import Python shipped with the model.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

from compress.errors import ModelRejected

PICKLE_SUFFIXES = {".bin", ".pt", ".pth", ".pkl", ".ckpt"}


@dataclass(frozen=True)
class ModelInfo:
    path: Path
    files: dict[str, str]  # relative path -> sha256 hex
    total_bytes: int
    architecture: str
    num_layers: int


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def inspect_model_dir(path: Path) -> ModelInfo:
    """Validate a Hugging Face directory without loading any weights."""
    path = Path(path)
    if not path.is_dir():
        raise ModelRejected(f"{path} does not exist or is not a directory")
    files = sorted(p for p in path.rglob("*") if p.is_file())
    for file in files:
        if file.suffix in PICKLE_SUFFIXES:
            raise ModelRejected(
                f"{file.relative_to(path)}: pickle checkpoints are refused; convert to safetensors"
            )
    config_path = path / "config.json"
    if not config_path.is_file():
        raise ModelRejected(f"{path} has no config.json")
    try:
        config = json.loads(config_path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ModelRejected(f"config.json is not valid JSON: {exc}") from exc
    if not isinstance(config, dict):
        raise ModelRejected("config.json must hold a JSON object")
    if "auto_map" in config:
        raise ModelRejected("config.json asks for remote code (auto_map); trust_remote_code is never enabled")
    if not any(file.suffix == ".safetensors" for file in files):
        raise ModelRejected(f"{path} holds no *.safetensors weights")
    architectures = config.get("architectures") or [config.get("model_type", "unknown")]
    return ModelInfo(
        path=path,
        files={file.relative_to(path).as_posix(): _sha256(file) for file in files},
        total_bytes=sum(file.stat().st_size for file in files),
        architecture=str(architectures[0]),
        num_layers=int(config.get("num_hidden_layers") or 0),
    )


def load_model(
    path: Path, dtype: torch.dtype = torch.float32
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Load a checked directory for CPU work; compressed-tensors checkpoints come back dense (dequantized)."""
    inspect_model_dir(path)
    model = AutoModelForCausalLM.from_pretrained(
        path, dtype=dtype, use_safetensors=True, trust_remote_code=False, local_files_only=True
    )
    quantizer = getattr(model, "hf_quantizer", None)
    if quantizer is not None:
        # Unpack now, in `dtype`: transformers' dequantize=True option would dequantize in the checkpoint's
        # bf16 and differ from the exported weights by up to half a bf16 ulp.
        quantizer.compressor.decompress_model(model)
    tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=False, local_files_only=True)
    model.eval()
    return model, tokenizer


def copy_model_dir(src: Path, dst: Path) -> ModelInfo:
    """Copy a checked model directory to dst atomically (temp dir beside dst, then rename)."""
    info = inspect_model_dir(src)
    dst = Path(dst)
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.parent / f".{dst.name}.tmp-{uuid.uuid4().hex[:8]}"
    try:
        shutil.copytree(src, tmp)
        os.replace(tmp, dst)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return info
