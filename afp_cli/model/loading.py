"""Load base models and tokenizers, attach LoRA, merge it, and load saved adapters (checked by adapter_base.py).

Shared by `afp align` (training), `afp evaluate` and `afp analyze` (loading a base model and its adapters).
No torch import at module level: the CLI imports this lazily.
"""

from __future__ import annotations

import json
import os
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from afp_cli.errors import AfpError


def resolve_device(device: str = "auto") -> str:
    """``auto`` picks CUDA when there is a GPU, else CPU; anything else is passed to torch as given."""
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


def resolve_dtype(dtype: str, device: str):
    """The weights' dtype for scoring (evaluate, analyze); ``auto`` is afp_cli/model/precision.py's choice."""
    import torch

    from afp_cli.model.precision import scoring_dtype_name

    if dtype == "auto":
        dtype = scoring_dtype_name(device)
    names = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
    if dtype not in names:
        raise AfpError(f"unknown dtype '{dtype}': use one of auto, {', '.join(names)}")
    return names[dtype]


def _hub_offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "0").lower() in {"1", "true", "yes"}


def load_tokenizer(name_or_path: str, trust_remote_code: bool = False):
    """Load a tokenizer by hub name or local path; it gets a pad token (EOS) when it has none."""
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(name_or_path, trust_remote_code=trust_remote_code)
    except OSError as error:
        raise AfpError(_not_found_message("tokenizer", name_or_path, error)) from None
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_causal_lm(name_or_path: str, dtype=None, device: str = "cpu", trust_remote_code: bool = False):
    """Load a pre-trained causal LM by hub name or local path (``HF_HUB_OFFLINE=1`` is honoured by the hub client)."""
    from transformers import AutoModelForCausalLM

    try:
        model = AutoModelForCausalLM.from_pretrained(name_or_path, dtype=dtype, trust_remote_code=trust_remote_code)
    except OSError as error:
        raise AfpError(_not_found_message("model", name_or_path, error)) from None
    return model.to(device)


def _not_found_message(what: str, name_or_path: str, error: OSError) -> str:
    first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    offline = " (HF_HUB_OFFLINE is set: only cached models load)" if _hub_offline() else ""
    return f"cannot load {what} '{name_or_path}'{offline}: {first_line}"


def read_adapter_config(adapter_dir: str | Path) -> dict[str, Any]:
    """The ``adapter_config.json`` of a PEFT adapter folder; a folder without one is a user error."""
    config_path = Path(adapter_dir) / "adapter_config.json"
    if not config_path.is_file():
        raise AfpError(f"{adapter_dir}: not a PEFT adapter (no adapter_config.json)")
    try:
        return json.loads(config_path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise AfpError(f"{config_path}:{error.lineno}: invalid JSON: {error.msg}") from None


def load_adapters(base_model, adapter_dirs: list[str | Path]):
    """Wrap one base model with several adapters, loaded once; switch with ``model.set_adapter(name)``.

    The base weights stay in memory once for all adapters. Adapter names are ``adapter_0``, ``adapter_1``, ...
    Returns ``(peft_model, names)``.
    """
    from peft import PeftModel

    names = [f"adapter_{index}" for index in range(len(adapter_dirs))]
    model = PeftModel.from_pretrained(base_model, str(adapter_dirs[0]), adapter_name=names[0])
    for name, adapter_dir in zip(names[1:], adapter_dirs[1:]):
        model.load_adapter(str(adapter_dir), adapter_name=name)
    return model, names


@contextmanager
def quiet_saving():
    """Hide transformers' "Writing model shards" bar during a save: afp reports its own progress, and a stray bar
    on stderr would break the one-line error contract. Download bars stay on outside this block."""
    from transformers.utils import logging as transformers_logging

    was_enabled = transformers_logging.is_progress_bar_enabled()
    transformers_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was_enabled:
            transformers_logging.enable_progress_bar()


def merge_adapter(peft_model):
    """The base model with the active LoRA adapter merged in, giving the same logits as the adapter model.

    When the input embeddings carry LoRA and the LM head shares their matrix (tied, as in XGLM, BLOOM, GPT-2,
    Qwen2.5), merging into the shared matrix would change the output layer too, which training never did. The
    output layer gets its own copy of the frozen matrix first, and the merged model is saved untied.
    """
    import torch

    base = peft_model.get_base_model()
    output_layer = base.get_output_embeddings()
    input_weight = getattr(base.get_input_embeddings(), "weight", None)
    if output_layer is not None and input_weight is not None and output_layer.weight is input_weight:
        output_layer.weight = torch.nn.Parameter(input_weight.detach().clone(), requires_grad=False)
        base.config.tie_word_embeddings = False
        if getattr(base.config, "get_text_config", None) is not None:
            base.config.get_text_config().tie_word_embeddings = False
    return peft_model.merge_and_unload()


def count_parameters(model) -> tuple[int, int]:
    """(trainable, total) parameter counts."""
    trainable = sum(param.numel() for param in model.parameters() if param.requires_grad)
    total = sum(param.numel() for param in model.parameters())
    return trainable, total


def add_lora(
    model,
    r: int,
    alpha: int,
    dropout: float,
    targets: str = "auto",
    target_modules: list[str] | str | None = None,
    seed: int = 0,
):
    """Wrap ``model`` with fresh LoRA adapters (seeded init); only the adapters stay trainable.

    ``targets`` is a preset of afp_cli/model/lora_targets.py; ``target_modules`` (PEFT names) wins when given.
    """
    import warnings

    import torch
    from peft import LoraConfig, get_peft_model

    from afp_cli.model.lora_targets import resolve_targets

    resolved = resolve_targets(model, targets, target_modules)
    torch.manual_seed(seed)
    config = LoraConfig(r=r, lora_alpha=alpha, lora_dropout=dropout, target_modules=resolved, task_type="CAUSAL_LM")
    try:
        with warnings.catch_warnings():
            # peft warns that a tied embedding is "part of the adapter": intended here, the LM head keeps the frozen
            # base matrix during training and `merge` unties the two first (run_output.merge_adapter)
            warnings.filterwarnings("ignore", message=r".*tie_word_embeddings=True.*")
            return get_peft_model(model, config)
    except ValueError as error:
        raise AfpError(f"lora.target_modules {resolved!r} do not match {type(model).__name__}: {error}") from None
