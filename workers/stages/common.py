"""Helpers the stages share: the job's model on this worker, its texts, and layer progress."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch

import shrinkray
from compress.calibration import token_windows
from workers.sources import cached_model, read_text
from workers.stage_context import StageContext

BUNDLED_TEXTS = Path(shrinkray.__file__).parent / "demo"


def job_model_dir(context: StageContext) -> Path:
    return cached_model(context.model_uri, context.settings, context.sources, context.outputs["fetch"]["files"])


def job_text(context: StageContext, kind: str) -> str:
    """The job's calibration or eval text; the bundled public-domain text when the job names none."""
    uri = context.calibration_uri if kind == "calib" else context.eval_uri
    if uri is None:
        return (BUNDLED_TEXTS / f"{kind}.txt").read_text(encoding="utf-8")
    return read_text(uri, context.settings, context.sources)


def job_windows(context: StageContext, tokenizer, kind: str) -> torch.Tensor:  # type: ignore[no-untyped-def]
    if kind == "calib":
        settings = context.recipe.calibration
        return token_windows(tokenizer, job_text(context, kind), settings.seq_len, settings.samples)
    validation = context.recipe.validation
    return token_windows(tokenizer, job_text(context, kind), validation.seq_len, validation.max_windows)


def layer_progress(context: StageContext) -> Callable[[int, int, str], None]:
    """Adapts the library's (done, total, message) callback to the job row's stage progress."""

    def report(done: int, total: int, message: str) -> None:
        context.report_progress(done / max(total, 1), f"{context.stage}: {message}")

    return report
