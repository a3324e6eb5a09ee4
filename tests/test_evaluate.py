"""`afp evaluate`: base model + adapters in one run, the comparison table, and one-line errors (exit 2)."""

from __future__ import annotations

import json

import pytest


def test_base_and_adapter_give_one_comparison_row_each(run_cli, base_and_adapter, shared_data, tmp_path):
    base, adapter = base_and_adapter
    out = tmp_path / "eval"
    arguments = [
        "evaluate",
        "-m",
        str(base),
        "-a",
        str(adapter),
        "--tasks",
        "afp_xcopa_zh_demo_native",
        "--num-fewshot",
        "0",
        "--data-dir",
        str(shared_data),
        "--limit",
        "20",
        "--device",
        "cpu",
        "-o",
        str(out),
    ]
    code, stdout, _ = run_cli(*arguments)
    assert code == 0
    rows = json.loads((out / "comparison.json").read_text(encoding="utf-8"))["rows"]
    task = "afp_xcopa_zh_demo_native"  # the shared data has no English COPA for the default demonstrations
    assert [(row["task"], row["shots"], row["metric"], row["model"]) for row in rows] == [
        (task, 0, "acc", "base"),
        (task, 0, "acc", "adapter"),
    ]
    base_row, adapter_row = rows
    assert base_row["delta_vs_base"] is None
    assert adapter_row["delta_vs_base"] == pytest.approx(adapter_row["value"] - base_row["value"])
    for row in rows:
        assert 0.0 <= row["value"] <= 1.0 and row["value"] * 20 == pytest.approx(round(row["value"] * 20))
        assert row["stderr"] > 0
    markdown = (out / "comparison.md").read_text(encoding="utf-8")
    assert f"| {task} | 0 | acc | base |" in markdown and f"| {task} | 0 | acc | adapter |" in markdown
    assert f"| {task} | 0 | acc | adapter |" in stdout

    samples = {}
    for model in ("base", "adapter"):
        raw = out / "raw" / model / "0shot"
        assert json.loads((raw / "results.json").read_text(encoding="utf-8"))["results"][task]
        samples[model] = [json.loads(line) for line in (raw / f"samples_{task}.jsonl").read_text().splitlines()]
        assert len(samples[model]) == 20
    # Same prompts, different scores: the adapter really was switched on for its run, and off for the base.
    assert [s["doc_hash"] for s in samples["base"]] == [s["doc_hash"] for s in samples["adapter"]]
    assert [s["resps"] for s in samples["base"]] != [s["resps"] for s in samples["adapter"]]

    # The adapter row's paired test is the exact McNemar test of these very per-document results.
    from afp_cli.statistics import mcnemar_exact_p

    adapter_only = sum(a["acc"] == 1 and b["acc"] == 0 for a, b in zip(samples["adapter"], samples["base"]))
    base_only = sum(a["acc"] == 0 and b["acc"] == 1 for a, b in zip(samples["adapter"], samples["base"]))
    assert adapter_row["test"] == "mcnemar-exact" and adapter_row["paired"] == "20 documents"
    assert adapter_row["p_value"] == pytest.approx(mcnemar_exact_p(adapter_only, base_only))
    assert adapter_row["p_holm"] == pytest.approx(adapter_row["p_value"])  # one tested row: Holm changes nothing
    assert adapter_row["ci_low"] <= adapter_row["delta_vs_base"] <= adapter_row["ci_high"]
    assert base_row["p_value"] is None and base_row["test"] is None

    code, _, stderr = run_cli(*arguments)  # an existing comparison is not replaced
    assert code == 2 and "already exists: pass --overwrite" in stderr


@pytest.fixture
def evaluate_error(run_cli):
    """Run `afp evaluate ARGS`, check it failed with one line and exit 2, and return that line."""

    def error(*arguments: str) -> str:
        code, _, stderr = run_cli("evaluate", *arguments)
        assert code == 2
        lines = stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: ")
        return lines[0]

    return error


def test_adapter_folder_that_is_not_a_peft_adapter(evaluate_error, base_and_adapter, shared_data, tmp_path):
    base, _ = base_and_adapter
    message = evaluate_error(
        "--model",
        str(base),
        "--adapter",
        str(tmp_path),
        "--tasks",
        "afp_xcopa_zh_demo_native",
        "--data-dir",
        str(shared_data),
        "--output-dir",
        str(tmp_path / "out"),
    )
    assert f"{tmp_path}: not a PEFT adapter (no adapter_config.json)" in message


def test_adapter_trained_on_another_base_names_both(
    evaluate_error, base_and_adapter, shared_data, tmp_path, tiny_model_dir
):
    _, adapter = base_and_adapter
    other = tiny_model_dir("gpt2")  # another architecture: a real mismatch, refused
    message = evaluate_error(
        "--model",
        str(other),
        "--adapter",
        str(adapter),
        "--tasks",
        "afp_xcopa_zh_demo_native",
        "--data-dir",
        str(shared_data),
        "--output-dir",
        str(tmp_path / "out"),
    )
    assert "whose architecture differs from" in message and str(other) in message
    assert "--allow-other-base" in message
    assert json.loads((adapter / "adapter_config.json").read_text())["base_model_name_or_path"] in message


def test_missing_local_data_file(evaluate_error, base_and_adapter, tmp_path):
    base, adapter = base_and_adapter
    message = evaluate_error(
        "--model",
        str(base),
        "--adapter",
        str(adapter),
        "--tasks",
        "afp_pawsx_de",
        "--data-dir",
        str(tmp_path),
        "--output-dir",
        str(tmp_path / "out"),
    )
    assert f"{tmp_path / 'pawsx' / 'de_test.tsv'}: missing local data file" in message


def test_bad_options_and_folders(evaluate_error, base_and_adapter, shared_data, tmp_path):
    base, _ = base_and_adapter
    common = ["--model", str(base), "--data-dir", str(shared_data), "--output-dir", str(tmp_path / "out")]
    assert "task folder not found" in evaluate_error(
        *common, "--tasks", "afp_xcopa_zh", "--include-path", str(tmp_path / "nowhere")
    )
    assert "no task 'afp_xcopa_zh_demo_fr'" in evaluate_error(*common, "--tasks", "afp_xcopa_zh", "--demo-lang", "fr")
    assert "--num-fewshot" in evaluate_error(*common, "--tasks", "afp_xcopa_zh", "--num-fewshot", "0,x")
    assert "--limit" in evaluate_error(*common, "--tasks", "afp_xcopa_zh", "--limit", "0")


def test_unknown_name_suggests_close_names():
    from afp_cli.errors import AfpError
    from afp_cli.evaluation.tasks import build_task_manager, check_task_names, default_include_path

    manager = build_task_manager(default_include_path(), ["afp_xnli_zh"], None)
    with pytest.raises(AfpError, match=r"unknown task or group 'afp_xnli_zz'; did you mean afp_xnli_z"):
        check_task_names(manager, ["afp_xnli_zz"])


@pytest.mark.slow
def test_unknown_name_through_the_cli_with_builtins(evaluate_error, base_and_adapter, tmp_path):
    base, _ = base_and_adapter  # a name outside afp's folder makes lm-eval index its built-ins (~35 s here)
    message = evaluate_error("--model", str(base), "--tasks", "xcopa_zz", "--output-dir", str(tmp_path))
    assert "unknown task or group 'xcopa_zz'" in message and "xcopa_zh" in message
