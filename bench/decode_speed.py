"""End-to-end greedy decoding tokens/s of a randomly initialised Llama-3-8B-shaped model: bf16 against the same
model with every decoder Linear on one of Shrinkray's kernels (lm_head stays bf16, as the presets leave it).

The weights are random and quantized by round-to-nearest here (only shapes and formats matter for speed).
Decoding uses a static KV cache and a CUDA graph per step (kernels/decoding.py), the way serving engines run,
so launch overhead does not hide the kernels. A scheme named "<scheme>-fused" (w4a16-fused, w8a8-int8-fused, ...)
is that scheme with each block's q/k/v and gate/up projections run as one matmul (kernels/fusion.py; for W4A16
gate, up and the SiLU between them are one kernel layer). Run on a GPU:
    python bench/decode_speed.py                      # w4a16 and w4a16-fused, batch 1 and 16
    python bench/decode_speed.py --schemes w4a16,w8a8-int8,w8a8-fp8,2of4 --layers 8
    python bench/decode_speed.py --compile yes --profile   # and where each step's GPU time goes, by kernel
Both models decode with Shrinkray's decode attention (kernels/attention_backend.py), as the product runs them;
`--attention sdpa` times transformers' SDPA instead, `both` each way.
"""

from __future__ import annotations

import argparse
import datetime
import json
import time
from collections import Counter
from pathlib import Path

import torch
import transformers
from torch import nn
from torch.profiler import ProfilerActivity, profile

from bench.gptq_speed import LLAMA3_8B, TINY, random_model
from compress.float8 import quantize_fp8_weight
from compress.methods.masks import nm_mask
from compress.quantize import quantize_weight
from kernels.attention_backend import use_decode_attention
from kernels.decoding import GreedyDecoder, measure_decode_speed
from kernels.dependent_launch import dependent_launch, set_dependent_launch
from kernels.fusion import GatedMLP, fuse_sibling_projections
from kernels.linear import Int4Linear, Int8Linear, Sparse24Linear

TARGET_SPEEDUP_BATCH1 = 2.5  # W4A16 over bf16, from the issue


def compressed_linear(linear: nn.Linear, scheme: str) -> nn.Module:
    """The kernel module for `scheme`, made by round-to-nearest from a dense Linear."""
    weight = linear.weight.detach()
    if scheme == "w4a16":
        codes, scale, _ = quantize_weight(weight, 4, 128, True, torch.bfloat16)
        return Int4Linear(codes, scale, 128)
    if scheme in ("w8a8-int8", "w8a16-int8"):
        codes, scale, _ = quantize_weight(weight, 8, None, True, torch.bfloat16)
        return Int8Linear(codes, scale, scheme == "w8a8-int8")
    if scheme in ("w8a8-fp8", "w8a16-fp8"):
        codes, scale = quantize_fp8_weight(weight)
        return Int8Linear(codes, scale, scheme == "w8a8-fp8")
    if scheme == "2of4":
        return Sparse24Linear(weight * ~nm_mask(weight.abs().float(), 2, 4))
    if scheme == "2of4-w4a16":
        pruned = weight * ~nm_mask(weight.abs().float(), 2, 4)
        codes, scale, _ = quantize_weight(pruned, 4, 128, True, torch.bfloat16)
        return Sparse24Linear(codes, scale=scale, group_size=128)
    raise ValueError(f"unknown scheme {scheme}")


