"""The 8-bit weight matmuls (int8 and FP8; W8A8 and weight-only) against the fp32 reference."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch

from compress.float8 import quantize_fp8_weight
from compress.quantize import quantize_weight
from kernels.act_quant import quantize_per_token
from kernels.w8a8 import scaled_matmul, scaled_matmul_reference
from tests.kernels.helpers import DEVICE, poisoned, randn, relative_error


def _weight(dtype: torch.dtype, n: int, k: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Codes [N, K] and fp32 per-channel scales [N] as compress/ makes them."""
    weight = randn(n, k, seed=seed, dtype=torch.float32, scale=0.05).cpu()
    if dtype == torch.int8:
        codes, scale, _ = quantize_weight(weight, 8, None, True, torch.bfloat16)
    else:
        codes, scale = quantize_fp8_weight(weight)
    return codes.to(DEVICE), scale.reshape(-1).float().to(DEVICE)


CONFIGS = [
    {"BLOCK_M": 16, "BLOCK_N": 32, "BLOCK_K": 32, "SPLIT_K": 1, "GROUP_M": 4},
    {"BLOCK_M": 16, "BLOCK_N": 16, "BLOCK_K": 32, "SPLIT_K": 3, "GROUP_M": 2},
    {"BLOCK_M": 32, "BLOCK_N": 32, "BLOCK_K": 64, "SPLIT_K": 1, "GROUP_M": 1},
]


@pytest.mark.parametrize("dtype", [torch.int8, torch.float8_e4m3fn])
@pytest.mark.parametrize("quantized_activations", [True, False])
@pytest.mark.parametrize(("m", "n", "k", "config"), [
    (1, 40, 64, CONFIGS[0]), (7, 33, 96, CONFIGS[1]), (35, 48, 160, CONFIGS[2]), (18, 64, 100, CONFIGS[0]),
])
def test_kernel_matches_the_reference(dtype, quantized_activations, m, n, k, config) -> None:  # type: ignore[no-untyped-def]
    codes, scale = _weight(dtype, n, k, seed=n + k)
    x = randn(m, k, seed=m + k)
    bias = randn(n, seed=n)
    if quantized_activations:
        x_in, x_scale = quantize_per_token(x, dtype)
    else:
        x_in, x_scale = x, None
    out = poisoned(m, n, dtype=torch.bfloat16)
    got = scaled_matmul(x_in, x_scale, codes, scale, torch.bfloat16, bias, out=out, config=config)
    assert got.data_ptr() == out.data_ptr() and torch.isfinite(got).all()
    expected = scaled_matmul_reference(x_in, x_scale, codes, scale, torch.float32, bias)
    assert relative_error(got, expected) < 1e-2
    # and the quantized product stays close to the unquantized one
    dense = x.float() @ (codes.float() * scale[:, None]).T + bias.float()
    assert relative_error(got, dense) < (6e-2 if dtype == torch.float8_e4m3fn and quantized_activations else 2e-2)


SWAP_CONFIGS = [
    {"BLOCK_M": 16, "BLOCK_N": 32, "BLOCK_K": 32, "SPLIT_K": 1, "GROUP_M": 4, "SWAP_AB": True},
    {"BLOCK_M": 16, "BLOCK_N": 16, "BLOCK_K": 32, "SPLIT_K": 3, "GROUP_M": 2, "SWAP_AB": True},
    {"BLOCK_M": 32, "BLOCK_N": 16, "BLOCK_K": 64, "SPLIT_K": 2, "GROUP_M": 1, "SWAP_AB": True},
]


@pytest.mark.parametrize("weight", ["int8", "fp8", "fp8-bytes"])
@pytest.mark.parametrize(("m", "n", "k", "config", "x_dtype"), [
    (1, 40, 64, SWAP_CONFIGS[0], torch.bfloat16), (7, 33, 96, SWAP_CONFIGS[1], torch.float16),
    (35, 48, 160, SWAP_CONFIGS[2], torch.bfloat16), (18, 64, 100, SWAP_CONFIGS[1], torch.bfloat16),
])
def test_weight_only_transposed_tiles_match_the_reference(weight: str, m: int, n: int, k: int, config: dict,
                                                          x_dtype: torch.dtype) -> None:
    """Weight-only tiles computed transposed ((W xᵀ)ᵀ: the widened weight as the MMA's first operand), ragged in
    M, N and K, with K slices meeting in the workspace and a bias."""
    codes, scale = _weight(torch.int8 if weight == "int8" else torch.float8_e4m3fn, n, k, seed=7 * n + k)
    # a bias no larger than the products, so an error in them shows in the sum
    x, bias = randn(m, k, seed=m + 2 * k, dtype=x_dtype), randn(n, seed=n + 3, dtype=x_dtype, scale=0.1)
    out = poisoned(m, n, dtype=x_dtype)
    pinned = {**config, "FP8_BYTES": True} if weight == "fp8-bytes" else config
    got = scaled_matmul(x, None, codes, scale, x_dtype, bias, out=out, config=pinned)
    assert got.data_ptr() == out.data_ptr() and torch.isfinite(got).all()
    # exact products summed in fp32: only the output's rounding (bf16 2^-9) separates it from the reference
    assert relative_error(got, scaled_matmul_reference(x, None, codes, scale, torch.float32, bias)) < 5e-3


