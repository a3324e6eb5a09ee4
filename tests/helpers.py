"""Helpers that several test modules share (not fixtures: those live in conftest.py): a tiny recipe, its data, and
how a run's output is read back. tests/ is on sys.path under pytest, so a test module imports ``from helpers``."""

from __future__ import annotations

import importlib.util
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import yaml
from rich.console import Console

from afp_cli.model.tiny import tiny_architecture

DEMO_DATA = Path(__file__).resolve().parents[1] / "afp_cli" / "demo" / "tatoeba_en-zh.afp.jsonl"


def write_recipe(folder: Path, data_file: Path, model_type: str = "llama", **sections) -> Path:
    recipe = {
        "model": {"architecture": tiny_architecture(model_type), "tokenizer_vocab_size": 400},
        "lora": {"r": 8, "alpha": 16, "dropout": 0.0},
        "data": {"train_file": str(data_file), "held_out": 4, "max_length": 48},
        "train": {
            "max_steps": 12,
            "batch_size": 8,
            "lr": 5e-3,
            "warmup_ratio": 0.0,
            "log_every": 1,
            "eval_every": 0,
            "save_every": 0,
            "seed": 0,
            "scheduler": "constant",
            # fp32 whatever the CPU: `auto` is bf16 on CPUs with AMX/AVX512-BF16, so tests comparing numbers would
            # depend on the machine (tests of auto ask for it)
            "precision": "fp32",
        },
        "output_dir": str(folder / "run"),
    }
    for section, values in sections.items():
        if isinstance(values, dict):
            recipe.setdefault(section, {}).update(values)
        else:
            recipe[section] = values
    path = folder / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe), encoding="utf-8")
    return path


# ---- afp on several CPU processes (gloo): torchrun, or accelerate's torchrun-style launch

LAUNCHERS = {
    "torchrun": lambda processes: ["torch.distributed.run", "--standalone", "--nproc-per-node", str(processes)],
    # without a GPU, `--multi_gpu` processes run on the CPU (`accelerate launch --cpu` alone starts one process)
    "accelerate": lambda processes: ["accelerate.commands.launch", "--multi_gpu", "--num_processes", str(processes)],
}


def torchrun(*args: str, cwd: Path, processes: int = 2, launcher: str = "torchrun") -> subprocess.CompletedProcess:
    """``python -m <launcher> ... *args`` with one torch thread a process (two 2-thread processes on 2 cores spin each
    other down); the timeout only ends a hang."""
    environment = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    return subprocess.run(
        [sys.executable, "-m", *LAUNCHERS[launcher](processes), *args],
        cwd=cwd,
        env=environment,
        capture_output=True,
        text=True,
        timeout=600,
    )


def quiet() -> Console:
    return Console(file=io.StringIO(), width=120)


