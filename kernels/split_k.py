"""The workspace of one-launch split-K: K slices of an output tile add fp32 partial sums into `sums` and count
in on `arrivals`; the last slice to arrive writes the tile in the output dtype and zeroes both again. No memset
before the call and no conversion after it (at decode sizes each would cost as much as the matmul)."""

from __future__ import annotations

import torch

from kernels.triton_support import triton
from kernels.tuning import keep_resident

if triton is not None:
    import triton.language as tl

_WORKSPACES: dict[torch.device, tuple[torch.Tensor, torch.Tensor]] = {}


def split_k_workspace(device: torch.device, sums: int, tiles: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Zeroed fp32 sums and int32 arrival counters, at least `sums` and `tiles` long, kept per device. Every
    kernel that uses them leaves them zeroed again, so they are allocated (and zeroed) once, outside any CUDA
    graph capture that follows; callers on one device must run on one stream."""
    held = _WORKSPACES.get(device)
    if held is None or held[0].numel() < sums or held[1].numel() < tiles:
        size = max(sums, 1 << 20, held[0].numel() if held else 0)
        count = max(tiles, 1 << 14, held[1].numel() if held else 0)
        held = (torch.zeros(size, device=device, dtype=torch.float32),
                torch.zeros(count, device=device, dtype=torch.int32))
        _WORKSPACES[device] = held
        if device.type == "cuda":
            keep_resident("split-K workspace", *held)
    return held


if triton is not None:

    @triton.jit
    def add_to_workspace(sums_ptrs, values, mask):
        """Adds a program's partial sums into the workspace, relaxed: nothing waits for them here. The count that
        follows (count_in) orders them: as acq_rel adds, each waited on its own round trip to L2, one after the
        other (four on the strip GEMV's tile), on the kernel's critical path."""
        tl.atomic_add(sums_ptrs, values, mask=mask, sem="relaxed")

    @triton.jit
    def count_in(arrival_ptr):
        """How many programs counted in on `arrival_ptr` before this one. The barrier puts every thread's writes
        of this program before the count, whose release then orders them for the program that sees the count
        (PTX's release is cumulative over what the barrier ordered before it: CUTLASS's split-K semaphore is
        the same pattern); its acquire orders the reads that follow after every program counted before."""
        tl.debug_barrier()
        return tl.atomic_add(arrival_ptr, 1, sem="acq_rel")

    @triton.jit
    def reset_count(arrival_ptr):
        """Zeroes a counter for the next launch, which only the end of this kernel has to order: relaxed, so the
        last program does not wait a round trip for its own stores before it exits."""
        tl.atomic_xchg(arrival_ptr, 0, sem="relaxed")

    @triton.jit
    def store_split_k(acc, out_ptrs, sums_ptrs, mask, bias_ptrs, bias_mask, arrival_ptr,
                      HAS_BIAS: tl.constexpr, SPLIT_K: tl.constexpr):
        """Write a program's fp32 tile `acc` (+ bias) to the output, or with SPLIT_K > 1 add it to the workspace
        and, if this is the tile's last slice to arrive, write the whole sum and leave workspace and counter
        zeroed. `bias_ptrs` broadcast against `acc`."""
        if SPLIT_K == 1:
            if HAS_BIAS:
                acc += tl.load(bias_ptrs, mask=bias_mask, other=0.0).to(tl.float32)
            tl.store(out_ptrs, acc.to(out_ptrs.dtype.element_ty), mask=mask)
        else:
            add_to_workspace(sums_ptrs, acc, mask)
            if count_in(arrival_ptr) == SPLIT_K - 1:
                total = tl.load(sums_ptrs, mask=mask, other=0.0, cache_modifier=".cg")
                if HAS_BIAS:
                    total += tl.load(bias_ptrs, mask=bias_mask, other=0.0).to(tl.float32)
                tl.store(out_ptrs, total.to(out_ptrs.dtype.element_ty), mask=mask)
                tl.store(sums_ptrs, tl.zeros_like(total), mask=mask)
                reset_count(arrival_ptr)
