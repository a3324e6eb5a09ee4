"""Helpers that several test modules share (not fixtures: those live in conftest.py): a tiny recipe, its data, and
how a run's output is read back. tests/ is on sys.path under pytest, so a test module imports ``from helpers``."""

from __future__ import annotations

import io
import json
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


def quiet() -> Console:
    return Console(file=io.StringIO(), width=120)


def metrics(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


GOOD_LINES = DEMO_DATA.read_text(encoding="utf-8").splitlines()[:12]


def data_with(tmp_path: Path, lines: list[str]) -> Path:
    path = tmp_path / "data.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path
