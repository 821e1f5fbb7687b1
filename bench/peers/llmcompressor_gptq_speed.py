"""llm-compressor's GPTQ wall time and peak device memory on bench/gptq_speed.py's random Llama-3-8B-shaped model.

The peer's side of bench/gptq_speed.py, for the same machine and the same run: the same model (its random_model,
filled on the GPU), the same 128 x 2048 random calibration ids (generator seed 1), and GPTQ W4A16 group 128,
symmetric, with llm-compressor's default activation ordering for that scheme ("static"), lm_head left alone,
through its sequential pipeline (one decoder layer onloaded to the GPU at a time, the model itself on the host).
Only the oneshot call is timed; the model is not saved. llm-compressor must never become a Shrinkray dependency,
so it comes from a separate install, e.g. wheels unpacked with pip --target into /tmp/peer:

    PYTHONPATH=/tmp/peer:. python bench/peers/llmcompressor_gptq_speed.py            # Llama-3-8B shape
    PYTHONPATH=/tmp/peer:. python bench/peers/llmcompressor_gptq_speed.py --layers 2
    PYTHONPATH=/tmp/peer:. python bench/peers/llmcompressor_gptq_speed.py --tiny     # smoke run, CPU included
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import importlib.machinery
import importlib.metadata
import importlib.util
import json
import platform
import re
import sys
import tempfile
import time
import types
from collections.abc import Iterator

import torch
from tokenizers import Tokenizer
from tokenizers.models import WordLevel
from torch.utils.data import DataLoader
from transformers import PreTrainedTokenizerFast

from bench.gptq_speed import add_workload_arguments, random_model, workload

IGNORE = ["re:.*lm_head"]  # as llmcompressor_run.py


@contextlib.contextmanager
def _datasets_stand_in() -> Iterator[None]:
    """llm-compressor 0.14 imports `datasets` at module level, but only for type names (annotations, isinstance
    checks that a DataLoader fails anyway): a DataLoader passed as `dataset` goes straight to the pipeline.
    `datasets` drags in pyarrow (55 MB) and pandas, too much to carry to the GPU machine, so where it is not
    installed, empty names stand in while llm-compressor is imported (those it imports: Dataset, DatasetDict,
    IterableDataset, load_dataset, formatting.formatting.LazyRow) and leave sys.modules afterwards, so that
    transformers' is_datasets_available() stays false."""
    if importlib.util.find_spec("datasets") is not None:
        yield
        return

    def load_dataset(*args, **kwargs):
        raise ImportError("datasets is not installed: pass a DataLoader to oneshot")

    names = {
        "datasets": ["Dataset", "DatasetDict", "IterableDataset", load_dataset],
        "datasets.formatting": [],
        "datasets.formatting.formatting": ["LazyRow"],
    }
    for module_name, members in names.items():
        module = types.ModuleType(module_name)
        module.__spec__ = importlib.machinery.ModuleSpec(module_name, None, is_package=True)
        module.__path__ = []
        for member in members:
            if isinstance(member, str):
                member = type(member, (), {"__module__": module_name})
            setattr(module, member.__name__, member)
        sys.modules[module_name] = module
        parent, _, child = module_name.rpartition(".")
        if parent:
            setattr(sys.modules[parent], child, module)
    try:
        yield
    finally:
        for module_name in names:
            del sys.modules[module_name]


def _placeholder_tokenizer() -> PreTrainedTokenizerFast:
    """oneshot wants a processor whenever it is given calibration data, even pre-tokenized; this one is never
    called (the DataLoader already yields ids), it only keeps oneshot from looking for one on disk or the Hub."""
    return PreTrainedTokenizerFast(tokenizer_object=Tokenizer(WordLevel({"<unk>": 0}, unk_token="<unk>")))


def _device_slug(device: torch.device) -> str:
    """The short GPU name ("h100" for "NVIDIA H100 80GB HBM3"), as bench/results names its files."""
    if device.type != "cuda":
        return device.type
    found = re.search(r"\b([A-Z]{1,2}\d{2,4}[A-Z]?)\b", torch.cuda.get_device_name())
    return found.group(1).lower() if found else device.type


def _versions() -> dict[str, str]:
    names = ("llmcompressor", "compressed-tensors", "transformers", "torch", "accelerate", "pydantic")
    return {name: importlib.metadata.version(name) for name in names}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_workload_arguments(parser)
    args = parser.parse_args()
    shape, full_layers, samples, seq_len, device = workload(args)

    with _datasets_stand_in():
        from llmcompressor import oneshot
        from llmcompressor.modifiers.quantization import GPTQModifier

    started = time.perf_counter()
    model = random_model(shape, fill_on=device)
    build_s = time.perf_counter() - started
    calib = torch.randint(0, shape["vocab_size"], (samples, seq_len), generator=torch.Generator().manual_seed(1))
    # What oneshot's own collator makes of a pre-tokenized dataset with an input_ids column: {"input_ids": [1, L]}.
    loader = DataLoader([{"input_ids": row} for row in calib], batch_size=1, shuffle=False)
    recipe = [GPTQModifier(targets="Linear", scheme="W4A16", ignore=IGNORE)]

    with tempfile.TemporaryDirectory() as config_dir:
        # oneshot re-reads the config from model.config._name_or_path (to refuse pre-quantized checkpoints).
        model.config.save_pretrained(config_dir)
        model.config._name_or_path = config_dir
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats()
            torch.cuda.synchronize()
        started = time.perf_counter()
        oneshot(
            model=model,
            processor=_placeholder_tokenizer(),
            recipe=recipe,
            dataset=loader,
            num_calibration_samples=samples,
            max_seq_length=seq_len,
            pipeline="sequential",
        )
        if device.type == "cuda":
            torch.cuda.synchronize()
        seconds = time.perf_counter() - started
    peak_gb = torch.cuda.max_memory_allocated() / 2**30 if device.type == "cuda" else float("nan")
    quantized = sum(hasattr(module, "weight_scale") for module in model.modules())
    scheme = next(m.quantization_scheme for m in model.modules() if hasattr(m, "weight_scale")).weights

    date = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
    result = {
        "benchmark": "gptq_speed",
        "library": "llmcompressor",
        "date": date,
        "device": torch.cuda.get_device_name() if device.type == "cuda" else platform.processor() or "cpu",
        "versions": _versions(),
        "shape": shape,
        "recipe": {
            "modifier": "GPTQModifier",
            "scheme": "W4A16",
            "ignore": IGNORE,
            "pipeline": "sequential",
            "weights": scheme.model_dump(mode="json", exclude_none=True),
            "block_size": recipe[0].block_size,
            "dampening_frac": recipe[0].dampening_frac,
        },
        "calibration": {"samples": samples, "seq_len": seq_len},
        "seconds": seconds,
        "projected_seconds_all_layers": seconds * full_layers / shape["num_hidden_layers"],
        "peak_device_gb": peak_gb,
        "model_build_seconds": build_s,
        "modules": quantized,
    }
    print(json.dumps(result))
    args.out.mkdir(parents=True, exist_ok=True)
    layers = f"{shape['num_hidden_layers']}layers-" if args.layers else ""
    name = f"gptq_speed-llmcompressor-{'tiny-' if args.tiny else ''}{_device_slug(device)}-{layers}{date[:10]}.json"
    (args.out / name).write_text(json.dumps(result, indent=2))
    print(f"wrote {args.out / name}", file=sys.stderr)


if __name__ == "__main__":
    main()
