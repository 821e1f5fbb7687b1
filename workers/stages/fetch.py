"""fetch: copy the model into the worker cache, refuse what must not load, record every file's sha256."""

from __future__ import annotations

import json

from compress.recipes import validate_recipe_for_model
from workers.sources import fetch_model
from workers.stage_context import StageContext, StageResult


def run(context: StageContext) -> StageResult:
    context.report_progress(0.0, "fetch: copying the model")
    path, info = fetch_model(context.model_uri, context.settings, context.sources)
    validate_recipe_for_model(context.recipe, json.loads((path / "config.json").read_text()))
    return StageResult(outputs={"files": info.files, "total_bytes": info.total_bytes,
                                "architecture": info.architecture, "num_layers": info.num_layers})
