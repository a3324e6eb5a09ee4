"""Sentence vectors of a causal LM: pooling, and a forward pass that stops at the pooling layer.

Used by alignment training (afp_cli/align) and by analysis (afp_cli/analyze) alike.

The official AFP code runs the whole model with every hidden state kept although MCL pools layer 1 only; here the
forward pass stops right after the pooling layer, so with `last-1` the MCL pass costs one transformer block instead
of all of them. Layer numbering follows transformers' ``output_hidden_states``: 0 is the embedding output (the input
of the first block), k is the output of block k, and the final layer is the backbone's normalised last hidden state.

Sentences may come packed (several a row, ``position_ids`` restarting per sentence, no padding mask:
afp_cli/data/packing.py); their vectors are then pooled from each sentence's own tokens, the same as from a
padded batch.
"""

from __future__ import annotations

import torch

from afp_cli.data.packing import PackedRows
from afp_cli.model.blocks import backbone, decoder_layers
from afp_cli.model.pooling import Pooling


def last_token_index(attention_mask: torch.Tensor) -> torch.Tensor:
    """Index of the last non-padding position of each row, correct for left AND right padding.

    ``attention_mask.sum(-1) - 1`` (the official code) is only right for right padding; the position of the
    largest ``index × mask`` is right for both.
    """
    positions = torch.arange(attention_mask.shape[-1], device=attention_mask.device)
    return (positions * attention_mask).argmax(dim=-1)


def pool_last_token(hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """The hidden state of each row's last non-padding token."""
    return hidden[torch.arange(hidden.shape[0], device=hidden.device), last_token_index(attention_mask)]


def pool_mean(hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """The mean over each row's non-padding tokens."""
    mask = attention_mask.to(hidden.dtype).unsqueeze(-1)
    return (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1)


def pool_max(hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """The element-wise max over each row's non-padding tokens."""
    mask = attention_mask.to(hidden.dtype).unsqueeze(-1)
    return hidden.masked_fill(mask == 0, torch.finfo(hidden.dtype).min).max(dim=1).values


# One function per name of afp_cli/model/pooling.py:METHODS (the owner of the names; a test holds the keys equal).
POOLERS = {"last": pool_last_token, "avg": pool_mean, "max": pool_max}


def pool(hidden: torch.Tensor, attention_mask: torch.Tensor, method: str) -> torch.Tensor:
    """Sentence vectors ``(batch, hidden)`` from hidden states ``(batch, seq, hidden)``, ignoring padding.

    Args:
        method: one of afp_cli/model/pooling.py:METHODS.
    """
    try:
        pooler = POOLERS[method]
    except KeyError:
        raise ValueError(f"unknown pooling method {method!r}") from None
    return pooler(hidden, attention_mask)


class _StopForward(Exception):
    """Raised from a hook once the wanted hidden states are captured, to skip every later layer."""


def hidden_states_at(
    model,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor | None,
    layer: int | None,
    position_ids: torch.Tensor | None = None,
) -> torch.Tensor:
    """Hidden states ``(batch, seq, hidden)`` equal to ``model(..., output_hidden_states=True).hidden_states[layer]``.

    Only the embeddings and blocks ``0 .. layer-1`` are executed; ``layer=None`` (or the model's depth) runs the
    whole backbone but still skips the LM head. Works with peft-wrapped models, gradient checkpointing (the hook
    disarms itself, so recomputation in backward passes through untouched) and compiled blocks (the hooks sit
    outside the compiled ``forward``: afp_cli/align/step_speed.py).

    Args:
        position_ids: packed rows' position ids (with ``attention_mask`` None); None: the model's own positions.
    """
    depth = model.config.num_hidden_layers
    encoder = backbone(model)
    inputs = {"input_ids": input_ids, "attention_mask": attention_mask, "use_cache": False}
    if position_ids is not None:
        inputs["position_ids"] = position_ids
    if layer is None or layer == depth:
        return encoder(**inputs).last_hidden_state
    if not 0 <= layer < depth:
        raise ValueError(f"layer {layer} outside 0..{depth}")

    blocks = decoder_layers(model)
    captured: list[torch.Tensor] = []

    def capture(hidden: torch.Tensor) -> None:
        if captured:  # a recomputation under gradient checkpointing: let it run
            return
        captured.append(hidden)
        raise _StopForward

    if layer == 0:

        def before_first_block(module, args, kwargs):
            capture(args[0] if args else kwargs["hidden_states"])

        handle = blocks[0].register_forward_pre_hook(before_first_block, with_kwargs=True)
    else:

        def after_block(module, args, output):
            capture(output[0] if isinstance(output, (tuple, list)) else output)

        handle = blocks[layer - 1].register_forward_hook(after_block)
    try:
        encoder(**inputs)
    except _StopForward:
        pass
    finally:
        handle.remove()
    if not captured:
        raise RuntimeError(f"layer {layer} of {type(model).__name__} was never reached")
    return captured[0]


def sentence_vectors(
    model,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor | None,
    pooling: Pooling,
    packing: PackedRows | None = None,
) -> torch.Tensor:
    """Sentence vectors ``(sentences, hidden)``: hidden states of ``pooling.layer`` (None: final) pooled by
    ``pooling.method``.

    Args:
        pooling: a resolved choice (``auto`` is measured at start-up first: afp_cli/align/layer_choice.py).
        packing: the layout of packed sentences (``attention_mask`` is then None); each sentence is taken out of
            its row (for ``last``: the token at its start + length - 1) before pooling.
    """
    if pooling.auto:
        raise ValueError("pooling 'auto' must be resolved to a layer before sentence vectors are taken")
    if packing is None:
        return pool(hidden_states_at(model, input_ids, attention_mask, pooling.layer), attention_mask, pooling.method)
    hidden, real = packing.unpack(hidden_states_at(model, input_ids, None, pooling.layer, packing.position_ids))
    return pool(hidden, real, pooling.method)


def pooled_layers(
    model, input_ids: torch.Tensor, attention_mask: torch.Tensor, method: str, layers
) -> dict[int, torch.Tensor]:
    """``{layer: sentence vectors}`` for several ``layers`` from one forward pass that keeps every hidden state
    (what ``auto`` measures on: afp_cli/model/scoring.py:retrieval_by_layer). Padded batches only."""
    hidden_states = backbone(model)(
        input_ids=input_ids, attention_mask=attention_mask, use_cache=False, output_hidden_states=True
    ).hidden_states
    return {layer: pool(hidden_states[layer], attention_mask, method) for layer in layers}
