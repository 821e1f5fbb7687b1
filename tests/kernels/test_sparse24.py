"""2:4 compressed storage and the sparse kernels (bf16 values and int4 codes) against dense references."""

from __future__ import annotations

import pytest
import torch

from compress.methods.masks import nm_mask
from compress.quantize import quantize_weight
from kernels.sparse24 import sparse24_matmul, sparse24_reference
from kernels.sparse24_layout import compress_24, decompress_24, from_kernel_layout_24, to_kernel_layout_24
from tests.kernels.helpers import DEVICE, poisoned, randn, relative_error


def _pruned(n: int, k: int, seed: int) -> torch.Tensor:
    """A [N, K] bf16 weight pruned 2:4 by magnitude, with some groups emptier than 2:4 requires."""
    weight = randn(n, k, seed=seed, dtype=torch.float32, scale=0.05).cpu()
    weight = weight * ~nm_mask(weight.abs(), 2, 4)
    weight[0, :4] = torch.tensor([0.0, 0.0, 0.0, 0.5])
    weight[1, 4:8] = 0.0
    return weight.to(torch.bfloat16)


def test_storage_round_trips_and_keeps_half_the_values() -> None:
    weight = _pruned(24, 96, seed=0)
    values, meta = compress_24(weight)
    assert values.shape == (24, 48) and meta.shape == (24, 3) and meta.dtype == torch.int32
    assert torch.equal(decompress_24(values, meta), weight)


def test_a_weight_that_is_not_2_of_4_is_refused() -> None:
    weight = _pruned(8, 64, seed=1)
    weight[3, 8:11] = 1.0
    with pytest.raises(ValueError, match="not 2:4"):
        compress_24(weight)
    with pytest.raises(ValueError, match="multiple of 32"):
        compress_24(weight[:, :48])


