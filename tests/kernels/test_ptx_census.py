"""The offline PTX census (bench/ptx_census.py) compiles the real kernels for a GPU this machine does not have and
tells the tensor-core paths apart: Hopper's wgmma with the dequantized operand in registers, Ampere's mma.sync,
and none in the CUDA-core GEMV. It runs as a script, outside the interpreter the other kernel tests use."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _census(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "TRITON_INTERPRET": "0", "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, str(ROOT / "bench" / "ptx_census.py"), "--out", str(tmp_path), *args],
                          capture_output=True, text=True, env=env, timeout=600)


def _rows(tmp_path: Path, *args: str) -> dict[str, dict]:
    run = _census(tmp_path, *args)
    assert run.returncode == 0, run.stderr[-2000:]
    (written,) = tmp_path.glob("ptx_census-*.json")
    rows = {row["kernel"]: row for row in json.loads(written.read_text())["rows"]}
    written.unlink()
    return rows


def test_tensor_core_paths_are_told_apart_per_architecture(tmp_path: Path) -> None:
    hopper = _rows(tmp_path, "--kernels", "w4a16,w4a16-m64,w4a16-fp16-zero,w4a16-gemv,w4a16-strip,w8a8-int8,2of4,"
                                          "w8a16-int8,w8a16-int8-transposed,decode-attention,decode-attention-d256,"
                                          "decode-attention-group64")
    # no kernel spills registers; decode attention's launcher shortens blocks and adds warps for large heads
    # and groups (a head size of 256 or 64 query heads per key/value head spilled 21-65 stores before)
    assert {name: row["spill_stores"] for name, row in hopper.items() if row["spill_stores"]} == {}
    assert all(0 < row["registers"] <= 255 for row in hopper.values())  # read from each kernel's cubin
    # decode attention's 16-row query tiles (a group's heads, padded) are below wgmma's 64 rows: mma.sync
    attention = hopper["decode-attention"]
    assert attention["counts"]["mma_sync"] > 0 and attention["counts"]["wgmma"] == 0
    w4a16 = hopper["w4a16"]
    assert w4a16["counts"]["wgmma"] > 0 and w4a16["counts"]["mma_sync"] == 0
    assert w4a16["mma_a_in_registers"] and w4a16["shared_bytes"] > 0
    # the dequantized tile is not staged in shared memory (the packed tile arrives by cp.async, leaves by
    # ldmatrix); what st.shared remains is the epilogue's, where the tiled int32 layout needed 65
    assert w4a16["counts"]["st_shared"] <= 8 and w4a16["counts"]["ldmatrix"] > 0
    # a 16-row tile scales each group's partial product after the MMA, not each weight before it (2.89 SASS
    # instructions per weight when every weight was scaled, 2.29 after)
    assert w4a16["loop_instructions_per_weight"] < 2.6
    # the 64-row tile (scaled after the MMA as well) keeps the dequantized tile in registers too
    assert hopper["w4a16-m64"]["mma_a_in_registers"] and hopper["w4a16-m64"]["counts"]["st_shared"] <= 8
    # fp16 with zero points takes the other inline-assembly variant; ptxas assembled it, and it keeps the layout
    assert hopper["w4a16-fp16-zero"]["mma_a_in_registers"] and hopper["w4a16-fp16-zero"]["counts"]["st_shared"] <= 8
    gemv = hopper["w4a16-gemv"]
    assert gemv["counts"]["wgmma"] == gemv["counts"]["mma_sync"] == 0
    # the decode GEMV is bound by instruction issue: its loop must stay near the AND and the FMA each code needs
    # (4.6 per code before the offsets moved into the group sums and the odd column's nibbles shared x)
    assert 2 < gemv["loop_instructions_per_weight"] < 4
    # the strip GEMV keeps a unit's word rows in one thread: scales, offsets and x loads are paid per unit and
    # row, not per word (2.63 per code with its row stride a run-time argument, 2.55 as a constant; the split-K
    # GEMV 3.62)
    strip = hopper["w4a16-strip"]
    assert strip["counts"]["wgmma"] == strip["counts"]["mma_sync"] == 0
    assert 2 < strip["loop_instructions_per_weight"] < min(2.8, gemv["loop_instructions_per_weight"] - 0.5)
    # ... in 64 registers a thread (four words and their unit sums), so many one-warp programs share an SM
    assert strip["registers"] <= 64
    assert hopper["w8a8-int8"]["counts"]["wgmma"] > 0 and not hopper["w8a8-int8"]["mma_a_in_registers"]
    # weight-only 8-bit: the widened weight is the MMA's register operand only in the transposed tile
    assert not hopper["w8a16-int8"]["mma_a_in_registers"] and hopper["w8a16-int8-transposed"]["mma_a_in_registers"]
    # 2:4 rebuilds its dense tile in registers as the first operand (a select depending on an arange along K
    # made Triton stage it through shared memory, 40 st.shared; x arrives by cp.async)
    sparse = hopper["2of4"]
    assert sparse["mma_a_in_registers"] and sparse["counts"]["st_shared"] == 0
    # every kernel launches dependent on the kernel before it (kernels/dependent_launch.py): it waits once,
    # reads nothing before the wait, and lets its successor launch
    for name, row in hopper.items():
        assert row["counts"]["gdc_wait"] == row["counts"]["gdc_launch"] == 1, name
        assert row["loads_before_wait"] == 0, name
    # split-K partial sums (and decode attention's partials) are added relaxed: one acquire-release atomic, the
    # count, orders them; as acq_rel adds each waited its own round trip to L2 (the strip GEMV's tile four, one
    # after the other, the 16-row W4A16 tile's eight)
    workspace_users = {"w4a16", "w4a16-fp16-zero", "w4a16-gemv", "w4a16-strip", "decode-attention",
                       "decode-attention-d256", "decode-attention-group64"}
    acquire_release = {name: row["counts"]["acq_rel"] for name, row in hopper.items() if row["counts"]["acq_rel"]}
    assert acquire_release == dict.fromkeys(workspace_users, 1)


def test_every_kernel_an_ampere_gpu_runs_compiles_for_it(tmp_path: Path) -> None:
    """GPU workers are often A100s (sm_80): every kernel the loader can pick there compiles for it, the tensor-core
    ones to mma.sync. Triton has no FP8 type before sm_89, so the FP8 kernel itself cannot compile there and FP8
    weights are read as bytes instead (kernels/w8a8.py)."""
    ampere = _rows(tmp_path, "--arch", "80", "--kernels",
                   "w4a16,w4a16-gemv,w4a16-strip,w8a8-int8,w8a16-fp8-bytes,2of4,2of4-w4a16,decode-attention")
    for name in ("w4a16", "w8a8-int8", "w8a16-fp8-bytes", "2of4", "2of4-w4a16", "decode-attention"):
        assert ampere[name]["counts"]["mma_sync"] > 0 and ampere[name]["counts"]["wgmma"] == 0, name
    for name in ("w4a16-gemv", "w4a16-strip"):
        assert ampere[name]["counts"]["mma_sync"] == 0, name
    # Ampere has no grid dependency control: the same kernels compile without it
    for name, row in ampere.items():
        assert row["counts"]["gdc_wait"] == 0 and row["loads_before_wait"] is None, name
    native = _census(tmp_path, "--arch", "80", "--kernels", "w8a8-fp8")
    assert native.returncode != 0 and "fp8e4nv not supported" in native.stderr


def test_unknown_kernels_are_refused(tmp_path: Path) -> None:
    run = _census(tmp_path, "--kernels", "w4a16,nope")
    assert run.returncode == 2 and "unknown kernels ['nope']" in run.stderr
    assert not list(tmp_path.iterdir())
