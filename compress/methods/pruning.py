"""The pruning methods as the runner calls them: SparseGPT (with its OBS update) and Wanda (without)."""

from __future__ import annotations

import torch

from compress.errors import CompressError
from compress.methods.base import LinearInputs, PrunedWeight, PruneMethod
from compress.methods.sparsegpt import sparsegpt_prune
from compress.methods.wanda import wanda_prune
from compress.recipes import SparseGPTModifier, WandaModifier


class SparseGPT(PruneMethod[SparseGPTModifier]):
    needs_hessian = True

    def prune(self, weight: torch.Tensor, inputs: LinearInputs) -> PrunedWeight:
        m = self.modifier
        assert inputs.hessian is not None
        n_m = m.n_m if m.pattern is not None else None
        pruned, mask = sparsegpt_prune(weight, inputs.hessian, m.sparsity, n_m, m.block_size, m.damp)
        return PrunedWeight(pruned, mask)


class Wanda(PruneMethod[WandaModifier]):
    needs_input_norms = True

    def prune(self, weight: torch.Tensor, inputs: LinearInputs) -> PrunedWeight:
        m = self.modifier
        if inputs.sqnorm is None:
            raise CompressError("Wanda needs the layer inputs' norms: give calibration windows")
        n_m = m.n_m if m.pattern is not None else None
        pruned, mask = wanda_prune(weight, inputs.sqnorm.to(weight.device), m.sparsity, n_m)
        return PrunedWeight(pruned, mask)
