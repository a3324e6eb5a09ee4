"""The benchmarks as published (../shared/data): XNLI's TSV, XWinograd's dataset.tsv, XStoryCloze's TSVs and
CrossSum's line-aligned files read by afp's tasks offline, counted and spelled out; bad rows are one line."""

from __future__ import annotations

import csv
import json
import math
import re
from pathlib import Path

import pytest
from helpers import TASKS_DIR, load_module, task_manager  # tests/ is on sys.path under pytest

from afp_cli.errors import AfpError
from afp_cli.evaluation.tasks import build_task_manager, check_local_data, default_include_path


@pytest.fixture(scope="module")
def xwinograd():
    return load_module(TASKS_DIR / "afp_xwinograd" / "utils.py", "afp_xwinograd_utils_under_test")


def _task(data_dir: Path, name: str):
    return task_manager(data_dir).load([name])["tasks"][name]


def _scored(task, doc) -> list[tuple[str, str]]:
    """(context, continuation) of each choice, as lm-eval scores them (target_delimiter is "")."""
    return [(task.doc_to_text(doc), choice) for choice in task.doc_to_choice(doc)]


# ------------------------------------------------------------------------------------------------- XWinograd


def test_xwinograd_release_counts_per_language(shared_data, xwinograd):
    counts = {
        language: len(xwinograd.read_release(shared_data / "xwinograd" / "dataset.tsv", {"language": language}))
        for language in ("en", "jp", "zh", "ru", "pt", "fr")
    }
    assert counts == {"en": 2325, "jp": 959, "zh": 16, "ru": 315, "pt": 263, "fr": 83}  # 3,961 lines in all


@pytest.mark.parametrize(
    ("language", "index", "before", "fillings", "answer"),
    [
        (  # line 1: the pronoun "they" is token 9 of 13 ([9, 10]); candidates filled in as spelled
            "en",
            0,
            "The city councilmen refused the demonstrators a permit because ",
            ["The city councilmen feared violence.", "the demonstrators feared violence."],
            0,
        ),
        (  # line 215: the release writes the text's quotes as the tokens `` and ''; the pronoun is "his"
            "en",
            214,
            'Tom said "Check" to Ralph as he moved ',
            ["Tom bishop.", "Ralph bishop."],
            0,
        ),
        (  # the first jp line: "彼" is token 4 ([4, 5]); tokens are joined without spaces
            "jp",
            0,
            "狙撃兵はテロリストを撃った。",
            ["狙撃兵は悪漢だったからだ。", "テロリストは悪漢だったからだ。"],
            1,
        ),
        (  # the third zh line: "它" is token 5 ([5, 6]); the text's trailing space is dropped
            "zh",
            2,
            "奖杯无法放进到棕色的箱子里，因为",
            ["箱子太小了。", "奖杯太小了。"],
            0,
        ),
    ],
)
def test_xwinograd_schema_becomes_the_two_filled_sentences(shared_data, language, index, before, fillings, answer):
    task = _task(shared_data, f"afp_xwinograd_{language}_demo_native")
    doc = task.test_docs()[index]
    assert _scored(task, doc) == [(before, filling) for filling in fillings]
    assert task.doc_to_target(doc) == answer


def test_xwinograd_demonstrations_are_the_english_release_rows(shared_data):
    task = _task(shared_data, "afp_xwinograd_zh")
    assert len(task.test_docs()) == 16 and len(task.fewshot_docs()) == 2325  # English, as the family draws them
    assert task.doc_to_text(task.fewshot_docs()[0]).startswith("The city councilmen refused")


# ------------------------------------------------------------------------------------------------------ XNLI


@pytest.mark.parametrize(("language", "split", "rows"), [("zh", "test", 2499), ("en", "dev", 2490)])
def test_xnli_tsv_rows_are_the_files_rows(shared_data, language, split, rows):
    with (shared_data / "xnli" / f"{language}_{split}.tsv").open(encoding="utf-8") as handle:
        published = list(csv.DictReader(handle, delimiter="\t", quoting=csv.QUOTE_NONE))
    task = _task(shared_data, f"afp_xnli_{language}_demo_{'en' if split == 'dev' else 'native'}")
    docs = task.fewshot_docs() if split == "dev" else task.test_docs()
    assert len(docs) == len(published) == rows
    assert [doc["premise"] for doc in docs] == [row["premise"] for row in published]
    assert [doc["hypothesis"] for doc in docs] == [row["hypothesis"] for row in published]
    assert [doc["label"] for doc in docs] == [int(row["label"]) for row in published]
    assert {doc["label"] for doc in docs} == {0, 1, 2}


