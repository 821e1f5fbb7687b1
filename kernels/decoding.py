"""Greedy decoding speed of a causal LM the way a server runs it: a static KV cache and, on CUDA, one decode
step captured as a CUDA graph and replayed, so the number is the GPU's time per token and not Python's
launch overhead (which at batch 1 is larger than an 8B model's weight traffic)."""

from __future__ import annotations

import inspect
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

import torch
import torch._inductor.config as inductor_config
from transformers import PreTrainedModel, StaticCache

from kernels.dependent_launch import dependent_launch


@dataclass
class DecodeSpeed:
    batch: int
    prompt_tokens: int
    new_tokens: int
    seconds: float
    tokens_per_s: float  # generated tokens per second over the whole batch
    ms_per_step: float
    cuda_graph: bool
    ms_per_step_min: float | None = None  # the fastest and slowest of the timed repeats (the median is above)
    ms_per_step_max: float | None = None
    compiled: bool = False  # the decode step ran under torch.compile
    graph_check_error: float | None = None  # relative logits error of a replayed step against an eager one
    eager_repeat_error: float | None = None  # the same between two eager steps (split-K sums in any order)
    note: str = ""

    def as_dict(self) -> dict:
        return asdict(self)


def greedy_token(logits: torch.Tensor, chunk: int = 1024) -> torch.Tensor:
    """argmax over the vocabulary [B, V] -> [B, 1] in two stages: the maximum of each chunk, then of the chunks.
    One row's argmax is otherwise one thread block reducing alone, eager or compiled (29 us on an H200 for a 128k
    vocabulary, as long as four 8B layers' GEMVs); chunks give the reduction a block each. Ties go to the first
    index, as argmax's do."""
    batch, vocab = logits.shape
    chunks = -(-vocab // chunk)
    padded = torch.nn.functional.pad(logits, (0, chunks * chunk - vocab), value=float("-inf"))
    values, within = padded.view(batch, chunks, chunk).max(-1)
    best = values.argmax(-1, keepdim=True)
    return best * chunk + within.gather(-1, best)


def decode_step(model: PreTrainedModel) -> Callable[..., tuple[torch.Tensor, torch.Tensor]]:
    """One decode step as a function of its static inputs: the last position's logits [B, vocab] and the greedy
    token [B, 1], picked inside the step so that torch.compile fuses the pick with the logits."""

    def step(input_ids: torch.Tensor, cache_position: torch.Tensor, **cache: object) -> tuple[torch.Tensor, ...]:
        logits = model(input_ids=input_ids, cache_position=cache_position, use_cache=True, **cache).logits[:, -1]
        return logits, greedy_token(logits)

    return step


def compiled_step(model: PreTrainedModel) -> Callable[..., tuple[torch.Tensor, torch.Tensor]]:
    """decode_step under torch.compile for one decode step's fixed shapes: the whole step, every layer, becomes
    one graph whose norms, rotary embedding, residual adds and activations inductor fuses (eager, they are tens
    of small kernels per layer and take as long as an 8B model's weight traffic). Shrinkray's kernels are
    registered operators (kernels/ops.py), so they sit in the graph as opaque calls. Where Shrinkray's kernels
    launch dependent on their predecessors (kernels/dependent_launch.py), inductor's kernels are generated to do
    the same, so that every kernel boundary of the step overlaps."""
    # one compiled variant per batch size and Linear module type: the default limit of 8 is too few
    torch._dynamo.config.cache_size_limit = max(torch._dynamo.config.cache_size_limit, 64)
    device = next(model.parameters()).device
    overlap = dependent_launch(device) and hasattr(inductor_config.triton, "enable_pdl")
    return torch.compile(decode_step(model), dynamic=False, options={"triton.enable_pdl": True} if overlap else None)


def _static_cache(model: PreTrainedModel, batch: int, length: int) -> StaticCache:
    try:
        return StaticCache(config=model.config, max_cache_len=length)
    except TypeError:  # transformers < 4.56 sized the cache up front
        parameter = next(model.parameters())
        return StaticCache(config=model.config, max_batch_size=batch, max_cache_len=length,
                           device=parameter.device, dtype=parameter.dtype)


class GreedyDecoder:
    """Prefill once, then decode step by step into static buffers: `token` [B, 1] is both the step's input
    and output, `position` [1] the cache slot, `generated` [B, new_tokens] what came out."""

    def __init__(
        self, model: PreTrainedModel, prompt: torch.Tensor, new_tokens: int, compile_step: bool = False,
    ) -> None:
        self.model = model
        self.step_function = compiled_step(model) if compile_step else decode_step(model)  # the prefill stays eager
        self.prompt = prompt
        self.new_tokens = new_tokens
        batch, prompt_len = prompt.shape
        self.cache = _static_cache(model, batch, prompt_len + new_tokens + 1)
        self.token = torch.zeros(batch, 1, dtype=torch.long, device=prompt.device)
        self.position = torch.zeros(1, dtype=torch.long, device=prompt.device)
        self.generated = torch.zeros(batch, new_tokens, dtype=torch.long, device=prompt.device)
        self.graph: torch.cuda.CUDAGraph | None = None
        self.logits: torch.Tensor | None = None  # the last step's logits [B, vocab], a static buffer
        # transformers 5.24 renamed `past_key_values` to `cache` (the old name warns until 5.40)
        self.cache_argument = "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"

    @torch.no_grad()
    def prefill(self) -> None:
        self.cache.reset()
        prompt_len = self.prompt.shape[1]
        positions = torch.arange(prompt_len, device=self.prompt.device)
        logits = self.model(input_ids=self.prompt, cache_position=positions, use_cache=True,
                            **{self.cache_argument: self.cache}).logits
        self.token.copy_(logits[:, -1:].argmax(-1))
        self.position.fill_(prompt_len)
        if self.logits is None:
            self.logits = torch.empty_like(logits[:, -1])

    @torch.no_grad()
    def step(self) -> None:
        self.generated.index_copy_(1, self.position - self.prompt.shape[1], self.token)
        logits, token = self.step_function(self.token, self.position, **{self.cache_argument: self.cache})
        self.logits.copy_(logits)
        self.token.copy_(token)
        self.position.add_(1)

    def capture(self) -> None:
        """Record one step as a CUDA graph (after warm-up steps on a side stream, which also settle any
        autotuning); the prefill is repeated afterwards because the warm-up advanced the cache."""
        self.prefill()
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):
            for _ in range(3):
                self.step()
        torch.cuda.current_stream().wait_stream(stream)
        self.prefill()
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            self.step()
        self.graph = graph

    def first_step_logits(self) -> torch.Tensor:
        """The logits of the first decode step after a fresh prefill (replayed when a graph is captured)."""
        self.prefill()
        if self.graph is not None:
            self.graph.replay()
        else:
            self.step()
        return self.logits.float().clone()

    def decode(self) -> torch.Tensor:
        """Prefill and generate new_tokens tokens; returns them [B, new_tokens]."""
        self.prefill()
        self._steps()
        return self.generated.clone()

    def timed_steps(self) -> float:
        """Seconds of the new_tokens decode steps after a fresh prefill, which is not timed."""
        self.prefill()
        _synchronize(self.token.device)
        started = time.perf_counter()
        self._steps()
        _synchronize(self.token.device)
        return time.perf_counter() - started

    def _steps(self) -> None:
        for _ in range(self.new_tokens):
            if self.graph is not None:
                self.graph.replay()
            else:
                self.step()


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure_decode_speed(
    model: PreTrainedModel, batch: int = 1, prompt_tokens: int = 32, new_tokens: int = 128, seed: int = 0,
    repeats: int = 5, compile_step: bool = False,
) -> DecodeSpeed:
    """Median time of greedy decoding new_tokens after a random prompt, the prefill excluded; on CUDA through a
    captured graph, checked against eager decoding of the same prompt before it is timed. With `compile_step` the
    step runs under torch.compile (compiled_step). Only the steps are timed: subtracting a prefill timed apart,
    as this did before, added that one measurement's jitter to every step."""
    device = next(model.parameters()).device
    vocab = model.config.vocab_size
    prompt = torch.randint(0, vocab, (batch, prompt_tokens), generator=torch.Generator().manual_seed(seed))
    decoder = GreedyDecoder(model, prompt.to(device), new_tokens, compile_step)
    note, check, spread = "", None, None
    if device.type == "cuda":
        eager = decoder.first_step_logits()
        spread = ((decoder.first_step_logits() - eager).norm() / eager.norm()).item()
        try:
            decoder.capture()
        except RuntimeError as error:  # a model whose step cannot be captured is timed eagerly, and says so
            decoder.graph = None
            note = f"CUDA graph capture failed, timed eagerly: {str(error).splitlines()[0][:200]}"
        else:
            # tokens are no check on random weights (bf16 logits tie, and split-K sums in any order), logits are
            check = ((decoder.first_step_logits() - eager).norm() / eager.norm()).item()
            # random weights amplify rounding through the layers: judge against two eager runs' own spread
            if check > max(1e-2, 3 * spread):
                note = f"graph replay differs from eager decoding: relative logits error {check:.1e}"
    decoder.decode()  # warm-up
    times = sorted(max(decoder.timed_steps(), 1e-9) for _ in range(repeats))
    seconds = times[len(times) // 2]
    return DecodeSpeed(batch=batch, prompt_tokens=prompt_tokens, new_tokens=new_tokens, seconds=seconds,
                       tokens_per_s=batch * new_tokens / seconds, ms_per_step=1e3 * seconds / new_tokens,
                       cuda_graph=decoder.graph is not None, ms_per_step_min=1e3 * times[0] / new_tokens,
                       ms_per_step_max=1e3 * times[-1] / new_tokens, compiled=compile_step, graph_check_error=check,
                       eager_repeat_error=spread, note=note)
