"""The pooling spelling recipes and commands share (``last-1``, ``avg-3``, ``max``), parsed without importing torch.

Reading a recipe or a command line must not wait for torch; the pooling itself is afp_cli/model/representations.py.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_POOLING_SPEC = re.compile(r"^(last|avg|max)(-(\d+))?$")


@dataclass(frozen=True)
class Pooling:
    """Where a sentence vector comes from: ``method`` over the tokens of hidden layer ``layer`` (None: final)."""

    method: str
    layer: int | None


def parse_pooling(spec: str) -> Pooling:
    """Read a pooling as recipes write it (``mcl.pooling``): ``last-1`` is the last token of layer 1 (the official
    default), ``avg-3`` the mean over layer 3's tokens, plain ``last`` / ``avg`` / ``max`` the final layer.

    Raises:
        ValueError: not one of those forms.
    """
    match = _POOLING_SPEC.match(spec)
    if match is None:
        raise ValueError(f"'{spec}' is not one of last, avg, max, last-N, avg-N, max-N")
    return Pooling(match.group(1), None if match.group(3) is None else int(match.group(3)))
