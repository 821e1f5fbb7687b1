"""Linear layers that run on compressed weights, one class per kernel. Each builds its kernel layout once from
the tensors a compressed-tensors checkpoint holds, runs the Triton kernel (through its torch operator, so
torch.compile and CUDA graphs see one opaque call) on CUDA or in Triton's interpreter, as in CI, and otherwise
its plain-torch reference, so a loaded model works anywhere and is fast on a GPU."""

from __future__ import annotations

import torch
from torch import nn

from kernels.act_quant import quantize_per_token_reference
from kernels.gated import gate_pairs_reference
from kernels.int4_layout import dequantize_codes, pack_kernel_layout, unpack_kernel_layout
from kernels.ops import quantize_per_token_op, scaled_matmul_op, sparse24_op, w4a16_op
from kernels.sparse24 import sparse24_reference
from kernels.sparse24_layout import compress_24, from_kernel_layout_24, to_kernel_layout_24
from kernels.triton_support import interpreted, triton_available
from kernels.w8a8 import fp8_tensor_cores, scaled_matmul_reference


def uses_kernel(x: torch.Tensor) -> bool:
    """Whether x's device runs the Triton kernels (CUDA, or Triton's CPU interpreter)."""
    return triton_available() and (x.is_cuda or interpreted())


def _optional_buffer(module: nn.Module, name: str, value: torch.Tensor | None) -> None:
    module.register_buffer(name, value.contiguous() if value is not None else None)


def _group_major(tensor: torch.Tensor) -> torch.Tensor:
    """[N, G] with column-major strides (N contiguous)."""
    return tensor.t().contiguous().t()