def test_xnli_tsv_prompt(shared_data):
    task = _task(shared_data, "afp_xnli_zh")
    doc = task.test_docs()[0]
    premise = "嗯，我根本没想过，但是我很沮丧，最后我又和他说话了。"
    hypothesis = "我还没有和他再次谈论。"
    assert _scored(task, doc) == [(f"{premise}, right?", f" {word}, {hypothesis}") for word in ("Yes", "Also", "No")]
    assert task.doc_to_target(doc) == 2  # contradiction
    assert len(task.fewshot_docs()) == 2490  # the English dev set


# ---------------------------------------------------------------------------------------------- XStoryCloze


@pytest.mark.parametrize("language", ["en", "zh", "ar", "es", "id", "ru"])
def test_xstorycloze_published_eval_files_read_whole(shared_data, language):
    task = _task(shared_data, f"afp_xstorycloze_{language}_demo_en")
    published = (shared_data / "xstorycloze" / f"{language}_eval.tsv").read_text(encoding="utf-8")
    assert not published.endswith("\n")  # as published: the last story has no newline after it, and still counts
    last = published.splitlines()[-1].split("\t")
    docs = task.test_docs()
    assert len(docs) == 1511 and len(task.fewshot_docs()) == 360
    assert _scored(task, docs[-1]) == [("".join(last[1:5]), last[5]), ("".join(last[1:5]), last[6])]
    assert task.doc_to_target(docs[-1]) == int(last[7]) - 1


# -------------------------------------------------------------------------------------------------- CrossSum


def test_crosssum_en_zh_pairs(shared_data):
    task = _task(shared_data, "afp_cls_en-zh")
    docs, demos = task.test_docs(), task.fewshot_docs()
    assert len(docs) == 497 and len(demos) == 497
    stem = shared_data / "crosssum" / "english-chinese_simplified"
    articles = (Path(f"{stem}_test.source")).read_text(encoding="utf-8").splitlines()
    assert task.doc_to_text(docs[0]) == f"Article: {articles[0]}\nSummary in Chinese:"
    assert articles[0].startswith("Jose Luis Abarca was detained by federal officers in the capital, Mexico City")
    summary = "墨西哥警方说，他们逮捕了跟9月份43名学生失踪有关的伊瓜拉市的市长何塞·阿瓦尔卡。"
    assert task.doc_to_target(docs[0]) == summary
    assert demos[0]["summary"] == Path(f"{stem}_val.target").read_text(encoding="utf-8").splitlines()[0]


def test_zh_en_summarization_keeps_afps_jsonl_layout(tmp_path):
    (tmp_path / "summarization").mkdir()
    for split in ("test", "dev"):
        (tmp_path / "summarization" / f"zh2en_{split}.jsonl").write_text(
            json.dumps({"article": "今天下雨。", "summary": "Rain today."}) + "\n", encoding="utf-8"
        )
    task = _task(tmp_path, "afp_cls_zh-en")
    assert task.doc_to_text(task.test_docs()[0]) == "Article: 今天下雨。\nSummary in English:"


# ---------------------------------------------------------------------------------------- layouts: one of them


