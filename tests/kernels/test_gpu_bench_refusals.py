"""The GPU benchmarks' command lines without a GPU: each refuses what it cannot run, and says why."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.kernels.helpers import assert_gpu_bench_refuses

BENCH = Path(__file__).resolve().parents[2] / "bench"


@pytest.mark.parametrize(("script", "args", "message"), [
    ("warmup_latency.py", ["--ms", "0"], "positive"),
    ("warmup_latency.py", ["--ms", "one"], "positive"),
    ("warmup_latency.py", [], "CUDA GPU"),  # this machine has none
    ("speed_report.py", ["--layers", "0"], "positive"),
    ("speed_report.py", ["--preset", "w5a16"], "unknown preset 'w5a16'"),
    ("speed_report.py", [], "CUDA GPU"),
    ("attention_speed.py", [], "CUDA GPU"),
])
def test_the_command_line_refuses_what_it_cannot_run(script: str, args: list[str], message: str,
                                                     tmp_path: Path) -> None:
    assert_gpu_bench_refuses(BENCH / script, args, message, tmp_path)
