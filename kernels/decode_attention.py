"""Attention of one query token per sequence (a decode step) over a KV cache, for models whose query heads share
key/value heads (grouped-query, multi-query or plain multi-head attention).

Why a kernel of our own: at decode, transformers' SDPA path copies the cache once per query head of a group
(repeat_kv, when compiled) and cuDNN's flash kernel is built for long queries; on an H200 a Llama-3-8B layer's
attention and its copies took about 8 us, as long as a 4096 x 4096 W4A16 GEMV. Here one program per (sequence,
KV head, slice of the cache) runs the group's query heads (padded to 16 rows) against its slice with tensor-core
dots and an online softmax; the last slice of a head to finish merges the slices' partial results (flash-decoding),
so the step is one launch. Whole blocks of the cache that the mask excludes are not read, so a static cache longer
than the sequence costs little more than its mask."""

from __future__ import annotations

import functools
import math

import torch

from kernels.dependent_launch import allow_next_launch, launch_options, wait_for_previous
from kernels.split_k import count_in, reset_count, split_k_workspace
from kernels.triton_support import interpreted, require_triton, triton

if triton is not None:
    import triton.language as tl

BLOCK_N = 64  # cache positions per block (the unit the mask skips)
PROGRAMS_PER_SM = 1  # slices are added until the grid has about this many programs per SM
NUM_WARPS = 4
MERGE_SLICES = 4  # slices the merging program reads at once (their loads in flight together)
INTERPRETER_SMS = 4
# Register budgets beyond which ptxas spilled (bench/ptx_census.py counts spill stores): elements of the merge's
# [slices, heads x head size] tiles, and bytes of a block's tiles on NUM_WARPS warps (_block_bytes)
MERGE_ELEMENTS = 2048
BLOCK_BYTES = 51200


