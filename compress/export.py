"""Export: a Hugging Face directory in the compressed-tensors format that transformers and vLLM load.

Quantized weights are stored in the format schemes.storage_format picks (int4 packed into int32, int8 or
FP8 codes, bf16 scales); config.json gets the `quantization_config` compressed-tensors writes; recipe.yaml
records how it was made. Pruned weights are stored dense, with their zeros.
"""

from __future__ import annotations

import os
import shutil
import uuid
from pathlib import Path

import torch
from compressed_tensors.compressors import ModelCompressor
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from compress.errors import CompressError
from compress.recipes import Recipe
from compress.schemes import SCALE_DTYPE


def save_compressed(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    recipe: Recipe,
    out_dir: Path,
    dtype: torch.dtype = SCALE_DTYPE,
) -> None:
    """Write model (after compress_model) to out_dir atomically: built in a temp dir beside it, then renamed.

    The model is cast to `dtype` and packed in place for the write, then unpacked again, so it stays usable.
    """
    out_dir = Path(out_dir)
    if out_dir.exists() and any(out_dir.iterdir()):
        raise CompressError(f"{out_dir} exists and is not empty")
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_dir.parent / f".{out_dir.name}.tmp-{uuid.uuid4().hex[:8]}"
    compressor = ModelCompressor.from_pretrained_model(model)
    if compressor.quantization_config is None and not _is_sparse(recipe):
        raise CompressError("the model carries no quantization scheme; run compress_model first")
    if compressor.quantization_config is not None:
        # Pack before the cast: re-deriving int8 codes from bf16 weights can land a code off by one.
        compressor.compress_model(model)
    _cast_for_checkpoint(model, dtype)
    model.config.dtype = dtype
    try:
        model.save_pretrained(tmp)
        if compressor.quantization_config is not None:
            compressor.update_config(str(tmp))
        tokenizer.save_pretrained(tmp)
        (tmp / "recipe.yaml").write_text(recipe.to_yaml(), encoding="utf-8")
        if out_dir.exists():
            out_dir.rmdir()
        os.replace(tmp, out_dir)
    finally:
        if compressor.quantization_config is not None:
            compressor.decompress_model(model)
        shutil.rmtree(tmp, ignore_errors=True)


_CAST = (torch.float32, torch.float16, torch.bfloat16, torch.float64)


def _cast_for_checkpoint(model: torch.nn.Module, dtype: torch.dtype) -> None:
    """Cast floating tensors to `dtype`, except FP8 codes and scales whose scheme fixes their dtype (integer
    scales are fp32, where they are exact)."""
    for module in model.modules():
        scheme = getattr(module, "quantization_scheme", None)
        fixed = getattr(getattr(scheme, "weights", None), "scale_dtype", None)
        for name, tensor in [*module.named_parameters(recurse=False), *module.named_buffers(recurse=False)]:
            if tensor.dtype in _CAST and not (name == "weight_scale" and fixed is not None):
                tensor.data = tensor.data.to(dtype)


def _is_sparse(recipe: Recipe) -> bool:
    """Sparsity alone exports a plain dense checkpoint (its zeros are in the weights; compressed-tensors 0.20
    no longer writes sparse formats), loadable by anything that loads the original."""
    return any(modifier.stage == "prune" for modifier in recipe.modifiers)
