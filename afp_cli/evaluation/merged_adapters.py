"""Adapters with LoRA on the input embeddings, for backends that cannot serve them: merged into a copy of the base.

vLLM serves LoRA on ``embed_tokens`` only for architectures whose vLLM model class declares the embedding as a
LoRA module, and not at all for others (XGLM, BLOOM, GPT-2, Qwen2/3 before vllm-project/vllm PR #33234): see
docs/evaluate.md. Merging (``merge_and_unload``) gives the same weights a PEFT model computes with, on any version.
"""

from __future__ import annotations

import re
from pathlib import Path

from afp_cli.model.loading import read_adapter_config
from afp_cli.text_files import folder_atomically

# Input-embedding module names of the architectures afp trains (llama/mistral/qwen, gpt2, bloom/xglm, gpt-neox).
EMBEDDING_MODULES = ("embed_tokens", "wte", "word_embeddings", "embed_in")


def targets_embeddings(adapter_dir: str | Path) -> bool:
    """Whether the adapter's ``target_modules`` (a list of names, or one regular expression) reaches an input
    embedding module."""
    targets = read_adapter_config(adapter_dir).get("target_modules") or []
    if isinstance(targets, str):
        # PEFT matches a string by full match against each module's qualified name; "all-linear" names no embedding
        return targets != "all-linear" and any(
            re.fullmatch(targets, name) or re.fullmatch(targets, f"model.{name}") for name in EMBEDDING_MODULES
        )
    return any(str(target).split(".")[-1] in EMBEDDING_MODULES for target in targets)


def merge_into_base(base_model: str, adapter_dir: str | Path, destination: Path) -> Path:
    """Save base + adapter merged (``merge_and_unload``) with the base's tokenizer as a plain model in
    ``destination``; written to a temporary folder beside it first, so a failure leaves nothing half-saved."""
    from peft import PeftModel

    from afp_cli.model.loading import load_causal_lm, load_tokenizer, quiet_saving

    model = PeftModel.from_pretrained(load_causal_lm(base_model), str(adapter_dir)).merge_and_unload()
    with folder_atomically(destination, "the merged model") as staging, quiet_saving():
        model.save_pretrained(staging)
        load_tokenizer(base_model).save_pretrained(staging)
    return destination
