"""Programmatic dependent launch (Hopper and later): every Shrinkray kernel is launched while the kernel before
it in the stream is still finishing, and waits on the grid dependency before its first memory access. In a
CUDA-graph decode step the kernels are a few microseconds each, and the launch (and the address arithmetic
before the wait) then overlaps the previous kernel instead of following it. The kernels let their own successor
launch as they start: it waits in turn.

A kernel launched this way reads and writes memory only after `wait_for_previous`: past it, every grid before it
in the stream has finished and its writes are visible (Hopper's griddepcontrol.wait waits for all prerequisite
grids in flight). Nothing is read before the wait, not even weights, which no decode kernel writes: a kernel
that has just written them (packing, fusion) need not have made its writes visible before a dependent kernel
starts."""

from __future__ import annotations

import functools

import torch

from kernels.triton_support import interpreted, triton

if triton is not None:
    import triton.language as tl

    try:
        from triton.backends.nvidia.compiler import CUDAOptions
        from triton.language.extra.cuda import gdc_launch_dependents, gdc_wait

        _TRITON_SUPPORTS = "launch_pdl" in CUDAOptions.__dataclass_fields__
    except ImportError:  # a Triton without grid dependency control: kernels launch the ordinary way
        _TRITON_SUPPORTS = False

    @triton.jit
    def allow_next_launch(ENABLED: tl.constexpr):
        """Lets the next kernel in the stream launch once every program of this one has called this."""
        if ENABLED:
            gdc_launch_dependents()

    @triton.jit
    def wait_for_previous(ENABLED: tl.constexpr):
        """Blocks until the previous kernel in the stream has finished and its writes are visible."""
        if ENABLED:
            gdc_wait()
else:
    _TRITON_SUPPORTS = False

_switched_on = True


def set_dependent_launch(enabled: bool) -> None:
    """Turns dependent launch on or off for launches from now on (benchmarks compare the two)."""
    global _switched_on
    _switched_on = enabled


@functools.cache
def _hardware_supports(device: torch.device) -> bool:
    """NVIDIA Hopper or later (ROCm builds report their GPUs as "cuda" devices too, with other capabilities)."""
    return torch.version.hip is None and torch.cuda.get_device_capability(device)[0] >= 9


def dependent_launch(device: torch.device) -> bool:
    """Whether kernels on `device` launch dependent on the previous kernel: Hopper or later, a Triton that
    supports it, compiled kernels (not the CPU interpreter), and not switched off."""
    return (_switched_on and _TRITON_SUPPORTS and device.type == "cuda" and not interpreted()
            and _hardware_supports(device))


def launch_options(device: torch.device) -> dict:
    """The keyword arguments a launch of a kernel with a DEPENDENT constexpr takes on `device`."""
    if dependent_launch(device):
        return {"DEPENDENT": True, "launch_pdl": True}
    return {"DEPENDENT": False}
