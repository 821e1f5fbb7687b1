"""The fused GPTQ block kernel against its plain-torch reference (Triton's interpreter on CPU in CI)."""

from __future__ import annotations

import pytest
import torch

from compress.methods.hessian import HessianAccumulator, inverse_hessian_factor
from compress.quantize import quant_range, quantize_weight
from kernels.gptq_block import quantize_block, quantize_block_reference

DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")


def _problem(rows: int, columns: int, group_size: int, bits: int, symmetric: bool, seed: int) -> dict:
    generator = torch.Generator().manual_seed(seed)
    inputs = torch.randn(4 * columns, columns, generator=generator) @ torch.randn(columns, columns, generator=generator)
    accumulator = HessianAccumulator(columns, torch.device("cpu"))
    accumulator.add(inputs)
    h_inv = inverse_hessian_factor(accumulator.hessian, 0.01)
    block = torch.randn(rows, columns, generator=generator) * 0.05
    _, scale, zero_point = quantize_weight(block, bits, group_size, symmetric, torch.bfloat16)
    order = torch.randperm(columns, generator=generator)  # act-order: groups visited out of order
    q_min, q_max = quant_range(bits)
    return dict(block=block[:, order].to(DEVICE), h_inv_block=h_inv.to(DEVICE), scale=scale.to(DEVICE),
                zero_point=zero_point.float().to(DEVICE), column_group=(order // group_size).to(DEVICE),
                q_min=q_min, q_max=q_max)


@pytest.mark.parametrize(
    ("rows", "columns", "group_size", "bits", "symmetric", "with_pruned"),
    [(37, 32, 8, 4, True, False), (16, 19, 19, 3, False, False), (50, 24, 8, 8, True, True),
     (5, 64, 16, 4, False, True)],
)
def test_kernel_matches_the_reference(rows, columns, group_size, bits, symmetric, with_pruned) -> None:  # type: ignore[no-untyped-def]
    problem = _problem(rows, columns, group_size, bits, symmetric, seed=rows * columns)
    if with_pruned:
        problem["pruned"] = torch.rand(rows, columns, generator=torch.Generator().manual_seed(1)).to(DEVICE) < 0.5
    expected_codes, expected_errors = quantize_block_reference(**problem)
    codes, errors = quantize_block(**problem)
    assert torch.isfinite(codes).all() and torch.isfinite(errors).all()
    agree = (codes == expected_codes).float().mean().item()
    assert agree > 0.995, f"only {agree:.4f} of the codes agree"
    torch.testing.assert_close(errors[codes == expected_codes], expected_errors[codes == expected_codes],
                               rtol=1e-3, atol=1e-4)
    if with_pruned:
        zero = problem["zero_point"][:, problem["column_group"].long()]
        assert torch.equal(codes[problem["pruned"]], zero[problem["pruned"]])


def test_block_is_not_modified_and_bad_arguments_are_refused() -> None:
    problem = _problem(8, 16, 8, 4, True, seed=3)
    before = problem["block"].clone()
    quantize_block(**problem)
    assert torch.equal(problem["block"], before)
    with pytest.raises(ValueError, match="h_inv_block"):
        quantize_block(**{**problem, "h_inv_block": problem["h_inv_block"].double()})
    with pytest.raises(ValueError, match="column_group"):
        quantize_block(**{**problem, "column_group": problem["column_group"][:-1]})
