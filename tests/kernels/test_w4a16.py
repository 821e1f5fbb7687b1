"""The W4A16 kernel against its plain-torch reference and against what compress/ exports (interpreter on CPU)."""

from __future__ import annotations

import pytest
import torch
from compressed_tensors.compressors.pack_quantized.helpers import pack_to_int32

from compress.quantize import dequantize_weight, quantize_weight
from kernels.int4_layout import dequantize_int4, group_nibbles, to_kernel_layout, unpack_int4, unpack_kernel_layout
from kernels.split_k import split_k_workspace
from kernels.w4a16 import w4a16_matmul, w4a16_reference
from kernels.w4a16_dequantize import dequantize_to_kn
from tests.kernels.helpers import DEVICE, poisoned, randn, relative_error


def _layer(n: int, k: int, group_size: int, seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Codes and bf16 scales as compress/ makes them, packed by compressed-tensors itself."""
    weight = torch.randn(n, k, generator=torch.Generator().manual_seed(seed)) * 0.05
    q, scale, zero_point = quantize_weight(weight, 4, group_size, True, torch.bfloat16)
    dequantized = dequantize_weight(q, scale, zero_point, group_size)
    return pack_to_int32(q, 4), scale.to(torch.bfloat16), dequantized


def test_unpacking_inverts_compressed_tensors_packing() -> None:
    codes = torch.randint(-8, 8, (5, 64), dtype=torch.int8)
    assert torch.equal(unpack_int4(pack_to_int32(codes, 4), 64), codes)


@pytest.mark.parametrize(
    ("m", "n", "k", "group_size", "config"),
    [
        (1, 40, 64, 32, {"BLOCK_M": 16, "BLOCK_N": 32, "SPLIT_K": 1}),
        (5, 64, 128, 64, {"BLOCK_M": 16, "BLOCK_N": 32, "SPLIT_K": 2}),
        # odd N and K short of a quad block (the layout pads both)
        (19, 33, 96, 32, {"BLOCK_M": 16, "BLOCK_N": 16, "SPLIT_K": 3}),
        (33, 48, 256, 128, {"BLOCK_M": 32, "BLOCK_N": 16, "SPLIT_K": 1}),
        (7, 40, 384, 64, {"BLOCK_M": 16, "BLOCK_N": 32, "SPLIT_K": 2}),
        (40, 24, 320, 64, {"BLOCK_M": 32, "BLOCK_N": 16, "SPLIT_K": 1}),
        # tiles scaled after the MMA (at most 16 x the nibble positions a group covers) and before it
        (70, 40, 512, 128, {"BLOCK_M": 64, "BLOCK_N": 16, "SPLIT_K": 2}),
        (20, 24, 256, 32, {"BLOCK_M": 32, "BLOCK_N": 16, "SPLIT_K": 1}),
        # GEMV steps of part of a quad block's rows (8 and 16 of 32)
        (1, 40, 128, 32, {"GEMV": True, "BLOCK_N": 16, "BLOCK_K": 64, "SPLIT_K": 1}),
        (3, 70, 256, 64, {"GEMV": True, "BLOCK_N": 32, "BLOCK_K": 32, "SPLIT_K": 3}),
        # GEMV blocks spanning several groups and quad blocks, the last one past K, odd N
        (2, 41, 320, 32, {"GEMV": True, "BLOCK_N": 16, "BLOCK_K": 256, "SPLIT_K": 1}),
        (1, 24, 384, 64, {"GEMV": True, "BLOCK_N": 16, "BLOCK_K": 256, "SPLIT_K": 2}),
        (1, 33, 640, 128, {"GEMV": True, "BLOCK_N": 16, "BLOCK_K": 512, "SPLIT_K": 1, "num_warps": 2}),
        # GEMV words copied asynchronously by Triton's pipeliner (a plain loop in the interpreter)
        (2, 48, 512, 64, {"GEMV": True, "BLOCK_N": 32, "BLOCK_K": 128, "SPLIT_K": 2, "STAGES": 3}),
        # groups that neither divide a quad block nor are whole quad blocks: a block's nibble positions straddle
        # two groups (192, 160) or a group spans part of two blocks (96)
        (3, 24, 384, 192, {"BLOCK_M": 16, "BLOCK_N": 16, "SPLIT_K": 2}),
        (17, 40, 480, 96, {"BLOCK_M": 32, "BLOCK_N": 32, "SPLIT_K": 1}),
        (2, 40, 384, 96, {"GEMV": True, "BLOCK_N": 32, "BLOCK_K": 128, "SPLIT_K": 1}),
        (1, 24, 320, 160, {"GEMV": True, "BLOCK_N": 16, "BLOCK_K": 256, "SPLIT_K": 1}),
        (1, 32, 384, 192, {"GEMV": True, "BLOCK_N": 32, "BLOCK_K": 64, "SPLIT_K": 2}),
        # strip GEMV: units of 8, 16 and 32 word rows, K slices over them, a ragged K and odd N, groups that
        # share a unit's nibble positions (128, 256) or split them (32, 64, 96, 160, 192)
        (1, 64, 256, 128, {"STRIP": True, "PAIRS": 16, "SEG": 8, "SPLIT_K": 1}),
        (2, 40, 384, 64, {"STRIP": True, "PAIRS": 16, "SEG": 16, "SPLIT_K": 2}),
        (1, 33, 320, 32, {"STRIP": True, "PAIRS": 8, "SEG": 32, "SPLIT_K": 3}),
        (1, 64, 512, 256, {"STRIP": True, "PAIRS": 32, "SEG": 8, "SPLIT_K": 2}),
        (2, 40, 480, 96, {"STRIP": True, "PAIRS": 16, "SEG": 8, "SPLIT_K": 1}),
        (1, 24, 320, 160, {"STRIP": True, "PAIRS": 8, "SEG": 16, "SPLIT_K": 2}),
        (1, 24, 384, 192, {"STRIP": True, "PAIRS": 8, "SEG": 8, "SPLIT_K": 1}),
    ],
)
def test_kernel_matches_the_dequantized_matmul(m, n, k, group_size, config) -> None:  # type: ignore[no-untyped-def]
    packed, scale, dequantized = _layer(n, k, group_size, seed=m + n)
    x = torch.randn(m, k, generator=torch.Generator().manual_seed(k)).to(torch.bfloat16)
    packed, scale, x = packed.to(DEVICE), scale.to(DEVICE), x.to(DEVICE)
    out = poisoned(m, n, dtype=torch.bfloat16)
    got = w4a16_matmul(x, to_kernel_layout(packed, k), scale, group_size, out=out, config=config)
    assert got.data_ptr() == out.data_ptr() and got.dtype == torch.bfloat16 and torch.isfinite(got).all()
    reference = w4a16_reference(x, packed, scale, group_size)
    exact = (x.float() @ dequantized.to(DEVICE).T)
    torch.testing.assert_close(reference.float(), exact, rtol=2e-2, atol=2e-2)
    torch.testing.assert_close(got.float(), exact, rtol=2e-2, atol=2e-2)


@pytest.mark.parametrize("config", [
    {"BLOCK_M": 16, "BLOCK_N": 16, "SPLIT_K": 2},
    {"BLOCK_M": 32, "BLOCK_N": 16, "SPLIT_K": 1},  # group 32: scaled before the MMA
    {"GEMV": True, "BLOCK_N": 16, "BLOCK_K": 128, "SPLIT_K": 1},
    {"GEMV": True, "BLOCK_N": 32, "BLOCK_K": 128, "SPLIT_K": 2},
    {"STRIP": True, "PAIRS": 16, "SEG": 16, "SPLIT_K": 2},
    {"DEQUANTIZE": True},
])
def test_asymmetric_weights_with_bias(config: dict) -> None:
    """Zero points (w = (q - z) * s) and a bias, on a 3-D input."""
    n, k, group_size = 40, 128, 32
    weight = randn(n, k, seed=3, dtype=torch.float32, scale=0.05).cpu() + 0.02
    codes, scale, zero_point = quantize_weight(weight, 4, group_size, False, torch.bfloat16)
    assert zero_point.abs().sum() > 0
    dequantized = dequantize_weight(codes, scale, zero_point, group_size).to(DEVICE)
    bias = randn(n, seed=4)
    x = randn(2, 2, k, seed=5)
    got = w4a16_matmul(x, to_kernel_layout(pack_to_int32(codes, 4), k).to(DEVICE), scale.to(torch.bfloat16).to(DEVICE),
                       group_size, zero_point=zero_point.to(DEVICE), bias=bias, config=config)
    assert got.shape == (2, 2, n)
    assert relative_error(got, x.float() @ dequantized.T + bias.float()) < 1e-2
    reference = w4a16_reference(x, pack_to_int32(codes, 4).to(DEVICE), scale.to(DEVICE), group_size,
                                zero_point.to(DEVICE), bias)
    assert relative_error(reference, x.float() @ dequantized.T + bias.float()) < 1e-2


@pytest.mark.parametrize("config", [{"GEMV": True, "BLOCK_N": 16, "BLOCK_K": 128, "SPLIT_K": 4},
                                    {"STRIP": True, "PAIRS": 16, "SEG": 8, "SPLIT_K": 4}])
def test_split_k_gemvs_leave_their_workspace_zeroed_for_the_next_call(config: dict) -> None:
    """The last K slice of each tile writes the output and clears the shared workspace; calls of different
    shapes in a row (as a model's layers make them) must each come out right."""
    for n, k, seed in [(40, 512, 1), (72, 128, 2), (40, 640, 3)]:
        packed, scale, dequantized = _layer(n, k, 32, seed=seed)
        x = randn(2, k, seed=seed)
        got = w4a16_matmul(x, to_kernel_layout(packed, k).to(DEVICE), scale.to(DEVICE), 32, config=config)
        assert relative_error(got, x.float() @ dequantized.to(DEVICE).T) < 1e-2
        sums, arrivals = split_k_workspace(DEVICE, 0, 0)
        assert not sums.any() and not arrivals.any()


@pytest.mark.parametrize("config", [
    {"GEMV": True, "BLOCK_N": 16, "BLOCK_K": 128, "SPLIT_K": 1},
    {"GEMV": True, "BLOCK_N": 32, "BLOCK_K": 64, "SPLIT_K": 3},
    {"STRIP": True, "PAIRS": 16, "SEG": 8, "SPLIT_K": 1},
    {"STRIP": True, "PAIRS": 8, "SEG": 16, "SPLIT_K": 4},
    {"BLOCK_M": 16, "BLOCK_N": 16, "SPLIT_K": 2},
    {"DEQUANTIZE": True},
])
def test_gated_weights_give_silu_of_gate_times_up(config: dict) -> None:
    """Column pairs (gate, up) of a gated MLP: out[..., j] = silu(gate_j) * up_j, N / 2 columns, each with its
    own bias and zero points, on a ragged K; the GEMVs apply it as they store (through the split-K workspace,
    which is left zeroed), the other paths after the matmul."""
    n, k, group_size = 72, 320, 64
    weight = randn(n, k, seed=11, dtype=torch.float32, scale=0.05).cpu() + 0.01
    codes, scale, zero_point = quantize_weight(weight, 4, group_size, False, torch.bfloat16)
    dequantized = dequantize_weight(codes, scale, zero_point, group_size).to(DEVICE)
    bias = randn(n, seed=12)
    x = randn(2, 1, k, seed=13)
    out = poisoned(2, 1, n // 2, dtype=torch.bfloat16)
    got = w4a16_matmul(x, to_kernel_layout(pack_to_int32(codes, 4), k).to(DEVICE), scale.to(torch.bfloat16).to(DEVICE),
                       group_size, zero_point=zero_point.to(DEVICE), bias=bias, out=out, config=config, gated=True)
    assert got.data_ptr() == out.data_ptr() and got.shape == (2, 1, n // 2)
    pairs = x.float() @ dequantized.T + bias.float()
    expected = torch.nn.functional.silu(pairs[..., 0::2]) * pairs[..., 1::2]
    assert relative_error(got, expected) < 1e-2
    reference = w4a16_reference(x, pack_to_int32(codes, 4).to(DEVICE), scale.to(DEVICE), group_size,
                                zero_point.to(DEVICE), bias, gated=True)
    assert relative_error(reference, expected) < 1e-2
    sums, arrivals = split_k_workspace(DEVICE, 0, 0)
    assert not sums.any() and not arrivals.any()


@pytest.mark.parametrize(("n", "k"), [(24, 64), (33, 320), (8, 256)])
def test_kernel_layout_keeps_the_codes(n: int, k: int) -> None:
    """Input column 128 b + 32 j + r of output column c sits in row 32 b + r, column c, nibble j (stored + 8);
    N is padded to even and K to a whole quad block, and unpacking gives the codes back."""
    codes = torch.randint(-8, 8, (n, k), dtype=torch.int8, generator=torch.Generator().manual_seed(n + k))
    kernel = to_kernel_layout(pack_to_int32(codes, 4), k)
    assert kernel.dtype == torch.int16 and kernel.shape == (-(-k // 128) * 32, n + n % 2)
    for column, input_column in [(0, 0), (n - 1, k - 1), (n // 2, k // 3), (1, 33)]:
        block, within = divmod(input_column, 128)
        position, row = divmod(within, 32)
        nibble = (int(kernel[32 * block + row, column]) >> (4 * position)) & 0xF
        assert nibble - 8 == codes[column, input_column]
    assert torch.equal(unpack_kernel_layout(kernel, k, n), codes)


def test_bad_arguments_are_refused() -> None:
    packed, scale, _ = _layer(32, 64, 32, seed=0)
    packed = to_kernel_layout(packed, 64)
    x = torch.randn(2, 64).to(torch.bfloat16)
    with pytest.raises(ValueError, match="bf16 or fp16"):
        w4a16_matmul(x.float(), packed, scale, 32)
    with pytest.raises(ValueError, match="packed must be a contiguous int16"):
        w4a16_matmul(x, packed.to(torch.int32), scale, 32)
    with pytest.raises(ValueError, match="packed must be a contiguous int16"):
        w4a16_matmul(x, packed[:, :16], scale, 32)
    with pytest.raises(ValueError, match="scale"):
        w4a16_matmul(x, packed, scale[:, :1].contiguous(), 32)
    with pytest.raises(ValueError, match="group_size"):
        w4a16_matmul(x, packed, scale, 48)
    for wrong in (torch.float32, torch.float16):  # fp32 scales once aborted the process in Triton's compiler
        with pytest.raises(ValueError, match="scale must have x's dtype"):
            w4a16_matmul(x, packed, scale.to(wrong), 32)
    with pytest.raises(ValueError, match="zero_point"):
        w4a16_matmul(x, packed, scale, 32, zero_point=torch.zeros(32, 2, dtype=torch.int32))
    with pytest.raises(ValueError, match="out"):
        w4a16_matmul(x, packed, scale, 32, out=poisoned(2, 16, dtype=torch.bfloat16))
    with pytest.raises(ValueError, match="out"):  # a gated call writes N / 2 columns
        w4a16_matmul(x, packed, scale, 32, out=poisoned(2, 32, dtype=torch.bfloat16), gated=True)
    odd_packed, odd_scale, _ = _layer(33, 64, 32, seed=1)
    with pytest.raises(ValueError, match="N must be even"):
        w4a16_matmul(x, to_kernel_layout(odd_packed, 64), odd_scale, 32, gated=True)


@pytest.mark.parametrize("config", [
    {"BLOCK_M": 16, "BLOCK_N": 16, "SPLIT_K": 2},
    {"BLOCK_M": 16, "BLOCK_N": 32, "SPLIT_K": 1},
    {"GEMV": True, "BLOCK_N": 32, "BLOCK_K": 128, "SPLIT_K": 2},
    {"STRIP": True, "PAIRS": 8, "SEG": 8, "SPLIT_K": 3},
    {"DEQUANTIZE": True},
])
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_group_major_scales_zero_points_and_fp16(config: dict, dtype: torch.dtype) -> None:
    """Scales and zero points strided group-major, as Int4Linear holds them, and fp16 activations (whose codes
    take a different exponent trick than bf16's): the same result as the reference on the checkpoint layout."""
    n, k, group_size = 48, 256, 64
    weight = randn(n, k, seed=11, dtype=torch.float32, scale=0.05).cpu() - 0.01
    codes, scale, zero_point = quantize_weight(weight, 4, group_size, False, dtype)
    packed = pack_to_int32(codes, 4)
    x = randn(3, k, seed=12).to(dtype)
    group_major = [t.to(DEVICE).t().contiguous().t() for t in (scale.to(dtype), zero_point.to(torch.int8))]
    assert group_major[0].stride(0) == 1
    got = w4a16_matmul(x, to_kernel_layout(packed, k).to(DEVICE), group_major[0], group_size,
                       zero_point=group_major[1], config=config)
    assert got.dtype == dtype
    reference = w4a16_reference(x, packed.to(DEVICE), scale.to(dtype).to(DEVICE), group_size,
                                zero_point.to(torch.int8).to(DEVICE))
    assert relative_error(got, reference.float()) < 1e-2


def test_dequantized_weight_is_the_reference_weight() -> None:
    """The prefill path's dequantization pass, ragged N and asymmetric, against the plain-torch weight."""
    n, k, group_size = 75, 192, 64
    weight = randn(n, k, seed=21, dtype=torch.float32, scale=0.05).cpu() + 0.01
    codes, scale, zero_point = quantize_weight(weight, 4, group_size, False, torch.bfloat16)
    packed = pack_to_int32(codes, 4)
    expected = dequantize_int4(packed, scale.to(torch.bfloat16), group_size, k, zero_point.to(torch.int8))
    got = dequantize_to_kn(to_kernel_layout(packed, k).to(DEVICE), scale.to(torch.bfloat16).to(DEVICE), group_size,
                           torch.bfloat16, zero_point.to(torch.int8).to(DEVICE))
    assert got.shape == (k, n) and got.dtype == torch.bfloat16
    # one bf16 rounding step apart at most (the interpreter rounds its casts differently from the GPU)
    torch.testing.assert_close(got.float().cpu(), expected.T.float(), rtol=2 ** -7, atol=0)


@pytest.mark.parametrize(("group_size", "nibbles"), [(32, 1), (64, 2), (96, 1), (128, 4), (160, 1), (192, 1), (256, 4)])
def test_nibble_positions_share_a_scale_only_within_one_group(group_size: int, nibbles: int) -> None:
    assert group_nibbles(group_size) == nibbles


def test_each_kernel_is_tuned_per_row_count() -> None:
    """A GEMV tuned on the 8-row probe of kernels/fusion.py was once reused at one row, where it lost to the tile
    kernel (on an H200 at 4096 x 4096: 4 K slices tuned for 8 rows, 16 best for one)."""
    from kernels.w4a16 import _w4a16_autotuned
    from kernels.w4a16_gemv import _w4a16_gemv_autotuned
    from kernels.w4a16_strip_gemv import _w4a16_strip_autotuned

    assert "M" in _w4a16_gemv_autotuned.keys and "M_BUCKET" in _w4a16_autotuned.keys
    assert {"M", "N", "K"} <= set(_w4a16_strip_autotuned.keys)


def test_strip_configs_past_the_units_of_k_are_pruned() -> None:
    """A K slice with no unit of K to take would launch only to add zeros; a K of one quad block keeps at least
    one config."""
    from kernels.w4a16_strip_gemv import _STRIP_CONFIGS, _prune

    assert _prune(_STRIP_CONFIGS, {"K": 4096}) == _STRIP_CONFIGS  # 32 quad blocks: 32 units of 32 rows, 128 of 8
    kept = _prune(_STRIP_CONFIGS, {"K": 2048})
    assert kept == [c for c in _STRIP_CONFIGS if c.kwargs["SPLIT_K"] <= 16 * 32 // c.kwargs["SEG"]]
    assert 0 < len(kept) < len(_STRIP_CONFIGS)
    assert _prune(_STRIP_CONFIGS, {"K": 128}) == _STRIP_CONFIGS[:1]
