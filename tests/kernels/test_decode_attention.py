"""Decode attention (kernels/decode_attention.py) against its fp32 reference in Triton's interpreter (on CUDA when
present), and the transformers backend that runs it (kernels/attention_backend.py) inside real decoders."""

from __future__ import annotations

import contextlib
import logging
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from transformers.integrations.sdpa_attention import sdpa_attention_forward

import kernels.decode_attention as decode_attention_module
import kernels.ops as ops
import kernels.self_check as self_check
from compress.model_io import load_model
from kernels.attention_backend import (
    DECODE_ATTENTION,
    attention_in_use,
    decode_attention_forward,
    use_decode_attention,
)
from kernels.decode_attention import (
    MERGE_SLICES,
    decode_attention,
    decode_attention_reference,
    kernel_config,
    slices_for,
)
from kernels.decoding import GreedyDecoder
from tests.compress.conftest import build_random_model
from tests.kernels.helpers import DEVICE, poisoned, randn, relative_error

# output rounding alone is up to 2^-9 (bf16) or 2^-12 (fp16) of each element
BOUNDS = {torch.bfloat16: 1e-2, torch.float16: 2e-3}
# batch, query heads, key/value heads, cache length, head size, dtype
CASES = [
    (1, 8, 2, 70, 64, torch.bfloat16),  # grouped heads, a ragged last block
    (2, 6, 6, 130, 32, torch.float16),  # one query head per key/value head
    (3, 4, 1, 200, 48, torch.bfloat16),  # one key/value head for all, a head size that is not a power of two
    (1, 16, 2, 300, 128, torch.bfloat16),  # several slices merged
    (2, 4, 2, 100, 256, torch.bfloat16),  # a head size of 256: blocks of 32 positions
    (1, 64, 1, 90, 128, torch.float16),  # 64 query heads on one key/value head: 8 warps, one slice merged at once
]


def _masks(batch: int, length: int, seed: int) -> dict[str, torch.Tensor | None]:
    generator = torch.Generator().manual_seed(seed)
    positions = torch.arange(length)
    used = torch.randint(1, length + 1, (batch,), generator=generator)
    lengths = positions[None] < used[:, None]
    window = lengths & (positions[None] >= used[:, None] - 37)  # a sliding window: the oldest positions dropped
    masks = {"none": None, "lengths": lengths, "window": window, "shared": lengths[:1]}  # one row for the batch
    if batch > 1:
        masks["one empty"] = lengths.clone()
        masks["one empty"][0] = False  # a sequence with nothing to attend to
    return masks


def _as_mask(rows: torch.Tensor | None) -> torch.Tensor | None:
    return None if rows is None else rows[:, None, None, :].to(DEVICE)


@pytest.mark.parametrize("case", CASES, ids=lambda case: "x".join(map(str, case[:5])))
def test_decode_attention_matches_the_reference(case: tuple) -> None:
    batch, heads, kv_heads, length, head_dim, dtype = case
    seed = sum(case[:5])
    query = randn(batch, heads, 1, head_dim, seed=seed, dtype=dtype)
    key = randn(batch, kv_heads, length, head_dim, seed=seed + 1, dtype=dtype)
    value = randn(batch, kv_heads, length, head_dim, seed=seed + 2, dtype=dtype)
    scale = head_dim ** -0.5 * 2  # sharper than usual, so a wrong softmax shows
    for name, rows in _masks(batch, length, seed).items():
        mask = _as_mask(rows)
        out = decode_attention(query, key, value, mask, scale, out=poisoned(batch, 1, heads, head_dim, dtype=dtype))
        expected = decode_attention_reference(query, key, value, mask, scale)
        assert out.shape == (batch, 1, heads, head_dim) and not out.isnan().any(), name
        assert relative_error(out, expected) < BOUNDS[dtype], (name, relative_error(out, expected))
        if name == "one empty":
            assert torch.equal(out[0], torch.zeros_like(out[0]))


def test_several_slices_are_merged() -> None:
    """The case above that runs several slices really does (otherwise merging is untested), and the large heads
    above take the shorter blocks and the narrower merge."""
    assert kernel_config(2, 256)["BLOCK_N"] == 32 and kernel_config(64, 128)["MERGE"] == 1
    assert slices_for(1, 2, 300, torch.device(DEVICE), kernel_config(8, 128)["BLOCK_N"])[1] > 1


