"""bench/warmup_latency.py's command line without a GPU: it refuses what it cannot run, and says why."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.kernels.helpers import assert_gpu_bench_refuses

SCRIPT = Path(__file__).resolve().parents[2] / "bench" / "warmup_latency.py"


@pytest.mark.parametrize(("args", "message"), [
    (["--ms", "0"], "positive"),
    (["--ms", "one"], "positive"),
    ([], "CUDA GPU"),  # this machine has none
])
def test_the_command_line_refuses_what_it_cannot_run(args: list[str], message: str, tmp_path: Path) -> None:
    assert_gpu_bench_refuses(SCRIPT, args, message, tmp_path)
