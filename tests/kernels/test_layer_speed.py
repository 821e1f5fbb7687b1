"""The layer rows of the speed report: one per distinct compressed layer (kernel, shape) and row count, each
layer timed as it computes, next to a dense matmul of its shape."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest
import torch

from kernels.layer_speed import layer_speeds, per_step
from kernels.loader import load_for_inference
from tests.compress.conftest import build_random_llama
from tests.kernels.helpers import DEVICE, compressed_checkpoint

W4A16 = [{"method": "rtn", "bits": 4, "group_size": 32}]


class WallClock:
    """Times a call on the CPU by the clock (the report uses CUDA-graph timing on GPU workers) and keeps the
    shape of what each timed call returned."""

    def __init__(self) -> None:
        self.shapes: list[tuple[int, ...]] = []

    def __call__(self, fn: Callable[[], object]) -> float:
        start = time.perf_counter()
        out = fn()
        elapsed = time.perf_counter() - start
        assert isinstance(out, torch.Tensor) and torch.isfinite(out).all()
        self.shapes.append(tuple(out.shape))
        return elapsed * 1e3


@pytest.fixture(scope="module")
def fused_model(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    base = build_random_llama(tmp_path_factory.mktemp("base") / "model")
    path = compressed_checkpoint(base, W4A16, tmp_path_factory.mktemp("w4a16") / "model")
    return load_for_inference(path, DEVICE)


def test_each_distinct_layer_is_timed_against_a_dense_matmul(fused_model) -> None:  # type: ignore[no-untyped-def]
    model, used = fused_model
    clock = WallClock()
    speeds = layer_speeds(model, clock, rows=(1, 3))
    # hidden 64, 4 heads of 16 and 2 kv heads, MLP 128: q/k/v fused to 64 + 32 + 32 outputs, gate/up (with the
    # SiLU) to one gated layer that stands for a dense 256-wide matmul
    assert sorted((s.kernel, s.in_features, s.out_features, s.layers) for s in speeds if s.rows == 1) == [
        ("w4a16", 64, 64, 2), ("w4a16", 128, 64, 2), ("w4a16-fused", 64, 128, 2), ("w4a16-gated", 64, 256, 2)]
    assert used == {"w4a16": 4, "w4a16-fused": 10, "dense": 1}  # the 10 fused projections are 4 calls
    # every timed call computed a [rows, out] result, kernel then dense, per layer and row count; the gated
    # kernel's out is silu(gate) * up, half its columns
    assert clock.shapes == [shape for s in speeds for shape in (
        (s.rows, s.out_features // (2 if s.kernel == "w4a16-gated" else 1)), (s.rows, s.out_features))]
    for speed in speeds:
        assert speed.kernel_us > 0 and speed.dense_us > 0
        assert speed.as_dict()["speedup"] == pytest.approx(speed.dense_us / speed.kernel_us)


def test_a_decode_step_sums_every_layer_once(fused_model) -> None:  # type: ignore[no-untyped-def]
    speeds = layer_speeds(fused_model[0], WallClock(), rows=(1, 3))
    totals = per_step(speeds)
    assert [total["rows"] for total in totals] == [1, 3]
    for total in totals:
        rows = [s for s in speeds if s.rows == total["rows"]]
        assert total["kernel_us"] == pytest.approx(sum(2 * s.kernel_us for s in rows))  # two decoder layers each
        assert total["dense_us"] == pytest.approx(sum(2 * s.dense_us for s in rows))
        assert total["speedup"] == pytest.approx(total["dense_us"] / total["kernel_us"])

