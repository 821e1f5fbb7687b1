"""GPTQ (Frantar et al., 2022, "GPTQ: Accurate Post-Training Quantization for Generative Pre-trained
Transformers"): quantize one column at a time and push its rounding error onto the columns not yet
quantized, weighted by the inverse Hessian H = 2XᵀX of the layer's calibration inputs.

Columns go in blocks (lazy batch updates: the error of a block reaches the rest of the matrix in one
matmul); with act_order they go in order of decreasing Hessian diagonal. Group scales are always laid
out along the original column order, so the checkpoint needs no permutation index: with act_order they
are fixed from the weights before any update ("static groups"), otherwise each group's scale is taken
from the updated weights when its first column comes up.
"""

from __future__ import annotations

import torch

from compress.methods.base import LinearInputs, QuantizedWeight, QuantizeMethod
from compress.methods.hessian import inverse_hessian_factor
from compress.quantize import integer_scale_base, quant_range, quantize_weight
from compress.recipes import GPTQModifier
from compress.schemes import SCALE_DTYPE
from kernels.gptq_block import quantize_block, quantize_block_reference, triton_available


def gptq_quantize(
    weight: torch.Tensor,
    hessian: torch.Tensor,
    bits: int,
    group_size: int | None,
    symmetric: bool = True,
    act_order: bool = True,
    damp: float = 0.01,
    block_size: int = 128,
    scale_dtype: torch.dtype = SCALE_DTYPE,
    keep_zero: torch.Tensor | None = None,
    integer_scale: bool = False,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """GPTQ codes for `weight` [out, in] given H [in, in]: (q int8 [out, in], scale, zero_point), laid out
    like quantize_weight's. `keep_zero` (bool [out, in]) marks pruned weights that must stay exactly zero
    (sparsify, then quantize only the kept weights)."""
    out_features, columns = weight.shape
    assert hessian.shape == (columns, columns), (hessian.shape, weight.shape)
    w = weight.to(hessian.device, torch.float32).clone()
    h = hessian.clone()
    dead = h.diagonal() == 0
    h[dead, dead] = 1.0
    w[:, dead] = 0.0
    if keep_zero is not None:
        keep_zero = keep_zero.to(w.device)
        w[keep_zero] = 0.0

    q_min, q_max = quant_range(bits)
    groups = 1 if group_size is None else columns // group_size
    scale = torch.empty(out_features, groups, device=w.device)
    zero_point = torch.empty(out_features, groups, device=w.device)

    # Integer scales: each row's base comes from the scales plain rounding would give (see integer_scale_base).
    base = integer_scale_base(quantize_weight(w, bits, group_size, symmetric)[1]) if integer_scale else None

    def set_group(index: int, source: torch.Tensor) -> None:
        _, s, z = quantize_weight(source, bits, None, symmetric, scale_dtype, base)
        scale[:, index], zero_point[:, index] = s[:, 0], z[:, 0].float()

    dynamic_groups = group_size is not None and not act_order
    if group_size is None:
        set_group(0, w)
    elif act_order:
        for index in range(groups):
            set_group(index, w[:, index * group_size : (index + 1) * group_size])
    else:
        block_size = group_size  # each group's scale comes from its columns once all earlier errors reached them

    order = torch.argsort(h.diagonal(), descending=True) if act_order else torch.arange(columns, device=w.device)
    w, h = w[:, order], h[order][:, order]
    pruned = keep_zero[:, order].contiguous() if keep_zero is not None else None
    column_group = (order // group_size if group_size is not None else torch.zeros_like(order)).to(torch.int32)
    h_inv = inverse_hessian_factor(h, damp)
    codes = torch.empty_like(w)
    quantize = quantize_block if w.is_cuda and triton_available() else quantize_block_reference

    for start in range(0, columns, block_size):
        end = min(start + block_size, columns)
        if dynamic_groups:
            set_group(start // group_size, w[:, start:end])
        block_codes, errors = quantize(
            w[:, start:end], h_inv[start:end, start:end], scale, zero_point, column_group[start:end],
            q_min, q_max, None if pruned is None else pruned[:, start:end],
        )
        codes[:, start:end] = block_codes
        w[:, end:].sub_(errors @ h_inv[start:end, end:])

    codes = codes[:, torch.argsort(order)]
    return codes.to(torch.int8), scale, zero_point.to(torch.int8)


class GPTQ(QuantizeMethod[GPTQModifier]):
    needs_hessian = True

    def quantize(self, weight: torch.Tensor, inputs: LinearInputs, pruned: torch.Tensor | None) -> QuantizedWeight:
        m = self.modifier
        assert inputs.hessian is not None
        q, scale, zero_point = gptq_quantize(
            weight, inputs.hessian, m.bits, m.group_size, m.symmetric, m.act_order, m.damp, m.block_size,
            keep_zero=pruned, integer_scale=m.integer_scale,
        )
        return QuantizedWeight(q, scale, zero_point)
