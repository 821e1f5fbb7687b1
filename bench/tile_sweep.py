"""Pinned tile sweeps: each config of a kernel's autotuner list (or the ones given) launched alone and timed with
L2 evicted (kernels/tuning.py's cold_time_ms, the autotuners' own measure), next to cuBLAS bf16 and the product
path, with each config's error against the fp32 reference. The autotuner keeps only its pick; a sweep shows the
whole field, which is how the config lists in kernels/ were chosen and how to redo them on another GPU.

    python bench/tile_sweep.py --kernel w4a16 --shapes 8192x28672 --ms 64,128 [--top 8]
    python bench/tile_sweep.py --kernel w8a8-int8 --configs "BLOCK_M=64,BLOCK_N=32,BLOCK_K=256,num_warps=4"
    python bench/tile_sweep.py --kernel w4a16-gemv --shapes 4096x4096,4096x28672 --ms 1
    python bench/tile_sweep.py --kernel w4a16-strip --shapes 4096x28672,14336x4096 --ms 1

`--timing chained` times each config the way a compiled decode step runs it instead: calls on COPIES distinct
weights in turn (so that L2 holds none of them) captured back to back in one CUDA graph, each launched dependent on
the one before (kernels/dependent_launch.py), so the launch overlaps and what is left is the kernel's own time from
its predecessor's end to its own, the split-K tail included.

`--configs` takes configs separated by ';', each comma-separated key=value pairs of the kernel's pinned config
(tile constexprs, num_warps, num_stages); unnamed tile keys default as the kernel's pinned path defaults them.
"""

from __future__ import annotations

import argparse
import datetime
import json
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

import torch
import triton

from kernels import w4a16, w4a16_gemv, w4a16_strip_gemv, w8a8
from kernels.int4_layout import pack_kernel_layout
from kernels.tuning import captured, cold_time_ms, median_replay_ms

GROUP = 128
COPIES = 8  # weights of distinct layers in a chained timing: 8 of 4096 x 4096 in int4 exceed an H200's L2
CYCLES = 4  # times a chained graph walks the copies (its first call, which follows no kernel, is 1 in 32)
KERNELS = ("w4a16", "w4a16-gemv", "w4a16-strip", "w8a8-int8")
TIMINGS = {"cold": "cold_time_ms: CUDA graph replay, L2 evicted before every call",
           "chained": f"chained_time_ms: {COPIES * CYCLES} calls, {COPIES} distinct weights in turn, back to back in "
                      "one CUDA graph, each launched dependent on the one before where the GPU has it; the bf16 column "
                      "stays cold"}
DECODE_KERNELS = {"w4a16-gemv": ("GEMV", "_GEMV_CONFIGS", w4a16_gemv),  # pinned flag, autotuner list, module
                  "w4a16-strip": ("STRIP", "_STRIP_CONFIGS", w4a16_strip_gemv)}


def parse_configs(text: str) -> list[dict]:
    """'BLOCK_M=64,num_warps=4;BLOCK_M=16' -> [{'BLOCK_M': 64, 'num_warps': 4}, {'BLOCK_M': 16}]."""
    configs = []
    for chunk in filter(None, (part.strip() for part in text.split(";"))):
        config = {}
        for pair in chunk.split(","):
            key, sep, value = pair.partition("=")
            if not sep or not key.strip() or not value.strip().isdigit():
                raise ValueError(f"config entries are KEY=INTEGER, got {pair!r}")
            config[key.strip()] = int(value)
        configs.append(config)
    return configs


def product_configs(kernel: str, m: int) -> list[dict]:
    """The kernel's autotuner list as its pruning leaves it for M rows, as pinned configs."""
    if kernel in DECODE_KERNELS:  # one list for every row count (the GEMVs' autotuners are keyed on M)
        _, name, module = DECODE_KERNELS[kernel]
        kept = getattr(module, name)
    else:
        module = w4a16 if kernel == "w4a16" else w8a8
        kept = module._prune(module._CONFIGS, {"M_BUCKET": max(16, triton.next_power_of_2(m))})
    return [{**config.kwargs, "num_warps": config.num_warps, "num_stages": config.num_stages} for config in kept]


class Case(NamedTuple):
    run: Callable[[dict | None], torch.Tensor]  # the layer under a pinned config; None: the product path
    x: torch.Tensor  # bf16 [M, K] and weight bf16 [N, K] for the cuBLAS comparison
    weight: torch.Tensor
    expected: torch.Tensor  # fp32 reference of run's result
    out: torch.Tensor  # the buffer run writes: poisoned before each config's checked call