def test_two_layouts_of_one_split_are_refused_and_none_names_both(tmp_path):
    (tmp_path / "xnli").mkdir()
    (tmp_path / "xnli" / "zh_test.tsv").write_text("id\tpremise\thypothesis\tlabel\n0\tp\th\t1\n", encoding="utf-8")
    manager = build_task_manager(default_include_path(), ["afp_xnli_zh"], tmp_path)
    check_local_data(manager, ["afp_xnli_zh"], tmp_path, [0])  # the TSV alone: fine
    (tmp_path / "xnli" / "zh_test.jsonl").write_text('{"premise": "p", "hypothesis": "h", "label": 1}\n')
    tsv, jsonl = tmp_path / "xnli" / "zh_test.tsv", tmp_path / "xnli" / "zh_test.jsonl"
    refusal = f"{tsv} and {jsonl}: the same split in 2 layouts; keep one"
    with pytest.raises(AfpError, match=re.escape(refusal)):
        check_local_data(manager, ["afp_xnli_zh"], tmp_path, [0])  # before any model loads
    with pytest.raises(Exception, match=re.escape(refusal)) as stop:  # and plain lm_eval stops likewise
        _task(tmp_path, "afp_xnli_zh")
    assert type(stop.value).__name__ == "LocalDataError"  # matched by name: lm-eval imports the module itself
    tsv.unlink(), jsonl.unlink()
    missing = f"{tsv}: missing local data file, nor is {jsonl} there (either layout will do)"
    with pytest.raises(AfpError, match=re.escape(f"{missing} (task 'afp_xnli_zh' reads it from --data-dir)")):
        check_local_data(manager, ["afp_xnli_zh"], tmp_path, [0])


def test_demonstrations_in_two_layouts_stop_only_a_k_shot_run(tmp_path):
    (tmp_path / "xnli").mkdir()
    row = "id\tpremise\thypothesis\tlabel\n0\tp\th\t1\n"
    for name in ("zh_test.tsv", "en_dev.tsv"):
        (tmp_path / "xnli" / name).write_text(row, encoding="utf-8")
    (tmp_path / "xnli" / "en_dev.jsonl").write_text('{"premise": "p", "hypothesis": "h", "label": 1}\n')
    task = _task(tmp_path, "afp_xnli_zh")  # loads: a 0-shot run reads no demonstration
    assert len(task.test_docs()) == 1 and task.sampler.sample(0) == []
    with pytest.raises(Exception, match=re.escape(f"{tmp_path / 'xnli' / 'en_dev.tsv'} and ")):
        task.sampler.sample(1)


# ---------------------------------------------------------------------------------------------- bad published rows


def _xwinograd_line(**changes) -> str:
    columns = {
        "language": "zh",
        "source": "original",
        "english": "?",
        "text": "奖杯无法放进箱子里，因为它太小了。",
        "tokens": json.dumps(["奖杯", "无法放进", "箱子", "里，因为", "它", "太小了。"]),
        "pronoun": json.dumps(["它", [4, 5], ["它"]]),
        "candidates": json.dumps([["箱子", [2, 3], ["箱子"], True], ["奖杯", [0, 1], ["奖杯"], False]]),
    }
    return "\t".join({**columns, **changes}.values())


@pytest.mark.parametrize(
    ("line", "message"),
    [
        (_xwinograd_line(), None),
        ("zh\toriginal\t?\tonly four", r"dataset.tsv:2: 7 tab-separated columns expected \(language, .*\), got 4"),
        (_xwinograd_line(tokens='["奖杯", '), r"dataset.tsv:2: field 'tokens': invalid JSON"),
        (
            _xwinograd_line(candidates=json.dumps([["箱子", [2, 3], ["箱子"], True]])),
            r"dataset.tsv:2: field 'candidates': exactly two candidates expected, got 1",
        ),
        (
            _xwinograd_line(candidates=json.dumps([["箱子", [2, 3], [], True], ["奖杯", [0, 1], [], True]])),
            r"dataset.tsv:2: field 'candidates': exactly one true candidate expected, got 2",
        ),
        (
            _xwinograd_line(pronoun=json.dumps(["它", [3, 4], ["它"]])),
            r"dataset.tsv:2: field 'pronoun': tokens \[3, 4\] spell \"里，因为\", not the pronoun \"它\"",
        ),
        (_xwinograd_line(pronoun=json.dumps(["它", [4, 9], ["它"]])), r"span \[4, 9\] outside the 6 tokens"),
        (
            _xwinograd_line(text="奖杯放不进"),
            r"dataset.tsv:2: field 'tokens': token 1 \"无法放进\" is not at character 2",
        ),
    ],
)
def test_bad_xwinograd_rows_name_file_line_and_field(tmp_path, xwinograd, line, message):
    path = tmp_path / "dataset.tsv"
    path.write_text(_xwinograd_line() + "\n" + line + "\n", encoding="utf-8")
    if message is None:  # the good row, to show the others fail for the one thing they break
        assert xwinograd.read_release(path, {"language": "zh"})[1] == {
            "sentence": "奖杯无法放进箱子里，因为_太小了。",
            "option1": "箱子",
            "option2": "奖杯",
            "answer": "1",
        }
        return
    with pytest.raises(xwinograd.LocalDataError, match=message) as refusal:
        xwinograd.read_release(path, {"language": "zh"})
    assert str(refusal.value).startswith(f"{path}:2: ") and "\n" not in str(refusal.value)


