"""Pooling and InfoNCE against hand computations; the CIT loss against transformers' own loss."""

import math

import pytest
import torch

from afp_cli.align.losses import info_nce
from afp_cli.data.tokenize import IGNORE_INDEX
from afp_cli.model.representations import last_token_index, pool
from afp_cli.model.scoring import causal_lm_loss

# Two sequences of length 4, hidden size 2; row 0 has 3 real tokens, row 1 has 2.
TOKENS = [[[1.0, 0.0], [2.0, 1.0], [3.0, 5.0]], [[4.0, 2.0], [0.0, -6.0]]]
PAD = [9.0, 9.0]  # a loud value: any leak of padding into a pooled vector shows


def padded(side: str):
    hidden, mask = [], []
    for row in TOKENS:
        fill = [PAD] * (4 - len(row))
        hidden.append(row + fill if side == "right" else fill + row)
        mask.append([1] * len(row) + [0] * len(fill) if side == "right" else [0] * len(fill) + [1] * len(row))
    return torch.tensor(hidden), torch.tensor(mask)


@pytest.mark.parametrize("side", ["right", "left"])
def test_pooling_matches_hand_computation_for_both_padding_sides(side):
    hidden, mask = padded(side)
    assert pool(hidden, mask, "last").tolist() == [[3.0, 5.0], [0.0, -6.0]]
    assert pool(hidden, mask, "avg").tolist() == [[2.0, 2.0], [2.0, -2.0]]
    assert pool(hidden, mask, "max").tolist() == [[3.0, 5.0], [4.0, 2.0]]


def test_last_token_index_differs_from_the_official_formula_under_left_padding():
    _, mask = padded("left")
    assert last_token_index(mask).tolist() == [3, 3]
    assert (mask.sum(-1) - 1).tolist() == [2, 1]  # what the official code would pick: a wrong token


def _hand_info_nce(anchors, positives, temperature, hard=None, hard_weight=0.0):
    def cos(u, v):
        return sum(a * b for a, b in zip(u, v)) / math.sqrt(sum(a * a for a in u) * sum(b * b for b in v))

    total = 0.0
    for i, anchor in enumerate(anchors):
        logits = [cos(anchor, positive) / temperature for positive in positives]
        if hard is not None:
            logits += [
                cos(anchor, negative) / temperature + (hard_weight if j == i else 0.0)
                for j, negative in enumerate(hard)
            ]
        total += -logits[i] + math.log(sum(math.exp(value) for value in logits))
    return total / len(anchors)


def test_info_nce_matches_hand_computation():
    anchors = [[1.0, 0.0, 0.5], [0.2, 1.0, -0.3], [0.0, 0.4, 1.0]]
    positives = [[0.1, 0.9, 0.4], [0.1, 0.8, 0.0], [-0.2, 0.5, 0.7]]  # pair 0 is closer to the others' targets
    got = info_nce(torch.tensor(anchors), torch.tensor(positives), temperature=0.05)
    expected = _hand_info_nce(anchors, positives, 0.05)
    assert expected > 0.01  # far from 0, so float32 rounding cannot hide a wrong formula
    assert got.item() == pytest.approx(expected, rel=1e-5)


def test_info_nce_with_hard_negatives_and_their_weight_matches_hand_computation():
    anchors = [[1.0, 0.0], [0.0, 1.0]]
    positives = [[0.8, 0.6], [0.6, 0.8]]
    hard = [[1.0, 0.2], [-1.0, 0.5]]
    got = info_nce(torch.tensor(anchors), torch.tensor(positives), 0.1, torch.tensor(hard), hard_negative_weight=0.7)
    assert got.item() == pytest.approx(_hand_info_nce(anchors, positives, 0.1, hard, 0.7), rel=1e-5)


def test_symmetric_info_nce_averages_both_directions():
    anchors = torch.tensor([[1.0, 0.0], [0.3, 1.0], [0.5, 0.5]])
    positives = torch.tensor([[0.9, 0.2], [0.0, 1.0], [-0.4, 0.9]])
    forward = info_nce(anchors, positives, 0.05)
    backward = info_nce(positives, anchors, 0.05)
    assert forward.item() != pytest.approx(backward.item())
    assert info_nce(anchors, positives, 0.05, symmetric=True).item() == pytest.approx((forward + backward).item() / 2)


def test_causal_lm_loss_equals_transformers_loss_on_the_same_targets(tiny_tokenizer):
    from afp_cli.model.tiny import build_model, tiny_architecture

    model = build_model(tiny_architecture("llama"), tiny_tokenizer, seed=1).eval()
    input_ids = torch.tensor([[1, 40, 41, 42, 43, 44], [1, 50, 51, 52, 0, 0]])
    mask = torch.tensor([[1, 1, 1, 1, 1, 1], [1, 1, 1, 1, 0, 0]])
    labels = torch.tensor(
        [
            [IGNORE_INDEX, IGNORE_INDEX, IGNORE_INDEX, 42, 43, 44],
            [IGNORE_INDEX, IGNORE_INDEX, 51, 52, IGNORE_INDEX, IGNORE_INDEX],
        ]
    )
    with torch.no_grad():
        ours = causal_lm_loss(model, input_ids, mask, labels)
        reference = model(input_ids=input_ids, attention_mask=mask, labels=labels).loss
    assert ours.item() == pytest.approx(reference.item(), rel=1e-5)
