"""LCB's line-level and word-level pass rates on hand-made answers, and the paired test of the language rate."""

from __future__ import annotations

import json

import pytest

from afp_cli.analyze.language_confusion import (
    ConfusionCheck,
    check_response,
    confusion_rates,
    normalize,
    words,
    wpr_applies,
)

VOCABULARY = frozenset({"python", "program", "window"})  # a stand-in for web2's lower-case words of 4+ letters


def detector(languages: dict[str, tuple[str, float]], default: tuple[str, float] = ("zh", 0.9)):
    """A fake detector: the (language, confidence) of each line that contains a key, else ``default``."""

    def best_language(line: str) -> tuple[str, float]:
        return next((result for key, result in languages.items() if key in line), default)

    return best_language


def test_normalize_removes_punctuation_as_lcb_does():
    assert normalize("  Hello, world! It's #1 — really،  ") == "Hello world Its 1   really"
    assert normalize("你好，世界。") == "你好，世界。"  # only ASCII punctuation (and the Arabic comma) go


def test_words_split_at_whitespace_or_per_chinese_character():
    assert words("das ist ein kurzer Satz", "de") == ["das", "ist", "ein", "kurzer", "Satz"]
    assert words("我喜欢用python3编程", "zh") == ["我", "喜", "欢", "用", "python3", "编", "程"]
    assert words("これはpenです", "ja") == ["こ", "れ", "は", "pen", "で", "す"]


def test_short_lines_are_skipped_and_a_response_without_long_lines_is_not_checked():
    best = detector({"English": ("en", 0.99)})
    short = check_response("好的\nEnglish line", "zh", best, VOCABULARY)  # both lines under 5 words
    assert short == ConfusionCheck(checked=False, line_error=False, english_word=False)
    # the long Chinese line passes; the short English line is skipped, so it cannot fail the response
    passing = check_response("天空是蓝色的因为\nEnglish line", "zh", best, VOCABULARY)
    assert passing.checked and not passing.line_error


def test_a_long_line_in_another_language_or_below_lcb_confidence_fails_the_response():
    best = detector({"English": ("en", 0.99), "模糊": ("zh", 0.3)})
    assert check_response("天空是蓝色的因为\nEnglish words make this line long", "zh", best, VOCABULARY).line_error
    assert check_response("这一行很模糊的句子", "zh", best, VOCABULARY).line_error  # 0.3 is not above 0.3
    assert not check_response("这一行很清楚的句子", "zh", best, VOCABULARY).line_error


def test_lpr_counts_checked_responses_only():
    best = detector({"English": ("en", 0.99)})
    answers = ["天空是蓝色的因为空气", "我喜欢喝绿茶和红茶", "English words make this line long", "好的"]
    checks = [check_response(answer, "zh", best, VOCABULARY) for answer in answers]
    rates = confusion_rates(checks, "zh")
    assert rates.checked == 3  # "好的" is skipped
    assert rates.lpr == pytest.approx(1 - 1 / 3)


def test_wpr_counts_lower_case_english_words_among_responses_that_pass_the_lines():
    best = detector({"English": ("en", 0.99)})
    answers = [
        "我喜欢用python编程",  # an English word as written: a word error
        "我喜欢用Python编程",  # capitalised: not in the lower-case list, as in LCB
        "天空是蓝色的因为空气",  # clean
        "English words make this line long and python",  # fails the lines: not in WPR's denominator
    ]
    checks = [check_response(answer, "zh", best, VOCABULARY) for answer in answers]
    assert [check.english_word for check in checks[:3]] == [True, False, False]
    rates = confusion_rates(checks, "zh")
    assert rates.lpr == pytest.approx(3 / 4)
    assert rates.wpr == pytest.approx(1 - 1 / 3)
    assert rates.lcpr == pytest.approx(2 * (3 / 4) * (2 / 3) / (3 / 4 + 2 / 3))


def test_wpr_only_for_non_latin_targets_and_lcpr_is_then_lpr():
    assert [wpr_applies(code) for code in ("zh", "ja", "ko", "ru", "ar", "hi", "th", "de", "en", "vi")] == [
        True
    ] * 7 + [False] * 3
    best = detector({}, default=("de", 0.9))
    checks = [
        check_response("das ist ein sehr guter python Satz", "de", best, VOCABULARY),
        check_response("das ist ein sehr guter Satz heute", "de", best, VOCABULARY),
    ]
    rates = confusion_rates(checks, "de")
    assert rates.lpr == 1.0 and rates.wpr is None and rates.lcpr == 1.0
    nothing = confusion_rates([check_response("kurz", "de", best, VOCABULARY)], "de")
    assert (nothing.checked, nothing.lpr, nothing.wpr, nothing.lcpr) == (0, None, None, None)
    no_words = confusion_rates(checks, "zh", vocabulary_available=False)
    assert no_words.wpr is None and no_words.lcpr is None


def test_the_web2_word_list_is_lcbs_lower_case_words_of_four_letters_or_more():
    pytest.importorskip("english_words")
    from afp_cli.analyze.language_confusion import english_words

    vocabulary = english_words()
    assert {"python", "computer", "window"} <= vocabulary
    assert not {"Python", "tea", "the", "ok"} & vocabulary  # capitalised or 3 letters and fewer: not in LCB's set


def test_language_rate_report_has_lcb_columns_and_a_paired_test(tmp_path, run_cli):
    lines = [
        ("base", "1", "I think that the sky is blue because of the air."),
        ("base", "2", "天空是蓝色的因为空气散射蓝光比红光更强"),
        ("base", "3", "Tea is good for you and it tastes very nice."),
        ("cit", "1", "我认为天空是蓝色的因为空气的原因。"),
        ("cit", "2", "天空是蓝色的因为空气散射蓝光比红光更强"),
        ("cit", "3", "我喜欢喝绿茶因为它对身体很好而且很好喝"),
    ]
    answers = tmp_path / "answers.jsonl"
    answers.write_text(
        "".join(
            json.dumps({"id": i, "model": m, "target_lang": "zh", "source_lang": "en", "text": t}, ensure_ascii=False)
            + "\n"
            for m, i, t in lines
        ),
        encoding="utf-8",
    )
    code, _, stderr = run_cli("analyze", "language-rate", "--generations", answers, "-o", tmp_path / "rate")
    assert code == 0, stderr
    report = json.loads((tmp_path / "rate" / "language_rate.json").read_text(encoding="utf-8"))
    base, cit = report["rows"]
    assert (base["rate"], cit["rate"]) == (pytest.approx(1 / 3), 1.0)
    # two questions right for cit only, none for base only: exact McNemar p = 2 · (1/2)^2
    assert cit["p_value"] == pytest.approx(0.5) and cit["test"] == "mcnemar-exact" and cit["paired"] == "3 questions"
    assert cit["delta_ci_low"] < cit["delta_vs_base"] < cit["delta_ci_high"] and base["p_value"] is None
    assert base["lcb_checked"] == 3 and base["lpr"] == pytest.approx(1 / 3) and cit["lpr"] == 1.0
    markdown = (tmp_path / "rate" / "language_rate.md").read_text(encoding="utf-8")
    assert "LPR" in markdown and "WPR" in markdown and "| LPR % | WPR % | LCPR % | LCB checked |" in markdown
    assert "+66.7 [" in markdown and "p=0.5" in markdown