def _case(kernel: str, k: int, n: int, m: int) -> Case:
    if kernel == "w4a16" or kernel in DECODE_KERNELS:
        codes = torch.randint(-8, 8, (n, k), dtype=torch.int8, device="cuda")
        scale = (torch.rand(n, k // GROUP, device="cuda") * 0.02 + 1e-3).to(torch.bfloat16)
        packed, scale_gm = pack_kernel_layout(codes), scale.t().contiguous().t()  # group-major, as Int4Linear
        dense = codes.float() * scale.float().repeat_interleave(GROUP, 1)
        x = torch.randn(m, k, device="cuda", dtype=torch.bfloat16)
        out = torch.empty(m, n, device="cuda", dtype=torch.bfloat16)

        gemv = {DECODE_KERNELS[kernel][0]: True} if kernel in DECODE_KERNELS else {}

        def run(config: dict | None) -> torch.Tensor:
            pinned = None if config is None else {**gemv, **config}
            return w4a16.w4a16_matmul(x, packed, scale_gm, GROUP, out=out, config=pinned)
        return Case(run, x, dense.to(torch.bfloat16), x.float() @ dense.T, out)
    codes = torch.randint(-127, 128, (n, k), dtype=torch.int8, device="cuda")
    w_scale = torch.rand(n, device="cuda") * 1e-2 + 1e-4
    x_codes = torch.randint(-127, 128, (m, k), dtype=torch.int8, device="cuda")
    x_scale = torch.rand(m, device="cuda") * 1e-2 + 1e-4
    out = torch.empty(m, n, device="cuda", dtype=torch.bfloat16)
    expected = (x_codes.float() * x_scale[:, None]) @ (codes.float() * w_scale[:, None]).T

    def run(config: dict | None) -> torch.Tensor:
        return w8a8.scaled_matmul(x_codes, x_scale, codes, w_scale, out=out, config=config)
    return Case(run, torch.randn(m, k, device="cuda", dtype=torch.bfloat16),
                torch.randn(n, k, device="cuda", dtype=torch.bfloat16), expected, out)


def chained_time_ms(calls: list[Callable[[], object]]) -> float:
    """GPU milliseconds per call of `calls` replayed back to back from one CUDA graph; each is run once eagerly
    first, which compiles it."""
    for call in calls:
        call()
    torch.cuda.synchronize()
    return median_replay_ms(captured(lambda: [call() for call in calls])) / len(calls)


def sweep(kernel: str, k: int, n: int, m: int, given: list[dict] | None, chained: bool) -> dict:
    run, x, weight, expected, out = _case(kernel, k, n, m)
    copies = [run, *(_case(kernel, k, n, m).run for _ in range(COPIES - 1))] if chained else [run]

    def timed(config: dict | None) -> float:
        if chained:
            return chained_time_ms([lambda run=run: run(config) for run in copies] * CYCLES)
        return cold_time_ms(lambda: run(config))

    bf16_out = torch.empty(m, n, device="cuda", dtype=torch.bfloat16)
    row = {"K": k, "N": n, "M": m,
           "bf16_us": cold_time_ms(lambda: torch.matmul(x, weight.T, out=bf16_out)) * 1e3,
           "product_us": timed(None) * 1e3, "configs": []}
    for config in given if given is not None else product_configs(kernel, m):
        entry: dict = {"config": config}
        try:
            out.fill_(float("nan"))  # a config that leaves tiles unwritten must not inherit the last one's result
            got = run(config).float()
            entry["relative_error"] = ((got - expected).norm() / expected.norm()).item()
            entry["us"] = timed(config) * 1e3
        except Exception as error:  # noqa: BLE001 - a config that fails to compile or launch is a result too
            entry["error"] = f"{type(error).__name__}: {error}"[:300]
            torch.cuda.synchronize()
        row["configs"].append(entry)
    row["configs"].sort(key=lambda entry: entry.get("us", float("inf")))
    return row


def _label(config: dict) -> str:
    return " ".join(f"{key.replace('BLOCK_', '').replace('num_', '').lower()}={value}"
                    for key, value in config.items() if key != "GROUP_M")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--kernel", choices=KERNELS, default="w4a16")
    parser.add_argument("--shapes", default="8192x28672", help="KxN,...")
    parser.add_argument("--ms", default="16,64,256", help="row counts M,...")
    parser.add_argument("--configs", help="pinned configs to time instead of the autotuner's list (see above)")
    parser.add_argument("--timing", choices=("cold", "chained"), default="cold",
                        help="cold: each call alone with L2 evicted (the autotuners' measure); chained: see above")
    parser.add_argument("--top", type=int, default=8, help="configs printed per shape and M")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    args = parser.parse_args(argv)
    try:
        shapes = [tuple(int(side) for side in shape.split("x")) for shape in args.shapes.split(",")]
        ms = [int(m) for m in args.ms.split(",")]
        given = parse_configs(args.configs) if args.configs else None
    except ValueError as error:
        parser.error(str(error))
    if any(len(shape) != 2 or min(shape) < 1 for shape in shapes) or min(ms) < 1:
        parser.error("--shapes takes KxN pairs and --ms positive row counts")
    if not torch.cuda.is_available():
        parser.error("a sweep times kernels on a CUDA GPU")
    date = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
    result = {"benchmark": "tile_sweep", "kernel": args.kernel, "date": date,
              "device": torch.cuda.get_device_name(), "torch": torch.__version__, "triton": triton.__version__,
              "timing": TIMINGS[args.timing], "rows": []}
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"tile_sweep-{args.kernel}{'-chained' if args.timing == 'chained' else ''}-{date[:10]}.json"
    for (k, n), m in ((shape, m) for shape in shapes for m in ms):
        row = sweep(args.kernel, k, n, m, given, args.timing == "chained")
        result["rows"].append(row)
        path.write_text(json.dumps(result, indent=2))  # after every row: a killed run keeps what it measured
        print(f"{args.kernel} K={k} N={n} M={m}: cuBLAS bf16 {row['bf16_us']:.1f} us, product path "
              f"{row['product_us']:.1f} us")
        for rank, entry in enumerate(row["configs"][:args.top], 1):
            measured = (f"{entry['us']:8.1f} us  err {entry['relative_error']:.1e}" if "us" in entry
                        else entry["error"][:80])
            print(f"  {rank:>2}. {_label(entry['config']):<58} {measured}")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