if triton is not None:

    @triton.jit
    def _decode_attention_kernel(
        q_ptr, k_ptr, v_ptr, mask_ptr, out_ptr, partial_ptr, lse_ptr, arrivals_ptr,
        kv_heads, length, blocks_per_slice, slices, scale_log2,
        stride_qb, stride_qh, stride_qd, stride_kb, stride_kh, stride_kn, stride_kd,
        stride_vb, stride_vh, stride_vn, stride_vd, stride_mb, stride_mn, stride_ob, stride_oh, stride_od,
        GROUP: tl.constexpr, HEAD_DIM: tl.constexpr, BLOCK_G: tl.constexpr, BLOCK_D: tl.constexpr,
        BLOCK_N: tl.constexpr, BLOCK_HEADS: tl.constexpr, MERGE: tl.constexpr, HAS_MASK: tl.constexpr,
        UPCAST: tl.constexpr,
        DEPENDENT: tl.constexpr,  # launched dependent on the previous kernel (kernels/dependent_launch.py)
    ):
        """Program (sequence x KV head, slice). Scores are kept in base 2 (scale_log2 = scale / ln 2). With one
        slice the program writes the output; with more it writes its normalized partial and log-sum-exp to
        `partial_ptr`/`lse_ptr`, and the last to arrive on the head's counter merges them and zeroes the counter
        again. A row with no allowed position gets zeros."""
        allow_next_launch(DEPENDENT)
        pid = tl.program_id(0)
        part = tl.program_id(1)
        b = pid // kv_heads
        kv_head = pid % kv_heads
        g = tl.arange(0, BLOCK_G)
        d = tl.arange(0, BLOCK_D)
        head_ok = g < GROUP
        d_ok = d < HEAD_DIM
        heads = kv_head * GROUP + g
        wait_for_previous(DEPENDENT)
        q = tl.load(q_ptr + b * stride_qb + heads[:, None] * stride_qh + d[None, :] * stride_qd,
                    mask=head_ok[:, None] & d_ok[None, :], other=0.0)
        if UPCAST:  # the interpreter's half-precision dots are checked in fp32
            q = q.to(tl.float32)
        best = tl.full([BLOCK_G], float("-inf"), tl.float32)
        total = tl.zeros([BLOCK_G], tl.float32)
        acc = tl.zeros([BLOCK_G, BLOCK_D], tl.float32)
        cache_b = b.to(tl.int64)  # a batch of long caches passes 2^31 elements
        k_base = k_ptr + cache_b * stride_kb + kv_head * stride_kh
        v_base = v_ptr + cache_b * stride_vb + kv_head * stride_vh
        for block in range(0, blocks_per_slice):
            n = (part * blocks_per_slice + block) * BLOCK_N + tl.arange(0, BLOCK_N)
            allowed = n < length
            if HAS_MASK:
                allowed = allowed & (tl.load(mask_ptr + b * stride_mb + n * stride_mn, mask=allowed, other=0) != 0)
            # excluded positions are predicated off: a block the mask excludes whole costs no memory traffic
            tile_ok = allowed[:, None] & d_ok[None, :]
            k = tl.load(k_base + n[:, None] * stride_kn + d[None, :] * stride_kd, mask=tile_ok, other=0.0)
            v = tl.load(v_base + n[:, None] * stride_vn + d[None, :] * stride_vd, mask=tile_ok, other=0.0)
            if UPCAST:
                k = k.to(tl.float32)
                v = v.to(tl.float32)
            scores = tl.where(allowed[None, :], tl.dot(q, tl.trans(k)) * scale_log2, float("-inf"))
            new_best = tl.maximum(best, tl.max(scores, 1))
            shift = tl.where(new_best == float("-inf"), 0.0, new_best)  # nothing allowed yet: weights stay 0
            weights = tl.exp2(scores - shift[:, None])
            rescale = tl.exp2(best - shift)
            total = total * rescale + tl.sum(weights, 1)
            acc = acc * rescale[:, None] + tl.dot(weights.to(v.dtype), v)
            best = new_best
        seen = total > 0
        result = tl.where(seen[:, None], acc / tl.where(seen, total, 1.0)[:, None], 0.0)
        rows = b * (kv_heads * GROUP) + heads  # the (sequence, query head) row of the partials
        out_ptrs = out_ptr + b * stride_ob + heads[:, None] * stride_oh + d[None, :] * stride_od
        out_mask = head_ok[:, None] & d_ok[None, :]
        if slices == 1:
            tl.store(out_ptrs, result.to(out_ptr.dtype.element_ty), mask=out_mask)
        else:
            tl.store(partial_ptr + (rows[:, None] * slices + part) * BLOCK_D + d[None, :], result, mask=out_mask)
            tl.store(lse_ptr + rows * slices + part, tl.where(seen, best + tl.log2(tl.where(seen, total, 1.0)),
                                                              float("-inf")), mask=head_ok)
            # the last to arrive merges: the group's heads flattened with the head size, MERGE slices at once
            if count_in(arrivals_ptr + pid) == slices - 1:
                e = tl.arange(0, BLOCK_HEADS * BLOCK_D)
                head_e, d_e = e // BLOCK_D, e % BLOCK_D
                e_ok = (head_e < GROUP) & (d_e < HEAD_DIM)
                rows_e = b * (kv_heads * GROUP) + kv_head * GROUP + head_e
                top = tl.full([BLOCK_HEADS * BLOCK_D], float("-inf"), tl.float32)
                merged_total = tl.zeros([BLOCK_HEADS * BLOCK_D], tl.float32)
                merged = tl.zeros([BLOCK_HEADS * BLOCK_D], tl.float32)
                for first in range(0, slices, MERGE):
                    other = first + tl.arange(0, MERGE)
                    ok = (other < slices)[:, None] & e_ok[None, :]
                    at = rows_e[None, :] * slices + other[:, None]
                    lse = tl.load(lse_ptr + at, mask=ok, other=float("-inf"), cache_modifier=".cg")
                    partial = tl.load(partial_ptr + at * BLOCK_D + d_e[None, :], mask=ok, other=0.0,
                                      cache_modifier=".cg")
                    new_top = tl.maximum(top, tl.max(lse, 0))
                    merge_shift = tl.where(new_top == float("-inf"), 0.0, new_top)  # empty slices (-inf) weigh 0
                    weight = tl.exp2(lse - merge_shift[None, :])
                    merge_rescale = tl.exp2(top - merge_shift)
                    merged_total = merged_total * merge_rescale + tl.sum(weight, 0)
                    merged = merged * merge_rescale + tl.sum(weight * partial, 0)
                    top = new_top
                merged_seen = merged_total > 0
                merged = tl.where(merged_seen, merged / tl.where(merged_seen, merged_total, 1.0), 0.0)
                tl.store(out_ptr + b * stride_ob + (kv_head * GROUP + head_e) * stride_oh + d_e * stride_od,
                         merged.to(out_ptr.dtype.element_ty), mask=e_ok)
                reset_count(arrivals_ptr + pid)


