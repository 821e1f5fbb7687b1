"""validate: load the staged checkpoint the way users will (transformers) and measure what it cost, then what
it gains: decoding speed on Shrinkray's kernels against the original, on GPU workers."""

from __future__ import annotations

import torch

from compress.evaluate import next_token_agreement, perplexity
from compress.model_io import load_model
from kernels.speed_report import decode_speed_report
from storage.artifacts import download_prefix
from storage.artifacts.manifest import verify_against_manifest
from workers.stage_context import StageContext, StageResult
from workers.stages.common import job_model_dir, job_windows


def run(context: StageContext) -> StageResult:
    staged = context.outputs["compress"]["prefix"]
    verify_against_manifest(context.store, staged)
    local = context.workdir / "model"
    download_prefix(context.store, staged, local)
    (local / "manifest.json").unlink(missing_ok=True)
    original, tokenizer = load_model(job_model_dir(context))
    compressed, _ = load_model(local)
    windows = job_windows(context, tokenizer, "eval")
    context.report_progress(0.1, "validate: perplexity of the original")
    ppl_before = perplexity(original, windows, context.device)
    context.report_progress(0.45, "validate: perplexity of the compressed model")
    ppl_after = perplexity(compressed, windows, context.device)
    context.report_progress(0.8, "validate: next-token agreement")
    agreement = next_token_agreement(original, compressed, windows, context.device)
    del original, compressed
    context.report_progress(0.9, "validate: decode speed on the kernels")
    speed = decode_speed_report(job_model_dir(context), local, context.device)
    size_before = context.outputs["fetch"]["total_bytes"]
    size_after = context.outputs["compress"]["size_bytes"]
    report = {
        "model_uri": context.model_uri,
        "recipe": context.recipe.model_dump(mode="json"),
        "perplexity": {"before": ppl_before, "after": ppl_after,
                       "change_pct": 100.0 * (ppl_after - ppl_before) / ppl_before},
        "next_token_agreement": agreement,
        "size_bytes": {"before": size_before, "after": size_after,
                       "ratio": size_before / max(size_after, 1)},
        "compression": context.outputs["compress"].get("summary", {}),
        "speed": speed,
        "eval": {"windows": int(windows.shape[0]), "seq_len": int(windows.shape[1]),
                 "text": context.eval_uri or "bundled", "protocol": "non-overlapping windows, fp32 NLL"},
        "device": str(context.device) if context.device.type != "cuda" else torch.cuda.get_device_name(),
    }
    return StageResult(outputs={"report": report})
