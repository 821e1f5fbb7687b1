"""Fused Triton kernels for compressed layers (dequantize-matmul, activation quantization)."""
