"""Group loglikelihood requests by the token prefix they share, so that a shared prefix is encoded once.

Pure bookkeeping on token ids (no torch): lean_scoring.py runs the model along the plan built here.

Two levels of sharing, the two that k-shot multiple choice has:
- a *family* is a run of items whose contexts share a long token prefix (the fixed k-shot demonstrations); that
  prefix is encoded once for the whole family and everything else continues from its KV cache. An item alone in
  its family (0-shot) has its whole context but the last token as the prefix: its choices share the context.
- an *item* is one context token sequence; the choices of one item are the requests with that context. Within a
  family, an item with several choices has its *suffix* (its context after the family prefix, but the last token)
  encoded once too, and each choice continues that cache as a short row: the last context token and its
  continuation but the last token (plan_family). An item with one request, or no suffix, is one row continuing
  the family prefix: a second pass would save nothing.

Families are found without a tree: the distinct contexts are sorted, so that contexts with a common prefix are
neighbours, and a run grows while its common prefix stays at least half as long as it was and the next context
does not share far more with the one after it (a new task's demonstrations, or a 0-shot item that shares only the
first tokens, start a new family). The grouping decides only
how much is shared, never a result: every request is scored from exactly its own tokens.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

Tokens = tuple[int, ...]


@dataclass
class Item:
    """One context and the requests (by index into the request list) that continue it."""

    context: Tokens
    requests: list[int] = field(default_factory=list)


@dataclass
class Family:
    """Items whose contexts all start with the same ``prefix_length`` tokens.

    ``prefix_length`` is always shorter than every item's context, so that each item has at least its last context
    token left to encode: the hidden state there scores the first continuation token.
    """

    prefix_length: int
    items: list[Item]

    @property
    def prefix(self) -> Tokens:
        return self.items[0].context[: self.prefix_length]


def common_prefix_length(first: Sequence[int], second: Sequence[int]) -> int:
    """How many leading tokens two sequences share."""
    length = 0
    for a, b in zip(first, second):
        if a != b:
            break
        length += 1
    return length


def group_requests(contexts: Sequence[Tokens]) -> list[Family]:
    """Families of items covering every request index once; items in sorted context order.

    Args:
        contexts: each request's context tokens (non-empty), in request order.
    """
    items: dict[Tokens, Item] = {}
    for index, context in enumerate(contexts):
        items.setdefault(tuple(context), Item(tuple(context))).requests.append(index)
    ordered = [items[context] for context in sorted(items)]
    families: list[Family] = []
    for position, item in enumerate(ordered):
        following = ordered[position + 1].context if position + 1 < len(ordered) else ()
        if families and _joins(families[-1], item.context, following):
            families[-1].prefix_length = _shared(families[-1].prefix, item.context)
            families[-1].items.append(item)
        else:
            families.append(Family(prefix_length=len(item.context) - 1, items=[item]))
    return families


def _shared(prefix: Tokens, context: Tokens) -> int:
    """The prefix a context can share: never its last token (see Family)."""
    return min(common_prefix_length(prefix, context), len(context) - 1)


def _joins(family: Family, context: Tokens, following: Tokens) -> bool:
    """Join while the family keeps at least half of its prefix, unless the context shares more than twice as
    much with the next context: a new set of demonstrations (or an unrelated 0-shot item) shares only a few
    leading tokens with the family before it, and a short context sorted first must not hold a whole task's
    demonstrations in a one-token family."""
    shared = _shared(family.prefix, context)
    ahead = min(_shared(context, following), len(following) - 1) if following else 0
    return shared > 0 and 2 * shared >= family.prefix_length and 2 * shared >= ahead


@dataclass(frozen=True)
class Row:
    """One request's tokens fed after a KV cache, and where its continuation is read."""

    request: int
    tokens: Tokens
    first: int  # tokens[first] is the context's last token: its hidden state scores the first continuation token


@dataclass
class ItemBatch:
    """Items of one family encoded together: their suffixes as one batch continuing the family prefix (right
    padded to the longest), then their choices as batches continuing those caches (one batch, unless a lone item
    has more choices than a pass takes)."""

    suffixes: list[Tokens]
    choice_passes: list[list[tuple[int, Row]]]  # (the item's place in suffixes, one of its choices)


@dataclass
class FamilyPlan:
    """What a family's requests are fed after its prefix: rows continuing the prefix itself (the first level), and
    batches of items whose choices continue the item's own suffix (the second level)."""

    rows: list[Row]
    item_batches: list[ItemBatch]


@dataclass(frozen=True)
class BatchLimits:
    """How many items share a suffix pass, how many choice rows share a pass, and how long a request may be once
    its item's suffix is padded to its batch's longest (a sliding attention window; None: no limit)."""

    items: int
    choice_rows: int
    padded_input: int | None = None


def plan_family(family: Family, continuations: Sequence[Tokens], limits: BatchLimits) -> FamilyPlan:
    """The rows and item batches that score every request of ``family`` from exactly its own tokens.

    Args:
        family: from group_requests.
        continuations: each request's continuation tokens, indexed as the requests group_requests saw.
        limits: how item batches are cut.
    """
    prefix_length = family.prefix_length
    rows: list[Row] = []
    shared: list[Item] = []
    for item in family.items:
        # a suffix pass pays off only for a suffix that several choices share
        if len(item.requests) > 1 and len(item.context) - 1 > prefix_length:
            shared.append(item)
        else:
            rest = item.context[prefix_length:]
            rows += [Row(index, rest + continuations[index][:-1], len(rest) - 1) for index in item.requests]
    shared.sort(key=lambda item: len(item.context))  # items of one batch pad to similar suffix lengths
    batches = _cut(shared, continuations, prefix_length, limits)
    return FamilyPlan(rows, [_item_batch(batch, continuations, prefix_length, limits) for batch in batches])


def _item_batch(
    items: list[Item], continuations: Sequence[Tokens], prefix_length: int, limits: BatchLimits
) -> ItemBatch:
    choices = [
        (place, Row(index, item.context[-1:] + continuations[index][:-1], 0))
        for place, item in enumerate(items)
        for index in item.requests
    ]
    passes = [choices[start : start + limits.choice_rows] for start in range(0, len(choices), limits.choice_rows)]
    return ItemBatch([item.context[prefix_length:-1] for item in items], passes)


def _cut(
    items: list[Item], continuations: Sequence[Tokens], prefix_length: int, limits: BatchLimits
) -> list[list[Item]]:
    """Consecutive items (sorted by suffix length) in batches within ``limits``; an item alone is a batch (its
    own request fits the window; its choices, if too many, take several passes)."""
    batches: list[list[Item]] = []
    for item in items:
        if batches and _within(batches[-1] + [item], continuations, prefix_length, limits):
            batches[-1].append(item)
        else:
            batches.append([item])
    return batches


def _within(items: list[Item], continuations: Sequence[Tokens], prefix_length: int, limits: BatchLimits) -> bool:
    """Whether these items fit one batch. A choice row sits after its batch's longest suffix: its input is then
    as long as the prefix + the longest suffix + its last context token + its continuation but the last token,
    which must stay under a sliding window (as lean_scoring's ``fits`` asks of the unpadded request) so that the
    window hides nothing."""
    requests = [index for item in items for index in item.requests]
    if len(items) > limits.items or len(requests) > limits.choice_rows:
        return False
    if limits.padded_input is None:
        return True
    longest_suffix = max(len(item.context) for item in items) - 1 - prefix_length
    longest_continuation = max(len(continuations[index]) for index in requests)
    return prefix_length + longest_suffix + longest_continuation < limits.padded_input
