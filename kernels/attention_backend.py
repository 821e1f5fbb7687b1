"""Shrinkray's decode attention as a transformers attention backend: registered under DECODE_ATTENTION, a model
switched to it (use_decode_attention) runs kernels/decode_attention.py for every one-token query step and
transformers' SDPA for everything else (prefill, a float or per-head mask, attention biases), so a model that runs
on SDPA through transformers' attention interface can take it and computes nothing differently for it."""

from __future__ import annotations

import logging

import torch
from torch import nn
from transformers import AttentionInterface, PreTrainedModel
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

from kernels.decode_attention import unsupported
from kernels.ops import decode_attention_op
from kernels.self_check import KernelMismatch, check_decode_attention
from kernels.triton_support import interpreted, triton_available

DECODE_ATTENTION = "shrinkray_decode"
# keyword arguments whose presence changes what attention computes beyond a mask; SDPA handles them (or refuses)
_SDPA_ONLY = ("softcap", "position_bias", "s_aux", "sinks", "output_attentions")

log = logging.getLogger(__name__)


def kernel_runs_on(device: torch.device) -> bool:
    """Whether decode steps on `device` reach the kernel (CUDA, or Triton's interpreter as in the tests)."""
    return triton_available() and (device.type == "cuda" or interpreted())


def attention_in_use(model: PreTrainedModel, device: torch.device) -> str:
    """The attention a model's decode steps run on `device`, as reports name it: DECODE_ATTENTION only where the
    kernel runs there (elsewhere a switched model's steps go to SDPA)."""
    name = model.config._attn_implementation
    return "sdpa" if name == DECODE_ATTENTION and not kernel_runs_on(device) else name


def _runs_kernel(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, mask: torch.Tensor | None,
                 dropout: float, kwargs: dict) -> bool:
    """Whether this call is a decode step the kernel computes exactly as SDPA would."""
    if not kernel_runs_on(query.device):
        return False
    if dropout or any(kwargs.get(name) for name in _SDPA_ONLY):
        return False
    return unsupported(query, key, value, mask) is None


def decode_attention_forward(module: nn.Module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                             attention_mask: torch.Tensor | None, dropout: float = 0.0, scaling: float | None = None,
                             **kwargs: object) -> tuple[torch.Tensor, None]:
    """A transformers attention function: (output [B, q, H, D], no weights)."""
    if not _runs_kernel(query, key, value, attention_mask, dropout, kwargs):
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling,
                                      **kwargs)
    scale = scaling if scaling is not None else query.shape[-1] ** -0.5
    return decode_attention_op(query, key, value, attention_mask, scale), None


@torch.library.custom_op("shrinkray::materialized_mask", mutates_args=())
def materialized_mask(mask: torch.Tensor) -> torch.Tensor:
    """A copy of `mask` that torch.compile cannot see into."""
    return mask.clone()


@materialized_mask.register_fake
def _(mask):  # type: ignore[no-untyped-def]
    return torch.empty_like(mask)


def decode_attention_mask(*args: object, **kwargs: object) -> torch.Tensor | None:
    """The boolean mask SDPA gets (transformers' sdpa_mask), computed once per forward. A model builds its mask
    once for all layers, but in a compiled step inductor folded that computation into each layer's attention
    inputs: one more kernel per layer and decode step. Under torch.compile the mask therefore passes through an
    operator inductor cannot fuse across, so it is computed once and every layer reads it."""
    mask = sdpa_mask(*args, **kwargs)
    if isinstance(mask, torch.Tensor) and torch.compiler.is_compiling():
        return materialized_mask(mask)
    return mask


def _register() -> None:
    AttentionInterface.register(DECODE_ATTENTION, decode_attention_forward)
    AttentionMaskInterface.register(DECODE_ATTENTION, decode_attention_mask)


def _check_heads(model: PreTrainedModel) -> None:
    """The kernel against its reference for the model's head layout and dtype on its device (self_check.py),
    raising ValueError for what it does not take; nothing to check where the kernel does not run."""
    device = model.get_input_embeddings().weight.device
    if not kernel_runs_on(device):
        return
    config = model.config.get_text_config()
    heads = config.num_attention_heads
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // heads
    kv_heads = getattr(config, "num_key_value_heads", None) or heads
    check_decode_attention(heads, kv_heads, head_dim, model.dtype, device)  # fp32 is refused: it never runs


def use_decode_attention(model: PreTrainedModel) -> bool:
    """Switch a model that runs on SDPA to DECODE_ATTENTION; returns whether it was switched. Models on another
    backend keep it (eager is what transformers picks for the attention SDPA cannot compute, e.g. soft caps),
    and so do models with attention code of their own, and models whose heads the kernel does not take or for
    which it disagrees with its reference on their device (a warning says why)."""
    _register()
    current = model.config._attn_implementation
    if current != "sdpa" or not model._can_set_attn_implementation():
        log.info("%s keeps its %s attention", type(model).__name__, current)
        return False
    try:
        _check_heads(model)
    except (KernelMismatch, ValueError) as reason:  # wrong on this GPU, or heads the kernel does not take
        log.warning("%s keeps SDPA attention: %s", type(model).__name__, reason)
        return False
    model.set_attn_implementation(DECODE_ATTENTION)
    return model.config._attn_implementation == DECODE_ATTENTION
