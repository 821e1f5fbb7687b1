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

from compress.methods.base import LayerMethod, QuantizedWeight
from compress.methods.hessian import HessianAccumulator, inverse_hessian_factor
from compress.quantize import quant_range, quantize_weight
from compress.recipes import GPTQModifier
from compress.schemes import SCALE_DTYPE


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

    def set_group(index: int, source: torch.Tensor) -> None:
        _, s, z = quantize_weight(source, bits, None, symmetric, scale_dtype)
        scale[:, index], zero_point[:, index] = s[:, 0], z[:, 0].float()

    if group_size is None:
        set_group(0, w)
    elif act_order:
        for index in range(groups):
            set_group(index, w[:, index * group_size : (index + 1) * group_size])

    order = torch.argsort(h.diagonal(), descending=True) if act_order else torch.arange(columns, device=w.device)
    w, h = w[:, order], h[order][:, order]
    mask = keep_zero[:, order] if keep_zero is not None else None
    group_of = order // group_size if group_size is not None else torch.zeros_like(order)
    group_of_list = group_of.tolist()
    h_inv = inverse_hessian_factor(h, damp)
    codes = torch.empty_like(w)

    for start in range(0, columns, block_size):
        end = min(start + block_size, columns)
        block = w[:, start:end].clone()
        errors = torch.empty_like(block)
        h_block = h_inv[start:end, start:end]
        for i in range(end - start):
            column = start + i
            group = group_of_list[column]
            if group_size is not None and not act_order and column % group_size == 0:
                set_group(group, block[:, i:] if i + group_size <= end - start else
                          torch.cat([block[:, i:], w[:, end : column + group_size]], dim=1))
            s, z = scale[:, group], zero_point[:, group]
            q = (block[:, i] / s).round_().add_(z).clamp_(q_min, q_max)
            dequantized = (q - z) * s
            if mask is not None:
                kept = ~mask[:, column]
                q = torch.where(kept, q, z)
                dequantized = dequantized * kept
            codes[:, column] = q
            error = (block[:, i] - dequantized) / h_block[i, i]
            block[:, i:].sub_(error.unsqueeze(1) * h_block[i, i:].unsqueeze(0))
            errors[:, i] = error
        w[:, end:].sub_(errors @ h_inv[start:end, end:])

    inverse_order = torch.argsort(order)
    codes = codes[:, inverse_order]
    return codes.to(torch.int8), scale, zero_point.to(torch.int8)


class GPTQ(LayerMethod):
    needs_activations = True

    def __init__(self, modifier, module, stats) -> None:  # type: ignore[no-untyped-def]
        super().__init__(modifier, module, stats)
        self.accumulator = HessianAccumulator(module.in_features, module.weight.device)

    def add_batch(self, inputs: torch.Tensor) -> None:
        self.accumulator.add(inputs)

    def quantize(self) -> QuantizedWeight:
        m = self.modifier
        assert isinstance(m, GPTQModifier), type(m)
        q, scale, zero_point = gptq_quantize(
            self.module.weight.data, self.accumulator.hessian, m.bits, m.group_size, m.symmetric,
            m.act_order, m.damp, m.block_size, keep_zero=getattr(self.module, "pruned_mask", None),
        )
        self.accumulator = None  # type: ignore[assignment]  # free the Hessian before the next layer
        return QuantizedWeight(q, scale, zero_point)