def test_crosssum_line_counts_that_differ_name_the_short_file_and_line(tmp_path):
    folder = tmp_path / "crosssum"
    folder.mkdir()
    for split in ("test", "val"):
        (folder / f"english-chinese_simplified_{split}.source").write_text("a\nb\nc\n", encoding="utf-8")
        (folder / f"english-chinese_simplified_{split}.target").write_text("甲\n乙\n", encoding="utf-8")
    target = folder / "english-chinese_simplified_test.target"
    message = f"{target}:3: no line here to pair with the other file's line 3"
    with pytest.raises(Exception, match=re.escape(message)) as stop:
        _task(tmp_path, "afp_cls_en-zh")
    assert type(stop.value).__name__ == "LocalDataError"


# --------------------------------------------------------------------------------------------- afp evaluate


def test_evaluate_runs_the_published_files_offline(run_cli, tiny_model_dir, shared_data, tmp_path):
    tasks = ["afp_xnli_zh", "afp_xwinograd_zh", "afp_xstorycloze_zh", "afp_cls_en-zh"]
    code, _, stderr = run_cli(
        "evaluate",
        "-m",
        tiny_model_dir("llama"),
        "--tasks",
        ",".join(tasks),
        "--data-dir",
        shared_data,
        "--limit",
        "4",
        "--num-fewshot",
        "0,1",
        "--device",
        "cpu",
        "-o",
        tmp_path / "out",
    )
    assert code == 0, stderr
    rows = json.loads((tmp_path / "out" / "comparison.json").read_text(encoding="utf-8"))["rows"]
    metrics = {"acc"} | {"rouge1", "rouge2", "rougeL"}
    scores = {(row["task"], row["shots"], row["metric"]): row["value"] for row in rows if row["metric"] in metrics}
    assert {(task, shots) for task, shots, _ in scores} == {(task, shots) for task in tasks for shots in (0, 1)}
    assert len(scores) == 3 * 2 + 3 * 2  # acc for three tasks, ROUGE-1/2/L for one, each at 0 and 1 shot
    assert all(0.0 <= value <= 1.0 and not math.isnan(value) for value in scores.values())
    for task in tasks:  # four test items each
        samples = tmp_path / "out" / "raw" / "base" / "1shot" / f"samples_{task}.jsonl"
        assert len(samples.read_text(encoding="utf-8").splitlines()) == 4


def test_evaluate_stops_at_a_broken_published_row_with_one_line(run_cli, tiny_model_dir, shared_data, tmp_path):
    (tmp_path / "xwinograd").mkdir()
    lines = (shared_data / "xwinograd" / "dataset.tsv").read_text(encoding="utf-8").splitlines(keepends=True)
    number = next(n for n, line in enumerate(lines, start=1) if line.startswith("zh\t"))
    columns = lines[number - 1].split("\t")
    columns[6] = columns[6].replace("true", "false")  # neither candidate is right any more
    lines[number - 1] = "\t".join(columns)
    (tmp_path / "xwinograd" / "dataset.tsv").write_text("".join(lines), encoding="utf-8")
    code, _, stderr = run_cli(
        "evaluate",
        "-m",
        tiny_model_dir("llama"),
        "--tasks",
        "afp_xwinograd_zh",
        "--data-dir",
        tmp_path,
        "--limit",
        "2",
        "--num-fewshot",
        "0",
        "--device",
        "cpu",
        "-o",
        tmp_path / "out",
    )
    # the row is read when lm-eval loads the task, after the model: its loading bar may come first
    errors = [line for line in stderr.splitlines() if line.startswith("error")]
    assert code == 2 and "Traceback" not in stderr and stderr.splitlines()[-1] == errors[-1]
    assert errors == [
        f"error: {tmp_path / 'xwinograd' / 'dataset.tsv'}:{number}: field 'candidates': exactly one true candidate "
        "expected, got 0"
    ], stderr
