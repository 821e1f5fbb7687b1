"""Renders a compression report as the short table the CLI prints."""

from __future__ import annotations

from typing import Any


def format_report(report: dict[str, Any]) -> str:
    ppl, size = report.get("perplexity", {}), report.get("size_bytes", {})
    rows = [
        ("perplexity before", _num(ppl.get("before"))),
        ("perplexity after", _num(ppl.get("after"))),
        ("perplexity change", f"{ppl['change_pct']:+.2f} %" if "change_pct" in ppl else "-"),
        ("next-token agreement", f"{100 * report['next_token_agreement']:.1f} %"
         if "next_token_agreement" in report else "-"),
        ("size before", _mib(size.get("before"))),
        ("size after", _mib(size.get("after"))),
        ("compression ratio", f"{size['ratio']:.2f}x" if "ratio" in size else "-"),
    ]
    speed = report.get("speed")
    if speed is not None:
        rows.append(("decode speedup", _speed(speed)))
        if speed.get("matmuls_per_step"):
            rows.append(("layer speedup", _layers(speed["matmuls_per_step"])))
    for stage, seconds in (report.get("stage_seconds") or {}).items():
        rows.append((f"{stage} time", f"{seconds:.1f} s"))
    width = max(len(name) for name, _ in rows)
    return "\n".join(f"{name:<{width}}  {value}" for name, value in rows)


def _num(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def _mib(value: int | None) -> str:
    return "-" if value is None else f"{value / 2**20:.2f} MiB"


def _speed(speed: dict[str, Any]) -> str:
    """'2.10x at batch 1, 1.30x at batch 16 (NVIDIA H100)', or why it was not measured."""
    if not speed.get("measured"):
        return f"not measured: {speed.get('reason', 'no reason given')}"
    rows = ", ".join(f"{row['speedup']:.2f}x at batch {row['batch']}" for row in speed.get("rows", []))
    return f"{rows} ({speed.get('device', 'GPU')})"


def _layers(per_step: list[dict[str, Any]]) -> str:
    """'2.40x at 1 row, 1.90x at 16 rows (every compressed layer once, against dense)'."""
    rows = ", ".join(f"{step['speedup']:.2f}x at {step['rows']} row{'s' if step['rows'] != 1 else ''}"
                     for step in per_step)
    return f"{rows} (every compressed layer once, against dense)"
