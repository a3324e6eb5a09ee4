"""What a language-rate run asks: afp's and HC3's question files, seeded samples, one fixed demonstration set."""

from __future__ import annotations

import random

import pytest
from helpers import hc3_chinese, hc3_english, write_jsonl

from afp_cli.analyze.language_id import LanguageIdentifier
from afp_cli.analyze.questions import (
    Demonstration,
    QuestionFile,
    direction_inputs,
    fixed_demonstrations,
    read_demonstrations,
    read_questions,
    sample_questions,
    shipped_questions_path,
)
from afp_cli.errors import AfpError


def test_hc3_files_are_read_as_published_with_the_language_from_the_command_line(tmp_path):
    english = hc3_english(tmp_path / "all.jsonl", 3)
    chinese = hc3_chinese(tmp_path / "hc3_chinese.jsonl", 2)
    questions = read_questions([QuestionFile.parse(f"en={english}"), QuestionFile.parse(f"zh={chinese}")])
    assert [(q.id, q.lang) for q in questions] == [
        ("all:1", "en"),
        ("all:2", "en"),
        ("all:3", "en"),
        ("0", "zh"),
        ("1", "zh"),
    ]
    assert questions[0].question == "Why does thing number 0 happen? Please explain like I'm five."  # one line
    assert not any(q.aligned for q in questions)  # HC3 and HC3-Chinese are not translations of each other
    assert QuestionFile.parse(str(english)) == QuestionFile(path=english)  # the old form: afp's schema


def test_the_shipped_set_is_aligned_and_a_language_filter_keeps_one_language():
    questions = read_questions([])
    by_language = {lang: {q.id for q in questions if q.lang == lang} for lang in ("en", "zh")}
    assert len(by_language["en"]) == 30 and by_language["en"] == by_language["zh"]
    identifier = LanguageIdentifier(["en", "zh"])
    assert all(identifier.detect(q.answer) == q.lang for q in questions)  # the demonstrations model the target
    chinese = read_questions([QuestionFile.parse(f"zh={shipped_questions_path()}")])
    assert len(chinese) == 30 and {q.lang for q in chinese} == {"zh"}


def test_seeded_sampling_is_reproducible_and_takes_all_when_there_are_fewer(tmp_path):
    questions = read_questions([QuestionFile.parse(f"en={hc3_english(tmp_path / 'en.jsonl', 50)}")])
    first = sample_questions(questions, 10, seed=0)
    assert len(first) == 10 and first == sample_questions(questions, 10, seed=0)
    assert first != sample_questions(questions, 10, seed=1)
    assert [q.id for q in first] == sorted((q.id for q in first), key=lambda i: int(i.split(":")[1]))  # file order
    assert sample_questions(questions, 1000, seed=0) == questions


def test_one_fixed_demonstration_set_drawn_as_the_official_evaluation_does():
    pool = [Demonstration(f"q{i}", f"答{i}", "en", "zh") for i in range(20)]
    expected = list(pool)
    random.seed(7)
    random.shuffle(expected)  # the official draw: random.seed(seed), shuffle, first k
    assert fixed_demonstrations(pool, 3, seed=7) == expected[:3]
    assert fixed_demonstrations(pool, 1, seed=7) == expected[:1]  # 1-shot is the first of the same order


def test_hc3_directions_take_demonstrations_from_the_pool_and_hold_them_out(tmp_path):
    english = hc3_english(tmp_path / "en.jsonl", 12)
    questions = read_questions([QuestionFile.parse(f"en={english}")])
    demonstrations = write_jsonl(
        tmp_path / "demos.jsonl",
        [
            {"question": questions[2].question, "answer": "因为原因二。", "question_lang": "en", "answer_lang": "zh"},
            {"question": "Who wrote Hamlet?", "answer": "莎士比亚。", "question_lang": "en", "answer_lang": "zh"},
            {"question": "谁写了哈姆雷特？", "answer": "Shakespeare.", "question_lang": "zh", "answer_lang": "en"},
        ],
    )
    pool = read_demonstrations(demonstrations)
    inputs = direction_inputs(
        questions, "en", "zh", shots=2, sample=5, seed=0, demonstration_pool=pool, demonstrations_path=demonstrations
    )
    assert sorted(item.answer for item in inputs.demonstrations) == ["因为原因二。", "莎士比亚。"]
    assert inputs.available == 11  # the question used as a demonstration is not asked
    assert len(inputs.questions) == 5 and questions[2] not in inputs.questions
    with pytest.raises(AfpError, match="1-shot en-zh needs 1 demonstrations.*has 0: pass --demonstrations"):
        direction_inputs(questions, "en", "zh", shots=1, sample=5, seed=0)
    with pytest.raises(AfpError, match="no questions in 'zh'.*--questions zh=FILE"):
        direction_inputs(questions, "zh", "en", shots=1, sample=5, seed=0, demonstration_pool=pool)


def test_the_shipped_set_makes_aligned_demonstrations():
    questions = read_questions([])
    inputs = direction_inputs(questions, "en", "zh", shots=1, sample=1000, seed=0)
    (demonstration,) = inputs.demonstrations
    source = next(q for q in questions if q.lang == "en" and q.question == demonstration.question)
    assert demonstration.answer == next(q.answer for q in questions if q.lang == "zh" and q.id == source.id)
    assert inputs.available == 29 and source not in inputs.questions


@pytest.mark.parametrize(
    ("lines", "spec", "message"),
    [
        (
            ['{"question": "Why?", "human_answers": "one answer"}'],
            "en=",
            "q.jsonl:1: field 'human_answers': expected a list",
        ),
        (['{"question": "Why?"}', '{"question": "How'], "en=", "q.jsonl:2: not valid JSON"),
        (['{"human_answers": []}'], "en=", "q.jsonl:1: field 'question': missing"),
        (['{"question": "Why?", "human_answers": []}'], "", "q.jsonl:1: field 'lang': missing.*--questions en=FILE"),
        (
            ['{"id": "1", "lang": "en", "question": "Why?"}', '{"id": "1", "lang": "en", "question": "Hm?"}'],
            "",
            "q.jsonl:2: field 'id'.*repeats line 1",
        ),
    ],
)
def test_bad_question_lines_name_file_line_and_field(tmp_path, lines, spec, message):
    path = tmp_path / "q.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    with pytest.raises(AfpError, match=message):
        read_questions([QuestionFile.parse(f"{spec}{path}")])


def test_bad_demonstration_lines_name_file_line_and_field(tmp_path):
    path = write_jsonl(tmp_path / "d.jsonl", [{"question": "Why?", "answer": "因为。", "question_lang": "en"}])
    with pytest.raises(AfpError, match="d.jsonl:1: field 'answer_lang': missing"):
        read_demonstrations(path)
    path = write_jsonl(
        tmp_path / "d.jsonl", [{"question": "Why?", "answer": "因为。", "question_lang": "en", "answer_lang": "xx"}]
    )
    with pytest.raises(AfpError, match="d.jsonl:1: field 'answer_lang': unknown language code 'xx'"):
        read_demonstrations(path)
    with pytest.raises(AfpError, match="--questions qq=x.jsonl: unknown language code 'qq'"):
        QuestionFile.parse("qq=x.jsonl")