def test_transposed_tiles_refuse_quantized_activations() -> None:
    codes, scale = _weight(torch.int8, 32, 64, seed=3)
    x_codes, x_scale = quantize_per_token(randn(2, 64, seed=4), torch.int8)
    with pytest.raises(ValueError, match="SWAP_AB"):
        scaled_matmul(x_codes, x_scale, codes, scale, config=SWAP_CONFIGS[0])


def test_fp16_output_and_no_bias() -> None:
    codes, scale = _weight(torch.int8, 32, 64, seed=1)
    x = randn(3, 64, seed=2, dtype=torch.float16)
    got = scaled_matmul(x, None, codes, scale, torch.float16, config=CONFIGS[0])
    assert got.dtype == torch.float16
    assert relative_error(got, scaled_matmul_reference(x, None, codes, scale, torch.float32)) < 1e-2


def test_bad_arguments_are_refused() -> None:
    codes, scale = _weight(torch.int8, 32, 64, seed=0)
    x = randn(2, 64, seed=0)
    xq, xs = quantize_per_token(x, torch.int8)
    with pytest.raises(ValueError, match="weight"):
        scaled_matmul(x, None, codes.float(), scale)
    with pytest.raises(ValueError, match="same 8-bit type"):
        scaled_matmul(xq.float().to(torch.float8_e4m3fn), xs, codes, scale)
    with pytest.raises(ValueError, match="x_scale"):
        scaled_matmul(xq, None, codes, scale)
    with pytest.raises(ValueError, match="w_scale"):
        scaled_matmul(xq, xs, codes, scale[:-1])
    with pytest.raises(ValueError, match="K="):
        scaled_matmul(x[:, :32].contiguous(), None, codes, scale)
    with pytest.raises(ValueError, match="out"):
        scaled_matmul(xq, xs, codes, scale, out=poisoned(2, 31, dtype=torch.bfloat16))


TMA_CONFIGS = [
    {"TMA": True, "BLOCK_M": 16, "BLOCK_N": 32, "BLOCK_K": 32},
    {"TMA": True, "BLOCK_M": 32, "BLOCK_N": 16, "BLOCK_K": 64, "GROUP_M": 2},
    {"TMA": True, "BLOCK_M": 16, "BLOCK_N": 16, "BLOCK_K": 32, "SPLIT_K": 3},
]


@pytest.mark.parametrize("dtype", [torch.int8, torch.float8_e4m3fn])
@pytest.mark.parametrize(("m", "n", "k", "config", "with_bias"), [
    # more tiles than the interpreter's four persistent programs, ragged in M, N and K (out-of-box reads are zeros)
    (37, 80, 96, TMA_CONFIGS[0], True), (5, 48, 160, TMA_CONFIGS[1], False), (70, 33, 48, TMA_CONFIGS[1], True),
    # K slices meeting in the split-K workspace, the last one short (K = 160: five 32-steps over three slices)
    (20, 40, 160, TMA_CONFIGS[2], True), (3, 16, 96, TMA_CONFIGS[2], False),
])
def test_tma_kernel_matches_the_reference(dtype, m, n, k, config, with_bias) -> None:  # type: ignore[no-untyped-def]
    codes, scale = _weight(dtype, n, k, seed=3 * n + k)
    x_in, x_scale = quantize_per_token(randn(m, k, seed=m * k), dtype)
    bias = randn(n, seed=n + 1) if with_bias else None
    out = poisoned(m, n, dtype=torch.bfloat16)
    got = scaled_matmul(x_in, x_scale, codes, scale, torch.bfloat16, bias, out=out, config=config)
    assert got.data_ptr() == out.data_ptr() and torch.isfinite(got).all()
    expected = scaled_matmul_reference(x_in, x_scale, codes, scale, torch.float32, bias)
    assert relative_error(got, expected) < 1e-2


def test_tma_kernel_refuses_what_a_descriptor_cannot_address() -> None:
    codes, scale = _weight(torch.int8, 32, 100, seed=4)  # 100-byte rows: not 16-byte aligned
    xq, xs = quantize_per_token(randn(4, 100, seed=5), torch.int8)
    with pytest.raises(ValueError, match="TMA"):
        scaled_matmul(xq, xs, codes, scale, config=TMA_CONFIGS[0])
    aligned, aligned_scale = _weight(torch.int8, 32, 64, seed=6)
    with pytest.raises(ValueError, match="TMA"):  # bf16 activations (W8A16) stay on the pointer kernel
        scaled_matmul(randn(4, 64, seed=7), None, aligned, aligned_scale, config=TMA_CONFIGS[0])


