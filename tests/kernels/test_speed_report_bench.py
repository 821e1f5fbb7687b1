"""bench/speed_report.py's command line without a GPU: it refuses what it cannot run, and says why."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.kernels.helpers import assert_gpu_bench_refuses

SCRIPT = Path(__file__).resolve().parents[2] / "bench" / "speed_report.py"


@pytest.mark.parametrize(("args", "message"), [
    (["--layers", "0"], "positive"),
    (["--preset", "w5a16"], "unknown preset 'w5a16'"),
    ([], "CUDA GPU"),  # this machine has none
])
def test_the_command_line_refuses_what_it_cannot_run(args: list[str], message: str, tmp_path: Path) -> None:
    assert_gpu_bench_refuses(SCRIPT, args, message, tmp_path)
