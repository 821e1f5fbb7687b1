"""Greedy decoding with a static cache (what the decode-speed numbers time) against transformers' generate, and
the speed report's refusal to time anything without a GPU."""

from __future__ import annotations

from pathlib import Path

import torch
from torch._dynamo.utils import counters

from compress.model_io import load_model
from kernels.decoding import GreedyDecoder, measure_decode_speed
from kernels.speed_report import decode_speed_report
from tests.compress.conftest import build_random_llama


def test_static_cache_decoding_generates_what_transformers_generates(tmp_path: Path) -> None:
    model, _ = load_model(build_random_llama(tmp_path / "model", seed=3))
    prompt = torch.randint(0, model.config.vocab_size, (2, 7), generator=torch.Generator().manual_seed(0))
    decoder = GreedyDecoder(model, prompt, new_tokens=6)
    ours = decoder.decode()
    expected = model.generate(prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=6, do_sample=False,
                              min_new_tokens=6, pad_token_id=0)[:, 7:]
    assert torch.equal(ours, expected)
    assert torch.equal(decoder.decode(), ours)  # a second run starts from a fresh prefill


def test_speed_is_measured_and_described(tmp_path: Path) -> None:
    model, _ = load_model(build_random_llama(tmp_path / "model"))
    speed = measure_decode_speed(model, batch=2, prompt_tokens=5, new_tokens=4, repeats=1)
    assert speed.tokens_per_s > 0 and speed.seconds > 0 and not speed.cuda_graph
    assert abs(speed.tokens_per_s * speed.seconds - 8) < 1e-6


def test_a_compiled_step_decodes_what_the_eager_step_decodes(tmp_path: Path) -> None:
    model, _ = load_model(build_random_llama(tmp_path / "model", layers=2))
    prompt = torch.randint(0, model.config.vocab_size, (2, 5), generator=torch.Generator().manual_seed(1))
    eager = GreedyDecoder(model, prompt, new_tokens=4).decode()
    compiled = GreedyDecoder(model, prompt, new_tokens=4, compile_step=True)
    graphs_before = counters["stats"]["unique_graphs"]
    assert torch.equal(compiled.decode(), eager)
    assert counters["stats"]["unique_graphs"] > graphs_before  # the step really went through dynamo
    assert measure_decode_speed(model, batch=1, prompt_tokens=3, new_tokens=2, repeats=1, compile_step=True).compiled


def test_speed_report_needs_a_gpu(tmp_path: Path) -> None:
    report = decode_speed_report(tmp_path, tmp_path, torch.device("cpu"))
    assert report == {"measured": False, "reason": "decode speed is measured on GPU workers; this one ran on cpu"}
