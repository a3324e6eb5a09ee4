"""Pre-train the experiment's base model: a small LLaMA that has read English and Chinese, never a translation.

The paper aligns a model that was pre-trained on many languages separately. No such model can be downloaded here,
so this builds one in miniature: a byte-level BPE tokenizer and a LLaMA-architecture model (a real config, a few
layers) trained from scratch with the causal-LM loss on single sentences, the English side of one part of the
parallel file and the Chinese side of a *disjoint* part. Every sentence is its own document (``<s> … </s>``), so the
model learns to end a sentence, and no document ever holds both languages.

The result is a normal Hugging Face model folder (``from_pretrained`` loads it), cached by its settings: a second run
with the same settings and texts reuses it.
"""

from __future__ import annotations

import hashlib
import json
import math
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path


@dataclass(frozen=True)
class PretrainSettings:
    hidden_size: int = 128
    intermediate_size: int = 256
    num_hidden_layers: int = 4
    num_attention_heads: int = 4
    num_key_value_heads: int = 2
    vocab_size: int = 4000  # BPE trained on the pre-training sentences only
    steps: int = 3000
    batch_size: int = 64  # sentences per step
    lr: float = 3e-3  # a from-scratch tiny model wants a large rate
    warmup_steps: int = 100
    max_length: int = 48  # tokens per sentence (Tatoeba sentences are short)
    seed: int = 0

    def architecture(self) -> dict:
        return {
            "model_type": "llama",
            "hidden_size": self.hidden_size,
            "intermediate_size": self.intermediate_size,
            "num_hidden_layers": self.num_hidden_layers,
            "num_attention_heads": self.num_attention_heads,
            "num_key_value_heads": self.num_key_value_heads,
            "max_position_embeddings": 256,
            "tie_word_embeddings": False,
        }


def cache_key(settings: PretrainSettings, texts: list[str]) -> str:
    """Settings and the exact texts: a change in either gives a new model folder."""
    digest = hashlib.sha256(json.dumps(asdict(settings), sort_keys=True).encode())
    for text in texts:
        digest.update(text.encode())
        digest.update(b"\n")
    return digest.hexdigest()[:16]


def pretrain(texts: list[str], settings: PretrainSettings, cache_dir: Path, log=print) -> Path:
    """The folder of a model pre-trained on ``texts`` (one sentence each), built on first use."""
    folder = cache_dir / f"base-{cache_key(settings, texts)}"
    if (folder / "config.json").is_file():
        log(f"pre-trained base model: {folder} (cached)")
        return folder
    import torch

    from afp_cli.data.batches import _pad as pad_right  # afp's own right padding: one copy in the repository
    from afp_cli.model.tiny import build_model, train_tokenizer

    torch.manual_seed(settings.seed)
    tokenizer = train_tokenizer(texts, vocab_size=settings.vocab_size)
    model = build_model(settings.architecture(), tokenizer, seed=settings.seed)
    encoded = [
        ids[: settings.max_length - 1] + [tokenizer.eos_token_id]
        for ids in tokenizer(texts, add_special_tokens=True)["input_ids"]
    ]
    optimizer = torch.optim.AdamW(model.parameters(), lr=settings.lr, weight_decay=0.01, betas=(0.9, 0.98))
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: _lr_factor(step, settings))
    generator = torch.Generator().manual_seed(settings.seed)
    order = torch.randperm(len(encoded), generator=generator).tolist()
    position = 0
    model.train()
    started = time.monotonic()
    for step in range(settings.steps):
        if position + settings.batch_size > len(order):  # a new epoch, a new seeded order
            order, position = torch.randperm(len(encoded), generator=generator).tolist(), 0
        rows = [encoded[index] for index in order[position : position + settings.batch_size]]
        position += settings.batch_size
        ids, mask = pad_right(rows, tokenizer.pad_token_id)
        labels = ids.masked_fill(mask == 0, -100)
        loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        schedule.step()
        optimizer.zero_grad(set_to_none=True)
        if step % 250 == 0 or step == settings.steps - 1:
            log(
                f"pre-training step {step + 1}/{settings.steps}: loss {loss.item():.3f} "
                f"({time.monotonic() - started:.0f} s)"
            )
    partial = folder.with_name(folder.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    model.save_pretrained(partial)
    tokenizer.save_pretrained(partial)
    (partial / "pretraining.json").write_text(
        json.dumps(
            {
                "settings": asdict(settings),
                "sentences": len(texts),
                "final_loss": loss.item(),
                "seconds": round(time.monotonic() - started, 1),
            },
            indent=2,
        )
    )
    partial.rename(folder)  # whole or absent: a killed run never leaves a half-saved model in the cache
    log(f"pre-trained base model: {folder}")
    return folder


def _lr_factor(step: int, settings: PretrainSettings) -> float:
    if step < settings.warmup_steps:
        return (step + 1) / settings.warmup_steps
    progress = (step - settings.warmup_steps) / max(1, settings.steps - settings.warmup_steps)
    return 0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * progress))
