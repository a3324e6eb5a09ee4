"""Scores a model earns on AFP data: the masked causal-LM loss over answer tokens, and top-1 translation retrieval.

Ground floor: training (afp_cli/align, which optimises the loss and watches both on its held-out slice) and analysis
(afp_cli/analyze, which measures them on any file afterwards) use these same functions, so their numbers agree.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch
import torch.nn.functional as F

from afp_cli.data.tokenize import IGNORE_INDEX
from afp_cli.model.pooling import Pooling


def causal_lm_loss(
    model,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor | None,
    labels: torch.Tensor,
    mean_over: float | None = None,
    position_ids: torch.Tensor | None = None,
) -> torch.Tensor:
    """Mean next-token cross-entropy over the target (non-masked) tokens.

    The LM head runs only on positions that predict a target: with prompts masked out this skips most of the
    ``(tokens × vocabulary)`` logits a plain forward would build (256k-vocabulary models like XGLM spend much of
    their memory there).

    Args:
        mean_over: divide the summed cross-entropy by this instead of this batch's target count. With W processes
            it is the global target count / W: the engine's average over processes then gives the mean over every
            target token of the global batch, as one process would (a mean of per-process means would not).
        position_ids: packed rows' position ids, with ``attention_mask`` None (afp_cli/data/packing.py; the labels
            then hold no target at the first token of a text, which the text before it would predict).
    """
    from afp_cli.model.blocks import backbone

    inputs = {"input_ids": input_ids, "attention_mask": attention_mask, "use_cache": False}
    if position_ids is not None:
        inputs["position_ids"] = position_ids
    hidden = backbone(model)(**inputs).last_hidden_state
    shifted_labels = labels[:, 1:]
    predicting = shifted_labels != IGNORE_INDEX
    if not predicting.any():  # every answer truncated away: no signal, but keep the graph connected
        return hidden.sum() * 0.0
    logits = model.get_output_embeddings()(hidden[:, :-1][predicting])
    softcap = getattr(model.config, "final_logit_softcapping", None)
    if softcap:
        logits = torch.tanh(logits / softcap) * softcap
    if mean_over is None:
        return F.cross_entropy(logits.float(), shifted_labels[predicting])
    return F.cross_entropy(logits.float(), shifted_labels[predicting], reduction="sum") / mean_over


def retrieval_accuracy(sources: torch.Tensor, targets: torch.Tensor) -> float:
    """Share of sources whose most cosine-similar target is their own translation."""
    sources = torch.nn.functional.normalize(sources, dim=-1)
    targets = torch.nn.functional.normalize(targets, dim=-1)
    predicted = (sources @ targets.T).argmax(dim=-1)
    return float((predicted == torch.arange(len(sources), device=predicted.device)).float().mean())


def packed_positions(packing) -> torch.Tensor | None:
    """The position ids a packed batch's texts run with (afp_cli/data/packing.py); None for a padded batch."""
    return None if packing is None else packing.position_ids


def answer_tokens(labels: torch.Tensor | None) -> int:
    """Tokens the CIT loss averages over: answer tokens that a previous token predicts (labels shifted by one)."""
    return 0 if labels is None else int((labels[:, 1:] != IGNORE_INDEX).sum())


@torch.no_grad()
def score_batches(
    model,
    batches: Iterable,
    pooling: Pooling,
    device,
    autocast,
    through: Callable | None = None,
    advance: Callable[[int], object] = lambda count: None,
) -> dict[str, float]:
    """CIT loss over every answer token of ``batches`` and top-1 retrieval both ways over all their pairs, dropout off.

    What `afp align` reports on its held-out slice and `afp analyze loss` on a file: one loop, so the two agree.
    ``cit_loss`` is each batch's mean weighted by its answer tokens (the mean over all of them, whatever the batch
    size; a batch whose answers were all truncated away adds nothing);
    ``retrieval_top1`` is sent0 → sent1, ``retrieval_top1_reverse`` sent1 → sent0. A key is absent when the
    batches carry no instruction texts (or no answer token is left), or no pairs.

    Args:
        pooling: a resolved pooling (not ``auto``).
        autocast: a context manager factory (bf16 on CUDA, a null context elsewhere).
        through: the engine's wrapped entry (``through(compute, *args)`` runs ``compute(model, *args)``), so that
            FSDP or DeepSpeed gather the weights for the passes; every process must then call this alike.
    """
    from afp_cli.model.representations import sentence_vectors

    through = through or _direct(model)

    was_training = model.training
    model.eval()
    loss_sum, loss_tokens = 0.0, 0
    sources, targets = [], []
    with autocast():
        for batch in batches:
            batch = batch.to(device)
            tokens = answer_tokens(batch.instruction_labels)
            if tokens:
                loss = through(
                    causal_lm_loss,
                    batch.instruction_ids,
                    batch.instruction_mask,
                    batch.instruction_labels,
                    None,
                    packed_positions(batch.instruction_packing),
                )
                loss_sum += float(loss) * tokens
                loss_tokens += tokens
            if batch.sentence_ids is not None:
                vectors = through(
                    sentence_vectors,
                    batch.sentence_ids,
                    batch.sentence_mask,
                    pooling,
                    batch.sentence_packing,
                ).float()
                columns = vectors.chunk(batch.sentences_per_example)
                sources.append(columns[0])
                targets.append(columns[1])
            advance(1)
    model.train(was_training)
    scores: dict[str, float] = {}
    if loss_tokens:
        scores["cit_loss"] = loss_sum / loss_tokens
    if sources:
        all_sources, all_targets = torch.cat(sources), torch.cat(targets)
        scores["retrieval_top1"] = retrieval_accuracy(all_sources, all_targets)
        scores["retrieval_top1_reverse"] = retrieval_accuracy(all_targets, all_sources)
    return scores


def _direct(model) -> Callable:
    """``through`` for a model no engine wraps: ``compute(model, *args)``."""

    def through(compute, *args):
        return compute(model, *args)

    return through


@torch.no_grad()
def retrieval_by_layer(
    model,
    batches: Iterable,
    method: str,
    layers: Iterable[int],
    device,
    autocast,
    through: Callable | None = None,
) -> dict[int, tuple[float, float]]:
    """Top-1 retrieval both ways ``{layer: (sent0 → sent1, sent1 → sent0)}`` over all the pairs of ``batches``,
    from one forward pass per batch that keeps every hidden state, dropout off: what ``mcl.pooling: auto`` chooses
    its layer from (afp_cli/model/pooling.py:choose_layer). Padded batches (no packing).

    Args:
        through: as for :func:`score_batches`.
    """
    from afp_cli.model.representations import pooled_layers

    through = through or _direct(model)
    layers = list(layers)
    was_training = model.training
    model.eval()
    sources: dict[int, list[torch.Tensor]] = {layer: [] for layer in layers}
    targets: dict[int, list[torch.Tensor]] = {layer: [] for layer in layers}
    with autocast():
        for batch in batches:
            batch = batch.to(device)
            if batch.sentence_packing is not None:
                raise ValueError("retrieval_by_layer takes padded batches")
            by_layer = through(pooled_layers, batch.sentence_ids, batch.sentence_mask, method, layers)
            for layer, vectors in by_layer.items():
                columns = vectors.float().chunk(batch.sentences_per_example)
                sources[layer].append(columns[0])
                targets[layer].append(columns[1])
    model.train(was_training)
    table = {}
    for layer in layers:
        all_sources, all_targets = torch.cat(sources[layer]), torch.cat(targets[layer])
        table[layer] = (retrieval_accuracy(all_sources, all_targets), retrieval_accuracy(all_targets, all_sources))
    return table
