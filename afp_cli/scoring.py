"""Scores a model earns on AFP data: the masked causal-LM loss over answer tokens, and top-1 translation retrieval.

Ground floor: training (afp_cli/align, which optimises the loss and watches both on its held-out slice) and analysis
(afp_cli/analyze, which measures them on any file afterwards) use these same functions, so their numbers agree.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from afp_cli.data.tokenize import IGNORE_INDEX


def causal_lm_loss(model, input_ids: torch.Tensor, attention_mask: torch.Tensor, labels: torch.Tensor,
                   mean_over: float | None = None) -> torch.Tensor:
    """Mean next-token cross-entropy over the target (non-masked) tokens.

    The LM head runs only on positions that predict a target: with prompts masked out this skips most of the
    ``(tokens × vocabulary)`` logits a plain forward would build (256k-vocabulary models like XGLM spend much of
    their memory there).

    Args:
        mean_over: divide the summed cross-entropy by this instead of this batch's target count. With W processes
            it is the global target count / W: the engine's average over processes then gives the mean over every
            target token of the global batch, as one process would (a mean of per-process means would not).
    """
    from afp_cli.model import backbone

    hidden = backbone(model)(input_ids=input_ids, attention_mask=attention_mask, use_cache=False).last_hidden_state
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
