"""Compression methods by name; the recipe's `method` field picks one."""

from compress.methods.base import LinearInputs, Method, PrunedWeight, PruneMethod, QuantizedWeight, QuantizeMethod
from compress.methods.gptq import GPTQ
from compress.methods.pruning import SparseGPT, Wanda
from compress.methods.rtn import RTN
from compress.methods.smoothing import AWQ, SmoothQuant

METHODS: dict[str, type[Method]] = {
    "rtn": RTN,
    "gptq": GPTQ,
    "awq": AWQ,
    "smoothquant": SmoothQuant,
    "sparsegpt": SparseGPT,
    "wanda": Wanda,
}

__all__ = ["METHODS", "LinearInputs", "Method", "PruneMethod", "PrunedWeight", "QuantizeMethod", "QuantizedWeight"]
