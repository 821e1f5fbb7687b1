"""What the kernel tests share: the device they run on (CUDA when present, else Triton's interpreter on CPU),
seeded fresh inputs, poisoned output buffers and compressed checkpoints."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import torch

from compress.export import save_compressed
from compress.model_io import load_model
from compress.recipes import resolve_recipe
from compress.runner import compress_model

DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")


def randn(*shape: int, seed: int, dtype: torch.dtype = torch.bfloat16, scale: float = 1.0) -> torch.Tensor:
    return (torch.randn(*shape, generator=torch.Generator().manual_seed(seed)) * scale).to(dtype).to(DEVICE)


def poisoned(*shape: int, dtype: torch.dtype) -> torch.Tensor:
    """An output buffer full of NaN (or the extreme value for integer types), so an element the kernel fails
    to write shows up in the comparison."""
    if dtype.is_floating_point:
        return torch.full(shape, float("nan"), device=DEVICE).to(dtype)
    return torch.full(shape, torch.iinfo(dtype).min, dtype=dtype, device=DEVICE)


def relative_error(got: torch.Tensor, expected: torch.Tensor) -> float:
    return ((got.float() - expected.float()).norm() / expected.float().norm()).item()


def assert_gpu_bench_refuses(script: Path, args: list[str], message: str, out: Path) -> None:
    """A GPU benchmark run here (no GPU visible) on `args`: exit status 2 with `message` and no traceback, and
    nothing written to `out`."""
    root = Path(__file__).resolve().parents[2]
    env = {**os.environ, "PYTHONPATH": str(root), "CUDA_VISIBLE_DEVICES": ""}
    run = subprocess.run([sys.executable, str(script), "--out", str(out), *args], capture_output=True, text=True,
                         env=env, timeout=300)
    assert run.returncode == 2 and message in run.stderr and "Traceback" not in run.stderr, run.stderr
    assert not list(out.iterdir())


def compressed_checkpoint(base: Path, modifiers: list, out: Path) -> Path:
    """The model in `base` compressed by a recipe of these modifiers (4 random calibration windows) into `out`."""
    model, tokenizer = load_model(base)
    recipe = resolve_recipe(recipe={"modifiers": modifiers})
    calibration = torch.randint(0, model.config.vocab_size, (4, 32), generator=torch.Generator().manual_seed(0))
    compress_model(model, recipe, calibration, {}, torch.device("cpu"))
    save_compressed(model, tokenizer, recipe, out)
    return out
