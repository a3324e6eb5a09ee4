"""Build small tokenizers and models in-process, for the offline demo and the tests.

Nothing here downloads: a byte-level BPE tokenizer is trained on the given texts in well under a second, and a
model is initialised at random from a real architecture config (GPT-2, LLaMA, XGLM, BLOOM, ...) shrunk to a few
layers, so the same code paths as a hub model are exercised.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

SPECIAL_TOKENS = {"pad_token": "<pad>", "bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>"}

# Shrunk versions of real architectures: small enough to train on a CPU in seconds, deep enough that
# "layer 1 of N" pooling and LoRA target modules mean the same thing as on the full-size model.
TINY_ARCHITECTURES: dict[str, dict[str, Any]] = {
    "gpt2": {"n_embd": 64, "n_layer": 4, "n_head": 4, "n_positions": 256},
    "llama": {
        "hidden_size": 64,
        "intermediate_size": 128,
        "num_hidden_layers": 4,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "max_position_embeddings": 256,
    },
    "xglm": {"d_model": 64, "ffn_dim": 128, "num_layers": 4, "attention_heads": 4, "max_position_embeddings": 256},
    "bloom": {"hidden_size": 64, "n_layer": 4, "n_head": 4},
    "qwen2": {
        "hidden_size": 64,
        "intermediate_size": 128,
        "num_hidden_layers": 4,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "max_position_embeddings": 256,
    },
    "gpt_neox": {
        "hidden_size": 64,
        "intermediate_size": 128,
        "num_hidden_layers": 4,
        "num_attention_heads": 4,
        "max_position_embeddings": 256,
    },
    "opt": {
        "hidden_size": 64,
        "ffn_dim": 128,
        "num_hidden_layers": 4,
        "num_attention_heads": 4,
        "max_position_embeddings": 256,
        "word_embed_proj_dim": 64,
    },
}


def train_tokenizer(texts: Iterable[str], vocab_size: int = 1000):
    """Train a byte-level BPE tokenizer (GPT-2 style, so any script round-trips) and wrap it for transformers.

    The tokenizer prepends ``<s>`` like LLaMA/XGLM tokenizers do, so masking code is tested with a BOS token.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    backend = Tokenizer(models.BPE(unk_token=SPECIAL_TOKENS["unk_token"]))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(SPECIAL_TOKENS.values()),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    backend.train_from_iterator(texts, trainer)
    bos = SPECIAL_TOKENS["bos_token"]
    backend.post_processor = processors.TemplateProcessing(
        single=f"{bos} $A", pair=f"{bos} $A {bos} $B", special_tokens=[(bos, backend.token_to_id(bos))]
    )
    return PreTrainedTokenizerFast(tokenizer_object=backend, **SPECIAL_TOKENS)


def architecture_config(architecture: dict[str, Any], tokenizer):
    """A transformers config from ``{model_type: ..., **fields}``; vocab and special ids follow the tokenizer."""
    from transformers import AutoConfig

    fields = dict(architecture)
    model_type = fields.pop("model_type")
    config = AutoConfig.for_model(model_type, **fields)
    config.vocab_size = len(tokenizer)
    config.pad_token_id = tokenizer.pad_token_id
    config.bos_token_id = tokenizer.bos_token_id
    config.eos_token_id = tokenizer.eos_token_id
    if hasattr(config, "decoder_start_token_id"):
        config.decoder_start_token_id = tokenizer.bos_token_id
    return config


def tiny_architecture(model_type: str, **overrides: Any) -> dict[str, Any]:
    """The recipe-style architecture dict of a shrunk real architecture."""
    return {"model_type": model_type, **TINY_ARCHITECTURES[model_type], **overrides}


def build_model(architecture: dict[str, Any], tokenizer, seed: int = 0):
    """A randomly initialised causal LM of the given architecture; the seed fixes the initial weights."""
    import torch
    from transformers import AutoModelForCausalLM

    config = architecture_config(architecture, tokenizer)
    torch.manual_seed(seed)
    return AutoModelForCausalLM.from_config(config)
