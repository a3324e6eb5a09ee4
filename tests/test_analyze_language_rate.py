"""Language identification, language-rate scoring and its readers (questions, generations, lm-eval samples)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from afp_cli.analyze.generation import (
    build_prompts, cit_prompt, parse_directions, parse_shots, read_questions, shipped_questions_path,
)
from afp_cli.analyze.language_id import UNDETERMINED, LanguageIdConfig, LanguageIdentifier, script_units
from afp_cli.analyze.language_rate import read_generations, score, summarize, task_direction, wilson_interval
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


@pytest.mark.parametrize("text", ["", "  ", "ok", "好的", "42!", "...?"])
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
    "好的",
]


def _write_jsonl(path: Path, records) -> Path:
    path.write_text("".join(json.dumps(record, ensure_ascii=False) + "\n" for record in records), encoding="utf-8")
    return path


def test_rate_and_breakdown_of_a_fixed_generations_file(tmp_path):
    path = _write_jsonl(tmp_path / "answers.jsonl",
                        [{"id": f"a{index}", "text": text} for index, text in enumerate(ANSWERS)])
    generations = read_generations(path, target_lang="zh", source_lang="en")
    (row,) = summarize(score(generations, LanguageIdentifier(["zh", "en"])), examples_per_row=2)
    assert row.model == "answers" and row.direction == "en-zh" and row.answers == 10
    assert row.counts == {"target": 6, "source": 2, "other": 1, "undetermined": 1}
    assert row.rate == pytest.approx(0.6)
    assert (row.ci_low, row.ci_high) == pytest.approx((0.31267, 0.83182), abs=1e-5)
    assert row.line_rate == pytest.approx(6 / 11)
    assert [example["id"] for example in row.examples] == ["a6", "a7"]
    assert row.examples[0]["detected"] == "en"


def test_lm_eval_samples_count_a_fallback_to_the_source_language(tmp_path):
    def sample(doc_id, answer):
        return {"doc_id": doc_id, "doc": {"sentence_eng_Latn": "x"}, "target": "参考译文",
                "arguments": {"gen_args_0": {"arg_0": "English: x\nChinese:", "arg_1": {"until": ["\n"]}}},
                "resps": [[answer]], "filtered_resps": [answer], "filter": "none", "metrics": ["bleu"]}

    path = _write_jsonl(tmp_path / "samples_afp_flores_eng_Latn-zho_Hans_2024-06-01T12-00-00.123456.jsonl", [
        sample(0, "我今天很高兴见到你。"),
        sample(1, "The meeting was moved to next Tuesday afternoon."),  # fell back to the source language
        sample(2, "他们明天一起去北京旅游。"),
    ])
    generations = read_generations(path)  # the direction comes from the task name
    assert generations[0].prompt == "English: x\nChinese:"
    (row,) = summarize(score(generations, LanguageIdentifier(["zh", "en"])))
    assert row.model == "afp_flores_eng_Latn-zho_Hans" and row.direction == "en-zh"
    assert row.counts == {"target": 2, "source": 1, "other": 0, "undetermined": 0}


@pytest.mark.parametrize(("line", "message"), [
    ("{not json", "answers.jsonl:2: not valid JSON"),
    ('{"id": 1}', "answers.jsonl:2: field 'text'"),
    ('{"text": "hi", "target_lang": "xx"}', "answers.jsonl:2: field 'target_lang': unknown language code 'xx'"),
])
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


def test_shipped_questions_are_aligned_in_english_and_chinese():
    questions = read_questions(shipped_questions_path())
    by_language = {lang: {q.id for q in questions if q.lang == lang} for lang in ("en", "zh")}
    assert len(by_language["en"]) >= 30 and by_language["en"] == by_language["zh"]
    assert all(question.answer for question in questions)
    identifier = LanguageIdentifier(["en", "zh"])
    assert all(identifier.detect(q.answer) == q.lang for q in questions)  # the demonstrations model the target


def test_prompts_follow_the_cit_format_and_one_shot_uses_another_aligned_question():
    questions = read_questions(shipped_questions_path())
    (zero_shot,) = build_prompts(questions, "en", "zh", shots=0, seed=0, limit=1)
    assert zero_shot.text == "What do you usually eat for breakfast? Answer in Chinese:"
    one_shot = build_prompts(questions, "en", "zh", shots=1, seed=0, limit=3)
    again = build_prompts(questions, "en", "zh", shots=1, seed=0, limit=3)
    assert [prompt.text for prompt in one_shot] == [prompt.text for prompt in again]  # seeded
    for prompt in one_shot:
        demonstration, asked = prompt.text.split("\n")
        assert asked == cit_prompt(prompt.question.question, "zh")
        question_en, answer_zh = demonstration.split(" Answer in Chinese: ")
        demo = next(q for q in questions if q.lang == "en" and q.question == question_en)
        assert demo.id != prompt.question.id
        assert answer_zh == next(q.answer for q in questions if q.lang == "zh" and q.id == demo.id)


def test_one_shot_without_answered_questions_is_a_user_error(tmp_path):
    path = _write_jsonl(tmp_path / "q.jsonl", [{"id": "1", "lang": "en", "question": "Why?"},
                                              {"id": "1", "lang": "zh", "question": "为什么？"}])
    questions = read_questions(path)
    assert len(build_prompts(questions, "en", "zh", shots=0, seed=0)) == 1
    with pytest.raises(AfpError, match="1-shot en-zh needs 1 other questions"):
        build_prompts(questions, "en", "zh", shots=1, seed=0)


def test_bad_question_lines_and_options_are_user_errors(tmp_path):
    path = tmp_path / "q.jsonl"
    path.write_text('{"id": "1", "lang": "en", "question": "Why?"}\n{"id": "2", "lang": "en"}\n', encoding="utf-8")
    with pytest.raises(AfpError, match="q.jsonl:2: field 'question': missing"):
        read_questions(path)
    path.write_text('{"id": "1", "lang": "en", "question": "Why?"}\n{"id": "1", "lang": "en", "question": "Hm?"}\n')
    with pytest.raises(AfpError, match="q.jsonl:2: field 'id'.*repeats line 1"):
        read_questions(path)
    with pytest.raises(AfpError, match="unknown language code 'xx'"):
        parse_directions("en-zh,en-xx")
    with pytest.raises(AfpError, match="source-target"):
        parse_directions("enzh")
    assert parse_directions("en-zh,zho_Hans-en") == [("en", "zh"), ("zh", "en")]
    assert parse_shots("0,1") == [0, 1]
    with pytest.raises(AfpError):
        parse_shots("one")