def step_profile(model: nn.Module, batch: int, prompt_tokens: int, compiled: bool, steps: int = 10) -> dict:
    """GPU kernel time of one decode step by kernel name (torch.profiler over `steps` steps launched one by one,
    after warm-up steps that settle compilation and autotuning): where a step's time goes, e.g. matmuls against
    attention and norms."""
    prompt = torch.randint(0, model.config.vocab_size, (batch, prompt_tokens), device=next(model.parameters()).device)
    decoder = GreedyDecoder(model, prompt, 2 * steps, compile_step=compiled)
    decoder.prefill()
    for _ in range(steps // 2):
        decoder.step()
    with profile(activities=[ProfilerActivity.CUDA]) as profiler:
        for _ in range(steps):
            decoder.step()
        torch.cuda.synchronize()
    per_kernel: Counter[str] = Counter()
    launches: Counter[str] = Counter()
    for event in profiler.events():
        if event.device_type == torch.autograd.DeviceType.CUDA:
            per_kernel[event.name] += event.device_time / steps
            launches[event.name] += 1
    return {"kernel_us_per_step": sum(per_kernel.values()),
            "launches_per_step": sum(launches.values()) / steps,
            "kernels_us": [[name[:160], us, launches[name] / steps] for name, us in per_kernel.most_common()]}


def swap(model: nn.Module, replacements: dict[str, nn.Module]) -> None:
    """Put `replacements` in place by qualified name."""
    for name, module in replacements.items():
        parent, _, child = name.rpartition(".")
        setattr(model.get_submodule(parent), child, module)


def module_tree(model: nn.Module) -> list[tuple[nn.Module, dict[str, nn.Module]]]:
    """Every module with its children, to put back with restore_tree after conversion and fusion."""
    return [(parent, dict(parent.named_children())) for parent in model.modules()]


def restore_tree(tree: list[tuple[nn.Module, dict[str, nn.Module]]]) -> None:
    for parent, children in tree:
        for name in [name for name in parent._modules if name not in children]:  # what fusion added
            delattr(parent, name)
        for name, child in children.items():
            setattr(parent, name, child)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--schemes", default="w4a16,w4a16-fused")
    parser.add_argument("--batches", default="1,16")
    parser.add_argument("--prompt-tokens", type=int, default=32)
    parser.add_argument("--new-tokens", type=int, default=128)
    parser.add_argument("--layers", type=int, help="decoder layers (default 32)")
    parser.add_argument("--tiny", action="store_true", help="a small model (CPU smoke run)")
    parser.add_argument("--compile", choices=["no", "yes", "both"], default="both",
                        help="run the decode step eagerly, under torch.compile, or both ways (default)")
    parser.add_argument("--attention", choices=["shrinkray", "sdpa", "both"], default="shrinkray",
                        help="the decode steps' attention in both models (default: Shrinkray's decode kernel)")
    parser.add_argument("--dependent-launch", choices=["on", "off", "both"], default="on",
                        help="Shrinkray's kernels launched dependent on the kernel before them (Hopper and later, "
                             "kernels/dependent_launch.py), or not, or each way")
    parser.add_argument("--profile", action="store_true",
                        help="also record each row's GPU kernel time per step by kernel (torch.profiler)")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    args = parser.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    shape = dict(TINY if args.tiny else LLAMA3_8B)
    if args.layers:
        shape["num_hidden_layers"] = args.layers
    batches = [int(b) for b in args.batches.split(",")]
    model = random_model(shape, fill_on=device).to(device)
    targets = {name: module for name, module in model.named_modules()
               if isinstance(module, nn.Linear) and name != "lm_head"}

    rows = []

    def measure(scheme: str, compiled: bool) -> None:
        attention = model.config._attn_implementation
        for batch in batches:
            speed = measure_decode_speed(model, batch, args.prompt_tokens, args.new_tokens, compile_step=compiled)
            rows.append({"scheme": scheme, "attention": attention, "dependent_launch": dependent_launch(device),
                         **speed.as_dict()})
            print(f"{scheme:<16} {attention:<16} dependent={rows[-1]['dependent_launch']} batch {batch:>3}  "
                  f"{speed.tokens_per_s:10.1f} tok/s  "
                  f"{speed.ms_per_step:7.3f} ms/step ({speed.ms_per_step_min:.3f}-{speed.ms_per_step_max:.3f})"
                  f"  graph={speed.cuda_graph} compiled={compiled} {speed.note}", flush=True)
            if args.profile and device.type == "cuda":
                profiled = rows[-1]["profile"] = step_profile(model, batch, args.prompt_tokens, compiled)
                print(f"  kernels {profiled['kernel_us_per_step']:.1f} us in {profiled['launches_per_step']:.0f} "
                      "launches per step; the largest (us, launches per step):", flush=True)
                for name, us, count in profiled["kernels_us"][:8]:
                    print(f"    {us:8.1f} {count:4.0f}  {name[:100]}", flush=True)

    def measure_all(compiled: bool) -> None:
        measure("bf16", compiled)
        for scheme in args.schemes.split(","):
            started = time.perf_counter()
            tree = module_tree(model)
            with torch.no_grad():
                swap(model, {name: compressed_linear(linear, scheme.removesuffix("-fused"))
                             for name, linear in targets.items()})
            print(f"{scheme}: converted {len(targets)} Linears in {time.perf_counter() - started:.1f} s", flush=True)
            if scheme.endswith("-fused"):
                fused = fuse_sibling_projections(model)
                gated = sum(isinstance(module, GatedMLP) for module in model.modules())
                print(f"{scheme}: fused projections (q/k/v, gate/up) {fused}, {gated} gated MLPs", flush=True)
            measure(scheme, compiled)
            restore_tree(tree)
            torch.cuda.empty_cache() if device.type == "cuda" else None

    dependent_modes = {"on": [True], "off": [False], "both": [False, True]}[args.dependent_launch]
    if not dependent_launch(device):  # not on this device: one run without
        dependent_modes = [False]
    for attention in {"shrinkray": ["shrinkray"], "sdpa": ["sdpa"], "both": ["sdpa", "shrinkray"]}[args.attention]:
        if attention == "shrinkray" and not use_decode_attention(model):
            raise SystemExit("Shrinkray's decode attention does not take this model (the warning above says why)")
        if attention == "sdpa":
            model.set_attn_implementation("sdpa")
        for compiled in {"no": [False], "yes": [True], "both": [False, True]}[args.compile]:
            for dependent in dependent_modes:
                set_dependent_launch(dependent)
                started = time.perf_counter()
                measure_all(compiled)
                print(f"{'compiled' if compiled else 'eager'} runs took {time.perf_counter() - started:.0f} s",
                      flush=True)

    def setting(row: dict) -> tuple:
        return row["batch"], row["compiled"], row["attention"], row["dependent_launch"]

    base = {setting(row): row["tokens_per_s"] for row in rows if row["scheme"] == "bf16"}
    print(f"\n{'scheme':<16} {'attention':<16} {'compiled':>8} {'dependent':>9} {'batch':>5} {'tok/s':>10} "
          f"{'vs bf16':>8} {'target':>8}")
    for row in rows:
        row["speedup_vs_bf16"] = row["tokens_per_s"] / base[setting(row)]
        target = TARGET_SPEEDUP_BATCH1 if row["scheme"].startswith("w4a16") and row["batch"] == 1 else None
        row["target_speedup"] = target
        print(f"{row['scheme']:<16} {row['attention']:<16} {'yes' if row['compiled'] else 'no':>8} "
              f"{'yes' if row['dependent_launch'] else 'no':>9} {row['batch']:>5} "
              f"{row['tokens_per_s']:>10.1f} {row['speedup_vs_bf16']:>7.2f}x {(f'{target}x' if target else '-'):>8}")
    result = {
        "benchmark": "decode_speed",
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "device": torch.cuda.get_device_name() if device.type == "cuda" else "cpu",
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "shape": shape,
        "protocol": f"greedy, random prompt of {args.prompt_tokens} tokens, {args.new_tokens} new tokens, static "
                    "KV cache, one CUDA graph per decode step, the steps alone timed (each repeat's prefill is not), "
                    "median of 5 with the fastest and slowest kept; the step eager and/or torch.compile'd whole "
                    "(lm_head bf16 in every scheme); speedups are against bf16 run the same way, with the same "
                    "attention and dependent launch setting",
        "rows": rows,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"decode_speed-{device.type}-{'tiny-' if args.tiny else ''}{result['date'][:10]}.json"
    path.write_text(json.dumps(result, indent=2))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
