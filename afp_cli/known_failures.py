"""Failures raised inside libraries that are the user's to fix, turned into one line that says what to do.

A gated or missing hub repository, the hub unreachable or switched off, out of GPU memory, an optional package that is
not installed: each comes out of transformers, datasets, huggingface_hub, torch or lm-eval as a traceback, often
wrapped in another exception. :func:`explain` walks the chain of causes and returns the line to print, or None for
anything else: a real bug keeps its traceback.
"""

from __future__ import annotations

import re

_OPTIONAL_PACKAGES = {
    "vllm": "pip install vllm (a CUDA machine; see docs/evaluate.md for the versions that serve LoRA)",
    "tensorboard": "pip install tensorboard",
    "sklearn": "pip install scikit-learn",
    "datasets": "pip install datasets",
}


def explain(error: BaseException) -> str | None:
    """One actionable line for a known library failure anywhere in ``error``'s chain of causes; None otherwise."""
    for link in _chain(error):
        line = _explain_one(link)
        if line is not None:
            return line
    return None


def _chain(error: BaseException):
    seen: set[int] = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        yield error
        error = error.__cause__ or error.__context__


def _explain_one(error: BaseException) -> str | None:
    kind = type(error).__name__
    text = str(error).strip().splitlines()[0] if str(error).strip() else kind
    repository = _repository_named_in(str(error))
    if kind == "GatedRepoError":
        where = f" '{repository}'" if repository else ""
        return (
            f"hub repository{where} is gated: accept its terms on its hub page, then log in "
            "(`hf auth login`) or set HF_TOKEN"
        )
    if kind in ("RepositoryNotFoundError", "DatasetNotFoundError"):
        where = f" '{repository}'" if repository else ""
        return (
            f"hub repository{where} not found: check the name (and the revision); a private repository needs "
            "`hf auth login` or HF_TOKEN"
        )
    if kind == "RevisionNotFoundError":
        return f"revision not found on the hub: {text}"
    if kind in ("OfflineModeIsEnabled", "LocalEntryNotFoundError"):
        return (
            f"not in the local hub cache and the hub cannot be reached ({text}); download it on a machine with "
            "internet (or unset HF_HUB_OFFLINE) and copy the cache or a local folder here"
        )
    if kind == "OutOfMemoryError" or (isinstance(error, RuntimeError) and "CUDA out of memory" in text):
        return (
            "out of GPU memory: lower the batch size (train.batch_size with more train.grad_accumulation, or "
            "--batch-size), shorten sequences (data.max_length), or turn on train.gradient_checkpointing"
        )
    if isinstance(error, ModuleNotFoundError) and error.name:
        package = error.name.split(".")[0]
        if package in _OPTIONAL_PACKAGES:
            return f"the optional package '{package}' is not installed: {_OPTIONAL_PACKAGES[package]}"
    if isinstance(error, ImportError) and "vllm" in text.lower() and "not installed" in text.lower():
        return f"the optional package 'vllm' is not installed: {_OPTIONAL_PACKAGES['vllm']}"
    return None


def _repository_named_in(message: str) -> str | None:
    """The ``owner/name`` a hub error message mentions (its URL or quoted id), if any."""
    match = re.search(r"huggingface\.co/(?:api/)?(?:datasets/|models/)?([\w.-]+/[\w.-]+)", message)
    if match:
        return match.group(1)
    match = re.search(r"['\"]([\w.-]+/[\w.-]+)['\"]", message)
    return match.group(1) if match else None
