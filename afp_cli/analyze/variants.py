"""Load a base model once with its adapters and step through the variants: the base, then each adapter."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from afp_cli.adapter_base import check_adapter_base
from afp_cli.labels import BASE_LABEL, adapter_labels
from afp_cli.model import load_adapters, load_causal_lm, load_tokenizer, resolve_device, resolve_dtype

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
    model_name: str, adapter_dirs: Sequence[str | Path], device: str = "auto", dtype: str = "auto",
    allow_other_base: bool = False,
) -> ModelVariants:
    """Check every adapter's base first (a user error must not wait for a model to load), then load once."""
    for adapter_dir in adapter_dirs:
        check_adapter_base(adapter_dir, model_name, allow_other_base)
    device = resolve_device(device)
    tokenizer = load_tokenizer(model_name)
    model = load_causal_lm(model_name, dtype=resolve_dtype(dtype, device), device=device)
    names: list[str] = []
    if adapter_dirs:
        model, names = load_adapters(model, list(adapter_dirs))
    model.eval()
    return ModelVariants(model=model, tokenizer=tokenizer, labels=[BASE_LABEL, *adapter_labels(adapter_dirs)],
                         _adapter_names=names)
