"""compress: apply the recipe layer by layer, export compressed-tensors, stage it under the attempt prefix."""

from __future__ import annotations

import dataclasses
import hashlib

from safetensors.torch import load_file

from compress.export import save_compressed
from compress.model_io import load_model
from compress.runner import compress_model
from storage.artifacts import upload_dir
from storage.artifacts.manifest import write_manifest
from storage.errors import ChecksumMismatch
from workers.stage_context import StageContext, StageResult
from workers.stages.common import job_model_dir, job_windows, layer_progress


def run(context: StageContext) -> StageResult:
    calibration = context.outputs["calibrate"]
    stats_path = context.workdir / "calibration.safetensors"
    context.store.download_file(calibration["stats_key"], stats_path)
    if hashlib.sha256(stats_path.read_bytes()).hexdigest() != calibration["stats_sha256"]:
        raise ChecksumMismatch(f"{calibration['stats_key']} differs from what the calibrate stage wrote")
    model, tokenizer = load_model(job_model_dir(context))
    windows = job_windows(context, tokenizer, "calib")
    summary = compress_model(model, context.recipe, windows, load_file(str(stats_path)), context.device,
                             progress=layer_progress(context), should_stop=context.should_stop)
    out_dir = context.workdir / "model"
    save_compressed(model, tokenizer, context.recipe, out_dir)
    prefix = f"{context.staging_prefix}/model"
    objects = upload_dir(context.store, out_dir, prefix)
    write_manifest(context.store, prefix, objects)
    summary_dict = dataclasses.asdict(summary) if dataclasses.is_dataclass(summary) else dict(summary)
    return StageResult(outputs={"prefix": prefix, "size_bytes": sum(o.size for o in objects),
                                "summary": summary_dict})
