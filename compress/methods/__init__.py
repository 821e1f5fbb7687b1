"""Compression methods by name; the recipe's `method` field picks one."""

from compress.methods.base import LayerMethod, QuantizedWeight
from compress.methods.gptq import GPTQ
from compress.methods.rtn import RTN

METHODS: dict[str, type[LayerMethod]] = {"rtn": RTN, "gptq": GPTQ}

__all__ = ["METHODS", "LayerMethod", "QuantizedWeight"]
