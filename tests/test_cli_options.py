"""The options every afp command shares have the same names and short flags everywhere."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers import CANONICAL, cli_commands

# which shared options each command must offer (data builders write one file: their -o is --output)
EXPECTED = {
    "align": {"model", "output_dir", "overwrite", "seed", "device", "dtype", "batch_size"},
    "evaluate": set(CANONICAL),
    "analyze language-rate": set(CANONICAL),
    "analyze alignment": set(CANONICAL),
}


@pytest.mark.parametrize("command_name", sorted(EXPECTED))
def test_shared_options_have_one_spelling(command_name):
    command = cli_commands()[command_name]
    options = {param.name: set(param.opts) for param in command.params if param.param_type_name == "option"}
    for name in EXPECTED[command_name]:
        assert options.get(name) == CANONICAL[name], f"afp {command_name}: {name} is {options.get(name)}"


def test_no_command_gives_a_shared_flag_another_meaning():
    for command_name, command in cli_commands().items():
        for param in command.params:
            for name, flags in CANONICAL.items():
                clash = set(param.opts) & flags
                if clash and param.name != name and not (command_name.startswith("data ") and clash == {"-o"}):
                    pytest.fail(f"afp {command_name}: {sorted(clash)} means '{param.name}', not '{name}'")


def test_align_shared_options_are_recipe_overrides(tmp_path, run_cli, monkeypatch):
    from helpers import GOOD_LINES, data_with, write_recipe

    recipe = write_recipe(tmp_path, data_with(tmp_path, GOOD_LINES))
    monkeypatch.chdir(tmp_path)
    code, out, err = run_cli(
        "align", recipe, "--dry-run", "-o", "123", "--seed", "7", "--batch-size", "4", "--device", "cpu"
    )
    assert code == 0, err
    lines = {line.strip() for line in out.splitlines()}
    assert {"output_dir: '123'", "seed: 7", "batch_size: 4", "device: cpu"} <= lines  # '123' stays a folder name


def test_a_run_prints_no_library_bars_or_notices(tmp_path, tiny_tokenizer):
    """Through a real process (library settings are read at import): stderr stays empty, stdout has the table."""
    import os
    import subprocess
    import sys

    from afp_cli.model.loading import quiet_saving
    from afp_cli.model.tiny import build_model, tiny_architecture

    model_dir = tmp_path / "model"
    with quiet_saving():
        build_model(tiny_architecture("llama", max_position_embeddings=1024), tiny_tokenizer).save_pretrained(model_dir)
        tiny_tokenizer.save_pretrained(model_dir)
    demo_eval = Path(__file__).resolve().parents[1] / "afp_cli" / "demo" / "eval"
    environment = {key: value for key, value in os.environ.items() if not key.startswith(("TQDM", "TRANSFORMERS_V"))}
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "afp_cli",
            "evaluate",
            "-m",
            str(model_dir),
            "--tasks",
            "afp_flores_eng_Latn-zho_Hans",
            "--data-dir",
            str(demo_eval),
            "--limit",
            "1",
            "-o",
            str(tmp_path / "eval"),
        ],
        capture_output=True,
        text=True,
        env={**environment, "OMP_NUM_THREADS": "1"},
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    assert "| afp_flores_eng_Latn-zho_Hans | 0 | chrfpp | base |" in done.stdout