@pytest.mark.parametrize("pointer_faster", [True, False])
def test_from_tma_rows_the_faster_of_the_two_kernels_runs(monkeypatch: pytest.MonkeyPatch,
                                                          pointer_faster: bool) -> None:
    """Where the TMA kernel may run, it and the pointer kernel are timed against each other per shape (on an H200
    the pointer kernel won on 4096-wide outputs); a config pinning the TMA kernel is never second-guessed."""
    from kernels import w8a8

    ran: list[str] = []
    keys: list[tuple] = []
    monkeypatch.setattr(w8a8, "_tma_candidate", lambda *args: True)
    monkeypatch.setattr(w8a8, "scaled_matmul_tma", lambda *args: ran.append("tma"))
    monkeypatch.setattr(w8a8, "_pointer_matmul", lambda *args: ran.append("pointer"))

    def timed_choice(key: tuple, first: Callable[[], object], second: Callable[[], object]) -> bool:
        keys.append(key)
        return pointer_faster

    monkeypatch.setattr(w8a8, "second_is_faster", timed_choice)
    codes, scale = quantize_per_token(randn(40, 64, seed=1), torch.int8)
    weight, w_scale, _ = quantize_weight(randn(48, 64, seed=2).cpu(), 8, None, True, torch.float32)
    args = (codes, scale, weight.to(DEVICE), w_scale.reshape(-1).to(DEVICE))
    scaled_matmul(*args)
    assert ran == ["pointer" if pointer_faster else "tma"]
    assert keys[0][:4] == ("tma or pointer", 64, 48, 64)  # per M bucket and shape
    scaled_matmul(*args, config={"TMA": True, "BLOCK_M": 16, "BLOCK_N": 16, "BLOCK_K": 32})
    assert ran[-1] == "tma" and len(keys) == 1


def _every_e4m3_code(n: int) -> torch.Tensor:
    """[n, 256 / n] FP8 weights holding each E4M3 byte once (the two NaN codes as zeros), subnormals included."""
    codes = torch.arange(256, dtype=torch.int32)
    codes[(codes & 0x7F) == 0x7F] = 0
    return codes.to(torch.uint8).view(torch.float8_e4m3fn).reshape(n, -1).to(DEVICE)


@pytest.mark.parametrize("x_dtype", [torch.bfloat16, torch.float16])
def test_fp8_weights_read_as_bytes_decode_every_code_exactly(x_dtype: torch.dtype) -> None:
    """Without FP8 tensor cores (before sm_89) FP8 weights are rebuilt from their bytes by integer arithmetic; with x
    the identity the output is each weight's value, which bf16 and fp16 hold exactly for every E4M3 code."""
    weight = _every_e4m3_code(8)  # [8, 32]
    x = torch.eye(32, dtype=x_dtype, device=DEVICE)
    out = poisoned(32, 8, dtype=x_dtype)
    got = scaled_matmul(x, None, weight, torch.ones(8, device=DEVICE), x_dtype, out=out,
                        config={**CONFIGS[0], "FP8_BYTES": True})
    assert torch.equal(got.float(), weight.float().T)
    # and with scales, a bias and a K that is not a multiple of the tile's, as the reference computes it
    codes, scale = _weight(torch.float8_e4m3fn, 40, 96, seed=9)
    x, bias = randn(5, 96, seed=10, dtype=x_dtype), randn(40, seed=11, dtype=x_dtype)
    got = scaled_matmul(x, None, codes, scale, x_dtype, bias, config={**CONFIGS[1], "FP8_BYTES": True})
    assert relative_error(got, scaled_matmul_reference(x, None, codes, scale, torch.float32, bias)) < 1e-2


def test_fp8_without_fp8_tensor_cores_runs_weight_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """On a GPU without FP8 (an A100) an FP8 W8A8 layer keeps its activations in bf16, says so, and matches the
    weight-only reference; FP8 activation codes are refused with the reason."""
    from kernels import linear, w8a8

    codes, scale = _weight(torch.float8_e4m3fn, 48, 64, seed=12)
    layer = linear.Int8Linear(codes, scale, quantize_activations=True, bias=randn(48, seed=13)).to(DEVICE)
    x = randn(3, 64, seed=14)
    assert layer.kernel == "w8a8-fp8"
    monkeypatch.setattr(w8a8, "fp8_tensor_cores", lambda device: False)
    monkeypatch.setattr(linear, "fp8_tensor_cores", lambda device: False)
    assert layer.kernel == "w8a16-fp8"
    expected = x.float() @ (codes.float() * scale[:, None]).T + layer.bias.float()
    assert relative_error(layer.run_kernel(x), expected) < 1e-2
    assert relative_error(layer.run_reference(x), expected) < 1e-2
    x_codes, x_scale = quantize_per_token(x, torch.float8_e4m3fn)
    with pytest.raises(ValueError, match="no FP8 tensor cores"):
        scaled_matmul(x_codes, x_scale, codes, scale, config=CONFIGS[0])
    with pytest.raises(ValueError, match="FP8_BYTES"):  # int8 weights have no bytes to reread
        int8_codes, int8_scale = _weight(torch.int8, 48, 64, seed=15)
        scaled_matmul(x, None, int8_codes, int8_scale, config={**CONFIGS[0], "FP8_BYTES": True})
