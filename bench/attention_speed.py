"""One decode step's attention, Shrinkray's kernel (kernels/decode_attention.py) against what a transformers
model's compiled decode step runs (its SDPA attention function under torch.compile: K and V repeated per query
head, then cuDNN/flash SDPA with the boolean cache mask). Llama-3-8B's heads (32 query, 8 key/value, head size
128), a static cache of each length, filled to `used` positions; GPU time of one call with the cache out of L2
(kernels/tuning.py cold_time_ms), and the kernel's relative error against the fp32 reference. Run on a GPU:
    python bench/attention_speed.py
"""

from __future__ import annotations

import argparse
import datetime
import json
from pathlib import Path
from types import SimpleNamespace

import torch
from transformers.integrations.sdpa_attention import sdpa_attention_forward

from kernels.decode_attention import decode_attention, decode_attention_reference
from kernels.tuning import cold_time_ms

HEADS, KV_HEADS, HEAD_DIM = 32, 8, 128
# (batch, cache length, positions in use)
CASES = [(1, 161, 161), (1, 1024, 1024), (1, 4096, 4096), (1, 4096, 161), (16, 161, 161), (16, 1024, 1024),
         (16, 4096, 4096), (64, 1024, 1024)]
TARGET = "faster than SDPA"


def case_inputs(batch: int, length: int, used: int, device: torch.device) -> tuple[torch.Tensor, ...]:
    generator = torch.Generator(device=device).manual_seed(batch * 100003 + length)
    query = torch.randn(batch, HEADS, 1, HEAD_DIM, device=device, generator=generator).bfloat16()
    key = torch.randn(batch, KV_HEADS, length, HEAD_DIM, device=device, generator=generator).bfloat16()
    value = torch.randn(batch, KV_HEADS, length, HEAD_DIM, device=device, generator=generator).bfloat16()
    mask = (torch.arange(length, device=device) < used).view(1, 1, 1, length).expand(batch, 1, 1, length)
    return query, key, value, mask.contiguous()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        parser.error("attention is timed on a CUDA GPU")
    device = torch.device("cuda")
    module = SimpleNamespace(num_key_value_groups=HEADS // KV_HEADS, is_causal=True, training=False)
    scale = HEAD_DIM ** -0.5

    def sdpa(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return sdpa_attention_forward(module, query, key, value, mask, scaling=scale)[0]

    compiled_sdpa = torch.compile(sdpa, dynamic=False)
    rows = []
    print(f"{'batch':>5} {'cache':>6} {'used':>6} {'SDPA us':>9} {'ours us':>9} {'speedup':>8} {'rel err':>9}  target")
    for batch, length, used in CASES:
        query, key, value, mask = case_inputs(batch, length, used, device)
        ours = decode_attention(query, key, value, mask, scale)
        expected = decode_attention_reference(query, key, value, mask, scale)
        error = ((ours.float() - expected.float()).norm() / expected.float().norm()).item()
        sdpa_us = 1e3 * cold_time_ms(lambda: compiled_sdpa(query, key, value, mask))  # noqa: B023
        ours_us = 1e3 * cold_time_ms(lambda: decode_attention(query, key, value, mask, scale))  # noqa: B023
        rows.append({"batch": batch, "cache_length": length, "used": used, "sdpa_us": sdpa_us, "ours_us": ours_us,
                     "speedup": sdpa_us / ours_us, "relative_error": error})
        print(f"{batch:>5} {length:>6} {used:>6} {sdpa_us:>9.1f} {ours_us:>9.1f} {sdpa_us / ours_us:>7.2f}x "
              f"{error:>9.1e}  {TARGET}: {'met' if ours_us < sdpa_us else 'NOT met'}", flush=True)
    result = {"benchmark": "attention_speed", "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
              "device": torch.cuda.get_device_name(), "torch": torch.__version__,
              "shape": {"heads": HEADS, "kv_heads": KV_HEADS, "head_dim": HEAD_DIM, "dtype": "bf16"},
              "protocol": "one query token per sequence; GPU time per call from CUDA graph replays with L2 evicted "
                          "before each call; SDPA = transformers' sdpa_attention_forward under torch.compile",
              "target": TARGET, "rows": rows}
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"attention_speed-{result['date'][:10]}.json"
    path.write_text(json.dumps(result, indent=2))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
