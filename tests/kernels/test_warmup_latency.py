"""bench/warmup_latency.py's command line without a GPU: it refuses what it cannot run, and says why."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "bench" / "warmup_latency.py"


@pytest.mark.parametrize(("args", "message"), [
    (["--ms", "0"], "positive"),
    (["--ms", "one"], "positive"),
    ([], "CUDA GPU"),  # this machine has none
])
def test_the_command_line_refuses_what_it_cannot_run(args: list[str], message: str, tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "CUDA_VISIBLE_DEVICES": ""}
    run = subprocess.run([sys.executable, str(SCRIPT), "--out", str(tmp_path), *args], capture_output=True,
                         text=True, env=env, timeout=300)
    assert run.returncode == 2 and message in run.stderr and "Traceback" not in run.stderr
    assert not list(tmp_path.iterdir())
