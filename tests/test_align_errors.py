"""Bad input to `afp align`: one line on stderr, exit code 2, no traceback, nothing half-written."""

from __future__ import annotations

import json

import pytest
from helpers import GOOD_LINES, data_with, write_recipe


def assert_one_line_error(code: int, err: str, pattern: str) -> None:
    import re

    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("error: ") and "Traceback" not in err
    assert re.search(pattern, lines[0]), lines[0]


def broken(index: int, **changes) -> list[str]:
    lines = list(GOOD_LINES)
    record = json.loads(lines[index])
    for key, value in changes.items():
        if value is None:
            record.pop(key)
        else:
            record[key] = value
    lines[index] = json.dumps(record, ensure_ascii=False)
    return lines


@pytest.mark.parametrize(
    "lines, pattern",
    [
        (GOOD_LINES[:2] + ['{"sent0": "a", "sent1": '] + GOOD_LINES[3:], r"data.jsonl:3: not valid JSON"),
        (broken(4, sent1=None), r"data.jsonl:5: field 'sent1': missing"),
        (broken(1, clm_prompt_len="12"), r"data.jsonl:2: field 'clm_prompt_len': must be an integer"),
        (broken(6, clm_prompt_len=10_000), r"data.jsonl:7: field 'clm_prompt_len': 10000 leaves no answer"),
        (broken(0, sent0=""), r"data.jsonl:1: field 'sent0': is empty"),
        (GOOD_LINES[:2] + ["[1, 2]"], r"data.jsonl:3: each line must be a JSON object"),
        ([], r"data.jsonl: no training examples \(the file is empty\)"),
    ],
)
def test_bad_training_data_names_file_line_and_field(tmp_path, run_cli, lines, pattern):
    recipe = write_recipe(tmp_path, data_with(tmp_path, lines))
    code, _, err = run_cli("align", recipe)
    assert_one_line_error(code, err, pattern)
    assert not (tmp_path / "run").exists()  # nothing written


def test_batch_size_below_two_with_mcl_on(tmp_path, run_cli):
    recipe = write_recipe(tmp_path, data_with(tmp_path, GOOD_LINES))
    code, _, err = run_cli("align", recipe, "train.batch_size=1")
    assert_one_line_error(code, err, r"command line: 'train.batch_size' must be >= 2 when MCL is on")
    code, _, err = run_cli("align", recipe, "train.batch_size=1", "mcl.weight=0", "--dry-run")
    assert code == 0, err  # CIT alone trains fine one example at a time


def test_a_non_empty_output_dir_is_refused_unless_overwrite_or_resume(tmp_path, run_cli):
    recipe = write_recipe(tmp_path, data_with(tmp_path, GOOD_LINES), train={"max_steps": 1})
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "notes.txt").write_text("precious")
    code, _, err = run_cli("align", recipe)
    assert_one_line_error(code, err, r"run: output folder is not empty: pass --overwrite .* or --resume")
    assert (tmp_path / "run" / "notes.txt").read_text() == "precious"
    code, _, err = run_cli("align", recipe, "--resume")
    assert_one_line_error(code, err, r"nothing to resume \(no checkpoint in .*checkpoints\)")
    code, _, err = run_cli("align", recipe, "--overwrite")
    assert code == 0, err
    assert not (tmp_path / "run" / "notes.txt").exists() and (tmp_path / "run" / "adapter_config.json").exists()


def test_pooling_layer_beyond_the_model(tmp_path, run_cli):
    recipe = write_recipe(tmp_path, data_with(tmp_path, GOOD_LINES))
    code, _, err = run_cli("align", recipe, "mcl.pooling=last-5")
    assert_one_line_error(
        code,
        err,
        r"mcl.pooling 'last-5': layer 5 is beyond the model \(layers 0..4, 0 = embeddings\)",
    )
    assert not (tmp_path / "run").exists()


