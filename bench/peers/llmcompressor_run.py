"""One llm-compressor `oneshot` run on the quality benchmark's protocol (../shared/EVAL.md); prints one JSON line.

bench/quality.py runs this with the python of a throwaway venv, because llm-compressor must never become a
Shrinkray dependency. So it imports nothing of ours and re-implements the protocol in a few lines: calibration
is the first 128 windows of 512 tokens of calib.txt, ppl is over all full 512-token windows of eval.txt, and
the ppl is measured on the saved checkpoint as transformers reloads it, as Shrinkray measures its own.

    python llmcompressor_run.py --list
    python llmcompressor_run.py --recipe gptq-w4a16-g128 --model DIR --calib calib.txt --eval eval.txt --out DIR
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import math
import resource
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from compressed_tensors.quantization import QuantizationArgs, QuantizationScheme
from datasets import Dataset
from llmcompressor import oneshot
from llmcompressor.modifiers.awq import AWQModifier
from llmcompressor.modifiers.pruning import SparseGPTModifier
from llmcompressor.modifiers.quantization import GPTQModifier, QuantizationModifier
from llmcompressor.modifiers.transform.smoothquant import SmoothQuantModifier
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

SEQ_LEN = 512
CALIB_WINDOWS = 128
# A plain "lm_head" does not match in 0.14's SparseGPT (it prunes the head, costing several ppl points).
IGNORE = ["re:.*lm_head"]


def _int_weights(bits: int, group_size: int | None) -> dict[str, QuantizationScheme]:
    """Symmetric int weights, activations untouched, for bit widths and strategies no preset scheme names."""
    weights = QuantizationArgs(
        num_bits=bits,
        type="int",
        symmetric=True,
        strategy="group" if group_size else "channel",
        group_size=group_size,
    )
    return {"group_0": QuantizationScheme(targets=["Linear"], weights=weights)}


# name -> modifiers. "original" compresses nothing: it measures the baseline through the same code path.
RECIPES: dict[str, Callable[[], list]] = {
    "original": lambda: [],
    "rtn-w4a16-g128": lambda: [QuantizationModifier(targets="Linear", scheme="W4A16", ignore=IGNORE)],
    "gptq-w4a16-g128": lambda: [GPTQModifier(targets="Linear", scheme="W4A16", ignore=IGNORE)],
    "gptq-w4a16-channel": lambda: [GPTQModifier(config_groups=_int_weights(4, None), ignore=IGNORE)],
    "gptq-w3a16-g128": lambda: [GPTQModifier(config_groups=_int_weights(3, 128), ignore=IGNORE)],
    "sparsegpt-50": lambda: [SparseGPTModifier(sparsity=0.5, mask_structure="0:0", ignore=IGNORE)],
    "sparsegpt-2of4": lambda: [SparseGPTModifier(sparsity=0.5, mask_structure="2:4", ignore=IGNORE)],
    "smoothquant-gptq-w8a8": lambda: [
        SmoothQuantModifier(smoothing_strength=0.8),
        GPTQModifier(targets="Linear", scheme="W8A8", ignore=IGNORE),
    ],
    "fp8-dynamic": lambda: [QuantizationModifier(targets="Linear", scheme="FP8_DYNAMIC", ignore=IGNORE)],
    "sparsegpt-2of4-gptq-w4a16": lambda: [
        SparseGPTModifier(sparsity=0.5, mask_structure="2:4", ignore=IGNORE),
        GPTQModifier(targets="Linear", scheme="W4A16", ignore=IGNORE),
    ],
    "awq-w4a16-g128": lambda: [AWQModifier(targets="Linear", scheme="W4A16", ignore=IGNORE)],
    "gptq-w4a8": lambda: [GPTQModifier(targets="Linear", scheme="W4A8", ignore=IGNORE)],
}


def token_windows(tokenizer: PreTrainedTokenizerBase, text: str, max_windows: int | None = None) -> torch.LongTensor:
    """The whole text without special tokens, cut into [n, 512] windows; the last partial window is dropped."""
    ids = torch.tensor(tokenizer(text, add_special_tokens=False)["input_ids"], dtype=torch.long)
    count = ids.numel() // SEQ_LEN if max_windows is None else min(ids.numel() // SEQ_LEN, max_windows)
    assert count > 0, f"{ids.numel()} tokens is less than one window"
    return ids[: count * SEQ_LEN].reshape(count, SEQ_LEN)


@torch.no_grad()
def perplexity(model: PreTrainedModel, windows: torch.LongTensor, batch_size: int = 8) -> float:
    """exp(total NLL / predicted tokens) in float32; each window of 512 tokens predicts its last 511."""
    model.eval()
    total, count = 0.0, 0
    for batch in windows.split(batch_size):
        logits = model(input_ids=batch, use_cache=False).logits.float()[:, :-1]
        targets = batch[:, 1:]
        total += F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1), reduction="sum").item()
        count += targets.numel()
    return math.exp(total / count)


def load(path: Path) -> PreTrainedModel:
    """fp32 on CPU, like Shrinkray's load_model; a local _name_or_path keeps oneshot from looking up the Hub."""
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32, local_files_only=True)
    model.config._name_or_path = str(path)
    return model


