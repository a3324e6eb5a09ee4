"""The options every afp command shares have the same names and short flags everywhere."""

from __future__ import annotations

import pytest

CANONICAL = {"model": {"--model", "-m"}, "adapter": {"--adapter", "-a"}, "output_dir": {"--output-dir", "-o"},
             "overwrite": {"--overwrite"}, "seed": {"--seed"}, "device": {"--device"}, "dtype": {"--dtype"},
             "batch_size": {"--batch-size"}}
# which shared options each command must offer (data builders write one file: their -o is --output)
EXPECTED = {
    "align": {"model", "output_dir", "overwrite", "seed", "device", "dtype", "batch_size"},
    "evaluate": set(CANONICAL),
    "analyze language-rate": set(CANONICAL),
    "analyze alignment": set(CANONICAL),
}


def _commands():
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


@pytest.mark.parametrize("command_name", sorted(EXPECTED))
def test_shared_options_have_one_spelling(command_name):
    command = _commands()[command_name]
    options = {param.name: set(param.opts) for param in command.params if param.param_type_name == "option"}
    for name in EXPECTED[command_name]:
        assert options.get(name) == CANONICAL[name], f"afp {command_name}: {name} is {options.get(name)}"


def test_no_command_gives_a_shared_flag_another_meaning():
    for command_name, command in _commands().items():
        for param in command.params:
            for name, flags in CANONICAL.items():
                clash = set(param.opts) & flags
                if clash and param.name != name and not (command_name.startswith("data ") and clash == {"-o"}):
                    pytest.fail(f"afp {command_name}: {sorted(clash)} means '{param.name}', not '{name}'")


def test_align_shared_options_are_recipe_overrides(tmp_path, run_cli, monkeypatch):
    from test_align import write_recipe
    from test_align_errors import GOOD_LINES, data_with

    recipe = write_recipe(tmp_path, data_with(tmp_path, GOOD_LINES))
    monkeypatch.chdir(tmp_path)
    code, out, err = run_cli("align", recipe, "--dry-run", "-o", "123", "--seed", "7", "--batch-size", "4",
                             "--device", "cpu")
    assert code == 0, err
    lines = {line.strip() for line in out.splitlines()}
    assert {"output_dir: '123'", "seed: 7", "batch_size: 4", "device: cpu"} <= lines  # '123' stays a folder name
