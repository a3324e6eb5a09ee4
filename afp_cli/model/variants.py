"""A base model and its adapters: the labels they go by, and one load that steps through them.

The labels are the ones every report, raw-output folder and table uses, for `afp evaluate` (``raw/<label>/``,
comparison rows) and `afp analyze` (report rows) alike, so a report of one command can be joined with the other's.
The loading is shared by both commands too (evaluation/runner.py wraps each variant for lm-eval).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from afp_cli.model.adapter_base import check_adapter_base
from afp_cli.model.loading import load_adapters, load_causal_lm, load_tokenizer, resolve_device, resolve_dtype

BASE_LABEL = "base"


def adapter_labels(adapters: Sequence[str | Path]) -> list[str]:
    """Each adapter's folder name; a name two adapters share, or the base's own label, gets ``-<position>``
    (``runs/a/final``, ``runs/b/final`` -> ``final-0``, ``final-1``). ``-`` rather than ``#``: a label is also a
    folder name, and ``#`` starts a comment in a shell."""
    names = [Path(adapter).resolve().name or str(adapter) for adapter in adapters]
    return [
        name if names.count(name) == 1 and name != BASE_LABEL else f"{name}-{index}" for index, name in enumerate(names)
    ]


def model_labels(adapters: Sequence[str | Path]) -> list[str]:
    """``base``, then :func:`adapter_labels`."""
    return [BASE_LABEL, *adapter_labels(adapters)]


@dataclass
class ModelVariants:
    """One model in memory; ``variants()`` yields ``(label, model)`` with the right adapter switched on."""

    model: Any
    tokenizer: Any
    labels: list[str]
    _adapter_names: list[str] = field(default_factory=list)

    def variants(self) -> Iterator[tuple[str, Any]]:
        has_adapters = bool(self._adapter_names)
        with self.model.disable_adapter() if has_adapters else contextlib.nullcontext():
            yield BASE_LABEL, self.model
        for label, name in zip(self.labels[1:], self._adapter_names):
            self.model.set_adapter(name)
            yield label, self.model


def load_variants(
    model_name: str,
    adapter_dirs: Sequence[str | Path],
    device: str = "auto",
    dtype: str = "auto",
    allow_other_base: bool = False,
    check_bases: bool = True,
) -> ModelVariants:
    """Check every adapter's base first (a user error must not wait for a model to load), then load once.

    Args:
        check_bases: False when the caller has checked the adapters' bases already (afp evaluate does, before it
            looks up its tasks), so a mismatch is not reported twice.
    """
    if check_bases:
        for adapter_dir in adapter_dirs:
            check_adapter_base(adapter_dir, model_name, allow_other_base)
    device = resolve_device(device)
    tokenizer = load_tokenizer(model_name)
    model = load_causal_lm(model_name, dtype=resolve_dtype(dtype, device), device=device)
    names: list[str] = []
    if adapter_dirs:
        model, names = load_adapters(model, list(adapter_dirs))
    model.eval()
    return ModelVariants(
        model=model, tokenizer=tokenizer, labels=[BASE_LABEL, *adapter_labels(adapter_dirs)], _adapter_names=names
    )
