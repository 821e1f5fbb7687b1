"""How the kernels' autotuners (and the W4A16 prefill choice) time a candidate: replayed from a CUDA graph, with
L2 refilled by a read of unrelated memory before every call, less the time of the refills alone.

Triton's default timing launches from Python and clears L2 by zeroing a buffer. A decode-sized kernel runs
for a few microseconds, less than its Python launch, so every config timed alike and the pick was noise; and
the cleared lines are dirty, so the timed call also paid for writing them back. A model's weights come from
HBM (an 8B model does not fit in L2), so they must not be resident when a config is judged either; memory
every call touches (the split-K workspace) is resident in a model and is read back in after the eviction.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence

import torch

from kernels.triton_support import triton

CALLS_PER_GRAPH = 10
REPLAYS = 7

_EVICTION_BUFFERS: dict[torch.device, tuple[torch.Tensor, torch.Tensor]] = {}
_RESIDENT: dict[tuple[str, torch.device], list[torch.Tensor]] = {}


def keep_resident(owner: str, *tensors: torch.Tensor) -> None:
    """Memory that stays in L2 while a model runs (shared by every call; 4-byte elements): timed calls find it
    there too. A later call by the same owner on the same device replaces what it registered."""
    _RESIDENT[owner, tensors[0].device] = [tensor.view(-1).view(torch.float32) for tensor in tensors]


def _eviction_buffer(device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Twice the L2 of memory to read (clean lines replace the kernel's) and a scalar for the read's result."""
    if device not in _EVICTION_BUFFERS:
        l2_bytes = getattr(torch.cuda.get_device_properties(device), "L2_cache_size", 64 << 20) or 64 << 20
        _EVICTION_BUFFERS[device] = (torch.ones(2 * l2_bytes // 4, device=device, dtype=torch.float32),
                                     torch.empty((), device=device, dtype=torch.float32))
    return _EVICTION_BUFFERS[device]


def median_replay_ms(graph: torch.cuda.CUDAGraph) -> float:
    """Median GPU milliseconds of REPLAYS replays of `graph`, after one that uploads it."""
    graph.replay()  # first replay uploads the graph
    times = []
    for _ in range(REPLAYS):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        graph.replay()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end))
    return sorted(times)[len(times) // 2]


def captured(calls: Callable[[], None]) -> torch.cuda.CUDAGraph:
    """`calls` recorded as a CUDA graph on the current stream."""
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        calls()
    return graph


def cold_time_ms(fn: Callable[[], object]) -> float:
    """GPU milliseconds of one call of `fn` with its operands out of L2. `fn` must be replayable (the same
    buffers every call) and is run once eagerly first, which compiles it and surfaces launch errors."""
    device = torch.device("cuda", torch.cuda.current_device())
    evict, sink = _eviction_buffer(device)
    fn()
    torch.cuda.synchronize(device)

    resident = [tensor for (_, on), tensors in _RESIDENT.items() if on == device for tensor in tensors]

    def repeated(call_fn: bool) -> Callable[[], None]:
        def calls() -> None:
            for _ in range(CALLS_PER_GRAPH):
                torch.sum(evict, dim=0, out=sink)  # evict everything, then read the resident memory back in
                for tensor in resident:
                    torch.sum(tensor, dim=0, out=sink)
                if call_fn:
                    fn()
        return calls

    with_calls = median_replay_ms(captured(repeated(call_fn=True)))
    alone = median_replay_ms(captured(repeated(call_fn=False)))
    return max(with_calls - alone, 1e-6) / CALLS_PER_GRAPH


def autotuner_do_bench(kernel_call: Callable[[], object], quantiles: Sequence[float]) -> list[float]:
    """triton.autotune's `do_bench` hook: cold_time_ms for every quantile asked (one measurement)."""
    measured = cold_time_ms(kernel_call)
    return [measured for _ in quantiles]


def autotune(configs: list, key: list[str], prune: Callable[..., list] | None = None) -> Callable:
    """triton.autotune as every kernel here uses it: configs timed by cold_time_ms, and (Triton >= 3.4) each pick
    kept on disk in Triton's cache directory (TRITON_CACHE_DIR), keyed by the Triton version, the GPU architecture,
    the kernel's source, the tuning key and the config list. A fresh worker process then skips the timing: on an
    H200 the first calls of Llama-3-8B's four projection shapes at M = 1, 16, 64 and 256 took 9.0 s with the
    kernels already compiled and 1.3 s with the picks cached too (52 s with neither). The key names the
    architecture, not the model: GPUs of one architecture that share a cache directory share their picks."""
    options: dict = {"configs": configs, "key": key, "do_bench": autotuner_do_bench}
    if prune is not None:
        options["prune_configs_by"] = {"early_config_prune": prune}
    if "cache_results" in inspect.signature(triton.autotune).parameters:
        options["cache_results"] = True
    return triton.autotune(**options)


_CHOICES: dict[tuple, bool] = {}


def second_is_faster(key: tuple, first: Callable[[], object], second: Callable[[], object]) -> bool:
    """Whether `second` beat `first` when both were timed (cold_time_ms) for this key: each key is timed once per
    process. Never inside a CUDA graph capture, where `first` is taken and nothing is remembered."""
    if key not in _CHOICES:
        if torch.cuda.is_current_stream_capturing():
            return False
        first_ms = cold_time_ms(first)
        _CHOICES[key] = cold_time_ms(second) < first_ms
    return _CHOICES[key]
