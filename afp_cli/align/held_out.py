"""Held-out evaluation during alignment: CIT loss and MCL retrieval accuracy, with dropout off."""

from __future__ import annotations

from afp_cli.align.config import AlignConfig
from afp_cli.data.batches import collate
from afp_cli.model.scoring import score_batches


def evaluate_held_out(
    model, examples, config: AlignConfig, pad_token_id: int, device: str, autocast, through=None
) -> dict[str, float]:
    """CIT loss and MCL retrieval top-1 accuracy (sent0 → sent1 among the held-out pairs), dropout off.

    Args:
        through: the engine's wrapped entry, so that FSDP or DeepSpeed gather the weights for the passes; every
            process must then call this alike.
    """
    if not examples:
        return {}
    size = max(2, config.train.batch_size * 2)
    batches = (collate(examples[start : start + size], pad_token_id) for start in range(0, len(examples), size))
    scores = score_batches(model, batches, config.mcl.pooled, device, autocast, through)
    return {key: scores[key] for key in ("retrieval_top1", "cit_loss") if key in scores}
