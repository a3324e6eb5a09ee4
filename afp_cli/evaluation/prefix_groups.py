"""Group loglikelihood requests by the token prefix they share, so that a shared prefix is encoded once.

Pure bookkeeping on token ids (no torch): lean_scoring.py runs the model along the plan built here.

Two levels of sharing, the two that k-shot multiple choice has:
- an *item* is one context token sequence; the choices of one item are the requests with that context;
- a *family* is a run of items whose contexts share a long token prefix (the fixed k-shot demonstrations); that
  prefix is encoded once for the whole family and every request continues from its KV cache. An item alone in
  its family (0-shot) has its whole context but the last token as the prefix: its choices share the context.

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
