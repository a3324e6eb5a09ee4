"""A 0-shot run needs no demonstration file; a k-shot run still stops at the missing one. And one label per adapter."""

from __future__ import annotations

import json
import shutil

import pytest

from afp_cli.errors import AfpError
from afp_cli.evaluation.tasks import build_task_manager, check_local_data, default_include_path


@pytest.fixture
def test_split_only(tmp_path, shared_data):
    """A data folder with the test split of one language per family and nothing else (no demonstration files)."""
    for family, name in (("pawsx", "zh_test.tsv"), ("xcopa", "zh_test.jsonl")):
        (tmp_path / family).mkdir()
        shutil.copy(shared_data / family / name, tmp_path / family / name)
    return tmp_path


@pytest.mark.parametrize(
    ("task", "demonstrations"), [("afp_pawsx_zh", "pawsx/en_dev.tsv"), ("afp_xcopa_zh", "xcopa/en_train.jsonl")]
)
def test_zero_shot_checks_no_demonstration_file_but_k_shot_does(test_split_only, task, demonstrations):
    manager = build_task_manager(default_include_path(), [task], test_split_only)
    check_local_data(manager, [task], test_split_only, [0])  # passes: only the test split is read
    with pytest.raises(AfpError, match=rf"{test_split_only / demonstrations}: missing local data file \(task '{task}'"):
        check_local_data(manager, [task], test_split_only, [0, 1])
    check_local_data(manager, [task], test_split_only, None)  # without --num-fewshot: the task's own k, 0 here


def test_without_num_fewshot_a_one_shot_task_needs_its_demonstrations(tmp_path):
    (tmp_path / "summarization").mkdir()
    (tmp_path / "summarization" / "en2zh_test.jsonl").write_text('{"article": "a", "summary": "b"}\n')
    manager = build_task_manager(default_include_path(), ["afp_cls_en-zh"], tmp_path)
    with pytest.raises(AfpError, match="en2zh_dev.jsonl: missing local data file"):
        check_local_data(manager, ["afp_cls_en-zh"], tmp_path, None)  # afp_cls is one-shot by its own config
    check_local_data(manager, ["afp_cls_en-zh"], tmp_path, [0])


def test_the_loader_defers_a_missing_demonstration_file_to_the_first_demonstration(test_split_only):
    from afp_cli.evaluation.run_tasks import RunTaskManager

    manager = RunTaskManager(
        include_path=str(default_include_path()), include_defaults=False, metadata={"data_dir": str(test_split_only)}
    )
    task = manager.load(["afp_pawsx_zh"])["tasks"]["afp_pawsx_zh"]
    assert len(task.eval_docs) == len((test_split_only / "pawsx" / "zh_test.tsv").read_text().splitlines()) - 1
    assert task.sampler.sample(0) == []
    with pytest.raises(Exception, match=rf"{test_split_only / 'pawsx' / 'en_dev.tsv'}: missing local data file"):
        task.sampler.sample(1)


def test_zero_shot_evaluate_runs_with_the_test_split_alone(run_cli, tiny_model_dir, test_split_only, tmp_path):
    model = tiny_model_dir("llama")
    common = [
        "evaluate",
        "-m",
        model,
        "--tasks",
        "afp_pawsx_zh,afp_xcopa_zh",
        "--data-dir",
        test_split_only,
        "--limit",
        "4",
        "--device",
        "cpu",
    ]
    code, _, stderr = run_cli(*common, "--num-fewshot", "0", "-o", tmp_path / "zero")
    assert code == 0, stderr
    rows = json.loads((tmp_path / "zero" / "comparison.json").read_text(encoding="utf-8"))["rows"]
    assert {(row["task"], row["shots"]) for row in rows} == {("afp_pawsx_zh", 0), ("afp_xcopa_zh", 0)}
    code, _, stderr = run_cli(*common, "--num-fewshot", "0,1", "-o", tmp_path / "one")
    assert code == 2 and f"{test_split_only / 'pawsx' / 'en_dev.tsv'}: missing local data file" in stderr
    assert not (tmp_path / "one").exists()  # refused before any model ran


def test_evaluate_and_analyze_label_adapters_alike(tmp_path):
    from afp_cli.evaluation.runner import model_labels as evaluate_labels
    from afp_cli.model.variants import adapter_labels as analyze_labels

    adapters = [tmp_path / "a" / "final", tmp_path / "b" / "final", tmp_path / "cit", tmp_path / "base"]
    assert evaluate_labels(adapters) == ["base", "final-0", "final-1", "cit", "base-3"]
    assert analyze_labels(adapters) == evaluate_labels(adapters)[1:]
