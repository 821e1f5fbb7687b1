"""A gated MLP's activation, silu(gate) * up, over a matmul output whose column pairs are (gate, up): what the
matmul paths without the gate in their epilogue (the tensor-core tiles, dequantize-then-cuBLAS) run after it, in
one launch, as inductor's own fused kernel would. The decode GEMVs apply it as they store
(kernels/w4a16_gemv.py: store_pair_columns)."""

from __future__ import annotations

import torch

from kernels.triton_support import triton

if triton is not None:
    import triton.language as tl

    @triton.jit
    def silu_times(gate, up):
        """silu(gate) * up in the inputs' (fp32) precision."""
        return gate / (1.0 + tl.exp(-gate)) * up

    @triton.jit
    def _gate_pairs_kernel(pairs_ptr, out_ptr, total, BLOCK: tl.constexpr):
        offsets = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
        ok = offsets < total
        gate = tl.load(pairs_ptr + 2 * offsets, mask=ok, other=0.0).to(tl.float32)
        up = tl.load(pairs_ptr + 2 * offsets + 1, mask=ok, other=0.0).to(tl.float32)
        tl.store(out_ptr + offsets, silu_times(gate, up).to(out_ptr.dtype.element_ty), mask=ok)


def gate_pairs_reference(pairs: torch.Tensor) -> torch.Tensor:
    """[..., 2H] with (gate, up) column pairs -> silu(gate) * up [..., H], in fp32 before the cast back."""
    pairs = pairs.float()
    return torch.nn.functional.silu(pairs[..., 0::2]) * pairs[..., 1::2]


def gate_pairs(pairs: torch.Tensor, out: torch.Tensor, block: int = 1024) -> None:
    """silu(gate) * up of contiguous [M, 2H] pairs into contiguous out [M, H] (on CUDA or in the interpreter)."""
    total = out.numel()
    _gate_pairs_kernel[(triton.cdiv(total, block),)](pairs, out, total, BLOCK=block)
