"""Text from a compressed checkpoint on Shrinkray's kernels: what `shrinkray generate` runs, so a user can see a
checkpoint answer (and how fast) on their own GPU, or on the CPU through the kernels' plain-torch references."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import AutoConfig, AutoTokenizer

from compress.model_io import inspect_model_dir
from kernels.attention_backend import attention_in_use
from kernels.decoding import GreedyDecoder
from kernels.loader import load_for_inference

MAX_NEW_TOKENS = 4096


class GenerationError(ValueError):
    """A request the checkpoint cannot serve, with the reason."""


@dataclass
class Generation:
    text: str  # the continuation only, up to (not including) the first end-of-sequence token
    tokens: int  # tokens generated before that end
    decoded: int  # tokens decoded (all that were asked for: the steps run to the end)
    seconds: float  # decoding time of the decoded tokens, the prompt's prefill included
    device: str
    cuda_graph: bool
    kernels: dict[str, int]  # layers per kernel, as load_for_inference counts them
    attention: str  # what the decode steps' attention ran on (kernels/attention_backend.py attention_in_use)
    note: str = ""  # how the decoding differed from what was asked (torch.compile failed: decoded eagerly)

    @property
    def tokens_per_s(self) -> float:
        return self.decoded / self.seconds if self.seconds > 0 else 0.0


def resolve_device(name: str) -> torch.device:
    """auto (CUDA when present), cpu or cuda[:N]."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError as error:
        raise GenerationError(f"device must be auto, cpu or cuda[:N], got {name!r}") from error
    if device.type not in ("cpu", "cuda"):
        raise GenerationError(f"device must be auto, cpu or cuda[:N], got {name!r}")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise GenerationError("no CUDA GPU is visible here: use --device cpu")
    return device


def _end_tokens(model: torch.nn.Module, tokenizer: object) -> set[int]:
    ends = getattr(model.generation_config, "eos_token_id", None) or getattr(tokenizer, "eos_token_id", None)
    return set(ends if isinstance(ends, list) else [ends] if ends is not None else [])


def generate(checkpoint: Path, prompt: str, new_tokens: int, device: torch.device,
             compile_step: bool = False) -> Generation:
    """Greedy continuation of `prompt` by the checkpoint, every compressed layer on its kernel (checked against
    its reference when loaded). On CUDA each step replays a captured graph, as in the speed report."""
    if not 1 <= new_tokens <= MAX_NEW_TOKENS:
        raise GenerationError(f"new tokens must be between 1 and {MAX_NEW_TOKENS}, got {new_tokens}")
    if not prompt.strip():
        raise GenerationError("the prompt is empty")
    inspect_model_dir(checkpoint)  # pickles, remote code, links out of the directory: refused before any read
    try:
        tokenizer = AutoTokenizer.from_pretrained(checkpoint, trust_remote_code=False, local_files_only=True)
    except (OSError, ValueError) as error:
        raise GenerationError(f"{checkpoint} has no tokenizer transformers can load: {error}") from error
    ids = tokenizer(prompt, return_tensors="pt").input_ids
    positions = getattr(AutoConfig.from_pretrained(checkpoint, trust_remote_code=False, local_files_only=True),
                        "max_position_embeddings", None)
    if positions is not None and ids.shape[1] + new_tokens > positions:
        raise GenerationError(f"the prompt ({ids.shape[1]} tokens) and {new_tokens} new tokens exceed the "
                              f"{positions} positions the model was built for")
    model, kernels = load_for_inference(checkpoint, device)
    prompt_ids, note = ids.to(device), ""
    try:
        generated, seconds, graph = _decode(model, prompt_ids, new_tokens, compile_step)
    except Exception as error:  # noqa: BLE001 - torch.compile fails in many ways (no C++ compiler, an untraceable op)
        if not compile_step:
            raise
        torch._dynamo.reset()
        note = f"torch.compile failed, decoded eagerly: {(str(error).strip().splitlines() or [''])[0][:200]}"
        generated, seconds, graph = _decode(model, prompt_ids, new_tokens, compile_step=False)
    ends = _end_tokens(model, tokenizer)
    kept = next((index for index, token in enumerate(generated) if token in ends), len(generated))
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else str(device)
    return Generation(text=tokenizer.decode(generated[:kept], skip_special_tokens=True), tokens=kept,
                      decoded=new_tokens, seconds=seconds, device=name, cuda_graph=graph, kernels=kernels,
                      attention=attention_in_use(model, device), note=note)


def _decode(model: torch.nn.Module, prompt: torch.Tensor, new_tokens: int,
            compile_step: bool) -> tuple[list[int], float, bool]:
    """The generated token ids of the first prompt row, the seconds they took (prefill included) and whether the
    steps replayed a CUDA graph."""
    decoder = GreedyDecoder(model, prompt, new_tokens, compile_step)
    cuda = prompt.device.type == "cuda"
    if cuda:
        try:
            decoder.capture()
        except RuntimeError:  # a step that cannot be captured runs eagerly
            decoder.graph = None
        torch.cuda.synchronize(prompt.device)
    started = time.perf_counter()
    generated = decoder.decode()[0].tolist()
    if cuda:
        torch.cuda.synchronize(prompt.device)
    return generated, time.perf_counter() - started, decoder.graph is not None
