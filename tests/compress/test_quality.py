"""On the shared tiny model: int4 RTN really changes it, and not by much (EVAL.md protocol, subset)."""

from __future__ import annotations

from pathlib import Path

import torch

from compress.calibration import token_windows
from compress.evaluate import next_token_agreement, perplexity
from compress.export import save_compressed
from compress.model_io import load_model
from compress.recipes import resolve_recipe
from compress.runner import compress_model
from tests.conftest import CORPUS, SHARED_MODEL

CPU = torch.device("cpu")
WINDOWS = 24  # of 283 in eval.txt: enough to see int4's cost, a few seconds on 2 cores


def test_int4_rtn_costs_some_but_not_much_perplexity(tmp_path: Path) -> None:
    original, tokenizer = load_model(SHARED_MODEL)
    windows = token_windows(tokenizer, (CORPUS / "eval.txt").read_text(encoding="utf-8"), 512, WINDOWS)
    before = perplexity(original, windows, CPU)
    assert 25 < before < 60, before  # ~38.6 on all of eval.txt; learned, far below the 2048 vocab

    model, _ = load_model(SHARED_MODEL)
    recipe = resolve_recipe("w4a16-rtn")
    compress_model(model, recipe, None, {}, CPU)
    save_compressed(model, tokenizer, recipe, tmp_path / "int4")
    compressed, _ = load_model(tmp_path / "int4")
    after = perplexity(compressed, windows, CPU)
    assert after != before and abs(after - before) / before < 0.25, (before, after)
    assert 0.8 < next_token_agreement(original, compressed, windows, CPU) < 1.0
