"""Model directories: check one without loading it, load it safely, copy it into a cache.

Only safetensors are ever read and remote code is never run: a pickle checkpoint can execute code on
load, and `auto_map` asks transformers to import Python shipped with the model. A directory is checked
before anything reads it for real: no links leading out of it (they would carry files such as credentials
into the published checkpoint), JSON files within their size limits and well-formed, safetensors headers
that parse.
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
from safetensors import safe_open
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

from compress.errors import ModelRejected

PICKLE_SUFFIXES = {".bin", ".pt", ".pth", ".pkl", ".ckpt"}
# The JSON files transformers reads, and the largest each may be (real tokenizer.json files reach ~35 MB).
JSON_LIMITS = {"config.json": 1 << 20, "generation_config.json": 1 << 20, "special_tokens_map.json": 1 << 20,
               "tokenizer_config.json": 16 << 20, "tokenizer.json": 128 << 20}


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


def _refuse_escaping_links(root: Path, entries: list[Path]) -> None:
    resolved_root = root.resolve()
    for entry in entries:
        if entry.is_symlink() and not entry.resolve().is_relative_to(resolved_root):
            raise ModelRejected(f"{entry.relative_to(root)} is a link to a file outside the model directory")


def _json_object(file: Path, limit: int) -> dict:
    if file.stat().st_size > limit:
        raise ModelRejected(f"{file.name} is {file.stat().st_size} bytes; the limit is {limit}")
    try:
        document = json.loads(file.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ModelRejected(f"{file.name} is not valid JSON: {exc}") from exc
    if not isinstance(document, dict):
        raise ModelRejected(f"{file.name} must hold a JSON object")
    return document


def _check_safetensors_header(file: Path, root: Path) -> None:
    """The header alone (8-byte length, then JSON) is parsed: a truncated or forged file is refused here,
    with its name, rather than as a loader traceback stages later."""
    try:
        with safe_open(file, framework="pt") as handle:
            handle.keys()
    except Exception as exc:  # safetensors raises its own error types, and OSError for short files
        raise ModelRejected(f"{file.relative_to(root)} is not a readable safetensors file: {exc}") from exc


def check_model_dir(path: Path) -> tuple[dict, list[Path]]:
    """Everything about a directory that can be refused without reading its weights (config.json and the
    files, returned); cheap enough for the API to run at submission."""
    path = Path(path)
    if not path.is_dir():
        raise ModelRejected(f"{path} does not exist or is not a directory")
    entries = sorted(path.rglob("*"))
    _refuse_escaping_links(path, entries)
    files = [entry for entry in entries if entry.is_file()]
    for file in files:
        if file.suffix in PICKLE_SUFFIXES:
            raise ModelRejected(
                f"{file.relative_to(path)}: pickle checkpoints are refused; convert to safetensors"
            )
    if not (path / "config.json").is_file():
        raise ModelRejected(f"{path} has no config.json")
    documents = {name: _json_object(path / name, limit) for name, limit in JSON_LIMITS.items()
                 if (path / name).is_file()}
    for name in ("config.json", "tokenizer_config.json"):
        if "auto_map" in documents.get(name, {}):
            raise ModelRejected(f"{name} asks for remote code (auto_map); trust_remote_code is never enabled")
    weights = [file for file in files if file.suffix == ".safetensors"]
    if not weights:
        raise ModelRejected(f"{path} holds no *.safetensors weights")
    for file in weights:
        _check_safetensors_header(file, path)
    return documents["config.json"], files


def inspect_model_dir(path: Path) -> ModelInfo:
    """Check a Hugging Face directory (see check_model_dir) and fingerprint its files, without loading weights."""
    path = Path(path)
    config, files = check_model_dir(path)
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
    """Load a checked directory for CPU work; compressed-tensors checkpoints come back dense (dequantized).
    transformers fills weights a checkpoint lacks with random values and only warns; that is refused here."""
    check_model_dir(path)
    model, loading = AutoModelForCausalLM.from_pretrained(
        path, dtype=dtype, use_safetensors=True, trust_remote_code=False, local_files_only=True,
        output_loading_info=True,
    )
    quantizer = getattr(model, "hf_quantizer", None)
    missing = sorted(loading.get("missing_keys") or [])
    if missing and quantizer is None:
        shown = ", ".join(missing[:3]) + (f" and {len(missing) - 3} more" if len(missing) > 3 else "")
        raise ModelRejected(f"the checkpoint lacks weights the architecture needs: {shown}")
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