def compress(recipe: str, model_dir: Path, calib_text: str, out_dir: Path) -> float:
    """Run oneshot and save the compressed checkpoint; returns the seconds oneshot took (load and save excluded)."""
    tokenizer = AutoTokenizer.from_pretrained(model_dir, local_files_only=True)
    model = load(model_dir)
    modifiers = RECIPES[recipe]()
    seconds = 0.0
    if modifiers:
        calib = token_windows(tokenizer, calib_text, CALIB_WINDOWS)
        dataset = Dataset.from_dict({"input_ids": calib.tolist()})
        started = time.perf_counter()
        oneshot(
            model=model,
            processor=tokenizer,
            recipe=modifiers,
            dataset=dataset,
            num_calibration_samples=calib.shape[0],
            max_seq_length=SEQ_LEN,
            shuffle_calibration_samples=False,
        )
        seconds = time.perf_counter() - started
    model.save_pretrained(out_dir, save_compressed=True)
    tokenizer.save_pretrained(out_dir)
    return seconds


def peak_rss_mb() -> float:
    """Peak resident memory of this process and any children it waited for (ru_maxrss is in KiB on Linux)."""
    kib = max(resource.getrusage(who).ru_maxrss for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN))
    return kib / 1024


def versions() -> dict[str, str]:
    return {
        name: importlib.metadata.version(name)
        for name in ("llmcompressor", "compressed-tensors", "transformers", "torch", "accelerate")
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--list", action="store_true", help="print the recipe names as a JSON list and exit")
    parser.add_argument("--recipe", choices=sorted(RECIPES))
    parser.add_argument("--model", type=Path)
    parser.add_argument("--calib", type=Path)
    parser.add_argument("--eval", type=Path)
    parser.add_argument("--out", type=Path)
    parser.add_argument("--eval-windows", type=int, default=None, help="first N eval windows only (default all)")
    args = parser.parse_args()
    if args.list:
        print(json.dumps(list(RECIPES)))
        return
    if None in (args.recipe, args.model, args.calib, args.eval, args.out):
        parser.error("--recipe, --model, --calib, --eval and --out are required")

    torch.manual_seed(0)
    seconds = compress(args.recipe, args.model, args.calib.read_text(encoding="utf-8"), args.out)
    tokenizer = AutoTokenizer.from_pretrained(args.out, local_files_only=True)
    windows = token_windows(tokenizer, args.eval.read_text(encoding="utf-8"), args.eval_windows)
    ppl = perplexity(load(args.out), windows)
    result = {
        "recipe": args.recipe,
        "ppl": ppl,
        "seconds": seconds,
        "size_bytes": sum(p.stat().st_size for p in args.out.rglob("*") if p.is_file()),
        "peak_rss_mb": peak_rss_mb(),
        "eval_windows": int(windows.shape[0]),
        "versions": versions(),
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
