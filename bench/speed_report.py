"""What a job's speed section says (kernels/speed_report.py, the validate stage on a GPU worker) for a random
Llama-3-8B-shaped model of a few layers compressed with a preset: decode tokens/s of the original and of the
checkpoint on the kernels (the step compiled), and each distinct compressed layer against a dense matmul.

    python bench/speed_report.py [--preset w4a16-rtn] [--layers 4]
"""

from __future__ import annotations

import argparse
import datetime
import json
import tempfile
import time
from pathlib import Path

LLAMA3_8B = dict(hidden_size=4096, intermediate_size=14336, num_attention_heads=32, num_key_value_heads=8,
                 vocab_size=128256)
TARGET_BATCH1 = {"w4a16": 2.5}  # the decode target at batch 1, for W4A16 presets (32 layers)


def _word_level_tokenizer(dest: Path) -> None:
    """A tokenizer for the directory (load_model wants one); decoding speed never tokenizes text."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.WordLevel({"[UNK]": 0}, unk_token="[UNK]"))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    PreTrainedTokenizerFast(tokenizer_object=tokenizer, unk_token="[UNK]").save_pretrained(dest)


def report(preset: str, layers: int, workdir: Path) -> dict:
    import torch

    from bench.gptq_speed import random_model
    from compress.export import save_compressed
    from compress.model_io import load_model
    from compress.recipes import resolve_recipe
    from compress.runner import compress_model
    from kernels.speed_report import decode_speed_report

    base, compressed = workdir / "original", workdir / "compressed"
    random_model(dict(LLAMA3_8B, num_hidden_layers=layers), fill_on="cuda").save_pretrained(base)
    _word_level_tokenizer(base)
    model, tokenizer = load_model(base)
    recipe = resolve_recipe(preset=preset)
    calibration = torch.randint(0, LLAMA3_8B["vocab_size"], (16, 256), generator=torch.Generator().manual_seed(0))
    compress_model(model, recipe, calibration, {}, torch.device("cuda"))
    save_compressed(model, tokenizer, recipe, compressed)
    del model
    started = time.perf_counter()
    section = decode_speed_report(base, compressed, torch.device("cuda"))
    return {**section, "report_seconds": time.perf_counter() - started}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="w4a16-rtn")
    parser.add_argument("--layers", type=int, default=4, help="decoder layers of the random model")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    args = parser.parse_args(argv)
    if args.layers < 1:
        parser.error("--layers must be positive")
    from compress.errors import RecipeError
    from compress.recipes import resolve_recipe

    try:
        resolve_recipe(preset=args.preset)
    except RecipeError as error:
        parser.error(f"--preset: {error.message}")
    import torch

    if not torch.cuda.is_available():
        parser.error("the speed section is measured on a CUDA GPU")
    date = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
    with tempfile.TemporaryDirectory() as workdir:
        section = report(args.preset, args.layers, Path(workdir))
    result = {"benchmark": "speed_report", "date": date, "preset": args.preset, "layers": args.layers,
              "shape": "Llama-3-8B", **section}
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"speed_report-{args.preset}-{args.layers}layers-{date[:10]}.json"
    path.write_text(json.dumps(result, indent=2))
    if not section.get("measured"):
        print(f"not measured: {section.get('reason')}")
        return
    target = TARGET_BATCH1.get(args.preset.split("-")[0]) if args.layers == 32 else None
    print(f"{section['device']}, {args.preset}, {args.layers} layers ({section['report_seconds']:.0f} s)")
    print(f"{'batch':>5} {'original tok/s':>15} {'compressed tok/s':>17} {'speedup':>8} {'target':>7}")
    for row in section["rows"]:
        goal = f"{target:.1f}x" if target and row["batch"] == 1 else "-"
        print(f"{row['batch']:>5} {row['original_tokens_per_s']:>15.1f} {row['compressed_tokens_per_s']:>17.1f} "
              f"{row['speedup']:>7.2f}x {goal:>7}  {' '.join(row['notes'])}")
    print(f"{'kernel':<14} {'K x N':>13} {'layers':>6} {'rows':>4} {'kernel us':>10} {'dense us':>9} {'speedup':>8}")
    for layer in section["layers"]:
        shape = f"{layer['in_features']} x {layer['out_features']}"
        print(f"{layer['kernel']:<14} {shape:>13} {layer['layers']:>6} {layer['rows']:>4} {layer['kernel_us']:>10.1f} "
              f"{layer['dense_us']:>9.1f} {layer['speedup']:>7.2f}x")
    for step in section["matmuls_per_step"]:
        print(f"matmuls of one decode step at {step['rows']} rows: {step['kernel_us']:.1f} us on kernels, "
              f"{step['dense_us']:.1f} dense ({step['speedup']:.2f}x)")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
