"""The speed section of a job's report: greedy decoding tokens/s of the original model (bf16, dense) and of
the compressed checkpoint on Shrinkray's kernels, measured the same way on the worker's GPU."""

from __future__ import annotations

from pathlib import Path

import torch

from compress.model_io import load_model
from kernels.decoding import measure_decode_speed
from kernels.layer_speed import layer_speeds, per_step
from kernels.loader import UnsupportedScheme, load_for_inference
from kernels.self_check import KernelMismatch
from kernels.tuning import cold_time_ms

BATCHES = (1, 16)
PROMPT_TOKENS = 32
NEW_TOKENS = 64


def decode_speed_report(original: Path, compressed: Path, device: torch.device) -> dict:
    """{"measured": True, "kernels": layers per kernel, "rows": per batch original vs compressed tokens/s,
    "layers": each distinct compressed layer against a dense matmul, "matmuls_per_step": their sum} on a GPU;
    {"measured": False, "reason": ...} where it cannot be measured meaningfully (no GPU, no kernel, or a kernel
    that disagrees with its reference on this GPU)."""
    if device.type != "cuda":
        return {"measured": False, "reason": f"decode speed is measured on GPU workers; this one ran on {device}"}
    try:
        model, kernels = load_for_inference(compressed, device)
    except (UnsupportedScheme, KernelMismatch) as error:
        return {"measured": False, "reason": str(error)}
    speeds = layer_speeds(model, cold_time_ms, BATCHES)
    compressed_speed = [measure_decode_speed(model, batch, PROMPT_TOKENS, NEW_TOKENS) for batch in BATCHES]
    del model
    torch.cuda.empty_cache()
    original_model, _ = load_model(original, dtype=torch.bfloat16)
    original_model.to(device)
    original_speed = [measure_decode_speed(original_model, batch, PROMPT_TOKENS, NEW_TOKENS) for batch in BATCHES]
    del original_model
    torch.cuda.empty_cache()
    rows = [{"batch": before.batch, "original_tokens_per_s": before.tokens_per_s,
             "compressed_tokens_per_s": after.tokens_per_s, "speedup": after.tokens_per_s / before.tokens_per_s,
             "cuda_graph": before.cuda_graph and after.cuda_graph, "notes": [n for n in (before.note, after.note) if n]}
            for before, after in zip(original_speed, compressed_speed, strict=True)]
    return {"measured": True, "device": torch.cuda.get_device_name(device), "kernels": kernels,
            "protocol": f"greedy decoding, random {PROMPT_TOKENS}-token prompt, {NEW_TOKENS} new tokens, static KV "
                        "cache, one CUDA graph per step, median of 3; original in bf16; layers timed from CUDA graphs "
                        "with their weights out of L2, against a dense matmul of the same shape",
            "rows": rows, "layers": [speed.as_dict() for speed in speeds], "matmuls_per_step": per_step(speeds)}
