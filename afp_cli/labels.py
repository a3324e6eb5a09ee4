"""The name a base model and each of its adapters go by in every report, raw-output folder and table.

One function for `afp evaluate` (``raw/<label>/``, comparison rows) and `afp analyze` (report rows), so the same
adapter has the same label everywhere and a report of one command can be joined with the other's.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

BASE_LABEL = "base"


def adapter_labels(adapters: Sequence[str | Path]) -> list[str]:
    """Each adapter's folder name; a name two adapters share, or the base's own label, gets ``-<position>``
    (``runs/a/final``, ``runs/b/final`` -> ``final-0``, ``final-1``). ``-`` rather than ``#``: a label is also a
    folder name, and ``#`` starts a comment in a shell."""
    names = [Path(adapter).resolve().name or str(adapter) for adapter in adapters]
    return [name if names.count(name) == 1 and name != BASE_LABEL else f"{name}-{index}"
            for index, name in enumerate(names)]


def model_labels(adapters: Sequence[str | Path]) -> list[str]:
    """``base``, then :func:`adapter_labels`."""
    return [BASE_LABEL, *adapter_labels(adapters)]
