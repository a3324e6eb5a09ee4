"""Load base models and tokenizers, attach LoRA per architecture, and load or check saved adapters.

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

# Default LoRA targets: the attention projections of each architecture (q, k, v and output), the set the
# LoRA paper found enough for adaptation. Names are matched by suffix, so "attn.c_proj" leaves GPT-2's MLP
# c_proj alone. Any other architecture gets peft's "all-linear".
LORA_TARGET_MODULES: dict[str, list[str]] = {
    "gpt2": ["c_attn", "attn.c_proj"],
    "llama": ["q_proj", "k_proj", "v_proj", "o_proj"],
    "mistral": ["q_proj", "k_proj", "v_proj", "o_proj"],
    "qwen2": ["q_proj", "k_proj", "v_proj", "o_proj"],
    "qwen3": ["q_proj", "k_proj", "v_proj", "o_proj"],
    "gemma": ["q_proj", "k_proj", "v_proj", "o_proj"],
    "gemma2": ["q_proj", "k_proj", "v_proj", "o_proj"],
    "xglm": ["q_proj", "k_proj", "v_proj", "out_proj"],
    "opt": ["q_proj", "k_proj", "v_proj", "out_proj"],
    "bloom": ["query_key_value", "self_attention.dense"],
    "gpt_neox": ["query_key_value", "attention.dense"],
}


def lora_target_modules(model_type: str) -> list[str] | str:
    return LORA_TARGET_MODULES.get(model_type, "all-linear")


def resolve_device(device: str = "auto") -> str:
    """``auto`` picks CUDA when there is a GPU, else CPU; anything else is passed to torch as given."""
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


def resolve_dtype(dtype: str, device: str):
    """``auto``: bfloat16 on CUDA (the paper trains in bf16), float32 on CPU."""
    import torch

    if dtype == "auto":
        return torch.bfloat16 if device.startswith("cuda") else torch.float32
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
        model = AutoModelForCausalLM.from_pretrained(
            name_or_path, dtype=dtype, trust_remote_code=trust_remote_code
        )
    except OSError as error:
        raise AfpError(_not_found_message("model", name_or_path, error)) from None
    return model.to(device)


def _not_found_message(what: str, name_or_path: str, error: OSError) -> str:
    first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    offline = " (HF_HUB_OFFLINE is set: only cached models load)" if _hub_offline() else ""
    return f"cannot load {what} '{name_or_path}'{offline}: {first_line}"


def decoder_layers(model):
    """The ModuleList of transformer blocks of a causal LM (plain or peft-wrapped), found by its length.

    Every supported architecture keeps its blocks in one ModuleList whose length is ``num_hidden_layers``
    (GPT-2/BLOOM ``transformer.h``, LLaMA/XGLM ``model.layers``, OPT ``model.decoder.layers``, ...).
    """
    import torch

    depth = model.config.num_hidden_layers
    for _, module in model.named_modules():
        if isinstance(module, torch.nn.ModuleList) and len(module) == depth:
            return module
    raise RuntimeError(f"no ModuleList of {depth} decoder layers found in {type(model).__name__}")


def backbone(model):
    """The transformer without its LM head (``model.model``, ``model.transformer``, ...), peft wrapping removed."""
    if hasattr(model, "get_base_model"):
        model = model.get_base_model()
    return getattr(model, model.base_model_prefix)


def read_adapter_config(adapter_dir: str | Path) -> dict[str, Any]:
    """The ``adapter_config.json`` of a PEFT adapter folder; a folder without one is a user error."""
    config_path = Path(adapter_dir) / "adapter_config.json"
    if not config_path.is_file():
        raise AfpError(f"{adapter_dir}: not a PEFT adapter (no adapter_config.json)")
    try:
        return json.loads(config_path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise AfpError(f"{config_path}:{error.lineno}: invalid JSON: {error.msg}") from None


def check_adapter_base(adapter_dir: str | Path, base_model: str) -> None:
    """Refuse an adapter trained on another base model, naming both (paths compared after resolving)."""
    trained_on = read_adapter_config(adapter_dir).get("base_model_name_or_path")
    if trained_on is None:
        return
    if _same_model(trained_on, base_model):
        return
    raise AfpError(
        f"{adapter_dir}: adapter was trained on base model '{trained_on}', not on '{base_model}'"
    )


def _same_model(a: str, b: str) -> bool:
    if a == b:
        return True
    path_a, path_b = Path(a), Path(b)
    if path_a.exists() and path_b.exists():
        return path_a.resolve() == path_b.resolve()
    return a.rstrip("/") == b.rstrip("/")


def load_adapters(base_model, adapter_dirs: list[str | Path], base_name: str):
    """Wrap one base model with several adapters, loaded once; switch with ``model.set_adapter(name)``.

    The base weights stay in memory once for all adapters. Adapter names are ``adapter_0``, ``adapter_1``, ...
    Returns ``(peft_model, names)``.
    """
    from peft import PeftModel

    for adapter_dir in adapter_dirs:
        check_adapter_base(adapter_dir, base_name)
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


def count_parameters(model) -> tuple[int, int]:
    """(trainable, total) parameter counts."""
    trainable = sum(param.numel() for param in model.parameters() if param.requires_grad)
    total = sum(param.numel() for param in model.parameters())
    return trainable, total


def add_lora(model, r: int, alpha: int, dropout: float, target_modules: list[str] | str | None, seed: int):
    """Wrap ``model`` with fresh LoRA adapters (seeded init); only the adapters stay trainable."""
    import torch
    from peft import LoraConfig, get_peft_model

    targets = target_modules if target_modules is not None else lora_target_modules(model.config.model_type)
    torch.manual_seed(seed)
    config = LoraConfig(r=r, lora_alpha=alpha, lora_dropout=dropout, target_modules=targets, task_type="CAUSAL_LM")
    try:
        return get_peft_model(model, config)
    except ValueError as error:
        raise AfpError(f"lora.target_modules {targets!r} do not match {type(model).__name__}: {error}") from None
