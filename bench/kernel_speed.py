"""Speed of Shrinkray's Triton kernels on the GPU against what torch ships for the same layer, in one run:
W4A16 vs cuBLAS bf16 and tinygemm int4; W8A8 int8 vs bf16; FP8 vs torch._scaled_mm; 2:4 (bf16 and int4)
vs bf16 and torch's semi-structured sparse matmul; each with the HBM floor (bytes that must move / measured
copy bandwidth).

Shapes (K, N) from the issue, M = 1..256; enough weight copies rotated per call that they never sit in L2.
Every entry is timed twice: replayed from a CUDA graph (do_bench_cudagraph: GPU time, how a decoding model runs
them; the table and the targets use these) and launched from Python (do_bench, under "eager" in the JSON: adds
the launch overhead the GPU waits for). W8A8 rows time the matmul with x quantized beforehand, as
torch._scaled_mm is timed, and the whole layer with our per-token activation quantization as layer_us.
Run on a GPU:  python bench/kernel_speed.py [--quick] [--kernels a,b]
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

from compress.float8 import quantize_fp8_weight
from compress.methods.masks import nm_mask
from compress.quantize import quantize_weight
from kernels.act_quant import quantize_per_token
from kernels.int4_layout import pack_kernel_layout
from kernels.sparse24 import sparse24_matmul
from kernels.sparse24_layout import compress_24, to_kernel_layout_24
from kernels.w4a16 import w4a16_matmul
from kernels.w8a8 import scaled_matmul

SHAPES = [(4096, 4096), (4096, 14336), (14336, 4096), (8192, 28672)]
MS = [1, 16, 32, 64, 128, 256]
GROUP = 128
L2_BYTES = 50 * 2**20
KERNELS = ["w4a16", "w8a8-int8", "w8a8-fp8", "2of4", "2of4-w4a16"]


def target(kernel: str, k: int, n: int, m: int, row: dict) -> tuple[str, bool] | None:
    """The issue's target for this row, as (text, met)."""
    ours, bf16, peer = row["ours_us"], row["bf16_us"], row.get("peer_us")
    if kernel == "w4a16":
        if (k, n) == (8192, 28672) and m in (1, 16):
            limit = 45.0 if m == 1 else 50.0
            return f"<= {limit} us", ours <= limit
        if m == 64:
            return ">= 2x bf16", bf16 / ours >= 2
        return "faster than bf16 and tinygemm", ours < bf16 and (peer is None or ours < peer)
    if kernel == "w8a8-int8" and m >= 64:
        return ">= 1.6x bf16", bf16 / ours >= 1.6
    if kernel == "w8a8-fp8" and peer is not None:
        return "within 10% of _scaled_mm", ours <= 1.1 * peer
    if kernel == "2of4" and m >= 64:
        return ">= 1.3x bf16", bf16 / ours >= 1.3
    return None


