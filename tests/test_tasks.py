"""afp's lm-eval task families: registration, generated files, scripted-LM accuracy on real data, metrics."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import pytest
from helpers import TASKS_DIR, ScriptedLM, evaluate_tasks, load_module, task_manager

from afp_cli.evaluation.taskgen import generated_files, render

# discovered, not listed: a family is a folder of tasks/ with its generator; the paper's classification families are
# those with demonstration groups (k-shot in English, Chinese or the task's own language)
FAMILIES = tuple(sorted(path.parent.name for path in TASKS_DIR.glob("afp_*/_generate_configs.py")))
CLASSIFICATION = tuple(family for family in FAMILIES if (TASKS_DIR / family / f"_{family}_demo_en.yaml").is_file())


@pytest.fixture(scope="module")
def common():
    return load_module(TASKS_DIR / "afp_task_common.py", "afp_task_common_under_test")


@pytest.fixture(scope="module")
def manager():
    return task_manager()


# ------------------------------------------------------------------------------------------------ registration


def test_every_family_and_group_is_registered(manager):
    groups = set(manager.all_groups)
    for family in FAMILIES:
        assert family in groups
    for family in CLASSIFICATION:
        assert {f"{family}_demo_en", f"{family}_demo_zh", f"{family}_demo_native"} <= groups
    tasks = set(manager.all_subtasks)

    def count(prefix: str) -> int:
        return len([t for t in tasks if t.startswith(prefix) and "_demo_" not in t])

    assert count("afp_xnli_") == 30 and count("afp_xnli_qa_") == 15  # full-sentence + question-style variant
    assert count("afp_pawsx_") == 7
    assert count("afp_xcopa_") == 12  # 11 + English COPA
    assert count("afp_xstorycloze_") == 11 and count("afp_xwinograd_") == 6
    assert len([t for t in tasks if t.startswith("afp_pawsx_") and "_demo_" in t]) == 7 * 3
    assert len([t for t in tasks if t.startswith("afp_flores_")]) == 15 * 14
    assert {"afp_flores_eng_Latn-zho_Hans", "afp_flores_zho_Hans-eng_Latn", "afp_cls_en-zh", "afp_cls_zh-en"} <= tasks
    assert {"afp_flores_from_eng_Latn", "afp_flores_into_zho_Hans", "afp_xnli_qa"} <= groups


@pytest.mark.parametrize("family", FAMILIES)
def test_generated_yaml_is_current_with_its_generator(family):
    folder = TASKS_DIR / family
    generator = load_module(folder / "_generate_configs.py", f"{family}_generator")
    expected = generator.configs()
    assert generated_files(folder) == set(expected), "stale or missing generated files: rerun the generator"
    for name, config in expected.items():
        assert (folder / name).read_text(encoding="utf-8") == render(config), f"{family}/{name} is out of date"
    assert (folder / "README.md").is_file()


# ------------------------------------------------------------------------------------------------ scripted LMs


def _tsv_labels(path: Path, limit: int) -> list[int]:
    with path.open(encoding="utf-8") as handle:
        return [int(row["label"]) for row in csv.DictReader(handle, delimiter="\t", quoting=csv.QUOTE_NONE)][:limit]


def _jsonl_labels(path: Path, limit: int) -> list[int]:
    return [json.loads(line)["label"] for line in path.read_text(encoding="utf-8").splitlines()[:limit]]


def test_gold_and_first_choice_accuracy_on_real_pawsx_and_xcopa(shared_data):
    # The shared data has no English COPA: XCOPA runs with its in-language (validation) demonstrations here.
    xcopa = "afp_xcopa_zh_demo_native"
    gold = ScriptedLM(choose=lambda doc: 1 - doc["label"] if "sentence1" in doc else doc["label"])
    results = evaluate_tasks(gold, ["afp_pawsx_zh", xcopa], shared_data, limit=40, num_fewshot=5)["results"]
    assert results["afp_pawsx_zh"]["acc,none"] == 1.0
    assert results[xcopa]["acc,none"] == 1.0

    first = ScriptedLM(choose=lambda doc: 0)
    results = evaluate_tasks(first, ["afp_pawsx_zh", xcopa], shared_data, limit=40)["results"]
    pawsx = _tsv_labels(shared_data / "pawsx" / "zh_test.tsv", 40)
    xcopa_labels = _jsonl_labels(shared_data / "xcopa" / "zh_test.jsonl", 40)
    # First choice: "Yes" (label 1) in PAWS-X, choice1 (label 0) in XCOPA.
    assert results["afp_pawsx_zh"]["acc,none"] == pytest.approx(sum(pawsx) / 40)
    assert results["afp_xcopa_zh_demo_native"]["acc,none"] == pytest.approx(xcopa_labels.count(0) / 40)
    assert 0 < sum(pawsx) < 40 and 0 < xcopa_labels.count(0) < 40  # the two scripts must disagree somewhere


def test_prompts_follow_the_official_templates_and_demonstration_languages(shared_data):
    output = evaluate_tasks(
        ScriptedLM(choose=lambda doc: 0),
        ["afp_xcopa_zh_demo_native", "afp_pawsx_zh"],
        shared_data,
        limit=2,
        num_fewshot=2,
    )
    xcopa = output["samples"]["afp_xcopa_zh_demo_native"][0]
    first = json.loads((shared_data / "xcopa" / "zh_test.jsonl").read_text(encoding="utf-8").splitlines()[0])
    context, continuation = xcopa["arguments"][0]
    connective = "because" if first["question"] == "cause" else "so"
    assert context.endswith(f"</s>{first['question']}: {first['premise']} {connective}")
    assert continuation == f" {first['choice1']}"
    assert context.count("</s>") == 2  # two demonstrations, each closed by the official connector

    pawsx = output["samples"]["afp_pawsx_zh"][0]
    context, continuation = pawsx["arguments"][0]
    demos = [demo for demo in context.split("</s>") if demo][:-1]
    english = (shared_data / "pawsx" / "en_dev.tsv").read_text(encoding="utf-8")
    assert len(demos) == 2
    for demo in demos:  # by default the demonstrations come from the English dev set, as the released config
        sentence1 = demo.split(", right? ")[0]
        assert sentence1 in english
        assert ", right? Yes, " in demo or ", right? No, " in demo
    test_row = (shared_data / "pawsx" / "zh_test.tsv").read_text(encoding="utf-8").splitlines()[1].split("\t")
    assert context.endswith(f"</s>{test_row[1]}, right?") and continuation == f" Yes, {test_row[2]}"


def test_xnli_reads_local_jsonl_with_spelled_out_labels(tmp_path):
    rows = [
        {"premise": f"前提{i}", "hypothesis": f"假设{i}", "label": name}
        for i, name in enumerate(["entailment", "neutral", "contradiction", "neutral"])
    ]
    (tmp_path / "xnli").mkdir()
    for name in ("zh_test", "zh_dev", "en_dev"):
        (tmp_path / "xnli" / f"{name}.jsonl").write_text(
            "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows), encoding="utf-8"
        )
    output = evaluate_tasks(ScriptedLM(choose=lambda doc: 1), ["afp_xnli_zh"], tmp_path, limit=None)
    assert output["results"]["afp_xnli_zh"]["acc,none"] == 0.5  # "Also" (neutral) is right for 2 of 4
    arguments = [list(pair) for pair in output["samples"]["afp_xnli_zh"][0]["arguments"]]
    assert arguments == [
        ["前提0, right?", " Yes, 假设0"],
        ["前提0, right?", " Also, 假设0"],
        ["前提0, right?", " No, 假设0"],
    ]
    question = evaluate_tasks(ScriptedLM(choose=lambda doc: 1), ["afp_xnli_qa_zh"], tmp_path, limit=None)
    assert question["results"]["afp_xnli_qa_zh"]["acc,none"] == 0.5
    assert list(question["samples"]["afp_xnli_qa_zh"][0]["arguments"][0]) == [
        "Premise: 前提0\nHypothesis: 假设0\nQuestion: What is the relationship between premise and hypothesis, "
        "entailment, neutral, or contradiction?\nAnswer:",
        " A",
    ]


def test_flores_scores_a_perfect_translation_100_and_cuts_at_newline(shared_data, tmp_path):
    (tmp_path / "flores").symlink_to(shared_data / "flores-layout", target_is_directory=True)
    lm = ScriptedLM(generate=lambda doc: f" {doc['target']}\nrambling on")
    output = evaluate_tasks(lm, ["afp_flores"], tmp_path, limit=20, num_fewshot=1)
    for task in ("afp_flores_eng_Latn-zho_Hans", "afp_flores_zho_Hans-eng_Latn"):
        assert output["results"][task]["bleu_target_tok,none"] == pytest.approx(100.0)
        assert "bleu,none" not in output["results"][task]  # not lm-eval's 13a-only built-in
        assert output["results"][task]["chrfpp,none"] == pytest.approx(100.0)
    sample = output["samples"]["afp_flores_eng_Latn-zho_Hans"][0]
    source = (shared_data / "flores-layout" / "devtest" / "eng_Latn.devtest").read_text(encoding="utf-8")
    assert sample["arguments"][0][0].endswith(f"{source.splitlines()[0]} Translate into Chinese:")


def test_summarization_rouge_is_one_for_identical_chinese(tmp_path):
    (tmp_path / "summarization").mkdir()
    rows = [
        {"article": "今天北京天气很好，很多人去公园散步。", "summary": "北京天气好"},
        {"article": "新的地铁线路明天开通。", "summary": "地铁新线开通"},
    ]
    for split in ("dev", "test"):
        (tmp_path / "summarization" / f"en2zh_{split}.jsonl").write_text(
            "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows), encoding="utf-8"
        )
    output = evaluate_tasks(
        ScriptedLM(generate=lambda doc: doc["summary"]), ["afp_cls_en-zh"], tmp_path, limit=None, num_fewshot=1
    )
    for metric in ("rouge1", "rouge2", "rougeL"):
        assert output["results"]["afp_cls_en-zh"][f"{metric},none"] == pytest.approx(1.0)


# ------------------------------------------------------------------------------------------------ metrics


def test_bleu_and_chrf_on_known_strings(common):
    # 13a: unigram 5/6 (second "the" clipped), bigram 3/5, trigram 2/4, 4-gram 1/3, no brevity penalty.
    expected = 100 * (5 / 6 * 3 / 5 * 2 / 4 * 1 / 3) ** 0.25
    assert common.corpus_bleu(["the cat sat on the mat"], ["the cat sat on a mat"], "13a") == pytest.approx(expected)
    assert common.corpus_bleu(["我爱北京天安门。"], ["我爱北京天安门。"], "zh") == pytest.approx(100.0)
    assert common.corpus_chrf_plus_plus(["我爱北京天安门。"], ["我爱北京天安门。"]) == pytest.approx(100.0)
    # Unsegmented Chinese is one 13a token: a one-character change scores 0; the zh tokenizer sees characters.
    assert common.corpus_bleu(["我爱北京天安门"], ["我爱北京天坛"], "13a") == 0.0
    assert common.corpus_bleu(["我爱北京天安门"], ["我爱北京天坛"], "zh") > 10.0
    assert common.corpus_chrf_plus_plus(["abc"], ["xyz"]) == 0.0


def test_bleu_tokenizer_by_target_language(common):
    generator = load_module(TASKS_DIR / "afp_flores" / "_generate_configs.py", "flores_generator")
    assert [generator.bleu_tokenizer(code) for code in ("zh", "ja", "th", "de", "en")] == [
        "zh",
        "ja-mecab",
        "char",
        "13a",
        "13a",
    ]
    assert common.effective_bleu_tokenizer("ja-mecab") == ("ja-mecab" if common.mecab_available() else "char")
    assert common.effective_bleu_tokenizer("13a") == "13a"


def test_rouge_splits_cjk_into_characters(common):
    from rouge_score import rouge_scorer

    default = rouge_scorer.RougeScorer(["rouge1"]).score("我爱猫", "我爱猫")["rouge1"].fmeasure
    assert default == 0.0  # why afp needs its own tokenizer: the default drops every non-ASCII character
    assert common.cjk_tokenize("我爱 NLP，Straße!") == ["我", "爱", "nlp", "straße"]
    assert common.rouge_scores("我爱猫", "我爱猫") == {"rouge1": 1.0, "rouge2": 1.0, "rougeL": 1.0}
    scores = common.rouge_scores("我爱猫", "我爱狗")  # 2 of 3 characters, 1 of 2 bigrams, LCS 2
    assert scores["rouge1"] == pytest.approx(2 / 3)
    assert scores["rouge2"] == pytest.approx(1 / 2)
    assert scores["rougeL"] == pytest.approx(2 / 3)
    english = common.rouge_scores("the cat sat", "the cat ran")
    assert english["rouge1"] == pytest.approx(2 / 3) and not math.isnan(english["rougeL"])


def test_a_hub_dataset_only_a_loading_script_reads_is_one_line_naming_the_local_data_option(common, monkeypatch):
    import datasets

    def refuse(path, name=None, split=None, **kwargs):  # datasets >= 4, as its load.py words it
        raise RuntimeError(f"Dataset scripts are no longer supported, but found {path.split('/')[-1]}.py")

    monkeypatch.setattr(datasets, "load_dataset", refuse)
    with pytest.raises(common.LocalDataError) as refusal:
        common.load_splits(
            hub_path="Muennighoff/xwinograd",
            splits={"test": {"hub_name": "zh", "hub_split": "test", "local": "xwinograd/zh_test.jsonl"}},
        )
    assert str(refusal.value) == (
        f"Muennighoff/xwinograd (zh, test): the dataset is read by a loading script, which datasets "
        f"{datasets.__version__} no longer runs; evaluate from local files: afp evaluate --data-dir D, or lm_eval "
        "--metadata '{\"data_dir\": D}' (docs/evaluate.md, Local data)"
    )
    monkeypatch.setattr(datasets, "load_dataset", lambda *args, **kwargs: (_ for _ in ()).throw(RuntimeError("bug")))
    with pytest.raises(RuntimeError, match="^bug$"):  # any other error keeps its traceback
        common.load_splits(hub_path="x", splits={"test": {"hub_name": "zh", "hub_split": "test", "local": "x"}})


def test_missing_local_file_names_the_file(common, tmp_path):
    with pytest.raises(common.LocalDataError, match=r"xcopa/zh_test.jsonl: missing local data file"):
        common.load_splits(
            splits={"test": {"hub_path": "x", "hub_split": "test", "local": "xcopa/zh_test.jsonl"}},
            data_dir=str(tmp_path),
        )