class CompressedLinear(nn.Module):
    """Flattens leading dimensions, runs the kernel (or where there is none, the plain-torch reference) on
    [M, K] and restores them; `kernel` names what runs, `dtype` is the activations' dtype."""

    kernel = "dense"

    def __init__(self, in_features: int, out_features: int, bias: torch.Tensor | None, dtype: torch.dtype) -> None:
        super().__init__()
        self.in_features = in_features
        self.out_features = out_features
        self.dtype = dtype
        _optional_buffer(self, "bias", bias.to(dtype) if bias is not None else None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x2 = x.reshape(-1, self.in_features)
        if x2.stride(-1) != 1:
            x2 = x2.contiguous()
        y = self.run_kernel(x2) if uses_kernel(x2) else self.run_reference(x2)
        return y.view(*x.shape[:-1], self.out_features)

    def run_kernel(self, x: torch.Tensor) -> torch.Tensor:
        """[M, K] through the Triton kernel."""
        raise NotImplementedError

    def run_reference(self, x: torch.Tensor) -> torch.Tensor:
        """[M, K] through plain torch, in fp32 before the cast to x's dtype."""
        raise NotImplementedError

    def fuses_with(self, other: nn.Module) -> bool:
        """Whether one kernel call over both layers' stacked output columns computes both (kernels/fusion.py)."""
        return False

    def dense_shape(self) -> tuple[int, int]:
        """[out, in] of the dense weight this layer's matmul stands for (what a speed report compares it with)."""
        return self.out_features, self.in_features

    def _same_call(self, other: nn.Module) -> bool:
        return type(other) is type(self) and other.in_features == self.in_features and other.dtype == self.dtype

    @staticmethod
    def _stacked_bias(linears: list[CompressedLinear]) -> torch.Tensor | None:
        """The layers' biases one after another (zeros for a layer without), or None if none has one."""
        if all(linear.bias is None for linear in linears):
            return None
        device = next(linears[0].buffers()).device
        return torch.cat([linear.bias if linear.bias is not None else
                          torch.zeros(linear.out_features, dtype=linear.dtype, device=device) for linear in linears])

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, kernel={self.kernel}"


class Int4Linear(CompressedLinear):
    """W4A16: int4 codes in groups along K with bf16/fp16 scales (and int8 zero points when asymmetric)."""

    kernel = "w4a16"

    def __init__(self, codes: torch.Tensor, scale: torch.Tensor, group_size: int,
                 zero_point: torch.Tensor | None = None, bias: torch.Tensor | None = None,
                 group_index: torch.Tensor | None = None, dtype: torch.dtype = torch.bfloat16,
                 gated: bool = False) -> None:
        """codes int8 [N, K] in [-8, 7]; group_index [K] (act order) maps each input column to its group.
        `gated`: the rows are a gated MLP's (gate, up) pairs and the layer computes silu(gate) * up, N / 2
        features (Int4Linear.gated_pair)."""
        n, k = codes.shape
        super().__init__(k, n // 2 if gated else n, bias, dtype)
        self.gated = gated
        if gated:
            self.kernel = "w4a16-gated"
        self.group_size = group_size
        permutation = None
        if group_index is not None and not torch.equal(
                group_index.cpu(), torch.arange(k) // group_size):
            # act order with dynamic groups: sort the columns by group so every group is contiguous again, and
            # gather x's columns the same way at run time
            permutation = torch.argsort(group_index.to(torch.int64), stable=True)
            codes = codes[:, permutation.to(codes.device)]
        _optional_buffer(self, "permutation", permutation.to(codes.device) if permutation is not None else None)
        self.register_buffer("packed", pack_kernel_layout(codes))  # kernels/int4_layout.py
        # scales and zero points group-major ([K / G, N] in memory, seen as [N, K / G]): the kernels read a
        # tile's N scales of one group as one contiguous row instead of N strided gathers
        self.register_buffer("scale", _group_major(scale.to(dtype)))
        self.register_buffer("zero_point", _group_major(zero_point.to(torch.int8)) if zero_point is not None else None)

    def fuses_with(self, other: nn.Module) -> bool:
        if not (self._same_call(other) and other.group_size == self.group_size
                and (other.zero_point is None) == (self.zero_point is None)):
            return False
        if self.permutation is None or other.permutation is None:
            return self.permutation is other.permutation
        return torch.equal(self.permutation, other.permutation)

    @classmethod
    def stacked(cls, linears: list[Int4Linear]) -> Int4Linear:
        """One layer with the output columns of `linears` (which all fuse with the first) one after another."""
        first = linears[0]
        codes = torch.cat([unpack_kernel_layout(linear.packed, linear.in_features, linear.out_features)
                           for linear in linears])
        zero = torch.cat([linear.zero_point for linear in linears]) if first.zero_point is not None else None
        stacked = cls(codes, torch.cat([linear.scale for linear in linears]), first.group_size, zero,
                      cls._stacked_bias(linears), dtype=first.dtype)
        # the codes are already in the layers' (shared) act-order column order: x is gathered the same way
        stacked.permutation = first.permutation
        return stacked

    @classmethod
    def gated_pair(cls, gate: Int4Linear, up: Int4Linear) -> Int4Linear:
        """One layer computing silu(gate(x)) * up(x) (gate fuses with up): their rows interleaved, gate then up,
        so that each column pair of the kernel layout is one output feature's (gate, up) and the decode GEMVs
        apply the activation as they store."""

        def interleaved(first: torch.Tensor, second: torch.Tensor) -> torch.Tensor:
            return torch.stack([first, second], 1).reshape(-1, *first.shape[1:])

        codes = [unpack_kernel_layout(linear.packed, linear.in_features, linear.out_features) for linear in (gate, up)]
        zero = interleaved(gate.zero_point, up.zero_point) if gate.zero_point is not None else None
        bias = cls._stacked_bias([gate, up])
        paired = cls(interleaved(*codes), interleaved(gate.scale, up.scale), gate.group_size, zero,
                     interleaved(*bias.chunk(2)) if bias is not None else None, dtype=gate.dtype, gated=True)
        paired.permutation = gate.permutation  # the codes are already in the (shared) act-order column order
        return paired

    def dense_shape(self) -> tuple[int, int]:
        return (2 if self.gated else 1) * self.out_features, self.in_features

    def _permuted(self, x: torch.Tensor) -> torch.Tensor:
        return x if self.permutation is None else x.index_select(-1, self.permutation)

    def run_kernel(self, x: torch.Tensor) -> torch.Tensor:
        return w4a16_op(self._permuted(x), self.packed, self.scale, self.group_size, self.zero_point, self.bias,
                        self.gated)

    def run_reference(self, x: torch.Tensor) -> torch.Tensor:
        x = self._permuted(x)
        rows = self.dense_shape()[0]
        codes = unpack_kernel_layout(self.packed, self.in_features, rows)
        weight = dequantize_codes(codes, self.scale, self.group_size, self.zero_point)
        y = x.float() @ weight.T
        y = y if self.bias is None else y + self.bias.float()
        return (gate_pairs_reference(y) if self.gated else y).to(x.dtype)


class Int8Linear(CompressedLinear):
    """8-bit weights (int8 or FP8 E4M3) with per-channel scales; activations either quantized per token
    to the same type on the fly (W8A8) or kept bf16/fp16 (W8A16). On a GPU without FP8 tensor cores FP8 W8A8
    runs weight-only, as vLLM runs it there: activations stay bf16/fp16, which only removes a rounding."""

    def __init__(self, weight: torch.Tensor, scale: torch.Tensor, quantize_activations: bool,
                 bias: torch.Tensor | None = None, dtype: torch.dtype = torch.bfloat16) -> None:
        n, k = weight.shape
        super().__init__(k, n, bias, dtype)
        self.quantize_activations = quantize_activations
        self.register_buffer("weight", weight.contiguous())
        self.register_buffer("weight_scale", scale.float().reshape(-1).expand(n).contiguous())

    @property
    def kernel(self) -> str:  # type: ignore[override]
        """What runs on the device the weights are on now."""
        kind = "int8" if self.weight.dtype == torch.int8 else "fp8"
        return f"{'w8a8' if self._quantizes_activations() else 'w8a16'}-{kind}"

    def _quantizes_activations(self) -> bool:
        return self.quantize_activations and (self.weight.dtype == torch.int8 or fp8_tensor_cores(self.weight.device))

    def fuses_with(self, other: nn.Module) -> bool:
        """One per-token quantization of x then serves every fused layer."""
        return (self._same_call(other) and other.weight.dtype == self.weight.dtype
                and other.quantize_activations == self.quantize_activations)

    @classmethod
    def stacked(cls, linears: list[Int8Linear]) -> Int8Linear:
        """One layer with the output columns of `linears` (which all fuse with the first) one after another."""
        first = linears[0]
        return cls(torch.cat([linear.weight for linear in linears]),
                   torch.cat([linear.weight_scale for linear in linears]), first.quantize_activations,
                   cls._stacked_bias(linears), first.dtype)

    def run_kernel(self, x: torch.Tensor) -> torch.Tensor:
        codes, scales = quantize_per_token_op(x, self.weight.dtype) if self._quantizes_activations() else (x, None)
        return scaled_matmul_op(codes, scales, self.weight, self.weight_scale, x.dtype, self.bias)

    def run_reference(self, x: torch.Tensor) -> torch.Tensor:
        codes, scales = (quantize_per_token_reference(x, self.weight.dtype) if self._quantizes_activations()
                         else (x, None))
        return scaled_matmul_reference(codes, scales, self.weight, self.weight_scale, x.dtype, self.bias)


class Sparse24Linear(CompressedLinear):
    """2:4 sparse weights stored compressed: bf16/fp16 values, or int4 codes with group scales."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None = None, scale: torch.Tensor | None = None,
                 group_size: int = 0, dtype: torch.dtype = torch.bfloat16) -> None:
        """weight: the dense [N, K] weight, or with `scale` its int8 codes in [-8, 7] (zeros where pruned)."""
        n, k = weight.shape
        super().__init__(k, n, bias, dtype)
        self.group_size = group_size
        self.kernel = "2:4-w4a16" if scale is not None else "2:4"
        words, positions = to_kernel_layout_24(*compress_24(weight if scale is not None else weight.to(dtype)))
        self.register_buffer("words", words)
        self.register_buffer("positions", positions)
        # group-major, as Int4Linear's: a tile's (or a GEMV step's) scales of one group are contiguous along N
        self.register_buffer("scale", _group_major(scale.to(dtype)) if scale is not None else None)

    def run_kernel(self, x: torch.Tensor) -> torch.Tensor:
        return sparse24_op(x, self.words, self.positions, self.scale, self.group_size, self.bias)

    def run_reference(self, x: torch.Tensor) -> torch.Tensor:
        return sparse24_reference(x, *self._storage(), self.scale, self.group_size, self.bias)

    def _storage(self) -> tuple[torch.Tensor, torch.Tensor]:
        """compress_24's [N, ...] layout back from the kernel layout, for the reference path."""
        return from_kernel_layout_24(self.words, self.positions, self.in_features, self.dtype)
