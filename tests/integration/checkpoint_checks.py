"""Checks on a downloaded job: every file matches the manifest, transformers loads it, weights are packed."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from urllib.parse import urlparse

import httpx
import torch
from safetensors import safe_open

from compress.calibration import token_windows
from compress.evaluate import perplexity
from compress.model_io import load_model
from tests.conftest import CORPUS, SHARED_MODEL


def download_artifacts(api: httpx.Client, job_id: str, dest: Path) -> dict:
    """Fetch every artifact through the URL the API gives; check each sha256 against manifest.json."""
    listing = api.get(f"/v1/jobs/{job_id}/artifacts")
    assert listing.status_code == 200, listing.text
    items = {item["name"]: item for item in listing.json()["items"]}
    assert "manifest.json" in items and "report.json" in items and "model/config.json" in items
    manifest = json.loads(_read_url(items["manifest.json"]["url"]))
    assert set(manifest["files"]) == set(items) - {"manifest.json"}
    for name, entry in manifest["files"].items():
        data = _read_url(items[name]["url"])
        assert hashlib.sha256(data).hexdigest() == entry["sha256"] == items[name]["sha256"], name
        assert len(data) == entry["size"], name
        target = dest / name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
    return manifest


def _read_url(url: str) -> bytes:
    if url.startswith("file://"):
        return Path(urlparse(url).path).read_bytes()
    response = httpx.get(url, timeout=60)
    assert response.status_code == 200, (url, response.status_code)
    return response.content


def eval_perplexity(model_dir: Path) -> float:
    model, tokenizer = load_model(model_dir)
    windows = token_windows(tokenizer, (CORPUS / "eval.txt").read_text(encoding="utf-8"), 512)
    return perplexity(model, windows, torch.device("cpu"))


def assert_quantized_close_to_original(model_dir: Path) -> tuple[float, float]:
    """ppl changed (really quantized) but within 25% of the original's, per the EVAL.md protocol."""
    before, after = eval_perplexity(SHARED_MODEL), eval_perplexity(model_dir)
    assert after != before
    assert abs(after - before) / before < 0.25, (before, after)
    return before, after


def packed_int4_ratio(model_dir: Path) -> float:
    """bf16 bytes of the quantized Linear weights over the bytes stored for them (packed ints and scales)."""
    stored, dense = 0, 0
    for shard in model_dir.glob("*.safetensors"):
        with safe_open(str(shard), framework="pt") as tensors:
            for name in tensors.keys():  # noqa: SIM118 - safe_open has no iterator
                if name.endswith(".weight_packed"):
                    base = name.removesuffix(".weight_packed")
                    packed = tensors.get_tensor(name)
                    assert packed.dtype == torch.int32
                    rows, cols = tensors.get_tensor(f"{base}.weight_shape").tolist()
                    dense += rows * cols * 2
                    stored += packed.numel() * 4
                    for suffix in (".weight_scale", ".weight_zero_point"):
                        if f"{base}{suffix}" in tensors.keys():  # noqa: SIM118
                            extra = tensors.get_tensor(f"{base}{suffix}")
                            stored += extra.numel() * extra.element_size()
    assert dense > 0, "no packed int4 weights found"
    return dense / stored
