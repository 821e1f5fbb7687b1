from __future__ import annotations

import pytest
import torch

from compress.calibration import token_windows
from compress.errors import CompressError


def test_windows_follow_the_protocol(random_model, eval_text: str) -> None:  # type: ignore[no-untyped-def]
    tokenizer = random_model[1]
    ids = tokenizer(eval_text[:20000], add_special_tokens=False)["input_ids"]
    windows = token_windows(tokenizer, eval_text[:20000], 512)
    assert windows.dtype == torch.long and windows.shape == (len(ids) // 512, 512)
    assert windows.flatten().tolist() == ids[: windows.numel()]
    assert token_windows(tokenizer, eval_text[:20000], 64, max_windows=3).shape == (3, 64)


def test_too_short_a_text_is_an_error(random_model) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(CompressError, match="fewer than one window"):
        token_windows(random_model[1], "To be, or not to be", 512)
