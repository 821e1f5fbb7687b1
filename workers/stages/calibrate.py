"""calibrate: run the calibration windows through the model a decoder layer at a time; keep the statistics."""

from __future__ import annotations

from safetensors.torch import save_file

from compress.model_io import load_model
from compress.runner import calibrate
from workers.stage_context import StageContext, StageResult
from workers.stages.common import job_model_dir, job_windows, layer_progress


def run(context: StageContext) -> StageResult:
    model, tokenizer = load_model(job_model_dir(context))
    windows = job_windows(context, tokenizer, "calib")
    stats = calibrate(model, windows, context.recipe, context.device, progress=layer_progress(context),
                      should_stop=context.should_stop)
    path = context.workdir / "calibration.safetensors"
    save_file({name: tensor.contiguous() for name, tensor in stats.items()}, str(path))
    stored = context.store.put_file(f"{context.staging_prefix}/calibration.safetensors", path)
    return StageResult(outputs={"stats_key": stored.key, "stats_sha256": stored.sha256,
                                "windows": int(windows.shape[0]), "tokens": int(windows.numel())})
