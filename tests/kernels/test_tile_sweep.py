"""bench/tile_sweep.py's parts that need no GPU: reading pinned configs, the autotuner lists it sweeps, and the
command line refusing what it cannot run."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from tests.kernels.helpers import assert_gpu_bench_refuses

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "bench" / "tile_sweep.py"


def _module():  # type: ignore[no-untyped-def]
    spec = importlib.util.spec_from_file_location("tile_sweep", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_pinned_configs_are_read_as_integers() -> None:
    parsed = _module().parse_configs("BLOCK_M=64, BLOCK_N=128,num_warps=4; BLOCK_M=16;")
    assert parsed == [{"BLOCK_M": 64, "BLOCK_N": 128, "num_warps": 4}, {"BLOCK_M": 16}]
    for bad in ("BLOCK_M", "BLOCK_M=x", "=4", "BLOCK_M=1.5"):
        with pytest.raises(ValueError, match="KEY=INTEGER"):
            _module().parse_configs(bad)


@pytest.mark.parametrize("kernel", ["w4a16", "w8a8-int8"])
def test_product_configs_follow_the_autotuners_pruning(kernel: str) -> None:
    module = _module()
    short, tall = module.product_configs(kernel, 5), module.product_configs(kernel, 200)
    assert short and all(config["BLOCK_M"] <= 16 for config in short)
    assert any(config["BLOCK_M"] > 64 for config in tall) and len(tall) > len(short)
    assert all({"num_warps", "num_stages", "BLOCK_N", "SPLIT_K"} <= set(config) for config in tall)


def test_gemv_sweeps_its_whole_autotuner_list() -> None:
    from kernels.w4a16_gemv import _GEMV_CONFIGS

    configs = _module().product_configs("w4a16-gemv", 1)
    assert len(configs) == len(_GEMV_CONFIGS) and configs == _module().product_configs("w4a16-gemv", 8)
    assert all({"BLOCK_N", "BLOCK_K", "SPLIT_K", "STAGES", "num_warps"} <= set(config) for config in configs)
    assert {config["num_warps"] for config in configs} >= {2, 4, 8, 16}


def test_strip_gemv_sweeps_its_whole_autotuner_list() -> None:
    from kernels.w4a16_strip_gemv import _STRIP_CONFIGS

    configs = _module().product_configs("w4a16-strip", 1)
    assert len(configs) == len(_STRIP_CONFIGS) and configs == _module().product_configs("w4a16-strip", 8)
    # a warp per 128 column pairs: each thread's four words, every word row of a unit in that thread
    assert all(config["num_warps"] * 128 == config["PAIRS"] and {"SEG", "SPLIT_K"} <= set(config)
               for config in configs)


@pytest.mark.parametrize(("args", "message"), [
    (["--shapes", "4096"], "KxN"),
    (["--ms", "0"], "positive"),
    (["--configs", "BLOCK_M=big"], "KEY=INTEGER"),
    (["--kernel", "nope"], "invalid choice"),
    (["--timing", "warm"], "invalid choice"),
    ([], "CUDA GPU"),  # this machine has none
])
def test_the_command_line_refuses_what_it_cannot_run(args: list[str], message: str, tmp_path: Path) -> None:
    assert_gpu_bench_refuses(SCRIPT, args, message, tmp_path)