def test_a_loss_that_becomes_nan_stops_and_keeps_the_last_good_checkpoint(tmp_path, run_cli, monkeypatch):
    import afp_cli.align.train as train_module

    real_objective = train_module.objective
    calls = []

    def poisoned(model, batch, config):
        calls.append(1)
        parts = real_objective(model, batch, config)
        if len(calls) == 3:
            parts.total = parts.total * float("nan")
        return parts

    monkeypatch.setattr(train_module, "objective", poisoned)
    recipe = write_recipe(tmp_path, data_with(tmp_path, GOOD_LINES), train={"max_steps": 5, "save_every": 2})
    code, _, err = run_cli("align", recipe)
    assert_one_line_error(
        code,
        err,
        r"loss became nan at step 3: training stopped \(last good checkpoint: "
        r".*checkpoints/step-00000002\)",
    )
    run = tmp_path / "run"
    assert (run / "checkpoints" / "step-00000002" / "trainable.safetensors").exists()
    assert not (run / "adapter_model.safetensors").exists()


def test_unknown_recipe_and_unknown_override(tmp_path, run_cli):
    code, _, err = run_cli("align", tmp_path / "missing.yaml")
    assert_one_line_error(code, err, r"missing.yaml: recipe not found")
    recipe = write_recipe(tmp_path, data_with(tmp_path, GOOD_LINES))
    code, _, err = run_cli("align", recipe, "train.learning_rate=1e-4")
    assert_one_line_error(code, err, r"command line: unknown key 'train.learning_rate'")


def test_dry_run_validates_and_reports_but_trains_and_writes_nothing(tmp_path, run_cli):
    recipe = write_recipe(tmp_path, data_with(tmp_path, GOOD_LINES))
    code, out, err = run_cli("align", recipe, "--dry-run")
    assert code == 0, err
    assert "examples: 8 train, 4 held out" in out
    assert "trainable of" in out and "answer targets" in out
    assert "temperature: 0.05" in out  # the resolved config
    assert "nothing was trained" in out
    assert not (tmp_path / "run").exists()


def test_a_run_failing_before_its_first_checkpoint_leaves_no_folder(tmp_path, run_cli):
    recipe = write_recipe(tmp_path, data_with(tmp_path, GOOD_LINES), output_dir=str(tmp_path / "runs" / "new"))
    code, _, err = run_cli("align", recipe, "lora.target_modules=[no_such_module]")
    assert_one_line_error(code, err, r"lora.target_modules \['no_such_module'\] do not match")
    assert not (tmp_path / "runs").exists()  # not even base_model/, nor the parent folder the run created


def test_a_failed_overwrite_puts_the_previous_run_back(tmp_path, run_cli):
    recipe = write_recipe(tmp_path, data_with(tmp_path, GOOD_LINES), train={"max_steps": 1})
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "adapter_config.json").write_text("the previous run")
    code, _, err = run_cli("align", recipe, "--overwrite", "lora.target_modules=[no_such_module]")
    assert_one_line_error(code, err, r"do not match")
    assert sorted(path.name for path in tmp_path.iterdir()) == ["data.jsonl", "recipe.yaml", "run"]
    assert [path.name for path in (tmp_path / "run").iterdir()] == ["adapter_config.json"]
    assert (tmp_path / "run" / "adapter_config.json").read_text() == "the previous run"


def test_a_failure_after_a_checkpoint_keeps_it_and_names_it(tmp_path, run_cli, monkeypatch):
    import afp_cli.align.train
    from afp_cli.errors import AfpError

    recipe = write_recipe(tmp_path, data_with(tmp_path, GOOD_LINES), train={"max_steps": 4, "save_every": 2})
    real_loop = afp_cli.align.train.train_loop

    def loop_then_fail(*args, **kwargs):
        real_loop(*args, **kwargs)
        raise AfpError("disk full while writing the adapter")

    monkeypatch.setattr(afp_cli.align.train, "train_loop", loop_then_fail)
    code, _, err = run_cli("align", recipe)
    assert_one_line_error(
        code,
        err,
        r"disk full while writing the adapter \(last complete checkpoint: .*"
        r"step-0*4; continue with --resume\)",
    )
    assert (tmp_path / "run" / "checkpoints").is_dir()
