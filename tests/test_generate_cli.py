"""`shrinkray generate`: a compressed checkpoint continues a prompt as transformers' dequantized model does, and
every bad request exits 2 with the reason before anything heavy runs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from compress.model_io import load_model
from shrinkray.cli import app
from tests.conftest import SHARED_MODEL
from tests.kernels.helpers import compressed_checkpoint

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The shared (trained) model in W4A16, group 64."""
    return compressed_checkpoint(SHARED_MODEL, [{"method": "rtn", "bits": 4, "group_size": 64}],
                                 tmp_path_factory.mktemp("generate") / "w4a16")


def _generate(checkpoint: Path) -> subprocess.CompletedProcess:
    """The command as a user runs it: its own process, here on the CPU through the kernels' plain-torch
    references (Triton's interpreter is only for tests)."""
    env = {key: value for key, value in os.environ.items() if key != "TRITON_INTERPRET"}
    run = subprocess.run([sys.executable, "-m", "shrinkray.cli", "generate", str(checkpoint), "--prompt", "ROMEO:",
                          "--max-new-tokens", "12"], capture_output=True, text=True, env=env, cwd=ROOT, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    return run


def _expected_tokens(checkpoint: Path) -> tuple[list[int], object]:
    """transformers' greedy continuation of the dequantized checkpoint (12 tokens of "ROMEO:")."""
    model, tokenizer = load_model(checkpoint, dtype=torch.bfloat16)
    ids = tokenizer("ROMEO:", return_tensors="pt").input_ids
    return model.generate(ids, max_new_tokens=12, do_sample=False)[0, ids.shape[1]:].tolist(), tokenizer


def test_the_continuation_is_the_checkpoints_greedy_text(checkpoint: Path) -> None:
    run = _generate(checkpoint)
    expected, tokenizer = _expected_tokens(checkpoint)
    assert run.stdout == tokenizer.decode(expected, skip_special_tokens=True) + "\n"
    assert "12 tokens (12 decoded" in run.stderr and "tokens/s" in run.stderr and "w4a16-fused x" in run.stderr
    assert "attention: sdpa" in run.stderr  # switched to Shrinkray's decode attention, which does not run on a CPU


def test_the_text_ends_at_the_end_of_sequence_token(checkpoint: Path, tmp_path: Path) -> None:
    """Decoding runs the steps asked for; the text stops before the model's first end-of-sequence token."""
    expected, tokenizer = _expected_tokens(checkpoint)
    end = expected[4]
    cut = expected.index(end)
    ending = tmp_path / "ending"
    ending.mkdir()
    for item in checkpoint.iterdir():
        (ending / item.name).write_bytes(item.read_bytes())
    config = json.loads((ending / "generation_config.json").read_text())
    (ending / "generation_config.json").write_text(json.dumps({**config, "eos_token_id": end}))
    run = _generate(ending)
    assert run.stdout == tokenizer.decode(expected[:cut], skip_special_tokens=True) + "\n"
    assert f"{cut} tokens (12 decoded" in run.stderr


@pytest.mark.parametrize(("args", "message"), [
    (["--prompt", "  "], "the prompt is empty"),
    (["--prompt", "ROMEO:", "--max-new-tokens", "0"], "between 1 and 4096"),
    (["--prompt", "ROMEO:", "--max-new-tokens", "4096"], "positions the model was built for"),
    (["--prompt", "ROMEO:", "--device", "tpu"], "device must be auto, cpu or cuda"),
])
def test_bad_requests_exit_2_with_the_reason(checkpoint: Path, args: list[str], message: str) -> None:
    result = CliRunner().invoke(app, ["generate", str(checkpoint), *args])
    assert result.exit_code == 2 and message in result.output, result.output


@pytest.mark.skipif(torch.cuda.is_available(), reason="asks for a GPU this machine lacks")
def test_a_missing_gpu_is_named(checkpoint: Path) -> None:
    result = CliRunner().invoke(app, ["generate", str(checkpoint), "--prompt", "x", "--device", "cuda"])
    assert result.exit_code == 2 and "no CUDA GPU is visible here" in result.output


def test_what_is_not_a_safe_checkpoint_is_refused(checkpoint: Path, tmp_path: Path) -> None:
    missing = CliRunner().invoke(app, ["generate", str(tmp_path / "nope"), "--prompt", "x"])
    assert missing.exit_code == 2 and "is not a directory" in missing.output
    pickled = tmp_path / "pickled"
    pickled.mkdir()
    for item in checkpoint.iterdir():
        (pickled / item.name).write_bytes(item.read_bytes())
    (pickled / "pytorch_model.bin").write_bytes(b"\x80\x04not really a pickle")
    result = CliRunner().invoke(app, ["generate", str(pickled), "--prompt", "x"])
    assert result.exit_code == 2 and "pytorch_model.bin" in result.output and "Traceback" not in result.output


def test_a_step_torch_compile_cannot_build_is_decoded_eagerly(checkpoint: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """--compile where torch.compile fails (no C++ compiler, an op it cannot trace): the text still comes, eagerly,
    and the command says so."""
    import kernels.decoding

    def uncompilable(model):  # type: ignore[no-untyped-def]
        def step(*args, **kwargs):  # type: ignore[no-untyped-def]
            raise RuntimeError("InductorError: no C++ compiler found")
        return step

    monkeypatch.delenv("TRITON_INTERPRET", raising=False)  # the references, as a CPU user runs it
    monkeypatch.setattr(kernels.decoding, "compiled_step", uncompilable)
    result = CliRunner().invoke(app, ["generate", str(checkpoint), "--prompt", "ROMEO:", "--max-new-tokens", "12",
                                      "--compile"])
    assert result.exit_code == 0, result.output
    expected, tokenizer = _expected_tokens(checkpoint)
    assert result.stdout == tokenizer.decode(expected, skip_special_tokens=True) + "\n"
    assert "note: torch.compile failed, decoded eagerly: InductorError: no C++ compiler found" in result.output


def test_a_gpu_the_kernels_do_not_build_for_is_named(checkpoint: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from triton.runtime.errors import OutOfResources

    import kernels.generation

    def failing_load(path: Path, device: torch.device):  # type: ignore[no-untyped-def]
        raise OutOfResources(232448, 101376, "shared memory")

    monkeypatch.setattr(kernels.generation, "load_for_inference", failing_load)
    result = CliRunner().invoke(app, ["generate", str(checkpoint), "--prompt", "ROMEO:"])
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert "the kernels do not run on this GPU: OutOfResources: out of resource: shared memory" in result.output
