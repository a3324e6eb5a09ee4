"""The two AFP objectives: InfoNCE over sentence vectors (MCL) here, masked causal-LM loss (CIT) in
afp_cli/model/scoring.py (analysis measures it too), and their weighted sum.

Li et al., "Improving In-context Learning of Multilingual Generative Language Models with Cross-lingual
Alignment" (NAACL 2024). MCL pulls the sentence vectors of a translation pair together against in-batch
negatives; CIT trains answers in a language other than the instruction's.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F


def info_nce(anchors: torch.Tensor, positives: torch.Tensor, temperature: float,
             hard_negatives: torch.Tensor | None = None, hard_negative_weight: float = 0.0,
             symmetric: bool = False) -> torch.Tensor:
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


@dataclass
class LossParts:
    """The weighted total that is optimised, and its parts for logging (unweighted, as plain floats)."""

    total: torch.Tensor
    mcl: float | None
    cit: float | None
