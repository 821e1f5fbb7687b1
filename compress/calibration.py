"""Token windows for calibration and evaluation, per the shared protocol (EVAL.md)."""

from __future__ import annotations

import torch
from transformers import PreTrainedTokenizerBase

from compress.errors import CompressError


def token_windows(
    tokenizer: PreTrainedTokenizerBase, text: str, seq_len: int = 512, max_windows: int | None = None
) -> torch.LongTensor:
    """Whole text tokenized without special tokens, cut into non-overlapping [n, seq_len] windows.

    The last partial window is dropped so every window has the same number of predictions.
    """
    assert seq_len >= 2, seq_len
    ids = torch.tensor(tokenizer(text, add_special_tokens=False)["input_ids"], dtype=torch.long)
    count = ids.numel() // seq_len
    if max_windows is not None:
        count = min(count, max_windows)
    if count == 0:
        raise CompressError(f"the text has {ids.numel()} tokens, fewer than one window of {seq_len}")
    return ids[: count * seq_len].reshape(count, seq_len)