def test_more_slices_than_one_merge_step_reads(monkeypatch: pytest.MonkeyPatch) -> None:
    """A long cache cut into more slices than the merge reads at once, some of them empty under the mask."""
    monkeypatch.setattr(decode_attention_module, "PROGRAMS_PER_SM", 64)
    batch, heads, kv_heads, length, head_dim = 2, 4, 1, 1100, 32
    block_n = kernel_config(heads // kv_heads, head_dim)["BLOCK_N"]
    assert slices_for(batch, kv_heads, length, torch.device(DEVICE), block_n)[1] > 2 * MERGE_SLICES
    query = randn(batch, heads, 1, head_dim, seed=11)
    key = randn(batch, kv_heads, length, head_dim, seed=12)
    value = randn(batch, kv_heads, length, head_dim, seed=13)
    for rows in _masks(batch, length, seed=3).values():
        mask = _as_mask(rows)
        out = decode_attention(query, key, value, mask, head_dim ** -0.5)
        assert relative_error(out, decode_attention_reference(query, key, value, mask, head_dim ** -0.5)) < 1e-2


def test_excluded_positions_are_never_read() -> None:
    """NaN keys and values where the mask excludes positions (whole blocks and parts of blocks) leave the output
    finite and equal to attention over the rest."""
    batch, heads, kv_heads, length, head_dim = 2, 8, 2, 260, 64
    query = randn(batch, heads, 1, head_dim, seed=5)
    key = randn(batch, kv_heads, length, head_dim, seed=6)
    value = randn(batch, kv_heads, length, head_dim, seed=7)
    rows = torch.zeros(batch, length, dtype=torch.bool)
    rows[0, 3:90] = True  # the first block in part, the rest of the cache not at all
    rows[1, 130:200] = True
    mask = _as_mask(rows)
    expected = decode_attention_reference(query, key, value, mask, head_dim ** -0.5)
    excluded = ~rows.to(DEVICE)[:, None, :, None]
    out = decode_attention(query, key.masked_fill(excluded, float("nan")), value.masked_fill(excluded, float("nan")),
                           mask, head_dim ** -0.5)
    assert not out.isnan().any()
    assert relative_error(out, expected) < BOUNDS[torch.bfloat16]


@pytest.mark.parametrize(("query_shape", "key_shape", "mask_shape", "message"), [
    ((1, 8, 2, 64), (1, 2, 10, 64), None, "one query token"),
    ((1, 8, 1, 64), (1, 3, 10, 64), None, "evenly"),
    ((1, 8, 1, 64), (2, 2, 10, 64), None, "same batch"),
    ((1, 8, 1, 64), (1, 2, 10, 64), (1, 1, 1, 9), "the mask must be"),
    ((1, 8, 1, 512), (1, 2, 10, 512), None, "over 256"),
])
def test_bad_shapes_are_refused(query_shape: tuple, key_shape: tuple, mask_shape: tuple | None,
                                message: str) -> None:
    query, key = torch.zeros(query_shape, dtype=torch.bfloat16), torch.zeros(key_shape, dtype=torch.bfloat16)
    mask = torch.ones(mask_shape, dtype=torch.bool) if mask_shape else None
    with pytest.raises(ValueError, match=message):
        decode_attention(query, key, key, mask, 1.0)
    with pytest.raises(ValueError, match="bf16 or all fp16"):
        decode_attention(torch.zeros(1, 8, 1, 64), torch.zeros(1, 2, 10, 64), torch.zeros(1, 2, 10, 64), None, 1.0)


def _count_kernel_calls(monkeypatch: pytest.MonkeyPatch, masks: list | None = None) -> list[int]:
    """Counts launches inside the operator's body, which runs as it is even in a compiled step (and appends the
    address of each call's mask to `masks`)."""
    calls = [0]
    kernel = ops.decode_attention

    def counted(*args: object) -> torch.Tensor:
        calls[0] += 1
        if masks is not None:
            masks.append(args[3].data_ptr())
        return kernel(*args)

    monkeypatch.setattr(ops, "decode_attention", counted)
    return calls


@pytest.mark.parametrize(("model_type", "fields"), [
    ("llama", {}),
    ("qwen2", {}),  # biased q/k/v projections
    ("mistral", {"sliding_window": 6}),  # a window shorter than the prompt: the mask drops the oldest positions
])
def test_decoders_on_the_backend_decode_as_on_sdpa(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                   model_type: str, fields: dict) -> None:
    """The first decode step's logits within bf16 rounding of SDPA's, with the kernel run once per layer and
    decode step and never for the prefill."""
    layers, steps = 2, 3
    model, _ = load_model(build_random_model(tmp_path / model_type, model_type, layers, **fields),
                          dtype=torch.bfloat16)
    model.to(DEVICE)
    prompt = torch.randint(0, model.config.vocab_size, (2, 9), generator=torch.Generator().manual_seed(0)).to(DEVICE)
    on_sdpa = GreedyDecoder(model, prompt, steps).first_step_logits()
    calls = _count_kernel_calls(monkeypatch)
    assert use_decode_attention(model) and model.config._attn_implementation == DECODE_ATTENTION
    assert attention_in_use(model, torch.device(DEVICE)) == DECODE_ATTENTION  # CUDA, or the interpreter
    decoder = GreedyDecoder(model, prompt, steps)
    assert relative_error(decoder.first_step_logits(), on_sdpa) < 2e-2
    calls[0] = 0
    decoder.decode()
    assert calls[0] == layers * steps


def test_what_the_kernel_does_not_compute_goes_to_sdpa(monkeypatch: pytest.MonkeyPatch) -> None:
    """A float mask, several query tokens, a soft cap or dropout: transformers' SDPA function answers, not the
    kernel; a one-token step with a boolean mask takes the kernel."""
    module = SimpleNamespace(num_key_value_groups=2, is_causal=True, training=False)
    query, key = randn(1, 4, 1, 32, seed=1), randn(1, 2, 20, 32, seed=2)
    mask = torch.ones(1, 1, 1, 20, dtype=torch.bool, device=DEVICE)
    calls = _count_kernel_calls(monkeypatch)
    for arguments, kwargs in [
        ((query, key, key, torch.zeros(1, 1, 1, 20, dtype=torch.bfloat16, device=DEVICE)), {}),
        ((randn(1, 4, 3, 32, seed=3), key, key, None), {}),
        ((query, key, key, mask), {"dropout": 0.1}),
        ((query, key, key, mask), {"softcap": 30.0}),
    ]:
        with contextlib.suppress(ValueError):  # SDPA itself refuses a soft cap
            decode_attention_forward(module, *arguments, **kwargs)
    assert calls[0] == 0
    out, _ = decode_attention_forward(module, query, key, key, mask, scaling=0.2)
    expected, _ = sdpa_attention_forward(module, query, key, key, mask, scaling=0.2)
    assert calls[0] == 1 and relative_error(out, expected) < 1e-2


def test_a_kernel_that_disagrees_on_the_device_leaves_the_model_on_sdpa(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    """The switch checks the kernel on the model's own head layout first (kernels/self_check.py): wrong results
    keep SDPA, with a warning that says why; so do heads and dtypes the kernel does not take."""
    model, _ = load_model(build_random_model(tmp_path / "llama", "llama", 1), dtype=torch.bfloat16)
    model.to(DEVICE)
    checked = []

    def wrong(query: torch.Tensor, *args: object) -> torch.Tensor:
        checked.append(tuple(query.shape))
        return torch.zeros_like(query).transpose(1, 2)

    monkeypatch.setattr(self_check, "decode_attention", wrong)
    with caplog.at_level(logging.WARNING):
        assert not use_decode_attention(model)
    assert model.config._attn_implementation == "sdpa" and "disagrees with its reference" in caplog.text
    assert checked == [(2, model.config.num_attention_heads, 1, model.config.head_dim)]
    monkeypatch.undo()
    wide, _ = load_model(build_random_model(tmp_path / "wide", "llama", 1, head_dim=512), dtype=torch.bfloat16)
    with caplog.at_level(logging.WARNING):
        assert not use_decode_attention(wide.to(DEVICE))
    assert wide.config._attn_implementation == "sdpa" and "head size 512 is over 256" in caplog.text
    full, _ = load_model(build_random_model(tmp_path / "fp32", "llama", 1), dtype=torch.float32)
    assert not use_decode_attention(full.to(DEVICE)) and "must all be bf16 or all fp16" in caplog.text


def test_models_off_sdpa_keep_their_attention(tmp_path: Path) -> None:
    """A model on another backend (eager, as transformers picks for attention SDPA cannot compute, or as its user
    chose) stays on it: the switch never takes a model off an attention it was not built for. Which models
    transformers itself puts on eager varies between its versions (Gemma 2: eager in 5.24, SDPA in 5.17), so the
    model is put there here."""
    model, _ = load_model(build_random_model(tmp_path / "llama", "llama", 1), dtype=torch.bfloat16)
    model.set_attn_implementation("eager")
    assert not use_decode_attention(model)
    assert model.config._attn_implementation == "eager"
    model.set_attn_implementation("sdpa")  # the same model on SDPA is switched: the backend decided
    assert use_decode_attention(model) and model.config._attn_implementation == DECODE_ATTENTION


def test_a_compiled_step_runs_the_kernel(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Under torch.compile the kernel is one opaque operator, launched per layer: the compiled step computes what
    the eager one does, and its mask once for all layers (inductor had computed it again for each)."""
    model, _ = load_model(build_random_model(tmp_path / "llama", "llama", 2), dtype=torch.bfloat16)
    model.to(DEVICE)
    use_decode_attention(model)
    prompt = torch.randint(0, model.config.vocab_size, (1, 5), generator=torch.Generator().manual_seed(2)).to(DEVICE)
    eager = GreedyDecoder(model, prompt, 3).first_step_logits()
    torch._dynamo.reset()
    compiled = GreedyDecoder(model, prompt, 3, compile_step=True)
    compiled.prefill()
    calls = _count_kernel_calls(monkeypatch)
    compiled.step()
    assert calls[0] == 2
    masks: list[int] = []
    _count_kernel_calls(monkeypatch, masks)
    copies = []
    clone = torch.Tensor.clone

    def recorded(tensor: torch.Tensor, *args: object, **kwargs: object) -> torch.Tensor:
        copy = clone(tensor, *args, **kwargs)
        copies.append(copy.data_ptr())
        return copy

    monkeypatch.setattr(torch.Tensor, "clone", recorded)  # the mask operator's body, run by the compiled step
    compiled.step()
    assert len(copies) == 1 and masks == copies * 2
    monkeypatch.undo()
    assert relative_error(compiled.first_step_logits(), eager) < 1e-2
