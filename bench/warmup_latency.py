"""How long a fresh GPU worker process waits on its first W4A16 calls: Triton compiles each kernel config and the
autotuners time them per shape and row count. Each pass runs in a new process against one Triton cache
directory: the first finds it empty, the second finds the compiled kernels and the autotuners' picks that the
first left there (kernels/tuning.py), as a restarted worker does with its volume (docker-compose.yml).

    python bench/warmup_latency.py [--ms 1,16,64,256]
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# Llama-3-8B's decoder projections as Shrinkray runs them (K x N): q/k/v fused, o, gate/up fused, down
SHAPES = [(4096, 6144), (4096, 4096), (4096, 28672), (14336, 4096)]
GROUP = 128
TARGET_WARM_S = 2.0  # a restarted worker's first calls of every shape and row count, together


def first_calls(ms: list[int]) -> list[dict]:
    """In this process: seconds of the first and the second call per (shape, M)."""
    import torch

    from kernels import w4a16
    from kernels.int4_layout import pack_kernel_layout

    rows = []
    for k, n in SHAPES:
        packed = pack_kernel_layout(torch.randint(-8, 8, (n, k), dtype=torch.int8, device="cuda"))
        scale = (torch.rand(n, k // GROUP, device="cuda") * 0.02 + 1e-3).to(torch.bfloat16).t().contiguous().t()
        for m in ms:
            x = torch.randn(m, k, device="cuda", dtype=torch.bfloat16)
            seconds = []
            for _ in range(2):
                torch.cuda.synchronize()
                started = time.perf_counter()
                w4a16.w4a16_matmul(x, packed, scale, GROUP)
                torch.cuda.synchronize()
                seconds.append(time.perf_counter() - started)
            rows.append({"K": k, "N": n, "M": m, "first_s": seconds[0], "second_s": seconds[1]})
    return rows


def _pass(ms: list[int], cache_dir: str) -> list[dict]:
    env = {**os.environ, "TRITON_CACHE_DIR": cache_dir}
    env.pop("TRITON_INTERPRET", None)
    run = subprocess.run([sys.executable, __file__, "--child", "--ms", ",".join(map(str, ms))], env=env,
                         capture_output=True, text=True, timeout=1800)
    if run.returncode != 0:
        raise SystemExit(f"a pass failed:\n{run.stderr[-2000:]}")
    return json.loads(run.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ms", default="1,16,64,256", help="row counts M,...")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    args = parser.parse_args(argv)
    try:
        ms = [int(m) for m in args.ms.split(",")]
    except ValueError:
        parser.error("--ms takes positive row counts")
    if min(ms) < 1:
        parser.error("--ms takes positive row counts")
    if args.child:
        print(json.dumps(first_calls(ms)))
        return
    import torch
    import triton

    if not torch.cuda.is_available():
        parser.error("the kernels compile and tune on a CUDA GPU")
    with tempfile.TemporaryDirectory() as cache_dir:
        passes = {"empty cache": _pass(ms, cache_dir), "cache kept": _pass(ms, cache_dir)}
    totals = {name: sum(row["first_s"] for row in rows) for name, rows in passes.items()}
    print(f"{'shape K x N':>14} {'M':>4} " + " ".join(f"{name + ' (s)':>17}" for name in passes))
    for index, row in enumerate(passes["empty cache"]):
        print(f"{row['K']:>6} x {row['N']:<6} {row['M']:>4} "
              + " ".join(f"{rows[index]['first_s']:>17.2f}" for rows in passes.values()))
    met = totals["cache kept"] <= TARGET_WARM_S
    print(f"first calls together: {totals['empty cache']:.1f} s with an empty cache, {totals['cache kept']:.1f} s "
          f"with the cache kept (target <= {TARGET_WARM_S:.0f} s: {'met' if met else 'NOT met'})")
    date = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
    result = {"benchmark": "warmup_latency", "date": date, "device": torch.cuda.get_device_name(),
              "torch": torch.__version__, "triton": triton.__version__, "cpus": os.cpu_count(), "group_size": GROUP,
              "protocol": "first and second W4A16 call per shape and M, each pass a fresh process on one Triton "
                          "cache directory (the first pass finds it empty)",
              "totals_s": totals, "target_warm_s": TARGET_WARM_S, "target_met": met, "passes": passes}
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"warmup_latency-{date[:10]}.json"
    path.write_text(json.dumps(result, indent=2))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