def _rotating(make: Callable[[], tuple], nbytes: int) -> Callable[[], tuple]:
    """Copies of the operands, enough to exceed L2 twice over; each call uses the next one."""
    copies = [make() for _ in range(max(1, -(-2 * L2_BYTES // nbytes)))]
    cycle = itertools.cycle(copies)
    return lambda: next(cycle)


def _nbytes(tensors: tuple) -> int:
    return sum(t.nbytes for t in tensors if isinstance(t, torch.Tensor))


def _time_us(fn: Callable[[], object]) -> float:
    """Median of do_bench: the GPU time plus whatever of the launch the GPU waits for (Python launchers of
    Triton kernels cost tens of microseconds, more than a small matmul)."""
    return triton.testing.do_bench(fn, warmup=25, rep=200, return_mode="median") * 1e3


def _graph_time_us(fn: Callable[[], object]) -> float:
    """Median of do_bench_cudagraph: the calls replayed from a CUDA graph, i.e. the GPU time alone, as the
    kernels run when a model decodes through a graph (kernels/decoding.py) or under a serving engine."""
    return triton.testing.do_bench_cudagraph(fn, rep=100, return_mode="median") * 1e3


def _peer_graph_time_us(peer: Callable[[], object] | None) -> float | None:
    """A peer that cannot be captured in a CUDA graph gets no graph time (its eager time is still recorded)."""
    if peer is None:
        return None
    try:
        return _graph_time_us(peer)
    except RuntimeError as error:
        print(f"  peer not capturable: {str(error).splitlines()[0][:120]}")
        torch.cuda.synchronize()
        return None


def _copy_bandwidth() -> float:
    """Bytes per second of a device-to-device copy (read + write), the practical HBM ceiling."""
    src = torch.empty(2**30, dtype=torch.uint8, device="cuda")
    dst = torch.empty_like(src)
    return 2 * src.numel() / (_time_us(lambda: dst.copy_(src)) * 1e-6)


def _tinygemm(codes: torch.Tensor, scale: torch.Tensor) -> Callable[[torch.Tensor], torch.Tensor] | None:
    """torch's int4 kernel (what gpt-fast uses) on the same codes, its weights rotated like ours, or None where
    this torch lacks it."""
    try:
        unsigned = (codes.to(torch.int32) + 8).to(torch.uint8)
        packed = ((unsigned[:, ::2] << 4) | unsigned[:, 1::2]).contiguous()
        weight = torch._convert_weight_to_int4pack(packed, 8)
        zeros = torch.full_like(scale, 8) * scale  # tinygemm: w = (code - 8) * s  <=>  code * s - 8 s
        scales_and_zeros = torch.stack([scale, zeros], dim=-1).transpose(0, 1).contiguous()
    except (RuntimeError, AttributeError, TypeError):
        return None
    copies = _rotating(lambda: (weight.clone(), scales_and_zeros.clone()), _nbytes((weight, scales_and_zeros)))

    def matmul(x: torch.Tensor) -> torch.Tensor:
        packed_weight, packed_scales = copies()
        return torch._weight_int4pack_mm(x, packed_weight, GROUP, packed_scales)
    return matmul


def _pruned(weight: torch.Tensor) -> torch.Tensor:
    return weight * ~nm_mask(weight.abs().float(), 2, 4)


class Layer:
    """One kernel's operands for a [N, K] weight: `make()` builds a copy, `run(x, operands)` the layer,
    `peer(x)` torch's counterpart (or None), `expected(x)` the fp32 result to check against."""

    def __init__(self, kernel: str, weight: torch.Tensor) -> None:
        self.kernel = kernel
        self.peer_factory: Callable[[torch.Tensor], Callable | None] = lambda x: None
        if kernel == "w4a16":
            codes, scale, _ = quantize_weight(weight, 4, GROUP, True, torch.bfloat16)
            scale = scale.to(torch.bfloat16).contiguous()
            # scales group-major, as Int4Linear holds them (a tile's scales one contiguous row)
            operands = (pack_kernel_layout(codes), scale.t().contiguous().t())
            self.dense = codes.float() * scale.float().repeat_interleave(GROUP, 1)
            tiny = _tinygemm(codes, scale)
            self.peer_factory = lambda x: (lambda: tiny(x)) if tiny is not None else None
            self.run = lambda x, ops: w4a16_matmul(x, ops[0], ops[1], GROUP)
        elif kernel in ("w8a8-int8", "w8a8-fp8"):
            dtype = torch.int8 if kernel == "w8a8-int8" else torch.float8_e4m3fn
            if dtype == torch.int8:
                codes, scale, _ = quantize_weight(weight, 8, None, True, torch.bfloat16)
            else:
                codes, scale = quantize_fp8_weight(weight)
            scale = scale.reshape(-1).float().contiguous()
            operands = (codes.contiguous(), scale)
            self.dense = codes.float() * scale[:, None]

            def run(x: torch.Tensor, ops: tuple) -> torch.Tensor:
                codes_x, scale_x = quantize_per_token(x, dtype)
                return scaled_matmul(codes_x, scale_x, ops[0], ops[1], torch.bfloat16)

            self.run = run
            if dtype == torch.float8_e4m3fn:
                self.peer_factory = self._scaled_mm_peer(codes, scale)
        else:
            pruned = _pruned(weight)
            if kernel == "2of4":
                operands = to_kernel_layout_24(*compress_24(pruned.to(torch.bfloat16)))
                self.dense = pruned.float()
                self.run = lambda x, ops: sparse24_matmul(x, ops[0], ops[1])
                self.peer_factory = self._semi_structured_peer(pruned.to(torch.bfloat16))
            else:
                codes, scale, _ = quantize_weight(pruned, 4, GROUP, True, torch.bfloat16)
                scale = scale.to(torch.bfloat16).contiguous()
                operands = (*to_kernel_layout_24(*compress_24(codes)), scale)
                self.dense = codes.float() * scale.float().repeat_interleave(GROUP, 1)
                self.run = lambda x, ops: sparse24_matmul(x, ops[0], ops[1], ops[2], GROUP)
        self.operands = operands
        self.nbytes = _nbytes(operands)

    @staticmethod
    def _scaled_mm_peer(codes: torch.Tensor, scale: torch.Tensor) -> Callable[[torch.Tensor], Callable | None]:
        """torch._scaled_mm on the same FP8 weight (copies rotated like ours), row-wise scales, activations
        quantized by our kernel (both sides time the matmul only)."""
        copies = _rotating(lambda: codes.clone(), codes.nbytes)

        def factory(x: torch.Tensor) -> Callable | None:
            codes_x, scale_x = quantize_per_token(x, torch.float8_e4m3fn)
            if x.shape[0] % 16:
                return None  # cuBLASLt's FP8 row-wise path wants M in multiples of 16
            matmul = lambda: torch._scaled_mm(codes_x, copies().T, scale_a=scale_x[:, None],  # noqa: E731
                                              scale_b=scale[None, :], out_dtype=torch.bfloat16)
            try:
                matmul()
            except (RuntimeError, TypeError):
                return None
            return matmul
        return factory

    @staticmethod
    def _semi_structured_peer(pruned: torch.Tensor) -> Callable[[torch.Tensor], Callable | None]:
        try:
            copies = _rotating(lambda: torch.sparse.to_sparse_semi_structured(pruned.clone()), pruned.nbytes // 2)
        except (RuntimeError, TypeError, ValueError):
            return lambda x: None

        def factory(x: torch.Tensor) -> Callable | None:
            matmul = lambda: torch.nn.functional.linear(x, copies())  # noqa: E731
            try:
                matmul()
            except (RuntimeError, TypeError, ValueError):
                return None
            return matmul
        return factory


def _measure(kernel: str, k: int, n: int, ms: list[int], bandwidth: float) -> list[dict]:
    weight = torch.randn(n, k, device="cuda") * 0.02
    layer = Layer(kernel, weight)
    operands = _rotating(lambda: tuple(t.clone() for t in layer.operands), layer.nbytes)
    dense = _rotating(lambda: (torch.randn(n, k, device="cuda", dtype=torch.bfloat16),), n * k * 2)
    rows = []
    for m in ms:
        x = torch.randn(m, k, device="cuda", dtype=torch.bfloat16)
        expected = x.float() @ layer.dense.T
        error = ((layer.run(x, layer.operands).float() - expected).norm() / expected.norm()).item()
        peer = layer.peer_factory(x)
        whole_layer = lambda x=x: layer.run(x, operands())  # noqa: E731
        if kernel in ("w8a8-int8", "w8a8-fp8"):  # the matmul alone: x quantized once outside the timed call
            codes_x, scale_x = quantize_per_token(x, torch.int8 if kernel == "w8a8-int8" else torch.float8_e4m3fn)
            run = lambda c=codes_x, s=scale_x: scaled_matmul(c, s, *operands(), torch.bfloat16)  # noqa: E731
        else:
            run = whole_layer
        bf16 = lambda x=x: torch.matmul(x, dense()[0].T)  # noqa: E731
        ours = _graph_time_us(run)
        row = {
            "kernel": kernel, "K": k, "N": n, "M": m,
            "bf16_us": _graph_time_us(bf16),
            "ours_us": ours,
            # W8A8: with the per-token activation quantization kernel that feeds the matmul
            "layer_us": _graph_time_us(whole_layer) if run is not whole_layer else ours,
            "peer_us": _peer_graph_time_us(peer),
            "floor_us": (layer.nbytes + x.nbytes + m * n * 2) / bandwidth * 1e6,
            "relative_error": error,
            "eager": {"bf16_us": _time_us(bf16), "ours_us": _time_us(run),
                      "peer_us": _time_us(peer) if peer is not None else None},
        }
        goal = target(kernel, k, n, m, row)
        row["target"], row["target_met"] = goal if goal else (None, None)
        rows.append(row)
        peer_text = f"{row['peer_us']:8.1f}" if row["peer_us"] is not None else "     n/a"
        print(f"{kernel:<11} K={k:>5} N={n:>5} M={m:>3}  bf16 {row['bf16_us']:7.1f}  peer {peer_text}  ours "
              f"{ours:7.1f}  layer {row['layer_us']:7.1f}  floor {row['floor_us']:6.1f} us  "
              f"x{row['bf16_us'] / ours:.2f} vs bf16  "
              f"{row['target'] or ''} {'' if goal is None else ('met' if row['target_met'] else 'NOT met')}  "
              f"err {error:.1e}", flush=True)
    return rows


PEERS = {"w4a16": "tinygemm int4", "w8a8-int8": "- (ours_us: the matmul; layer_us adds the activation quantization)",
         "w8a8-fp8": "torch._scaled_mm (matmul only, both sides; layer_us adds our activation quantization)",
         "2of4": "torch semi-structured 2:4", "2of4-w4a16": "-"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="the largest shape only")
    parser.add_argument("--kernels", default=",".join(KERNELS))
    parser.add_argument("--shapes", help="KxN,... among the issue's shapes (default: all)")
    parser.add_argument("--ms", help="row counts M,... among the issue's (default: all)")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    args = parser.parse_args()
    ms = [int(m) for m in args.ms.split(",")] if args.ms else MS
    if not set(ms) <= set(MS):
        parser.error(f"--ms takes some of {', '.join(map(str, MS))}")
    shapes = SHAPES[-1:] if args.quick else SHAPES
    if args.shapes:
        shapes = [shape for shape in shapes if f"{shape[0]}x{shape[1]}" in args.shapes.split(",")]
        if not shapes:
            parser.error(f"--shapes takes some of {', '.join(f'{k}x{n}' for k, n in SHAPES)}")
    bandwidth = _copy_bandwidth()
    rows: list[dict] = []
    failures: list[dict] = []
    result = {
        "benchmark": "kernels",
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "device": torch.cuda.get_device_name(),
        "torch": torch.__version__,
        "triton": triton.__version__,
        "copy_bandwidth_tb_s": bandwidth / 1e12,
        "group_size": GROUP,
        "peers": PEERS,
        "rows": rows,
        "failures": failures,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"kernels-{result['date'][:10]}.json"
    for kernel in args.kernels.split(","):
        for k, n in shapes:
            try:
                rows.extend(_measure(kernel, k, n, ms, bandwidth))
            except Exception as error:  # noqa: BLE001 - one kernel failing must not lose the others' numbers
                failures.append({"kernel": kernel, "K": k, "N": n, "error": f"{type(error).__name__}: {error}"[:500]})
                print(f"{kernel} K={k} N={n} FAILED: {failures[-1]['error']}", flush=True)
            path.write_text(json.dumps(result, indent=2))  # after every shape: a killed run keeps what it measured
    met = [row["target_met"] for row in rows if row["target_met"] is not None]
    print(f"targets met: {sum(met)} of {len(met)}; failures: {len(failures)}")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
