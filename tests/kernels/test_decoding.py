"""Greedy decoding with a static cache (what the decode-speed numbers time) against transformers' generate, and
the speed report: its refusal to time anything without a GPU, and its eager fallback."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import torch
from torch._dynamo.utils import counters

from compress.model_io import load_model
from kernels.decoding import GreedyDecoder, greedy_token, measure_decode_speed
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


def test_the_two_stage_greedy_pick_is_argmax() -> None:
    """Chunked maxima then the best chunk: argmax's token for vocabularies that fill the last chunk or not, in
    bf16 (many ties) and fp32, with ties going to the first index."""
    generator = torch.Generator().manual_seed(0)
    for vocab, dtype in [(1000, torch.float32), (1024, torch.bfloat16), (3001, torch.bfloat16), (257, torch.float32)]:
        logits = torch.randn(4, vocab, generator=generator).to(dtype)
        logits[1] = logits[1].round()  # ties across chunks
        logits[2] = 0.0  # one tie everywhere: index 0
        logits[3] = -1.0 - logits[3].abs()  # all below the padding's zero, were it zero
        picked = greedy_token(logits, chunk=256)
        assert picked.shape == (4, 1) and picked.dtype == torch.long
        assert torch.equal(picked, logits.argmax(-1, keepdim=True)), vocab
    logits = torch.zeros(1, 600)
    logits[0, [300, 599]] = 1.0  # the maximum in two chunks, the first in the middle of its chunk
    assert greedy_token(logits, chunk=256).item() == 300


def test_speed_is_measured_and_described(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The median of the repeats, with their spread; the prefill before each repeat is not timed."""
    model, _ = load_model(build_random_llama(tmp_path / "model"))
    prefill, prefills = GreedyDecoder.prefill, []

    def uneven_prefill(decoder: GreedyDecoder) -> None:  # every other prefill takes two seconds longer
        prefill(decoder)
        prefills.append(None)
        time.sleep(2 * (len(prefills) % 2))

    monkeypatch.setattr(GreedyDecoder, "prefill", uneven_prefill)
    speed = measure_decode_speed(model, batch=2, prompt_tokens=5, new_tokens=4, repeats=3)
    assert speed.seconds > 0 and not speed.cuda_graph
    assert abs(speed.tokens_per_s * speed.seconds - 8) < 1e-6
    assert speed.ms_per_step_min <= speed.ms_per_step <= speed.ms_per_step_max < 2000 / 4  # no repeat paid a sleep


def test_a_compiled_step_decodes_what_the_eager_step_decodes(tmp_path: Path) -> None:
    model, _ = load_model(build_random_llama(tmp_path / "model", layers=2))
    prompt = torch.randint(0, model.config.vocab_size, (2, 5), generator=torch.Generator().manual_seed(1))
    eager = GreedyDecoder(model, prompt, new_tokens=4).decode()
    compiled = GreedyDecoder(model, prompt, new_tokens=4, compile_step=True)
    torch._dynamo.reset()  # a step compiled earlier in this process for a model of the same shapes would serve
    graphs_before = counters["stats"]["unique_graphs"]
    assert torch.equal(compiled.decode(), eager)
    assert counters["stats"]["unique_graphs"] > graphs_before  # the step really went through dynamo
    assert measure_decode_speed(model, batch=1, prompt_tokens=3, new_tokens=2, repeats=1, compile_step=True).compiled


def test_speed_report_needs_a_gpu(tmp_path: Path) -> None:
    report = decode_speed_report(tmp_path, tmp_path, torch.device("cpu"))
    assert report == {"measured": False, "reason": "decode speed is measured on GPU workers; this one ran on cpu"}


def test_kernels_that_do_not_build_on_the_gpu_leave_the_speed_unmeasured(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """A GPU the kernels do not compile or fit on fails no job: the section says why speed was not measured."""
    from triton.runtime.errors import OutOfResources

    import kernels.speed_report

    def failing_load(path: Path, device: torch.device):  # type: ignore[no-untyped-def]
        raise OutOfResources(232448, 101376, "shared memory")

    monkeypatch.setattr(kernels.speed_report, "load_for_inference", failing_load)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "NVIDIA A10")
    report = decode_speed_report(tmp_path, tmp_path, torch.device("cuda"))
    assert report["measured"] is False
    assert report["reason"].startswith("the kernels do not run on this GPU: OutOfResources: out of resource: shared")
    assert report["reason"].endswith("(NVIDIA A10)")


def test_where_compiling_fails_both_models_are_timed_eagerly(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """The report compares like with like: one model failing under torch.compile sends both to the eager step."""
    import kernels.decoding
    import kernels.speed_report

    path = build_random_llama(tmp_path / "model")
    loads: list[str] = []

    def loader(name: str):  # type: ignore[no-untyped-def]
        def load():  # type: ignore[no-untyped-def]
            loads.append(name)
            return load_model(path)[0]
        return load

    compiled = kernels.decoding.compiled_step

    def compile_fails_for_the_second(model):  # type: ignore[no-untyped-def]
        if "original" in loads:
            raise RuntimeError("inductor: unsupported op\nlong traceback")
        return compiled(model)

    monkeypatch.setattr(kernels.decoding, "compiled_step", compile_fails_for_the_second)
    monkeypatch.setattr(kernels.speed_report, "BATCHES", (1, 2))
    monkeypatch.setattr(kernels.speed_report, "NEW_TOKENS", 2)
    rows, step = kernels.speed_report.compare_decoding(loader("compressed"), loader("original"))
    assert loads == ["compressed", "original", "compressed", "original"]  # compiled once, then both again eagerly
    assert step == "eager (torch.compile failed)" and [row["batch"] for row in rows] == [1, 2]
    for row in rows:
        assert not row["compiled"] and row["speedup"] > 0
        assert row["notes"][0] == "torch.compile failed, both steps run eagerly: inductor: unsupported op"
