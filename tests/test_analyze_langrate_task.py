"""The afp_langrate lm-eval task family: generated files, registration, and a run on a tiny model."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from afp_cli.analyze.generation import DATA_FOLDER, task_name
from afp_cli.evaluation.taskgen import generated_files, render

FAMILY_DIR = Path(__file__).resolve().parents[1] / "tasks" / "afp_langrate"


@pytest.fixture(scope="module")
def generator():
    spec = importlib.util.spec_from_file_location("afp_langrate_generator", FAMILY_DIR / "_generate_configs.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_generated_yaml_is_current_and_matches_what_the_command_writes(generator):
    expected = generator.configs()
    assert generated_files(FAMILY_DIR) == set(expected), "stale or missing generated files: rerun the generator"
    for name, config in expected.items():
        assert (FAMILY_DIR / name).read_text(encoding="utf-8") == render(config), name
    tasks = [name for name in expected if name.startswith("afp_langrate_")]
    assert len(tasks) == 2 * 14 + 2 * 13  # every direction with en or zh on one side
    # The command writes the data where the tasks read it, and names the tasks the generator makes.
    assert generator.DATA_FOLDER == DATA_FOLDER and generator.task_name("en", "zh") == task_name("en", "zh")
    assert expected["afp_langrate_zh-en.yaml"]["doc_to_text"] == "{{question}} Answer in English:"
    assert (FAMILY_DIR / "README.md").is_file()


def test_the_family_registers_with_lm_eval_and_needs_a_data_dir(tmp_path):
    from lm_eval.tasks import TaskManager

    from afp_cli.errors import AfpError
    from afp_cli.evaluation.tasks import check_local_data

    manager = TaskManager(include_path=str(FAMILY_DIR.parent), include_defaults=False)
    assert {"afp_langrate_en-zh", "afp_langrate_zh-en", "afp_langrate_ja-en"} <= set(manager.all_subtasks)
    assert "afp_langrate" in manager.all_groups
    with pytest.raises(AfpError, match="pass --data-dir"):
        check_local_data(manager, ["afp_langrate_en-zh"], None)


def test_zero_shot_whole_answers_on_a_tiny_model(run_cli, tiny_model_dir, tmp_path):
    """0-shot only, --stop none (whole texts scored, nothing cut)."""
    output = tmp_path / "rate"
    code, out, err = run_cli(
        "analyze",
        "language-rate",
        "-m",
        tiny_model_dir("llama"),
        "--directions",
        "zh-en",
        "--shots",
        "0",
        "--limit",
        2,
        "--stop",
        "none",
        "-o",
        output,
    )
    assert code == 0, err
    (row,) = json.loads((output / "language_rate.json").read_text())["rows"]
    assert (row["model"], row["direction"], row["shots"], row["answers"], row["cut"]) == ("base", "zh-en", 0, 2, 0)
    samples = output / "language_rate_run" / "raw" / "base" / "0shot" / "samples_afp_langrate_zh-en.jsonl"
    records = [json.loads(line) for line in samples.read_text().splitlines()]
    assert [record["arguments"][0][0] for record in records] == [
        "你早餐通常吃什么？ Answer in English:",
        "晚上怎样才能更快入睡？ Answer in English:",
    ]
    assert records[0]["arguments"][0][1] == {"until": [], "do_sample": False, "max_gen_toks": 128}
    short = tmp_path / "short"
    code, _, err = run_cli(
        "analyze",
        "language-rate",
        "-m",
        tiny_model_dir("llama"),
        "--directions",
        "zh-en",
        "--shots",
        "0",
        "--limit",
        1,
        "--max-gen-toks",
        4,
        "-o",
        short,
    )
    assert code == 0, err
    samples = short / "language_rate_run" / "raw" / "base" / "0shot" / "samples_afp_langrate_zh-en.jsonl"
    (record,) = [json.loads(line) for line in samples.read_text().splitlines()]
    assert record["arguments"][0][1]["max_gen_toks"] == 4
    saved = [json.loads(line)["text"] for line in (output / "language_rate_generations.jsonl").read_text().splitlines()]
    assert saved == [record["resps"][0][0] for record in records]  # whole generations, as lm-eval returned them
    data = output / "language_rate_run" / "data" / DATA_FOLDER / "zh-en"
    assert len((data / "test.jsonl").read_text().splitlines()) == 2
    assert len((data / "demos.jsonl").read_text().splitlines()) == 30  # the pool the task draws its fixed set from
    assert not [path.name for path in output.iterdir() if path.name.startswith(".")]  # the temporary folder was renamed


def test_a_failed_generation_leaves_no_output_folder(run_cli, tiny_model_dir, tmp_path, monkeypatch):
    from afp_cli.analyze import rate_run
    from afp_cli.errors import AfpError

    def fail_half_way(config, inputs, run_dir, **_):  # the generator's keyword options (resume) do not matter here
        (run_dir / "raw").mkdir()
        raise AfpError("out of GPU memory")

    monkeypatch.setattr(rate_run, "generate", fail_half_way)
    output = tmp_path / "new" / "rate"
    code, _, err = run_cli("analyze", "language-rate", "-m", tiny_model_dir("llama"), "--limit", 1, "-o", output)
    assert code == 2 and "out of GPU memory" in err
    assert not (tmp_path / "new").exists()  # nor the parent folder it created
    code, _, err = run_cli(
        "analyze", "language-rate", "-m", tiny_model_dir("llama"), "--backend", "bogus", "-o", output
    )
    assert code == 2 and "--backend: lm-eval has no model type 'bogus'" in err and not output.exists()
