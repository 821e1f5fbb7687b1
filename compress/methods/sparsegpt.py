"""SparseGPT (Frantar & Alistarh, 2023, "SparseGPT: Massive Language Models Can Be Accurately Pruned in
One-Shot"): prune one column at a time and push the error of the dropped weights onto the columns not yet
visited, weighted by the inverse Hessian H = 2XᵀX of the layer's calibration inputs (the OBS update that
GPTQ applies to rounding errors). The weights to drop are those with the lowest OBS saliency w² / [H⁻¹]²_jj.

Columns go in blocks with lazy batch updates, as in GPTQ. Unstructured masks are chosen once per block
from the block's values when it comes up; N:M masks are chosen at the first column of every group of M,
from the values the earlier columns' errors have already reached. Unlike the paper, which compares a
block's saliencies across all rows at once, every row here drops the same number of weights in every
block: the layer gets exactly the target sparsity in every row, and rows are independent, so layers that
share an input can be pruned stacked or apart with the same result.
"""

from __future__ import annotations

import torch

from compress.methods.hessian import inverse_hessian_factor
from compress.methods.masks import check_sparsity_args, nm_mask, row_mask


def sparsegpt_prune(
    weight: torch.Tensor,
    hessian: torch.Tensor,
    sparsity: float | None = None,
    n_m: tuple[int, int] | None = None,
    block_size: int = 128,
    damp: float = 0.01,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(pruned weight fp32 [out, in], mask bool [out, in], True = pruned) for `weight` [out, in] given
    H [in, in], both on hessian.device. Exactly one of `sparsity` (fraction of every row, rounded per block)
    or `n_m` ((N kept, of every M) consecutive input weights); `block_size` must be a multiple of M."""
    columns = weight.shape[1]
    assert hessian.shape == (columns, columns), (hessian.shape, weight.shape)
    check_sparsity_args(sparsity, n_m, columns)
    if n_m is not None and block_size % n_m[1]:
        raise ValueError(f"block_size={block_size} must be a multiple of M={n_m[1]} so no N:M group spans blocks")

    w = weight.to(hessian.device, torch.float32).clone()
    h = hessian.to(torch.float32).clone()
    dead = h.diagonal() == 0
    h[dead, dead] = 1.0
    w[:, dead] = 0.0
    h_inv = inverse_hessian_factor(h, damp)
    mask = torch.zeros_like(w, dtype=torch.bool)

    for start in range(0, columns, block_size):
        end = min(start + block_size, columns)
        block = w[:, start:end].clone()
        h_inv_block = h_inv[start:end, start:end]
        diagonal = h_inv_block.diagonal()
        block_mask = mask[:, start:end]  # a view: filling it fills `mask`
        if sparsity is not None:
            block_mask.copy_(row_mask(block.square() / diagonal.square(), sparsity))
        errors = torch.empty_like(block)
        for i in range(end - start):
            if n_m is not None and i % n_m[1] == 0:
                group = slice(i, i + n_m[1])
                block_mask[:, group] = nm_mask(block[:, group].square() / diagonal[group].square(), *n_m)
            column = block[:, i]
            error = torch.where(block_mask[:, i], column, 0.0) / diagonal[i]
            block[:, i:].sub_(error.unsqueeze(1) * h_inv_block[i, i:].unsqueeze(0))
            errors[:, i] = error
        w[:, start:end] = block.masked_fill_(block_mask, 0.0)  # w - error·d leaves rounding dust, not 0.0
        w[:, end:].sub_(errors @ h_inv[start:end, end:])

    return w, mask