def metrics(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


GOOD_LINES = DEMO_DATA.read_text(encoding="utf-8").splitlines()[:12]


def data_with(tmp_path: Path, lines: list[str]) -> Path:
    path = tmp_path / "data.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


# ---- question files (afp analyze language-rate)


def write_jsonl(path: Path, records) -> Path:
    path.write_text("".join(json.dumps(record, ensure_ascii=False) + "\n" for record in records), encoding="utf-8")
    return path


def hc3_english(path: Path, count: int) -> Path:
    """A small file in HC3's published schema (Hello-SimpleAI/HC3 all.jsonl): no language field."""
    return write_jsonl(
        path,
        [
            {
                "question": f"Why does thing number {index} happen?\nPlease explain like I'm five.",
                "human_answers": [f"Because of reason {index}."],
                "chatgpt_answers": [f"It happens because {index}."],
                "source": "reddit_eli5",
            }
            for index in range(count)
        ],
    )


def hc3_chinese(path: Path, count: int) -> Path:
    return write_jsonl(
        path,
        [
            {
                "id": str(index),
                "question": f"第{index}个问题是什么？",
                "human_answers": [f"答案{index}"],
                "chatgpt_answers": [],
                "source": "open_qa",
            }
            for index in range(count)
        ],
    )


# ---- the command line

CANONICAL = {
    "model": {"--model", "-m"},
    "adapter": {"--adapter", "-a"},
    "output_dir": {"--output-dir", "-o"},
    "overwrite": {"--overwrite"},
    "seed": {"--seed"},
    "device": {"--device"},
    "dtype": {"--dtype"},
    "batch_size": {"--batch-size"},
}


def cli_commands():
    import typer.main

    from afp_cli.cli import app

    root = typer.main.get_command(app)
    found = {}
    for name, command in root.commands.items():
        if hasattr(command, "commands"):
            for sub_name, sub in command.commands.items():
                found[f"{name} {sub_name}"] = sub
        else:
            found[name] = command
    return found


# ---- instruction files (afp data)


def write_instructions(folder: Path, languages: list[str], size: int, as_list: tuple[str, ...] = ("en",)) -> Path:
    """Bactrian-X style files whose texts say their language and id: ``[zh] answer 7``. Every third has no input."""
    folder.mkdir(parents=True, exist_ok=True)
    for lang in languages:
        records = [
            {
                "id": str(i),
                "instruction": f"[{lang}] instruction {i}",
                "input": "" if i % 3 == 0 else f"[{lang}] input {i}",
                "output": f"[{lang}] answer {i}",
            }
            for i in range(size)
        ]
        if lang in as_list:
            (folder / f"{lang}.json").write_text(json.dumps(records, ensure_ascii=False, indent=2), encoding="utf-8")
        else:
            (folder / f"{lang}.jsonl").write_text(
                "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8"
            )
    return folder


# ---- the lm-eval task families

TASKS_DIR = Path(__file__).resolve().parents[1] / "tasks"


def load_module(path: Path, name: str):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def task_manager(data_dir=None):
    from lm_eval.tasks import TaskManager

    metadata = {"data_dir": str(data_dir)} if data_dir is not None else None
    return TaskManager(include_path=str(TASKS_DIR), include_defaults=False, metadata=metadata)


class ScriptedLM:
    """An lm-eval LM that scores the chosen choice 0 and every other -1, and 'generates' from the document."""

    def __new__(cls, choose=None, generate=None):
        from lm_eval.api.model import LM

        class _Scripted(LM):
            def loglikelihood(self, requests, disable_tqdm=False):
                return [(0.0 if request.idx == choose(request.doc) else -1.0, False) for request in requests]

            def loglikelihood_rolling(self, requests, disable_tqdm=False):
                raise NotImplementedError

            def generate_until(self, requests, disable_tqdm=False):
                return [generate(request.doc) for request in requests]

        return _Scripted()


def evaluate_tasks(lm, tasks, data_dir, limit=20, num_fewshot=0):
    import lm_eval

    return lm_eval.simple_evaluate(
        model=lm,
        tasks=tasks,
        num_fewshot=num_fewshot,
        limit=limit,
        task_manager=task_manager(data_dir),
        log_samples=True,
        random_seed=0,
        numpy_random_seed=0,
        torch_random_seed=0,
        fewshot_random_seed=0,
    )


# ---- one training step (packing, compiled blocks)

NO_DROPOUT = {"gpt2": {"resid_pdrop": 0.0, "embd_pdrop": 0.0, "attn_pdrop": 0.0}}  # GPT-2's own dropout is 0.1


def lora_model(model_type, tokenizer):
    """A tiny model with LoRA (no dropout anywhere) whose every adapter weight gets a gradient."""
    import torch

    from afp_cli.model.loading import add_lora
    from afp_cli.model.tiny import build_model

    model = build_model(tiny_architecture(model_type, **NO_DROPOUT.get(model_type, {})), tokenizer, seed=0)
    model.config.use_cache = False
    model = add_lora(model, 4, 8, 0.0, "auto", seed=0)
    with torch.no_grad():  # one LoRA factor starts at zero; random values make every adapter weight get a gradient
        for name, parameter in model.named_parameters():
            if "lora_" in name and not parameter.any():
                parameter.normal_(0, 0.05, generator=torch.Generator().manual_seed(len(name)))
    return model


def losses_and_gradients(model, batch, pooling="last-1"):
    """One afp step's loss parts and the gradient of every trainable weight."""
    from afp_cli.align.config import build_config
    from afp_cli.align.losses import objective

    config = build_config(
        {
            "model": {"name_or_path": "x"},
            "data": {"train_file": "x"},
            "train": {"batch_size": 8},
            "mcl": {"pooling": pooling},
        }
    )
    model.zero_grad(set_to_none=True)
    parts = objective(model, batch, config)
    parts.total.backward()
    gradients = {
        name: parameter.grad.clone() for name, parameter in model.named_parameters() if parameter.requires_grad
    }
    return parts, gradients


def assert_same_step(expected, actual):
    """The same MCL and CIT losses and gradients, within fp32 rounding (1e-5)."""
    import pytest
    import torch

    (expected_parts, expected_gradients), (parts, gradients) = expected, actual
    assert parts.mcl == pytest.approx(expected_parts.mcl, abs=1e-5)
    assert parts.cit == pytest.approx(expected_parts.cit, abs=1e-5)
    assert set(gradients) == set(expected_gradients) and len(expected_gradients) > 10
    for name, gradient in expected_gradients.items():
        assert gradient.abs().max() > 0, name  # every adapter weight is reached, so each comparison means something
        torch.testing.assert_close(gradients[name], gradient, atol=1e-5, rtol=1e-4, msg=name)
