"""Which weights a pruning method drops, given its scores (higher = more important): the per-row and N:M
selections SparseGPT and Wanda share. Every mask is bool with True = pruned; ties go to the lower column
(stable sort), so a mask depends on the scores alone."""

from __future__ import annotations

import torch


def check_sparsity_args(sparsity: float | None, n_m: tuple[int, int] | None, columns: int) -> None:
    """Reject, with a message a recipe author can act on, what neither selection below can do."""
    if (sparsity is None) == (n_m is None):
        raise ValueError("give exactly one of sparsity (unstructured fraction) or n_m ((N kept, of every M))")
    if sparsity is not None and not 0 < sparsity < 1:
        raise ValueError(f"sparsity must lie strictly between 0 and 1, got {sparsity}")
    if n_m is not None:
        kept, group = n_m
        if not 0 < kept < group:
            raise ValueError(f"n_m={n_m}: need 0 < N < M (N weights kept of every M)")
        if columns % group:
            raise ValueError(f"{columns} input columns do not split into groups of M={group}")


def row_mask(scores: torch.Tensor, sparsity: float) -> torch.Tensor:
    """Prune the round(sparsity · columns) lowest scores of every row, so each row has the same sparsity
    (rows are then independent, and a row never loses more than its share to another row's larger scale)."""
    pruned = round(sparsity * scores.shape[1])
    mask = torch.zeros_like(scores, dtype=torch.bool)
    mask.scatter_(1, scores.argsort(dim=1, stable=True)[:, :pruned], True)
    return mask


def nm_mask(scores: torch.Tensor, n_keep: int, m: int) -> torch.Tensor:
    """Prune the m − n_keep lowest scores of every group of m consecutive columns of every row."""
    rows, columns = scores.shape
    groups = scores.reshape(rows, columns // m, m)
    mask = torch.zeros_like(groups, dtype=torch.bool)
    mask.scatter_(2, groups.argsort(dim=2, stable=True)[:, :, : m - n_keep], True)
    return mask.reshape(rows, columns)
