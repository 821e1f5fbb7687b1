"""Quality measures per the shared protocol (EVAL.md): perplexity and next-token agreement, fp32."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from transformers import PreTrainedModel


def _logits(model: PreTrainedModel, batch: torch.Tensor, device: torch.device) -> torch.Tensor:
    return model(input_ids=batch.to(device), use_cache=False).logits.float()


@torch.no_grad()
def perplexity(
    model: PreTrainedModel, windows: torch.LongTensor, device: torch.device, batch_size: int = 8
) -> float:
    """exp(total NLL / predicted tokens); each window of n tokens predicts its last n - 1."""
    assert windows.dim() == 2 and windows.shape[1] >= 2, windows.shape
    model.eval().to(device)
    total, count = 0.0, 0
    for batch in windows.split(batch_size):
        logits = _logits(model, batch, device)[:, :-1]
        targets = batch[:, 1:].to(device)
        total += F.cross_entropy(
            logits.reshape(-1, logits.shape[-1]), targets.reshape(-1), reduction="sum"
        ).item()
        count += targets.numel()
    return math.exp(total / count)


@torch.no_grad()
def next_token_agreement(
    reference: PreTrainedModel,
    candidate: PreTrainedModel,
    windows: torch.LongTensor,
    device: torch.device,
    batch_size: int = 8,
) -> float:
    """Fraction of positions where both models' most likely next token is the same."""
    assert windows.dim() == 2, windows.shape
    reference.eval().to(device)
    candidate.eval().to(device)
    same, count = 0, 0
    for batch in windows.split(batch_size):
        expected = _logits(reference, batch, device).argmax(-1)
        same += (_logits(candidate, batch, device).argmax(-1) == expected).sum().item()
        count += batch.numel()
    return same / count
