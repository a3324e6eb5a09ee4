"""Held-out evaluation during alignment: CIT loss and MCL retrieval accuracy, with dropout off."""

from __future__ import annotations

import torch

from afp_cli.align.config import AlignConfig
from afp_cli.data.batches import collate
from afp_cli.data.tokenize import IGNORE_INDEX
from afp_cli.representations import sentence_vectors
from afp_cli.scoring import causal_lm_loss, retrieval_accuracy


@torch.no_grad()
def evaluate_held_out(model, examples, config: AlignConfig, pad_token_id: int, device: str, autocast,
                      through=None) -> dict[str, float]:
    """CIT loss and MCL retrieval top-1 accuracy (sent0 → sent1 among the held-out pairs), dropout off.

    Args:
        through: the engine's wrapped entry (``through(compute, *args)`` runs ``compute(model, *args)``), so that
            FSDP or DeepSpeed gather the weights for the passes; every process must then call this alike.
    """
    if through is None:
        def through(compute, *args):
            return compute(model, *args)

    if not examples:
        return {}
    was_training = model.training
    model.eval()
    metrics: dict[str, float] = {}
    size = max(2, config.train.batch_size * 2)
    chunks = [examples[start:start + size] for start in range(0, len(examples), size)]
    with autocast():
        if examples[0].sentences:
            sources, targets = [], []
            for chunk in chunks:
                batch = collate(chunk, pad_token_id).to(device)
                vectors = through(sentence_vectors, batch.sentence_ids, batch.sentence_mask,
                                  config.mcl.pooling_layer, config.mcl.pooling_method).float()
                columns = vectors.chunk(batch.sentences_per_example)
                sources.append(columns[0])
                targets.append(columns[1])
            metrics["retrieval_top1"] = retrieval_accuracy(torch.cat(sources), torch.cat(targets))
        if examples[0].instruction_ids:
            losses, weights = [], []
            for chunk in chunks:
                batch = collate(chunk, pad_token_id).to(device)
                targets_in_chunk = int((batch.instruction_labels[:, 1:] != IGNORE_INDEX).sum())
                if targets_in_chunk:
                    losses.append(float(through(causal_lm_loss, batch.instruction_ids, batch.instruction_mask,
                                                batch.instruction_labels)) * targets_in_chunk)
                    weights.append(targets_in_chunk)
            if weights:
                metrics["cit_loss"] = sum(losses) / sum(weights)
    model.train(was_training)
    return metrics
