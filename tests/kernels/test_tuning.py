"""How the autotuners time a candidate (kernels/tuning.py): memory registered as resident is replaced per owner,
and on a GPU the cold time grows with the bytes a call must bring from HBM."""

from __future__ import annotations

import inspect
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from kernels import tuning

ROOT = Path(__file__).resolve().parents[2]


def test_resident_memory_is_replaced_per_owner(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tuning, "_RESIDENT", {})
    first, second, other = torch.zeros(4), torch.zeros(8, dtype=torch.int32), torch.zeros(2)
    tuning.keep_resident("workspace", first)
    tuning.keep_resident("other", other)
    tuning.keep_resident("workspace", second)  # a grown workspace replaces the old one
    held = tuning._RESIDENT
    assert set(held) == {("workspace", first.device), ("other", other.device)}
    assert [t.numel() for t in held["workspace", first.device]] == [8]
    assert held["workspace", first.device][0].dtype == torch.float32  # int32 read as 4-byte words


@pytest.mark.skipif(not torch.cuda.is_available(), reason="times CUDA graphs")
def test_cold_time_grows_with_the_bytes_moved() -> None:
    small, large = (torch.empty(n, device="cuda", dtype=torch.uint8) for n in (1 << 20, 1 << 28))
    small_copy, large_copy = torch.empty_like(small), torch.empty_like(large)
    small_ms = tuning.cold_time_ms(lambda: small_copy.copy_(small))
    large_ms = tuning.cold_time_ms(lambda: large_copy.copy_(large))
    assert 0 < small_ms < large_ms
    assert large_ms > 2 * (1 << 28) / 10e12 * 1e3  # no faster than 10 TB/s: HBM, not L2


def test_competing_paths_are_timed_once_per_shape_and_the_faster_kept(monkeypatch: pytest.MonkeyPatch) -> None:
    """Two candidate paths (W4A16's GEMV or tile kernel, W8A8's TMA or pointer kernel, ...) are each
    timed once per key; inside a CUDA graph capture nothing is timed and the first is taken."""
    timings = {"fused": 3.0, "dequantized": 2.0}
    timed: list[str] = []
    monkeypatch.setattr(tuning, "cold_time_ms", lambda fn: timings[fn()])
    monkeypatch.setattr(tuning, "_CHOICES", {})
    monkeypatch.setattr(torch.cuda, "is_current_stream_capturing", lambda: False)  # CPU builds cannot answer

    def fused() -> str:
        timed.append("fused")
        return "fused"

    def dequantized() -> str:
        timed.append("dequantized")
        return "dequantized"

    assert tuning.second_is_faster(("a",), fused, dequantized)
    assert tuning.second_is_faster(("a",), fused, dequantized)
    assert timed == ["fused", "dequantized"]
    timings["fused"] = 1.0
    assert not tuning.second_is_faster(("b",), fused, dequantized)
    monkeypatch.setattr(torch.cuda, "is_current_stream_capturing", lambda: True)
    assert not tuning.second_is_faster(("c",), fused, dequantized)
    assert len(timed) == 4 and ("c",) not in tuning._CHOICES



def test_every_autotuner_times_cold_and_keeps_its_picks_on_disk() -> None:
    """Each kernel's autotuner times with cold_time_ms and, outside the interpreter (which Triton never caches
    under), stores its picks in Triton's cache, so a fresh worker process does not time every config again."""
    probe = (
        "from kernels import sparse24, tuning, w4a16, w4a16_gemv, w8a8, w8a8_tma\n"
        "tuners = [w4a16._w4a16_autotuned, w4a16_gemv._w4a16_gemv_autotuned, w8a8._scaled_matmul_autotuned,\n"
        "          w8a8_tma._scaled_matmul_tma_autotuned, sparse24._sparse24_autotuned]\n"
        "print([(t.do_bench is tuning.autotuner_do_bench, t.cache_results) for t in tuners])\n")
    env = {**os.environ, "TRITON_INTERPRET": "0", "PYTHONPATH": str(ROOT)}
    run = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, env=env, timeout=300)
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == str([(True, True)] * 5)


def test_tuning_keys_that_only_pick_configs_do_not_recompile() -> None:
    """A fresh worker compiles every config of every autotuner once per distinct compile-time argument. The row
    bucket (the tile kernels' tuning key) and the strip GEMV's row stride (one per output width) change no code,
    so they are run-time arguments: as constants they doubled a fresh H200 worker's first W4A16 calls (121.3 s
    against 59.8 s, bench/results/warmup_latency-h200-…json)."""
    from kernels.sparse24 import _sparse24_kernel
    from kernels.w4a16 import _w4a16_kernel
    from kernels.w4a16_strip_gemv import _w4a16_strip_kernel
    from kernels.w8a8 import _scaled_matmul_kernel
    from kernels.w8a8_tma import _scaled_matmul_tma_kernel

    for kernel, names in [(_w4a16_kernel, {"M_BUCKET"}), (_scaled_matmul_kernel, {"M_BUCKET"}),
                          (_scaled_matmul_tma_kernel, {"M_BUCKET"}), (_sparse24_kernel, {"M_BUCKET"}),
                          (_w4a16_strip_kernel, {"stride_pk"})]:
        annotations = inspect.signature(kernel.fn).parameters  # kernel.fn: the Python function, jitted or interpreted
        for name in names:
            assert "constexpr" not in str(annotations[name].annotation), (kernel.fn.__name__, name)
