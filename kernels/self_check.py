"""A loaded model's kernels checked against their plain-torch references before it is used: the first layer of
every kernel kind runs a decoding row and a batch both ways. The W4A16 GEMV reads codes as float denormals and
the tensor-core paths depend on the compiler's tiles, so a GPU, driver or Triton that flushes denormals or
miscompiles a tile would otherwise serve wrong numbers fast, and a speed report would time them."""

from __future__ import annotations

import torch
from torch import nn

from kernels.linear import CompressedLinear, uses_kernel

CHECK_ROWS = (1, 16)  # the GEMV paths and the tensor-core tiles
TOLERANCE = 2e-2  # relative; both sides sum in fp32 and round once to bf16, or quantize activations alike


class KernelMismatch(RuntimeError):
    """A kernel's output disagrees with its plain-torch reference."""


def check_kernels(model: nn.Module) -> dict[str, float]:
    """The worst relative error per kernel kind; raises KernelMismatch naming the kernel and layer where it
    exceeds TOLERANCE. Kernel kinds whose device has no kernels (a CPU without the interpreter) are skipped."""
    first: dict[str, tuple[str, CompressedLinear]] = {}
    for name, module in model.named_modules():
        if isinstance(module, CompressedLinear):
            first.setdefault(module.kernel, (name, module))
    worst: dict[str, float] = {}
    generator = torch.Generator().manual_seed(0)
    for kernel, (name, module) in first.items():
        device = next(module.buffers()).device
        for rows in CHECK_ROWS:
            x = torch.randn(rows, module.in_features, generator=generator).to(device, module.dtype)
            if not uses_kernel(x):
                break
            with torch.no_grad():
                got, expected = module.run_kernel(x).float(), module.run_reference(x).float()
            error = ((got - expected).norm() / expected.norm().clamp_min(1e-30)).item()
            worst[kernel] = max(worst.get(kernel, 0.0), error)
            if not error <= TOLERANCE:  # NaN fails too
                raise KernelMismatch(f"the {kernel} kernel disagrees with its reference on {name} ({rows} rows on "
                                     f"{device}): relative error {error:.2e} > {TOLERANCE}")
    return worst
