from __future__ import annotations

from pathlib import Path

import torch

from compress.pipeline import compress_directory, resolve_device
from compress.recipes import resolve_recipe
from tests.compress.conftest import INT4_G32


def test_resolve_device() -> None:
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")


def test_compress_directory_reports(
    random_model_dir: Path, calib_text: str, eval_text: str, tmp_path: Path
) -> None:
    recipe = resolve_recipe(
        recipe={
            **INT4_G32,
            "calibration": {"samples": 4, "seq_len": 64},
            "validation": {"seq_len": 64, "max_windows": 4},
        }
    )
    report = compress_directory(
        random_model_dir, recipe, tmp_path / "out", calib_text, eval_text, device="cpu"
    )
    assert report["ppl_before"] != report["ppl_after"]
    assert report["size_bytes_after"] < report["size_bytes_before"]
    assert {"load", "compress", "export", "eval_after"} <= set(report["seconds"])
    assert report["compression"]["modules"] == 14
    assert (tmp_path / "out" / "recipe.yaml").is_file()
