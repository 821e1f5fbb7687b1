"""Wanda (Sun et al., 2023, "A Simple and Effective Pruning Approach for Large Language Models"): drop the
weights with the smallest |W_ij| · ‖X_j‖, compared within each output row (or within each group of M
consecutive input weights for N:M). The input norm lets a small weight on an outlier channel survive; no
weight is updated, so only per-channel Σx² is needed, not a Hessian.
"""

from __future__ import annotations

import torch

from compress.methods.masks import check_sparsity_args, nm_mask, row_mask


def wanda_prune(
    weight: torch.Tensor,
    input_sqnorm: torch.Tensor,
    sparsity: float | None = None,
    n_m: tuple[int, int] | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(pruned weight fp32 [out, in], mask bool [out, in], True = pruned) for `weight` [out, in], given
    `input_sqnorm` [in], the sum over calibration tokens of each input channel's x². Exactly one of
    `sparsity` (fraction of every row) or `n_m` ((N kept, of every M) consecutive input weights)."""
    check_sparsity_args(sparsity, n_m, weight.shape[1])
    w = weight.float()
    scores = w.abs() * input_sqnorm.to(w.device, torch.float32).sqrt()
    mask = row_mask(scores, sparsity) if n_m is None else nm_mask(scores, *n_m)
    return w.masked_fill(mask, 0.0), mask
