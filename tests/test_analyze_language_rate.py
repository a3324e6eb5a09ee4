"""Language identification, language-rate scoring and its readers (questions, generations, lm-eval samples)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from afp_cli.analyze.language_id import UNDETERMINED, LanguageIdConfig, LanguageIdentifier, script_units
from afp_cli.analyze.language_rate import (
    RateRow,
    add_deltas,
    cut_answer,
    model_averages,
    parse_stops,
    read_generations,
    score,
    summarize,
    task_direction,
    wilson_interval,
)
from afp_cli.errors import AfpError

SENTENCES = {
    "en": "I drink a cup of coffee every morning before I go to work.",
    "zh": "我每天早上上班前都会喝一杯咖啡。",
    "ja": "私は毎朝仕事に行く前にコーヒーを一杯飲みます。",
    "de": "Ich trinke jeden Morgen eine Tasse Kaffee, bevor ich zur Arbeit gehe.",
    "fr": "Je bois une tasse de café tous les matins avant d'aller au travail.",
    "th": "ฉันดื่มกาแฟหนึ่งถ้วยทุกเช้าก่อนไปทำงาน",
    "sw": "Mimi hunywa kikombe cha kahawa kila asubuhi kabla ya kwenda kazini.",
}


@pytest.fixture(scope="module")
def identifier():
    return LanguageIdentifier(SENTENCES)


@pytest.mark.parametrize("code", sorted(SENTENCES))
def test_language_id_recognises_each_language(identifier, code):
    assert identifier.detect(SENTENCES[code]) == code


@pytest.mark.parametrize("text", ["", "  ", "ok", "42!", "...?"])
def test_empty_and_two_letter_answers_are_undetermined(identifier, text):
    assert identifier.detect(text) == UNDETERMINED


def test_mixed_scripts_are_undetermined_but_a_borrowed_word_is_not(identifier):
    assert identifier.detect("北京是中国的首都。It is a big city with many people living there.") == UNDETERMINED
    assert identifier.detect("我每天都用Python写程序，它很好用。") == "zh"
    assert script_units("我用Python") == {"CJK": 2, "LATIN": 1}


def test_thresholds_are_configurable():
    strict = LanguageIdentifier(["en"], LanguageIdConfig(min_letters=100))
    assert strict.detect(SENTENCES["en"]) == UNDETERMINED
    with pytest.raises(AfpError, match="min_confidence"):
        LanguageIdConfig(min_confidence=1.5)


def test_unsupported_or_unknown_languages_are_user_errors():
    with pytest.raises(AfpError, match="not supported"):
        LanguageIdentifier(["km"])
    with pytest.raises(AfpError, match="unknown language code 'xx'"):
        LanguageIdentifier(["xx"])


def test_wilson_interval_matches_hand_computation():
    # 6 of 10: p = 0.6, z = 1.96: centre (0.6 + z²/20) / (1 + z²/10), half-width z·sqrt(0.024 + z²/400) / (1 + z²/10)
    low, high = wilson_interval(6, 10)
    assert low == pytest.approx(0.31267, abs=1e-5)
    assert high == pytest.approx(0.83182, abs=1e-5)
    assert wilson_interval(0, 4)[0] == 0.0 and wilson_interval(4, 4)[1] == 1.0


ANSWERS = [  # target zh, source en: 6 target, 2 source, 1 other, 1 undetermined; 11 lines of which 6 in Chinese
    "今天天气很好，我们去公园散步吧。",
    "我每天早上喝一杯牛奶。",
    "这个问题很简单，答案是四。",
    "猫喜欢在阳光下睡觉。",
    "我非常喜欢喝绿茶，每天下午都会泡一壶。\nI also like coffee.",
    "学习语言需要每天练习。",
    "The weather is nice today, let us go for a walk in the park.",
    "I drink a glass of milk every morning.",
    "Ich trinke jeden Morgen ein Glas Milch.",
    "OK",
]


def _write_jsonl(path: Path, records) -> Path:
    path.write_text("".join(json.dumps(record, ensure_ascii=False) + "\n" for record in records), encoding="utf-8")
    return path


def test_rate_and_breakdown_of_a_fixed_generations_file(tmp_path):
    path = _write_jsonl(
        tmp_path / "answers.jsonl", [{"id": f"a{index}", "text": text} for index, text in enumerate(ANSWERS)]
    )
    generations = read_generations(path, target_lang="zh", source_lang="en")
    # Whole answers (no stop sequence), so the line rate sees the second line of the two-line answer.
    (row,) = summarize(score(generations, LanguageIdentifier(["zh", "en"]), stops=()), examples_per_row=2)
    assert row.model == "answers" and row.direction == "en-zh" and row.answers == 10
    assert row.counts == {"target": 6, "source": 2, "other": 1, "undetermined": 1}
    assert row.rate == pytest.approx(0.6)
    assert (row.ci_low, row.ci_high) == pytest.approx((0.31267, 0.83182), abs=1e-5)
    assert row.line_rate == pytest.approx(6 / 11)
    assert [example["id"] for example in row.examples] == ["a6", "a7"]
    assert row.examples[0]["detected"] == "en"


@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        ("你去。", "zh"),
        ("好的", "zh"),
        ("好", "zh"),  # a Chinese word is one or two characters
        ("OK", UNDETERMINED),
        ("Go.", UNDETERMINED),  # two Latin letters say too little
        ("123 !", UNDETERMINED),
        ("", UNDETERMINED),
    ],
)
def test_short_answers_one_chinese_character_is_enough_two_latin_letters_are_not(answer, expected):
    assert LanguageIdentifier(["zh", "en"]).detect(answer) == expected


def test_lm_eval_samples_count_a_fallback_to_the_source_language(tmp_path):
    def sample(doc_id, answer):
        return {
            "doc_id": doc_id,
            "doc": {"sentence_eng_Latn": "x"},
            "target": "参考译文",
            "arguments": {"gen_args_0": {"arg_0": "English: x\nChinese:", "arg_1": {"until": ["\n"]}}},
            "resps": [[answer]],
            "filtered_resps": [answer],
            "filter": "none",
            "metrics": ["bleu"],
        }

    path = _write_jsonl(
        tmp_path / "samples_afp_flores_eng_Latn-zho_Hans_2024-06-01T12-00-00.123456.jsonl",
        [
            sample(0, "我今天很高兴见到你。"),
            sample(1, "The meeting was moved to next Tuesday afternoon."),  # fell back to the source language
            sample(2, "他们明天一起去北京旅游。"),
        ],
    )
    generations = read_generations(path)  # the direction comes from the task name
    assert generations[0].prompt == "English: x\nChinese:"
    (row,) = summarize(score(generations, LanguageIdentifier(["zh", "en"])))
    assert row.model == "afp_flores_eng_Latn-zho_Hans" and row.direction == "en-zh"
    assert row.counts == {"target": 2, "source": 1, "other": 0, "undetermined": 0}


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("{not json", "answers.jsonl:2: not valid JSON"),
        ('{"id": 1}', "answers.jsonl:2: field 'text'"),
        ('{"text": "hi", "target_lang": "xx"}', "answers.jsonl:2: field 'target_lang': unknown language code 'xx'"),
    ],
)
def test_bad_generation_lines_name_file_line_and_field(tmp_path, line, message):
    path = tmp_path / "answers.jsonl"
    path.write_text('{"text": "你好世界"}\n' + line + "\n", encoding="utf-8")
    with pytest.raises(AfpError, match=message):
        read_generations(path, target_lang="zh")


def test_task_names_give_directions_only_when_both_codes_are_known():
    assert task_direction("afp_cls_zh-en") == ("zh", "en")
    assert task_direction("afp_flores_eng_Latn-zho_Hans") == ("en", "zh")
    assert task_direction("afp_flores_eng_Latn-xyz_Latn") is None
    assert task_direction("summarization") is None


def test_generations_need_a_target_language(tmp_path):
    path = _write_jsonl(tmp_path / "answers.jsonl", [{"text": "你好世界"}])
    with pytest.raises(AfpError, match="answers.jsonl:1: field 'target_lang'.*--target-lang"):
        read_generations(path)


# ------------------------------------------------------------------------------------------------ where answers end

# A base-like model: its answer is Chinese, then it runs on into a new CIT prompt in English.
RUN_ON = "北京是中国的首都，也是一座历史悠久的大城市。\nWhy is the sky blue on a sunny day? Answer in Chinese:"


def test_cut_answer_keeps_the_text_before_the_first_stop_and_says_whether_it_cut():
    assert cut_answer(RUN_ON, ("\n",)) == ("北京是中国的首都，也是一座历史悠久的大城市。", True)
    assert cut_answer("\n\n  答案是四。\n", ("\n",)) == ("答案是四。", False)  # leading blank lines skipped
    assert cut_answer("one. two", (".", " ")) == ("one", True)  # the earliest of several stops
    assert cut_answer(RUN_ON, ()) == (RUN_ON, False)
    assert parse_stops(["\\n", "Question:"]) == ("\n", "Question:")
    assert parse_stops(["none"]) == ()
    with pytest.raises(AfpError, match="cannot be combined"):
        parse_stops(["none", "\\n"])


def test_a_base_model_that_runs_on_is_a_hit_when_its_first_line_is_in_the_target_language(tmp_path):
    path = _write_jsonl(
        tmp_path / "base.jsonl",
        [
            {"id": "run-on", "text": RUN_ON},
            {"id": "clean", "text": "我每天早上喝一杯牛奶。"},
            {"id": "english", "text": "I drink a glass of milk every morning.\n我每天早上喝一杯牛奶。"},
        ],
    )
    generations = read_generations(path, target_lang="zh", source_lang="en")
    identifier = LanguageIdentifier(["zh", "en"])
    (cut,) = summarize(score(generations, identifier))
    assert cut.counts == {"target": 2, "source": 1, "other": 0, "undetermined": 0} and cut.cut == 2
    assert cut.examples == [
        {"id": "english", "detected": "en", "text": "I drink a glass of milk every morning.", "cut": True}
    ]
    (whole,) = summarize(score(generations, identifier, stops=()))
    assert whole.counts == {"target": 1, "source": 0, "other": 0, "undetermined": 2} and whole.cut == 0


def test_samples_in_an_afp_run_folder_take_model_and_shots_from_the_folder(tmp_path):
    folder = tmp_path / "raw" / "afp-adapter" / "1shot"
    folder.mkdir(parents=True)
    record = {
        "doc_id": 0,
        "doc": {"id": "q07", "question": "Why?", "answer": ""},
        "filter": "none",
        "arguments": [["Why? Answer in English:", {"until": []}]],
        "resps": [["Because."]],
        "filtered_resps": ["Because it rains.\nWhy? Answer in English:"],
    }
    (generation,) = read_generations(_write_jsonl(folder / "samples_afp_langrate_zh-en.jsonl", [record]))
    assert (generation.model, generation.shots, generation.direction, generation.id) == (
        "afp-adapter",
        1,
        "zh-en",
        "q07",
    )
    assert generation.prompt == "Why? Answer in English:"


def test_deltas_and_the_papers_average():
    def row(model, direction, shots, rate):
        return RateRow(
            model=model,
            direction=direction,
            shots=shots,
            answers=10,
            rate=rate,
            ci_low=0.0,
            ci_high=1.0,
            line_rate=None,
            counts={},
            cut=0,
        )

    rates = {("en-zh", 0): 0.4, ("en-zh", 1): 0.7, ("zh-en", 0): 0.0, ("zh-en", 1): 0.1}
    rows = add_deltas(
        [row("base", d, k, r) for (d, k), r in rates.items()]
        + [row("afp", d, k, r + 0.2) for (d, k), r in rates.items()][:3]
    )
    assert [r.delta_vs_base for r in rows[:4]] == [None] * 4
    assert [r.delta_vs_base for r in rows[4:]] == pytest.approx([0.2, 0.2, 0.2])
    base, afp = model_averages(rows)
    assert base == {
        "model": "base",
        "cells": 4,
        "average": pytest.approx(0.3),
        "paper_cells": True,
        "delta_vs_base": None,
    }
    assert afp["average"] == pytest.approx((0.6 + 0.9 + 0.2) / 3) and afp["cells"] == 3
    assert afp["delta_vs_base"] == pytest.approx((0.6 + 0.9 + 0.2) / 3 - 0.3)
    assert afp["paper_cells"] is False  # zh-en 1-shot missing: not the paper's average
