"""A small Llama trained in under a minute on the bundled Shakespeare, so demos need no download.

Deterministic for a seed: the tokenizer, the initial weights and the batch order all derive from it.
"""

from __future__ import annotations

import os
import shutil
import uuid
from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

DEMO_TEXTS = Path(__file__).parent / "demo"
VOCAB_SIZE = 1024
SEQ_LEN = 128
BATCH = 16
# 400 steps of 16 x 128 tokens take ~40 s on 2 CPU cores and reach an eval ppl near 78 (vocab 1024).
STEPS = 400
SPECIALS = ["<pad>", "<s>", "</s>"]


def _tokenizer(text: str) -> PreTrainedTokenizerFast:
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB_SIZE,
        special_tokens=SPECIALS,
        show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tokenizer.train_from_iterator([text], trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, pad_token="<pad>", bos_token="<s>", eos_token="</s>"
    )


def _config() -> LlamaConfig:
    return LlamaConfig(
        vocab_size=VOCAB_SIZE,
        hidden_size=128,
        intermediate_size=384,
        num_hidden_layers=3,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        pad_token_id=0,
        bos_token_id=1,
        eos_token_id=2,
        tie_word_embeddings=False,
    )


def _train(model: LlamaForCausalLM, ids: torch.Tensor, generator: torch.Generator) -> None:
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.01)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=3e-3, total_steps=STEPS, pct_start=0.1)
    model.train()
    for _ in range(STEPS):
        starts = torch.randint(0, ids.numel() - SEQ_LEN - 1, (BATCH,), generator=generator)
        batch = torch.stack([ids[start : start + SEQ_LEN] for start in starts.tolist()])
        loss = model(input_ids=batch, labels=batch).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        schedule.step()
        optimizer.zero_grad(set_to_none=True)
    model.eval()


def _complete(dest: Path) -> bool:
    return all((dest / name).is_file() for name in ("config.json", "model.safetensors", "tokenizer.json"))


def build_demo_model(dest: Path, seed: int = 0) -> Path:
    """Build (or reuse, when dest already holds one) the demo model; written atomically."""
    dest = Path(dest)
    if _complete(dest):
        return dest
    text = (DEMO_TEXTS / "train.txt").read_text(encoding="utf-8")
    tokenizer = _tokenizer(text)
    torch.manual_seed(seed)
    model = LlamaForCausalLM(_config())
    ids = torch.tensor(tokenizer(text, add_special_tokens=False)["input_ids"], dtype=torch.long)
    _train(model, ids, torch.Generator().manual_seed(seed))
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.parent / f".{dest.name}.tmp-{uuid.uuid4().hex[:8]}"
    try:
        model.to(torch.bfloat16).save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        if dest.exists():
            shutil.rmtree(dest)
        os.replace(tmp, dest)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return dest