@pytest.mark.parametrize("k", [96, 128, 160, 256])
def test_pair_layout_round_trips(k: int) -> None:
    weight = _pruned(24, k, seed=k)
    values, meta = compress_24(weight)
    words, positions = to_kernel_layout_24(values, meta)
    assert words.shape == (32 * -(-k // 128), 24) and words.dtype == torch.int32 and positions.dtype == torch.int8
    back = from_kernel_layout_24(words, positions, k, torch.bfloat16)
    assert torch.equal(back[0], values) and torch.equal(back[1], meta)
    codes = torch.randint(-8, 8, weight.shape, generator=torch.Generator().manual_seed(k)) * (weight != 0)
    codes = codes.to(torch.int8)
    kept, code_meta = compress_24(codes)
    words, positions = to_kernel_layout_24(kept, code_meta)
    assert words.dtype == torch.int8 and positions.shape == (16 * -(-k // 128), 24)
    back = from_kernel_layout_24(words, positions, k, torch.bfloat16)
    assert torch.equal(back[0], kept) and torch.equal(back[1], code_meta)


@pytest.mark.parametrize(("m", "n", "k", "config"), [
    (1, 40, 64, {"BLOCK_M": 16, "BLOCK_N": 32, "SPLIT_K": 1}),
    (7, 33, 96, {"BLOCK_M": 16, "BLOCK_N": 16, "SPLIT_K": 3}),
    (35, 48, 128, {"BLOCK_M": 32, "BLOCK_N": 32, "SPLIT_K": 1}),
    (5, 24, 416, {"BLOCK_M": 16, "BLOCK_N": 16, "SPLIT_K": 2}),  # K past the last full block, split unevenly
])
def test_bf16_kernel_matches_the_dense_matmul(m: int, n: int, k: int, config: dict) -> None:
    weight = _pruned(n, k, seed=n + k)
    values, meta = (t.to(DEVICE) for t in compress_24(weight))
    x = randn(m, k, seed=m)
    bias = randn(n, seed=k)
    out = poisoned(m, n, dtype=torch.bfloat16)
    got = sparse24_matmul(x, *to_kernel_layout_24(values, meta), bias=bias, out=out, config=config)
    assert got.data_ptr() == out.data_ptr() and torch.isfinite(got).all()
    expected = x.float() @ weight.to(DEVICE).float().T + bias.float()
    assert relative_error(got, expected) < 1e-2
    assert relative_error(sparse24_reference(x, values, meta, bias=bias), expected) < 1e-2


@pytest.mark.parametrize(("m", "n", "k", "dtype", "config"), [
    (1, 40, 64, torch.bfloat16, {"BLOCK_N": 32, "BLOCK_G": 16, "SPLIT_K": 1}),
    (3, 33, 96, torch.float16, {"BLOCK_N": 16, "BLOCK_G": 16, "SPLIT_K": 2}),  # 24 groups: the last step is short
    (2, 48, 416, torch.bfloat16, {"BLOCK_N": 32, "BLOCK_G": 32, "SPLIT_K": 3, "num_warps": 2}),  # K past a block
    (1, 64, 512, torch.float16, {"BLOCK_N": 64, "BLOCK_G": 64, "SPLIT_K": 2}),  # steps spanning whole blocks
])
def test_gemv_matches_the_dense_matmul(m: int, n: int, k: int, dtype: torch.dtype, config: dict) -> None:
    weight = _pruned(n, k, seed=3 * n + k).to(dtype)
    values, meta = (t.to(DEVICE) for t in compress_24(weight))
    x = randn(m, k, seed=k, dtype=dtype)
    bias = randn(n, seed=n, dtype=dtype)
    out = poisoned(m, n, dtype=dtype)
    got = sparse24_matmul(x, *to_kernel_layout_24(values, meta), bias=bias, out=out, config={"GEMV": True, **config})
    assert got.data_ptr() == out.data_ptr() and torch.isfinite(got).all()
    expected = x.float() @ weight.to(DEVICE).float().T + bias.float()
    assert relative_error(got, expected) < (1e-2 if dtype == torch.bfloat16 else 2e-3)
    # split-K sums and counters are left zeroed: a second call computes the same from a poisoned output
    again = sparse24_matmul(x, *to_kernel_layout_24(values, meta), bias=bias, out=poisoned(m, n, dtype=dtype),
                            config={"GEMV": True, **config})
    assert relative_error(again, got) < 1e-6


@pytest.mark.parametrize(("m", "n", "k", "group_size", "config"), [
    (1, 40, 64, 32, {"BLOCK_M": 16, "BLOCK_N": 32, "SPLIT_K": 1}),
    (9, 24, 256, 128, {"BLOCK_M": 16, "BLOCK_N": 16, "SPLIT_K": 2}),
    (18, 40, 192, 64, {"BLOCK_M": 16, "BLOCK_N": 32, "SPLIT_K": 1}),  # groups shorter than a block, K ragged
    (3, 16, 384, 96, {"BLOCK_M": 16, "BLOCK_N": 16, "SPLIT_K": 2}),  # groups straddling blocks
    # the GEMV: steps of 64 input columns over groups of 32, steps spanning two groups, K ragged, groups
    # straddling the split, then steps inside one group (one scale per column and step)
    (1, 40, 64, 32, {"GEMV": True, "BLOCK_N": 32, "BLOCK_G": 16, "SPLIT_K": 1}),
    (2, 24, 256, 128, {"GEMV": True, "BLOCK_N": 16, "BLOCK_G": 64, "SPLIT_K": 2}),
    (1, 40, 192, 64, {"GEMV": True, "BLOCK_N": 32, "BLOCK_G": 32, "SPLIT_K": 1, "num_warps": 2}),
    (3, 16, 384, 96, {"GEMV": True, "BLOCK_N": 16, "BLOCK_G": 32, "SPLIT_K": 2}),
    (1, 48, 512, 128, {"GEMV": True, "BLOCK_N": 16, "BLOCK_G": 16, "SPLIT_K": 2}),
    (2, 40, 320, 64, {"GEMV": True, "BLOCK_N": 32, "BLOCK_G": 16, "SPLIT_K": 1}),
])
def test_int4_kernel_matches_the_dequantized_matmul(m: int, n: int, k: int, group_size: int, config: dict) -> None:
    pruned = _pruned(n, k, seed=n).float()
    codes, scale, _ = quantize_weight(pruned, 4, group_size, True, torch.bfloat16)
    kept, meta = (t.to(DEVICE) for t in compress_24(codes))
    scale = scale.to(torch.bfloat16).to(DEVICE)
    x = randn(m, k, seed=k)
    out = poisoned(m, n, dtype=torch.bfloat16)
    held = scale.t().contiguous().t() if m % 2 else scale  # group-major, as Sparse24Linear holds it, or not
    got = sparse24_matmul(x, *to_kernel_layout_24(kept, meta), held, group_size, out=out, config=config)
    dequantized = codes.float().to(DEVICE) * scale.float().repeat_interleave(group_size, dim=1)
    expected = x.float() @ dequantized.T
    assert torch.isfinite(got).all() and relative_error(got, expected) < 1e-2
    assert relative_error(sparse24_reference(x, kept, meta, scale, group_size), expected) < 1e-2


def test_bad_arguments_are_refused() -> None:
    words, positions = to_kernel_layout_24(*(t.to(DEVICE) for t in compress_24(_pruned(32, 64, seed=2))))
    x = randn(2, 64, seed=0)
    with pytest.raises(ValueError, match="bf16 or fp16"):
        sparse24_matmul(x.float(), words, positions)
    with pytest.raises(ValueError, match="positions"):
        sparse24_matmul(x, words, positions[:1].contiguous())
    with pytest.raises(ValueError, match="words"):
        sparse24_matmul(x, words.float(), positions)
    with pytest.raises(ValueError, match="scale"):
        sparse24_matmul(x, torch.zeros(32, 32, dtype=torch.int8, device=DEVICE), positions,
                        scale=torch.ones(32, 1, device=DEVICE), group_size=48)
