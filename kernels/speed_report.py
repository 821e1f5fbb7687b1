"""The speed section of a job's report: greedy decoding tokens/s of the original model (bf16, dense) and of
the compressed checkpoint on Shrinkray's kernels, measured the same way on the worker's GPU."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch
from transformers import PreTrainedModel

from compress.model_io import load_model
from kernels.attention_backend import attention_in_use, use_decode_attention
from kernels.decoding import DecodeSpeed, measure_decode_speed
from kernels.layer_speed import layer_speeds, per_step
from kernels.loader import UnsupportedScheme, load_for_inference
from kernels.self_check import KernelMismatch
from kernels.triton_support import KERNEL_BUILD_FAILURES, build_failure_reason
from kernels.tuning import cold_time_ms

BATCHES = (1, 16)
PROMPT_TOKENS = 32
NEW_TOKENS = 64


def _speeds(model: PreTrainedModel, compiled: bool) -> list[DecodeSpeed]:
    """Decode speed at each batch size; afterwards nothing here holds the model (torch.compile's cache does
    until reset), so the caller's dropping it frees the GPU for the next one."""
    try:
        return [measure_decode_speed(model, batch, PROMPT_TOKENS, NEW_TOKENS, compile_step=compiled)
                for batch in BATCHES]
    finally:
        torch._dynamo.reset()
        torch.cuda.empty_cache()


Load = Callable[[], PreTrainedModel]


def compare_decoding(compressed: Load, original: Load) -> tuple[list[dict], str]:
    """Rows of original against compressed tokens/s per batch size, and how the step ran. Both models decode
    with the step compiled whole by torch.compile, as serving engines run a model (eager, the norms, rotary
    embedding and residual adds are tens of small kernels per layer that take as long as the matmuls); where
    compiling fails for either, both are measured again with the eager step, and the rows say so. One model is
    loaded at a time."""
    failure = ""
    try:
        compressed_speed = _speeds(compressed(), compiled=True)
        original_speed = _speeds(original(), compiled=True)
    except Exception as error:  # noqa: BLE001 - torch.compile can fail in many ways on an architecture
        failure = f"torch.compile failed, both steps run eagerly: {str(error).splitlines()[0][:200]}"
    if failure:  # outside the handler, whose traceback still holds the model
        compressed_speed = _speeds(compressed(), compiled=False)
        original_speed = _speeds(original(), compiled=False)
    rows = [{"batch": before.batch, "original_tokens_per_s": before.tokens_per_s,
             "compressed_tokens_per_s": after.tokens_per_s, "speedup": after.tokens_per_s / before.tokens_per_s,
             "cuda_graph": before.cuda_graph and after.cuda_graph, "compiled": before.compiled and after.compiled,
             "notes": [n for n in (failure, before.note, after.note) if n]}
            for before, after in zip(original_speed, compressed_speed, strict=True)]
    return rows, "compiled whole by torch.compile" if not failure else "eager (torch.compile failed)"


def decode_speed_report(original: Path, compressed: Path, device: torch.device) -> dict:
    """{"measured": True, "kernels": layers per kernel, "rows": per batch original vs compressed tokens/s
    (compare_decoding), "layers": each distinct compressed layer against a dense matmul, "matmuls_per_step":
    their sum} on a GPU; {"measured": False, "reason": ...} where it cannot be measured meaningfully (no GPU, no
    kernel, a kernel that disagrees with its reference on this GPU, or one Triton cannot build for it). None of
    these fails the job: the checkpoint is what it delivers."""
    if device.type != "cuda":
        return {"measured": False, "reason": f"decode speed is measured on GPU workers; this one ran on {device}"}
    try:
        return _measured_report(original, compressed, device)
    except (UnsupportedScheme, KernelMismatch) as error:
        return {"measured": False, "reason": str(error)}
    except KERNEL_BUILD_FAILURES as error:
        return {"measured": False, "reason": f"{build_failure_reason(error)} ({torch.cuda.get_device_name(device)})"}


def _measured_report(original: Path, compressed: Path, device: torch.device) -> dict:
    model, kernels = load_for_inference(compressed, device)
    speeds = layer_speeds(model, cold_time_ms, BATCHES)
    attention = attention_in_use(model, device)
    loaded = [model]
    del model

    def compressed_model() -> PreTrainedModel:
        return loaded.pop() if loaded else load_for_inference(compressed, device)[0]

    def original_model() -> PreTrainedModel:
        model = load_model(original, dtype=torch.bfloat16)[0].to(device)
        use_decode_attention(model)  # as the compressed model decodes: the comparison is of the matmuls
        return model

    rows, step = compare_decoding(compressed_model, original_model)
    return {"measured": True, "device": torch.cuda.get_device_name(device), "kernels": kernels,
            "attention": attention,
            "protocol": f"greedy decoding, random {PROMPT_TOKENS}-token prompt, {NEW_TOKENS} new tokens, static KV "
                        f"cache, one CUDA graph per step, the step {step}, the steps alone timed, median of 5; "
                        "original in bf16; layers timed from CUDA graphs with their weights out of L2, against a "
                        "dense matmul of the same shape",
            "rows": rows, "layers": [speed.as_dict() for speed in speeds], "matmuls_per_step": per_step(speeds)}
