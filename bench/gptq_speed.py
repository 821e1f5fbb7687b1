"""GPTQ wall time and peak device memory on a randomly initialised Llama-3-8B-shaped model.

The weights are random (only the shapes matter for speed); calibration is random token ids, so the work
is the same as a real 8B job with 128 x 2048 calibration tokens. Run on a GPU:
    python bench/gptq_speed.py            # Llama-3-8B shape, int4 g128
    python bench/gptq_speed.py --tiny     # a seconds-long smoke run, CPU included
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import platform
import time
from pathlib import Path

import torch
from transformers import LlamaConfig, LlamaForCausalLM

from compress.recipes import resolve_recipe
from compress.runner import compress_model

TARGET_SECONDS = 300.0
TARGET_PEAK_GB = 24.0
LLAMA3_8B = dict(hidden_size=4096, intermediate_size=14336, num_hidden_layers=32, num_attention_heads=32,
                 num_key_value_heads=8, vocab_size=128256)
TINY = dict(hidden_size=256, intermediate_size=512, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=2, vocab_size=1024)


def random_model(shape: dict, fill_on: str | torch.device = "cpu") -> LlamaForCausalLM:
    """Allocate on the meta device, then fill in place (drawn on `fill_on`, a GPU when there is one: drawing
    8B normal samples on the host takes minutes). The model itself stays on the host, as a job's does."""
    config = LlamaConfig(**shape, max_position_embeddings=4096, torch_dtype="bfloat16")
    with torch.device("meta"):
        model = LlamaForCausalLM(config)
    model = model.to_empty(device="cpu").to(torch.bfloat16)
    generator = torch.Generator(device=fill_on).manual_seed(0)
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if name.endswith("norm.weight"):
                parameter.fill_(1.0)
            else:
                drawn = torch.empty(parameter.shape, dtype=parameter.dtype, device=fill_on)
                parameter.copy_(drawn.normal_(0.0, 0.02, generator=generator))
    model.model.rotary_emb.to_empty(device="cpu")
    model.model.rotary_emb.__init__(config)  # recompute the inverse frequencies lost by to_empty
    return model.eval()


def _print_progress(done: int, total: int, message: str) -> None:
    print(f"{time.strftime('%H:%M:%S')} {message}", flush=True)


def add_workload_arguments(parser: argparse.ArgumentParser) -> None:
    """The model and calibration flags this benchmark and its llm-compressor twin share."""
    parser.add_argument("--tiny", action="store_true")
    parser.add_argument("--samples", type=int, default=128)
    parser.add_argument("--seq-len", type=int, default=2048)
    parser.add_argument("--layers", type=int, help="decoder layers (default: the shape's); the projection scales")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results")


def workload(args: argparse.Namespace) -> tuple[dict, int, int, int, torch.device]:
    """(model shape, the shape's full layer count, samples, seq_len, device) from add_workload_arguments' flags."""
    shape = dict(TINY if args.tiny else LLAMA3_8B)
    full_layers = shape["num_hidden_layers"]
    if args.layers:
        shape["num_hidden_layers"] = args.layers
    samples, seq_len = (8, 128) if args.tiny else (args.samples, args.seq_len)
    return shape, full_layers, samples, seq_len, torch.device("cuda" if torch.cuda.is_available() else "cpu")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    add_workload_arguments(parser)
    parser.add_argument("--preset", default="w4a16")
    parser.add_argument("--profile", action="store_true", help="print torch.profiler's top operators too")
    args = parser.parse_args()
    shape, full_layers, samples, seq_len, device = workload(args)

    started = time.perf_counter()
    model = random_model(shape, fill_on=device)
    build_s = time.perf_counter() - started
    calib = torch.randint(0, shape["vocab_size"], (samples, seq_len), generator=torch.Generator().manual_seed(1))
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
        torch.cuda.synchronize()
    started = time.perf_counter()
    with torch.profiler.profile(record_shapes=False) if args.profile else contextlib.nullcontext() as profiler:
        summary = compress_model(model, resolve_recipe(args.preset), calib, {}, device, progress=_print_progress)
    if device.type == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - started
    projected = seconds * full_layers / shape["num_hidden_layers"]
    peak_gb = torch.cuda.max_memory_allocated() / 2**30 if device.type == "cuda" else float("nan")

    result = {
        "benchmark": "gptq_speed",
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "device": torch.cuda.get_device_name() if device.type == "cuda" else platform.processor() or "cpu",
        "torch": torch.__version__,
        "shape": shape,
        "preset": args.preset,
        "calibration": {"samples": samples, "seq_len": seq_len},
        "seconds": seconds,
        "seconds_per_layer": summary.per_layer_seconds,
        "projected_seconds_all_layers": projected,
        "peak_device_gb": peak_gb,
        "model_build_seconds": build_s,
        "modules": summary.modules,
        "mean_relative_weight_error": summary.mean_relative_error,
        "targets": {"seconds": TARGET_SECONDS, "peak_device_gb": TARGET_PEAK_GB} if not args.tiny else None,
    }
    print(f"{'measure':<22} {'measured':>10} {'target':>10}")
    print(f"{'GPTQ wall time (s)':<22} {seconds:>10.1f}")
    print(f"{'  projected, all layers':<22} {projected:>10.1f} {TARGET_SECONDS if not args.tiny else '-':>10}")
    print(f"{'peak device mem (GB)':<22} {peak_gb:>10.2f} {TARGET_PEAK_GB if not args.tiny else '-':>10}")
    median_layer = sorted(summary.per_layer_seconds)[len(summary.per_layer_seconds) // 2]
    print(f"{'per layer (s, median)':<22} {median_layer:>10.2f}")
    if profiler is not None:
        print(profiler.key_averages().table(sort_by="self_cpu_time_total", row_limit=15))
    args.out.mkdir(parents=True, exist_ok=True)
    layers = f"{shape['num_hidden_layers']}layers-" if args.layers else ""
    name = f"gptq_speed-{'tiny-' if args.tiny else ''}{device.type}-{layers}{result['date'][:10]}.json"
    (args.out / name).write_text(json.dumps(result, indent=2))
    print(f"wrote {args.out / name}")


if __name__ == "__main__":
    main()
