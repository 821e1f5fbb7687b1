"""A loaded model's kernels checked against their plain-torch references before it is used: the first layer of
every kernel kind runs a decoding row and a batch both ways, and the decode attention kernel runs the model's
head layout over a cache of several slices. The W4A16 GEMV reads codes as float denormals and
the tensor-core paths depend on the compiler's tiles, so a GPU, driver or Triton that flushes denormals or
miscompiles a tile would otherwise serve wrong numbers fast, and a speed report would time them."""

from __future__ import annotations

import torch
from torch import nn

from kernels.decode_attention import decode_attention, decode_attention_reference
from kernels.linear import CompressedLinear, uses_kernel

CHECK_ROWS = (1, 16)  # the GEMV paths and the tensor-core tiles
CHECK_CACHE = 300  # attention: positions of the checked cache (several blocks, merged from several slices on a GPU)
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


def check_decode_attention(heads: int, kv_heads: int, head_dim: int, dtype: torch.dtype,
                           device: torch.device) -> float:
    """The decode attention kernel's relative error for this head layout (two sequences of different lengths in
    one cache); raises KernelMismatch where it exceeds TOLERANCE."""
    generator = torch.Generator().manual_seed(0)
    query = torch.randn(2, heads, 1, head_dim, generator=generator).to(device, dtype)
    key = torch.randn(2, kv_heads, CHECK_CACHE, head_dim, generator=generator).to(device, dtype)
    value = torch.randn(2, kv_heads, CHECK_CACHE, head_dim, generator=generator).to(device, dtype)
    mask = (torch.arange(CHECK_CACHE) < torch.tensor([[CHECK_CACHE], [CHECK_CACHE // 3]])).to(device)[:, None, None]
    scale = head_dim ** -0.5
    got = decode_attention(query, key, value, mask, scale).float()
    expected = decode_attention_reference(query, key, value, mask, scale).float()
    error = ((got - expected).norm() / expected.norm().clamp_min(1e-30)).item()
    if not error <= TOLERANCE:
        raise KernelMismatch(f"the decode attention kernel disagrees with its reference for {heads} query and "
                             f"{kv_heads} key/value heads of {head_dim} on {device}: relative error {error:.2e} > "
                             f"{TOLERANCE}")
    return error
