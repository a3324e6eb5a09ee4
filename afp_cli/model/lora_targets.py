"""Which modules LoRA adapts: named presets resolved per model, and a check that MCL has something to move.

MCL pools its sentence vector from one internal layer (official default `last-1`: the output of block 0), so its
gradient reaches only the input embeddings and the blocks below that layer. The official code fine-tunes every
weight, embeddings included; a LoRA that adapts only attention projections — or every linear layer, which below
layer 1 is one block — leaves MCL almost nothing to move. afp therefore adapts the input embeddings as well by
default (PEFT LoRA on the embedding module). The measurement behind that default is in docs/method_fidelity.md.

Presets (``lora.targets``):

- ``attention``: the attention projections of every block (q, k, v and output).
- ``all-linear``: every linear layer of every block (attention and MLP); never the LM head.
- ``embeddings+attention`` / ``embeddings+all-linear``: the same plus the input embedding module.
- ``auto``: afp's default, ``embeddings+all-linear`` for every run — also with ``mcl.weight=0``, so that the
  CIT-only ablation differs from MCL + CIT in the loss alone, not in what is trained.

A tied output layer stays untouched: LoRA on the embedding changes the lookup of input tokens, while the LM head
keeps reading the frozen base matrix (and ``merge`` unties the two first, see run_output.py).
"""

from __future__ import annotations

from dataclasses import dataclass

from afp_cli.errors import AfpError

AUTO_PRESET = "embeddings+all-linear"
TARGET_PRESETS = ("auto", "attention", "all-linear", "embeddings+attention", "embeddings+all-linear")

# The attention projections of each architecture (q, k, v and output), matched by suffix so "attn.c_proj" leaves
# GPT-2's MLP c_proj alone.
ATTENTION_MODULES: dict[str, list[str]] = {
    "gpt2": ["c_attn", "attn.c_proj"],
    "llama": ["q_proj", "k_proj", "v_proj", "o_proj"],
    "mistral": ["q_proj", "k_proj", "v_proj", "o_proj"],
    "qwen2": ["q_proj", "k_proj", "v_proj", "o_proj"],
    "qwen3": ["q_proj", "k_proj", "v_proj", "o_proj"],
    "gemma": ["q_proj", "k_proj", "v_proj", "o_proj"],
    "gemma2": ["q_proj", "k_proj", "v_proj", "o_proj"],
    "xglm": ["q_proj", "k_proj", "v_proj", "out_proj"],
    "opt": ["q_proj", "k_proj", "v_proj", "out_proj"],
    "bloom": ["query_key_value", "self_attention.dense"],
    "gpt_neox": ["query_key_value", "attention.dense"],
}


def resolve_targets(model, preset: str, explicit: list[str] | str | None = None) -> list[str] | str:
    """PEFT ``target_modules`` for ``model``: ``explicit`` when given, else the modules the preset names.

    Embedding and block names are read from the model itself (``get_input_embeddings`` and the decoder blocks), so
    the presets work for any architecture whose blocks hold ``nn.Linear`` (or GPT-2's ``Conv1D``) layers.
    """
    if explicit is not None:
        return explicit
    if preset not in TARGET_PRESETS:
        raise AfpError(f"lora.targets '{preset}' is not one of {', '.join(TARGET_PRESETS)}")
    parts = (AUTO_PRESET if preset == "auto" else preset).split("+")
    names: list[str] = []
    if "embeddings" in parts:
        names.append(input_embedding_name(model))
    if "attention" in parts:
        model_type = model.config.model_type
        if model_type not in ATTENTION_MODULES:
            raise AfpError(
                f"lora.targets '{preset}': afp does not know the attention modules of '{model_type}'; "
                "use lora.targets=all-linear or list them in lora.target_modules"
            )
        names.extend(ATTENTION_MODULES[model_type])
    if "all-linear" in parts:
        names.extend(block_linear_names(model))
    return names


def input_embedding_name(model) -> str:
    """Dotted name of the token embedding module (``model.embed_tokens``, ``transformer.wte``, ...)."""
    embedding = model.get_input_embeddings()
    for name, module in model.named_modules():
        if module is embedding:
            return name
    raise RuntimeError(f"{type(model).__name__}: input embedding module not found among its modules")


def block_linear_names(model) -> list[str]:
    """Names, relative to a block, of every linear layer inside the decoder blocks (``self_attn.q_proj``, ...).

    Relative names match the same layer in every block and nothing outside the blocks, so the LM head (and any
    projection around the backbone) is never adapted.
    """
    from afp_cli.model.blocks import decoder_layers

    names: list[str] = []
    for name, module in decoder_layers(model)[0].named_modules():
        if _is_linear(module) and name not in names:
            names.append(name)
    if not names:
        raise AfpError(
            f"{type(model).__name__}: no linear layer found in its decoder blocks; "
            "list the modules to adapt in lora.target_modules"
        )
    return names


def _is_linear(module) -> bool:
    import torch
    from transformers.pytorch_utils import Conv1D

    return isinstance(module, (torch.nn.Linear, Conv1D))


@dataclass
class PoolingReach:
    """What training can change below the MCL pooling layer's output."""

    layer: int  # the pooling layer (0 = embeddings); k = output of block k-1
    embeddings_trained: bool
    parameters_below: int  # trainable parameter count in the embeddings and blocks 0 .. layer-1


def pooling_reach(model, layer: int) -> PoolingReach:
    """Count the trainable parameters whose change can move the hidden states of ``layer``."""
    from afp_cli.model.blocks import decoder_layers

    embedding = model.get_input_embeddings()
    embedding_parameters = {id(param) for param in embedding.parameters()}
    below = {id(param) for block in list(decoder_layers(model))[:layer] for param in block.parameters()}
    embeddings_trained = any(param.requires_grad for param in embedding.parameters())
    count = sum(
        param.numel()
        for param in model.parameters()
        if param.requires_grad and (id(param) in below or id(param) in embedding_parameters)
    )
    return PoolingReach(layer, embeddings_trained, count)


def mcl_reach_warning(reach: PoolingReach, depth: int) -> str | None:
    """A warning when MCL can barely move its own sentence vectors, naming the fix; None when all is well.

    Measured (docs/method_fidelity.md): with the embeddings frozen and pooling from layer 1, retrieval stays at
    chance even with every linear layer adapted; adapting the embeddings makes it rise far above. The warning fires
    when the embeddings are frozen and the pooling layer lies in the lowest quarter of the model.
    """
    fix = "set lora.targets=embeddings+all-linear (afp's default, auto) or pool a higher layer (mcl.pooling)"
    if reach.parameters_below == 0:
        return (
            f"MCL pools layer {reach.layer} but nothing below it is trained: MCL cannot change the sentence "
            f"vectors at all; {fix}"
        )
    if not reach.embeddings_trained and reach.layer <= max(1, depth // 4):
        return (
            f"MCL pools layer {reach.layer} of {depth} with the input embeddings frozen: only "
            f"{reach.parameters_below:,} trainable parameters lie below it and MCL barely aligns; {fix}"
        )
    return None
