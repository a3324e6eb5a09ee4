"""Shared fixtures: tiny tokenizers and models built in-process from real architecture configs (no downloads)."""

from __future__ import annotations

from pathlib import Path

import pytest

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"

_TOKENIZER_TEXTS = [
    "The cat sits on the mat. Answer in Chinese: 猫坐在垫子上。",
    "I like green tea very much. Answer in English: 我非常喜欢绿茶。",
    "你今天好吗？ How are you today? Translate into Chinese: 你好",
    "Der Hund schläft. Le chien dort. El perro duerme. สวัสดี こんにちは 안녕하세요",
] * 20


@pytest.fixture(scope="session")
def tiny_tokenizer():
    """A byte-level BPE tokenizer (vocab 400) with <pad>, <s> (prepended) and </s>."""
    from afp_cli.model.tiny import train_tokenizer

    return train_tokenizer(_TOKENIZER_TEXTS, vocab_size=400)


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory, tiny_tokenizer):
    """Factory: ``tiny_model_dir("llama")`` saves a random 4-layer model + tokenizer and returns the folder.

    Load it with ``AutoModelForCausalLM.from_pretrained(path)`` exactly like a hub model.
    """
    from afp_cli.model.loading import quiet_saving
    from afp_cli.model.tiny import build_model, tiny_architecture

    cache: dict[str, Path] = {}

    def make(model_type: str = "llama") -> Path:
        if model_type not in cache:
            folder = tmp_path_factory.mktemp(f"tiny-{model_type}")
            with quiet_saving():  # no "Writing model shards" bar in the stderr a test is about to read
                build_model(tiny_architecture(model_type), tiny_tokenizer, seed=0).save_pretrained(folder)
                tiny_tokenizer.save_pretrained(folder)
            cache[model_type] = folder
        return cache[model_type]

    return make


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"team data folder {SHARED_DATA} not present")
    return SHARED_DATA


@pytest.fixture(autouse=True, scope="session")
def _one_torch_thread():
    """Tiny matrices run fastest on one thread; two threads on a busy 2-core machine are many times slower."""
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture
def run_cli(capsys, monkeypatch):
    """Run ``afp ARGS`` through the real entry point; returns (exit code, stdout, stderr)."""
    import sys

    from afp_cli.cli import main

    def run(*args: str) -> tuple[int, str, str]:
        monkeypatch.setattr(sys, "argv", ["afp", *map(str, args)])
        try:
            main()
            code = 0
        except SystemExit as stop:
            code = stop.code if isinstance(stop.code, int) else (0 if stop.code is None else 1)
        captured = capsys.readouterr()
        return code, captured.out, captured.err

    return run


@pytest.fixture(scope="session")
def base_and_adapter(tmp_path_factory, tiny_tokenizer):
    """A tiny random llama (positions raised to 2048: real prompts are longer than the tiny default 256) and a
    LoRA adapter with non-zero weights, saved the way `afp align` saves them."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from afp_cli.model.tiny import build_model, tiny_architecture

    root = tmp_path_factory.mktemp("evaluate")
    base = root / "base"
    model = build_model(tiny_architecture("llama"), tiny_tokenizer, seed=0)
    model.config.max_position_embeddings = 2048
    model.save_pretrained(base)
    tiny_tokenizer.save_pretrained(base)
    peft_model = get_peft_model(
        AutoModelForCausalLM.from_pretrained(base), LoraConfig(r=4, target_modules=["q_proj", "v_proj"])
    )
    generator = torch.Generator().manual_seed(0)
    for name, parameter in peft_model.named_parameters():
        if "lora_B" in name:
            parameter.data = torch.randn(parameter.shape, generator=generator) * 0.5
    adapter = root / "adapter"
    peft_model.save_pretrained(adapter)
    return base, adapter
