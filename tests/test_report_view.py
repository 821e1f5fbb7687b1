"""The report table the CLI prints, including the decode-speed line from GPU and CPU workers."""

from __future__ import annotations

from shrinkray.report_view import format_report

REPORT = {"perplexity": {"before": 10.0, "after": 10.2, "change_pct": 2.0}, "next_token_agreement": 0.95,
          "size_bytes": {"before": 4 * 2**20, "after": 2**20, "ratio": 4.0}, "stage_seconds": {"compress": 1.5}}


def test_a_gpu_report_shows_the_speedup_per_batch() -> None:
    speed = {"measured": True, "device": "NVIDIA H100 80GB HBM3",
             "rows": [{"batch": 1, "speedup": 1.34}, {"batch": 16, "speedup": 1.09}],
             "matmuls_per_step": [{"rows": 1, "speedup": 2.4}, {"rows": 16, "speedup": 1.875}]}
    text = format_report({**REPORT, "speed": speed})
    assert "decode speedup        1.34x at batch 1, 1.09x at batch 16 (NVIDIA H100 80GB HBM3)" in text
    assert "layer speedup         2.40x at 1 row, 1.88x at 16 rows (every compressed layer once, against dense)" in text
    assert "perplexity change     +2.00 %" in text and "compression ratio     4.00x" in text


def test_a_cpu_report_says_why_speed_is_missing() -> None:
    text = format_report({**REPORT, "speed": {"measured": False, "reason": "measured on GPU workers"}})
    assert "decode speedup        not measured: measured on GPU workers" in text
    assert "layer speedup" not in text