def _block_bytes(block_g: int, block_n: int, block_d: int) -> int:
    """Register bytes of a block's working tiles: the fp32 accumulator, K and V, and the fp32 scores."""
    return 4 * (block_g * block_d + block_n * block_d + block_g * block_n)


def kernel_config(group: int, head_dim: int) -> dict[str, int]:
    """The compile-time shape of the kernel for `group` query heads per key/value head of `head_dim`: blocks of
    BLOCK_N positions and MERGE_SLICES slices merged at once on NUM_WARPS warps (Llama-3's 4 x 128 on an H200);
    for larger heads or groups, shorter blocks (down to 32 positions), then twice the warps, and fewer slices
    merged at once, so that registers do not spill."""
    block_heads, block_d = triton.next_power_of_2(group), triton.next_power_of_2(head_dim)
    block_g = max(16, block_heads)  # the dots' rows
    block_n = BLOCK_N
    while block_n > 32 and _block_bytes(block_g, block_n, block_d) > BLOCK_BYTES:
        block_n //= 2
    return {"GROUP": group, "HEAD_DIM": head_dim, "BLOCK_G": block_g, "BLOCK_D": block_d, "BLOCK_N": block_n,
            "BLOCK_HEADS": block_heads, "MERGE": max(1, min(MERGE_SLICES, MERGE_ELEMENTS // (block_heads * block_d))),
            "num_warps": NUM_WARPS * (1 if _block_bytes(block_g, block_n, block_d) <= BLOCK_BYTES else 2)}


@functools.cache
def _sm_count(device: torch.device) -> int:
    if device.type != "cuda":
        return INTERPRETER_SMS
    return torch.cuda.get_device_properties(device).multi_processor_count


def slices_for(batch: int, kv_heads: int, length: int, device: torch.device, block_n: int) -> tuple[int, int]:
    """(blocks per slice, slices): the cache, in blocks of `block_n` positions, is cut into slices until the grid
    has about PROGRAMS_PER_SM programs per SM, each slice at least one block. A function of shapes only, so a
    captured graph keeps it."""
    blocks = -(-length // block_n)
    wanted = max(1, -(-PROGRAMS_PER_SM * _sm_count(device) // (batch * kv_heads)))
    per_slice = -(-blocks // min(blocks, wanted))
    return per_slice, -(-blocks // per_slice)


def unsupported(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, mask: torch.Tensor | None) -> str | None:
    """Why the kernel cannot take these operands, or None when it can."""
    if query.dim() != 4 or key.dim() != 4 or value.shape != key.shape:
        return (f"expected query [B, H, 1, D] and key, value [B, KV, L, D], got {tuple(query.shape)}, "
                f"{tuple(key.shape)}, {tuple(value.shape)}")
    batch, heads, tokens, head_dim = query.shape
    if tokens != 1 or key.shape[0] != batch or key.shape[3] != head_dim:
        return (f"one query token per sequence against a cache of the same batch and head size: query "
                f"{tuple(query.shape)}, key {tuple(key.shape)}")
    if heads % key.shape[1]:
        return f"{heads} query heads do not share {key.shape[1]} key/value heads evenly"
    if not (query.dtype == key.dtype == value.dtype) or query.dtype not in (torch.bfloat16, torch.float16):
        return f"query, key and value must all be bf16 or all fp16, got {query.dtype}, {key.dtype}, {value.dtype}"
    if head_dim > 256:
        return f"head size {head_dim} is over 256"
    if mask is not None and (mask.dtype != torch.bool or mask.dim() != 4 or mask.shape[1:3] != (1, 1)
                             or mask.shape[0] not in (1, batch) or mask.shape[3] != key.shape[2]):
        return f"the mask must be bool [B or 1, 1, 1, L={key.shape[2]}], got {mask.dtype} {tuple(mask.shape)}"
    return None


def decode_attention(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, mask: torch.Tensor | None,
                     scale: float, out: torch.Tensor | None = None) -> torch.Tensor:
    """softmax(q kᵀ · scale, masked) v for query [B, H, 1, D] against key, value [B, KV, L, D] (H a multiple of
    KV; query head h reads KV head h // (H / KV)); `mask` bool [B or 1, 1, 1, L], True where a position is
    attended, or None for all L. Returns `out` [B, 1, H, D], the layout transformers' attention functions
    return."""
    require_triton()
    reason = unsupported(query, key, value, mask)
    if reason is not None:
        raise ValueError(reason)
    batch, heads, _, head_dim = query.shape
    kv_heads, length = key.shape[1], key.shape[2]
    group = heads // kv_heads
    if out is None:
        out = torch.empty(batch, 1, heads, head_dim, device=query.device, dtype=query.dtype)
    elif out.shape != (batch, 1, heads, head_dim) or out.dtype != query.dtype:
        raise ValueError(f"out must be {query.dtype} [{batch}, 1, {heads}, {head_dim}], got {out.dtype} "
                         f"{tuple(out.shape)}")
    config = kernel_config(group, head_dim)
    per_slice, slices = slices_for(batch, kv_heads, length, query.device, config["BLOCK_N"])
    block_d = triton.next_power_of_2(head_dim)  # the partials' row length
    partials = torch.empty(batch * heads * slices * block_d if slices > 1 else 1, device=query.device,
                           dtype=torch.float32)
    lse = torch.empty(batch * heads * slices if slices > 1 else 1, device=query.device, dtype=torch.float32)
    arrivals = split_k_workspace(query.device, 1, batch * kv_heads)[1]
    mask_bytes = mask.view(torch.uint8) if mask is not None else query
    mask_strides = (mask.stride(0) if mask.shape[0] > 1 else 0, mask.stride(3)) if mask is not None else (0, 0)
    _decode_attention_kernel[(batch * kv_heads, slices)](
        query, key, value, mask_bytes, out, partials, lse, arrivals,
        kv_heads, length, per_slice, slices, scale / math.log(2),
        query.stride(0), query.stride(1), query.stride(3), *key.stride(), *value.stride(), *mask_strides,
        out.stride(0), out.stride(2), out.stride(3),
        HAS_MASK=mask is not None, UPCAST=interpreted(), **config, **launch_options(query.device),
    )
    return out


def decode_attention_reference(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                               mask: torch.Tensor | None, scale: float) -> torch.Tensor:
    """decode_attention in plain torch, fp32 inside: every query head against its KV head's cache; a row with
    no attended position gives zeros."""
    batch, heads, _, head_dim = query.shape
    group = heads // key.shape[1]
    keys = key.float().repeat_interleave(group, dim=1)
    values = value.float().repeat_interleave(group, dim=1)
    scores = (query.float() @ keys.transpose(-1, -2)) * scale  # [B, H, 1, L]
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    weights = torch.softmax(scores, -1).nan_to_num(0.0)
    return (weights @ values).transpose(1, 2).to(query.dtype)
