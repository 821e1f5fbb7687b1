"""W4A16 kernel speed on the GPU against cuBLAS bf16, torch's tinygemm int4 and the HBM floor.

Shapes (K, N) from the issue, M = 1..256; enough weight copies rotated per call that they never sit in L2;
median of triton.testing.do_bench. Run on a GPU:  python bench/kernel_speed.py [--quick]
(not bench/kernels.py: a script of that name would shadow the `kernels` package for every bench script).
"""

from __future__ import annotations

import argparse
import datetime
import itertools
import json
from collections.abc import Callable
from pathlib import Path

import torch
import triton
from compressed_tensors.compressors.pack_quantized.helpers import pack_to_int32

from compress.quantize import quantize_weight
from kernels.w4a16 import to_kernel_layout, w4a16_matmul

SHAPES = [(4096, 4096), (4096, 14336), (14336, 4096), (8192, 28672)]
MS = [1, 16, 32, 64, 128, 256]
GROUP = 128
L2_BYTES = 50 * 2**20
TARGETS_US = {(8192, 28672, 1): 45.0, (8192, 28672, 16): 50.0}  # W4A16 absolute targets from the issue


def _rotating(make: Callable[[], tuple], nbytes: int) -> Callable[[], Callable]:
    """Copies of the operands, enough to exceed L2 twice over; each call uses the next one."""
    copies = [make() for _ in range(max(1, -(-2 * L2_BYTES // nbytes)))]
    cycle = itertools.cycle(copies)
    return lambda: next(cycle)


def _time_us(fn: Callable[[], object]) -> float:
    return triton.testing.do_bench(fn, warmup=25, rep=200, return_mode="median") * 1e3


def _copy_bandwidth() -> float:
    """Bytes per second of a device-to-device copy (read + write), the practical HBM ceiling."""
    src = torch.empty(2**30, dtype=torch.uint8, device="cuda")
    dst = torch.empty_like(src)
    return 2 * src.numel() / (_time_us(lambda: dst.copy_(src)) * 1e-6)


def _int4_layer(n: int, k: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    weight = torch.randn(n, k, device="cuda") * 0.02
    q, scale, _ = quantize_weight(weight, 4, GROUP, True, torch.bfloat16)
    return to_kernel_layout(pack_to_int32(q, 4), k), scale.to(torch.bfloat16).contiguous(), q


def _tinygemm(q: torch.Tensor, scale: torch.Tensor) -> Callable[[torch.Tensor], torch.Tensor] | None:
    """torch's int4 kernel (what gpt-fast uses) on the same codes, or None where this torch lacks it."""
    try:
        unsigned = (q.to(torch.int32) + 8).to(torch.uint8)
        packed = ((unsigned[:, ::2] << 4) | unsigned[:, 1::2]).contiguous()
        weight = torch._convert_weight_to_int4pack(packed, 8)
        zeros = torch.full_like(scale, 8) * scale  # tinygemm: w = (code - 8) * s  <=>  code * s - 8 s
        scales_and_zeros = torch.stack([scale, zeros], dim=-1).transpose(0, 1).contiguous()
        return lambda x: torch._weight_int4pack_mm(x, weight, GROUP, scales_and_zeros)
    except (RuntimeError, AttributeError, TypeError):
        return None


def _measure_shape(k: int, n: int, bandwidth: float) -> list[dict]:
    dense = _rotating(lambda: (torch.randn(n, k, device="cuda", dtype=torch.bfloat16),), n * k * 2)
    layer = _int4_layer(n, k)
    int4 = _rotating(lambda: tuple(t.clone() for t in layer[:2]), layer[0].nbytes + layer[1].nbytes)
    tiny = _tinygemm(layer[2], layer[1])
    reference_weight = layer[2].float() * layer[1].float().repeat_interleave(GROUP, 1)
    rows = []
    for m in MS:
        x = torch.randn(m, k, device="cuda", dtype=torch.bfloat16)
        expected = x.float() @ reference_weight.T
        error = ((w4a16_matmul(x, *layer[:2], GROUP).float() - expected).norm() / expected.norm()).item()
        row = {
            "K": k, "N": n, "M": m,
            "bf16_us": _time_us(lambda x=x: torch.matmul(x, dense()[0].T)),
            "ours_us": _time_us(lambda x=x: w4a16_matmul(x, *int4(), GROUP)),
            "tinygemm_us": _time_us(lambda x=x: tiny(x)) if tiny is not None else None,
            "floor_us": (layer[0].nbytes + layer[1].nbytes + x.nbytes + m * n * 2) / bandwidth * 1e6,
            "relative_error": error,
            "target_us": TARGETS_US.get((k, n, m)),
        }
        rows.append(row)
        tiny_text = f"{row['tinygemm_us']:8.1f}" if row["tinygemm_us"] is not None else "     n/a"
        print(f"K={k:>5} N={n:>5} M={m:>3}  bf16 {row['bf16_us']:8.1f}  tinygemm {tiny_text}  ours "
              f"{row['ours_us']:8.1f}  floor {row['floor_us']:6.1f} us  x{row['bf16_us'] / row['ours_us']:.2f} vs "
              f"bf16  target {row['target_us'] or '-'}  err {error:.1e}", flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="the largest shape only")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    args = parser.parse_args()
    shapes = SHAPES[-1:] if args.quick else SHAPES
    bandwidth = _copy_bandwidth()
    rows = [row for k, n in shapes for row in _measure_shape(k, n, bandwidth)]
    result = {
        "benchmark": "kernels_w4a16",
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "device": torch.cuda.get_device_name(),
        "torch": torch.__version__,
        "triton": triton.__version__,
        "copy_bandwidth_tb_s": bandwidth / 1e12,
        "group_size": GROUP,
        "rows": rows,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"kernels_w4a16-{result['date'][:10]}.json"
    path.write_text(json.dumps(result, indent=2))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
