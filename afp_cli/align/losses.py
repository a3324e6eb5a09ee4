"""The whole AFP training objective of one micro-batch: ``objective`` = mcl.weight · MCL + cit.weight · CIT.

Li et al., "Improving In-context Learning of Multilingual Generative Language Models with Cross-lingual
Alignment" (NAACL 2024). MCL (multilingual contrastive learning) pulls the sentence vectors of a translation pair
together against in-batch negatives; CIT (cross-lingual instruction tuning) trains answers in a language other
than the instruction's.

This module owns all of it: InfoNCE (``info_nce``), MCL over the negatives of every process (``contrastive_loss``,
through an all-gather that carries the gradient), CIT normalised by the global count of answer tokens
(``instruction_loss``), and their weighted sum (``objective``, a ``LossParts``). The masked causal-LM loss itself
is ``afp_cli/model/scoring.py:causal_lm_loss``, because afp analyze measures it too; CIT calls it from here.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from afp_cli.align.config import AlignConfig, MCLConfig
from afp_cli.align.distributed import all_gather_with_grad, process_count, sum_over_processes
from afp_cli.data.tokenize import IGNORE_INDEX
from afp_cli.model.representations import sentence_vectors
from afp_cli.model.scoring import causal_lm_loss


def info_nce(
    anchors: torch.Tensor,
    positives: torch.Tensor,
    temperature: float,
    hard_negatives: torch.Tensor | None = None,
    hard_negative_weight: float = 0.0,
    symmetric: bool = False,
) -> torch.Tensor:
    """InfoNCE with cosine similarity / τ and in-batch negatives (SimCSE-style, as in AFP).

    Row i's logits are ``cos(a_i, p_j) / τ`` for every j (the positive at j = i), followed by
    ``cos(a_i, h_j) / τ`` for every hard negative, the pair's own one (j = i) raised by ``hard_negative_weight``.
    ``symmetric`` averages this with the reverse direction (positives as anchors, no hard negatives).

    Args:
        anchors, positives: ``(batch, hidden)`` sentence vectors of the pairs.
        hard_negatives: optional ``(batch, hidden)``.
    Returns:
        the mean cross-entropy over the batch (a scalar).
    """
    anchors = F.normalize(anchors.float(), dim=-1)
    positives = F.normalize(positives.float(), dim=-1)
    logits = anchors @ positives.T / temperature
    if hard_negatives is not None:
        hard = anchors @ F.normalize(hard_negatives.float(), dim=-1).T / temperature
        hard = hard + hard_negative_weight * torch.eye(hard.shape[0], device=hard.device)
        logits = torch.cat([logits, hard], dim=1)
    targets = torch.arange(anchors.shape[0], device=anchors.device)
    loss = F.cross_entropy(logits, targets)
    if symmetric:
        reverse = positives @ anchors.T / temperature
        loss = (loss + F.cross_entropy(reverse, targets)) / 2
    return loss


def contrastive_loss(model, batch, mcl: MCLConfig, world_size: int) -> torch.Tensor:
    """MCL: InfoNCE over the pooled sentence vectors of the micro-batch's pairs (and hard negatives).

    With several processes and ``mcl.gather_negatives``, it scores the sentence vectors of every process (the
    global batch, in rank order: the same matrix one process would build), so its value is the same on every
    process; without, each process contrasts only its own pairs.
    """
    vectors = sentence_vectors(model, batch.sentence_ids, batch.sentence_mask, mcl.pooled, batch.sentence_packing)
    if world_size > 1 and mcl.gather_negatives:
        # (columns × pairs, hidden) → rows of (columns, hidden) per pair, gathered, and back: all anchors of
        # the global batch, then all positives, [then all hard negatives]
        per_pair = vectors.unflatten(0, (batch.sentences_per_example, -1)).transpose(0, 1)
        vectors = all_gather_with_grad(per_pair).transpose(0, 1).flatten(0, 1)
    columns = vectors.chunk(batch.sentences_per_example)
    hard_negatives = columns[2] if len(columns) > 2 else None
    return info_nce(columns[0], columns[1], mcl.temperature, hard_negatives, mcl.hard_negative_weight, mcl.symmetric)


def instruction_loss(model, batch, world_size: int) -> torch.Tensor:
    """CIT: the causal-LM loss of the answer tokens (the prompt masked), summed and divided by the answer tokens.

    With several processes the divisor is the global count of answer tokens over the number of processes, so the
    engine's average of the processes' gradients is the gradient of the global batch's mean.
    """
    mean_over = None
    if world_size > 1:
        targets = float((batch.instruction_labels[:, 1:] != IGNORE_INDEX).sum())
        mean_over = max(sum_over_processes(targets), 1.0) / world_size
    positions = None if batch.instruction_packing is None else batch.instruction_packing.position_ids
    return causal_lm_loss(
        model, batch.instruction_ids, batch.instruction_mask, batch.instruction_labels, mean_over, positions
    )


@dataclass
class LossParts:
    """The weighted total that is optimised, and its parts for logging (unweighted, as plain floats)."""

    total: torch.Tensor
    mcl: float | None
    cit: float | None


def objective(model, batch, config: AlignConfig) -> LossParts:
    """mcl.weight · MCL + cit.weight · CIT of one micro-batch (this process's share of it, with several processes).

    An objective whose weight is 0 is not computed (its part is None). Either way the engine's average of the
    processes' gradients is the gradient one process would get on the whole global batch. MCL runs first: the
    order of the two forward passes fixes the order of the dropout draws.

    Args:
        model: the (LoRA) causal LM; ``ModelEntry`` calls this inside the engine as ``objective(model, batch, config)``.
        batch: a collated micro-batch (``afp_cli/data/batches.py:collate``).
    Returns:
        the weighted total (a scalar tensor) and each unweighted part as a float.
    """
    world_size = process_count()
    total = None
    mcl_value = cit_value = None
    if config.mcl.enabled:
        mcl = contrastive_loss(model, batch, config.mcl, world_size)
        total = config.mcl.weight * mcl
        mcl_value = float(mcl.detach())
    if config.cit.enabled:
        cit = instruction_loss(model, batch, world_size)
        total = config.cit.weight * cit if total is None else total + config.cit.weight * cit
        cit_value = float(cit.detach())
    return LossParts(total, mcl_value, cit_value)
