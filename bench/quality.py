"""Quality benchmark: every Shrinkray preset against llm-compressor on tiny-llama-shakespeare, side by side.

For each preset (read from compress.recipes.PRESETS, so new presets join by themselves) one subprocess runs
compress.pipeline.compress_directory; for each peer recipe one subprocess runs bench/peers/llmcompressor_run.py
with the python of a throwaway venv (llm-compressor is never a Shrinkray dependency). A subprocess per run keeps
each peak RSS separate. Both sides follow ../shared/EVAL.md: calibration on the first 128 windows of 512 tokens
of calib.txt, perplexity over the full 512-token windows of eval.txt in fp32, measured on the saved checkpoint.

    .venv/bin/python bench/quality.py                      # everything; builds bench/.peer-venv the first time
    .venv/bin/python bench/quality.py --skip-peer --only w4a16-rtn --eval-windows 20
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import logging
import os
import platform
import subprocess
import sys
import tempfile
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
MODEL_DIR = SHARED / "models" / "tiny-llama-shakespeare"
CALIB = SHARED / "corpus" / "calib.txt"
EVAL = SHARED / "corpus" / "eval.txt"
BENCH = REPO / "bench"
RESULTS = BENCH / "results"
LOGS = BENCH / ".logs"
PEER_VENV = BENCH / ".peer-venv"
PEER_SCRIPT = BENCH / "peers" / "llmcompressor_run.py"
# Installed in this order: torch first, so pip keeps the local CPU wheel instead of pulling a multi-GB CUDA
# build to satisfy llmcompressor. 0.14.0.1 resolves to compressed-tensors 0.19.0 and transformers 5.17.0
# with torch 2.13.0 kept, so no --no-deps is needed.
PEER_REQUIREMENTS = (("torch==2.13.0",), ("llmcompressor==0.14.*",))
PROTOCOL = (
    "../shared/EVAL.md: tokenizer without special tokens; calibration = first 128 windows of 512 tokens of "
    "calib.txt; ppl = exp(mean NLL) in fp32 over all full 512-token windows of eval.txt (511 predictions each), "
    "measured on the saved checkpoint reloaded with transformers"
)

# Shrinkray preset -> the peer recipe doing the same work. Keys that are not presets (yet) are skipped.
PEER_FOR_PRESET = {
    "w4a16-rtn": "rtn-w4a16-g128",
    "w4a16": "gptq-w4a16-g128",
    "w3a16": "gptq-w3a16-g128",
    "2of4": "sparsegpt-2of4",
    "sparse50": "sparsegpt-50",
    "2of4-w4a16": "sparsegpt-2of4-gptq-w4a16",
    "w4a16-awq": "awq-w4a16-g128",
    "w4a8": "gptq-w4a8",
    "w8a8-int8": "smoothquant-gptq-w8a8",
    "w8a8-fp8": "fp8-dynamic",
}

log = logging.getLogger("bench.quality")


@dataclass
class Row:
    """One line of the table: a preset with its peer recipe, or a peer recipe no preset matches."""

    name: str
    peer_recipe: str | None
    ours: dict | None = None
    peer: dict | None = None
    targets: list[str] = field(default_factory=list)
    met: list[bool | None] = field(default_factory=list)


def ours_seconds(ours: dict) -> float:
    """Compression wall time: every calibration forward pass and the method itself, not load, export or eval
    (the library runs its calibration passes inside compress; older reports had a separate calibrate)."""
    return ours["seconds"].get("calibrate", 0.0) + ours["seconds"]["compress"]


def _ppl_le_peer(row: Row) -> bool:
    return row.ours["ppl_after"] <= row.peer["ppl"]


def _half_peer_time(row: Row) -> bool:
    return ours_seconds(row.ours) <= 0.5 * row.peer["seconds"]


def _within_2pct(row: Row) -> bool:
    return row.ours["ppl_after"] <= 1.02 * row.ours["ppl_before"]


@dataclass(frozen=True)
class Target:
    label: str
    check: Callable[[Row], bool]
    needs_peer: bool = True


PPL_LE_PEER = Target("ppl ≤ peer", _ppl_le_peer)
HALF_TIME = Target("s ≤ peer/2", _half_peer_time)
WITHIN_2PCT = Target("ppl ≤ 1.02×orig", _within_2pct, needs_peer=False)

# Targets from the issue, keyed by peer recipe so a preset mapped to it later gets them too.
TARGETS: dict[str, tuple[Target, ...]] = {
    "gptq-w4a16-g128": (PPL_LE_PEER, HALF_TIME),
    "gptq-w3a16-g128": (PPL_LE_PEER, HALF_TIME),
    "sparsegpt-50": (PPL_LE_PEER,),
    "sparsegpt-2of4": (PPL_LE_PEER,),
    "smoothquant-gptq-w8a8": (WITHIN_2PCT,),
    "fp8-dynamic": (WITHIN_2PCT,),
}


# ---- subprocesses ----------------------------------------------------------------------------------------------


def run_child(cmd: list[str], log_path: Path) -> dict:
    """Run cmd, parse the JSON object on its last stdout line, add its peak RSS (MB) from wait4.

    wait4's rusage is the child's own (and its waited-for descendants'), so peaks of different runs stay apart,
    which RUSAGE_CHILDREN of this process would not give. A failed run comes back as {"error": ...}.
    """
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("w") as stderr:
        proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=stderr, text=True)
        stdout = proc.stdout.read()
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
    lines = [line for line in stdout.splitlines() if line.startswith("{")]
    if proc.returncode != 0 or not lines:
        tail = log_path.read_text(errors="replace").splitlines()[-5:]
        log.error("%s failed (exit %s); log %s:\n%s", log_path.stem, proc.returncode, log_path, "\n".join(tail))
        return {"error": f"exit {proc.returncode}; see {log_path.relative_to(REPO)}"}
    result = json.loads(lines[-1])
    result["peak_rss_mb_wait4"] = usage.ru_maxrss / 1024  # KiB on Linux
    return result


def run_ours(preset: str, eval_windows: int | None, logs: Path) -> dict:
    """Compress with one preset in a fresh interpreter (this script in --worker mode)."""
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", preset]
    if eval_windows:
        cmd += ["--eval-windows", str(eval_windows)]
    return run_child(cmd, logs / f"ours-{preset}.log")


def worker(preset: str, eval_windows: int | None) -> None:
    """Child side of run_ours: the library call exactly as a user makes it, report as one JSON line."""
    import torch

    from compress.pipeline import compress_directory
    from compress.recipes import resolve_recipe

    torch.manual_seed(0)
    recipe = resolve_recipe(preset=preset)
    recipe.validation.max_windows = eval_windows
    with tempfile.TemporaryDirectory(prefix=f"quality-{preset}-") as out:
        report = compress_directory(
            MODEL_DIR,
            recipe,
            Path(out) / "model",
            CALIB.read_text(encoding="utf-8"),
            eval_text=EVAL.read_text(encoding="utf-8"),
            device="cpu",
        )
    print(json.dumps(report))


def ensure_peer_venv(logs: Path) -> Path:
    """Build the throwaway llm-compressor venv once; rebuild it when PEER_REQUIREMENTS change."""
    python = PEER_VENV / "bin" / "python"
    marker = PEER_VENV / ".requirements"
    wanted = json.dumps(PEER_REQUIREMENTS)
    if python.exists() and marker.exists() and marker.read_text() == wanted:
        return python
    log.info("building %s (a few minutes; pip log in %s)", PEER_VENV, logs / "peer-venv.log")
    logs.mkdir(parents=True, exist_ok=True)
    with (logs / "peer-venv.log").open("w") as out:
        subprocess.run([sys.executable, "-m", "venv", "--clear", str(PEER_VENV)], check=True, stdout=out, stderr=out)
        for requirements in PEER_REQUIREMENTS:
            subprocess.run([str(python), "-m", "pip", "install", *requirements], check=True, stdout=out, stderr=out)
    marker.write_text(wanted)
    return python


def peer_recipes(python: Path) -> list[str]:
    """The peer script owns its recipe list; "original" comes first and gives the baseline ppl."""
    out = subprocess.run([str(python), str(PEER_SCRIPT), "--list"], check=True, capture_output=True, text=True)
    return json.loads(out.stdout.splitlines()[-1])


def run_peer(python: Path, recipe: str, eval_windows: int | None, logs: Path) -> dict:
    with tempfile.TemporaryDirectory(prefix=f"quality-peer-{recipe}-") as out:
        cmd = [str(python), str(PEER_SCRIPT), "--model", str(MODEL_DIR), "--calib", str(CALIB), "--eval", str(EVAL)]
        cmd += ["--out", str(Path(out) / "model"), "--recipe", recipe]
        if eval_windows:
            cmd += ["--eval-windows", str(eval_windows)]
        return run_child(cmd, logs / f"peer-{recipe}.log")


# ---- results ---------------------------------------------------------------------------------------------------


def build_rows(ours: dict[str, dict], peer: dict[str, dict]) -> list[Row]:
    """Presets first (with their peer where mapped), then peer recipes no preset covers."""
    rows = [Row(preset, PEER_FOR_PRESET.get(preset), result) for preset, result in ours.items()]
    covered = {row.peer_recipe for row in rows}
    rows += [Row(recipe, recipe) for recipe in peer if recipe not in covered and recipe != "original"]
    for row in rows:
        row.peer = peer.get(row.peer_recipe) if row.peer_recipe else None
        for target in TARGETS.get(row.peer_recipe or "", ()):
            row.targets.append(target.label)
            row.met.append(_evaluate(target, row))
    return rows


def _evaluate(target: Target, row: Row) -> bool | None:
    """None when a side is missing or failed: a target is only met or missed on real numbers."""
    if not _ok(row.ours) or (target.needs_peer and not _ok(row.peer)):
        return None
    return target.check(row)


def _ok(result: dict | None) -> bool:
    return result is not None and "error" not in result


def _num(value: float | None, digits: int = 2) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def _pair(ours: float | None, peer: float | None, digits: int = 1) -> str:
    return f"{_num(ours, digits)} / {_num(peer, digits)}"


def table(rows: list[Row], original: tuple[float | None, float | None]) -> str:
    """Markdown table; the size and peak columns read 'ours / peer'."""
    lines = [
        "| recipe | ours ppl | peer ppl | ours s | peer s | size MB | peak MB | target | met? |",
        "|" + " --- |" * 9,
        f"| original (fp32) | {_num(original[0])} | {_num(original[1])} | – | – | "
        f"{_dir_mb(MODEL_DIR):.2f} (bf16 file) | – | – | – |",
    ]
    lines += ["| " + " | ".join(_cells(row)) + " |" for row in rows]
    return "\n".join(lines)


def _cells(row: Row) -> list[str]:
    ours, peer = (result if _ok(result) else None for result in (row.ours, row.peer))
    name = row.name if row.peer_recipe in (None, row.name) else f"{row.name} ↔ {row.peer_recipe}"
    met = "no preset" if row.ours is None else ", ".join({True: "yes", False: "NO", None: "?"}[m] for m in row.met)
    return [
        name,
        _error_or(row.ours, ours and _num(ours["ppl_after"])),
        _error_or(row.peer, peer and _num(peer["ppl"])),
        _num(ours and ours_seconds(ours), 1),
        _num(peer and peer["seconds"], 1),
        _pair(ours and ours["size_bytes_after"] / 1e6, peer and peer["size_bytes"] / 1e6, 2),
        _pair(ours and ours["peak_rss_mb_wait4"], peer and peer["peak_rss_mb_wait4"], 0),
        "; ".join(row.targets) or "–",
        (met or "–") if row.targets else "–",
    ]


def _error_or(result: dict | None, text: str | None) -> str:
    return "failed" if result is not None and not _ok(result) else (text or "–")


def _dir_mb(path: Path) -> float:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) / 1e6


def machine() -> dict:
    """Enough to tell whether two result files are comparable."""
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor(),
    )
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "cores_usable": len(os.sched_getaffinity(0)),
        "torch": importlib.metadata.version("torch"),
        "transformers": importlib.metadata.version("transformers"),
        "compressed-tensors": importlib.metadata.version("compressed-tensors"),
        "python": platform.python_version(),
        "platform": platform.platform(),
    }


def git_state() -> dict:
    """The commit measured, and whether compress/ had uncommitted changes (numbers then describe the work tree)."""

    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True).stdout.strip()

    return {"commit": git("rev-parse", "HEAD"), "compress_dirty": bool(git("status", "--porcelain", "compress"))}


# ---- main ------------------------------------------------------------------------------------------------------


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--skip-peer", action="store_true", help="Shrinkray presets only")
    parser.add_argument(
        "--only",
        type=lambda s: [p for p in s.split(",") if p],
        default=None,
        metavar="PRESET,...",
        help="these presets only (and their peer recipes)",
    )
    parser.add_argument(
        "--eval-windows",
        type=int,
        default=None,
        metavar="N",
        help="first N eval windows only, for a quick run (default: all)",
    )
    parser.add_argument("--output", type=Path, default=None, help="JSON path (default bench/results/quality-DATE.json)")
    parser.add_argument("--worker", metavar="PRESET", help=argparse.SUPPRESS)
    return parser.parse_args()


def select_presets(only: list[str] | None) -> list[str]:
    from compress.recipes import PRESETS

    if only is None:
        return list(PRESETS)
    unknown = sorted(set(only) - set(PRESETS))
    if unknown:
        raise SystemExit(f"unknown presets {unknown}; known: {', '.join(PRESETS)}")
    return only


def original_ppl(ours: dict[str, dict], peer: dict[str, dict]) -> tuple[float | None, float | None]:
    """Baseline ppl of each side: ours from any successful report, the peer's from its "original" run."""
    first = next((r for r in ours.values() if _ok(r)), None)
    return (first["ppl_before"] if first else None, peer["original"]["ppl"] if _ok(peer.get("original")) else None)


def save(output: Path, header: dict, ours: dict[str, dict], peer: dict[str, dict], complete: bool) -> list[Row]:
    """Write the JSON after every run, so a killed benchmark (a full run is about an hour) keeps what it measured."""
    rows = build_rows(ours, peer)
    ppl = original_ppl(ours, peer)
    versions = next((r["versions"] for r in peer.values() if "versions" in r), None)
    document = {
        **header,
        "complete": complete,
        "peer": {"name": "llm-compressor", "versions": versions, "requirements": PEER_REQUIREMENTS},
        "original_ppl": {"ours": ppl[0], "peer": ppl[1]},
        "peer_original": peer.get("original"),
        "rows": [asdict(row) for row in rows],
    }
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")
    return rows


def main() -> None:
    args = parse_args()
    if args.worker:
        worker(args.worker, args.eval_windows)
        return
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    started = datetime.now().astimezone()
    header = {
        "date": started.isoformat(timespec="seconds"),
        "machine": machine(),
        "git": git_state(),  # before any run: compress/ may be committed or edited while the benchmark runs
        "model": os.path.relpath(MODEL_DIR, REPO),
        "protocol": PROTOCOL,
        "eval_windows_limit": args.eval_windows,
    }
    output = args.output or RESULTS / f"quality-{started.strftime('%Y-%m-%d-%H%M')}.json"
    logs = LOGS / started.strftime("%Y-%m-%d-%H%M%S")
    presets = select_presets(args.only)

    ours: dict[str, dict] = {}
    peer: dict[str, dict] = {}
    for preset in presets:
        log.info("ours: %s", preset)
        ours[preset] = run_ours(preset, args.eval_windows, logs)
        save(output, header, ours, peer, complete=False)

    if not args.skip_peer:
        python = ensure_peer_venv(logs)
        recipes = peer_recipes(python)
        if args.only is not None:
            recipes = ["original", *(PEER_FOR_PRESET[p] for p in presets if p in PEER_FOR_PRESET)]
        for recipe in recipes:
            log.info("peer: %s", recipe)
            peer[recipe] = run_peer(python, recipe, args.eval_windows, logs)
            save(output, header, ours, peer, complete=False)

    rows = save(output, header, ours, peer, complete=True)
    print(table(rows, original_ppl(ours, peer)), flush=True)
    log.info("wrote %s", output.relative_to(REPO) if output.is_relative_to(REPO) else output)


if __name__ == "__main__":
    main()
