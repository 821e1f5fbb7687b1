"""The library used alone: load, calibrate, compress, export and measure one model directory."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

import torch

from compress.calibration import token_windows
from compress.evaluate import next_token_agreement, perplexity
from compress.export import save_compressed
from compress.model_io import inspect_model_dir, load_model
from compress.recipes import Recipe, validate_recipe_for_model
from compress.runner import compress_model


def resolve_device(device: str) -> torch.device:
    """'auto' -> cuda when available, else cpu; anything else as torch spells it."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def compress_directory(
    model_dir: Path,
    recipe: Recipe,
    out_dir: Path,
    calib_text: str,
    eval_text: str | None = None,
    device: str = "auto",
    progress: Callable[[int, int, str], None] | None = None,
) -> dict:
    """Compress model_dir into out_dir; the report has sizes, per-stage seconds and, with eval_text, ppl."""
    compute = resolve_device(device)
    seconds: dict[str, float] = {}
    started = time.perf_counter()
    info = inspect_model_dir(model_dir)
    validate_recipe_for_model(
        recipe, json.loads((Path(model_dir) / "config.json").read_text(encoding="utf-8"))
    )
    model, tokenizer = load_model(model_dir)
    seconds["load"] = time.perf_counter() - started

    report: dict = {
        "model": str(model_dir),
        "architecture": info.architecture,
        "device": str(compute),
        "recipe": recipe.model_dump(mode="json"),
    }
    eval_windows = None
    if eval_text is not None:
        mark = time.perf_counter()
        eval_windows = token_windows(
            tokenizer, eval_text, recipe.validation.seq_len, recipe.validation.max_windows
        )
        report["ppl_before"] = perplexity(model, eval_windows, compute)
        seconds["eval_before"] = time.perf_counter() - mark
        model.to("cpu")

    # compress_model observes each layer's inputs itself (sequentially, after the earlier layers are
    # compressed), so the library path needs no separate statistics pass.
    calib = token_windows(tokenizer, calib_text, recipe.calibration.seq_len, recipe.calibration.samples)
    mark = time.perf_counter()
    summary = compress_model(model, recipe, calib, {}, compute, progress=progress)
    seconds["compress"] = time.perf_counter() - mark

    mark = time.perf_counter()
    save_compressed(model, tokenizer, recipe, out_dir)
    seconds["export"] = time.perf_counter() - mark

    if eval_windows is not None:
        # Measure what users get: the checkpoint as transformers loads it, not the in-memory model.
        mark = time.perf_counter()
        original, _ = load_model(model_dir)
        compressed, _ = load_model(out_dir)
        report["ppl_after"] = perplexity(compressed, eval_windows, compute)
        report["next_token_agreement"] = next_token_agreement(original, compressed, eval_windows, compute)
        report["eval_windows"] = int(eval_windows.shape[0])
        seconds["eval_after"] = time.perf_counter() - mark

    report["size_bytes_before"] = info.total_bytes
    report["size_bytes_after"] = inspect_model_dir(out_dir).total_bytes
    report["compression"] = asdict(summary)
    seconds["total"] = time.perf_counter() - started
    report["seconds"] = seconds
    return report
