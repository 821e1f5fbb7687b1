"""Loaded kernels are checked against their references: a kernel that computes something else is caught and
named before a model is served or timed (interpreter on CPU)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from kernels.linear import Int4Linear, Int8Linear
from kernels.self_check import TOLERANCE, KernelMismatch, check_kernels
from tests.kernels.helpers import DEVICE


def _model() -> nn.Module:
    generator = torch.Generator().manual_seed(0)
    codes = torch.randint(-8, 8, (48, 64), generator=generator, dtype=torch.int8)
    scale = torch.rand(48, 2, generator=generator) * 0.01 + 0.001
    weight8 = torch.randint(-127, 128, (32, 48), generator=generator, dtype=torch.int8)
    return nn.Sequential(
        Int4Linear(codes, scale, 32),
        Int4Linear(codes, scale, 32),
        Int8Linear(weight8, torch.rand(32, generator=generator) * 0.01, quantize_activations=True),
    ).to(DEVICE)


def test_every_kernel_kind_is_checked_once_and_agrees() -> None:
    worst = check_kernels(_model())
    assert set(worst) == {"w4a16", "w8a8-int8"}
    assert all(0 <= error <= TOLERANCE for error in worst.values())


@pytest.mark.parametrize("wrong", [lambda y: y * 1.1, lambda y: torch.full_like(y, float("nan"))])
def test_a_kernel_that_disagrees_is_named(wrong, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    kernel = Int8Linear.run_kernel
    monkeypatch.setattr(Int8Linear, "run_kernel", lambda self, x: wrong(kernel(self, x)))
    with pytest.raises(KernelMismatch, match=r"w8a8-int8 kernel disagrees with its reference on 2 \(1 rows"):
        check_kernels(_model())
