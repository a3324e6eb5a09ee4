"""Language confusion as Cohere's Language Confusion Benchmark (LCB) counts it: the line-level pass rate (LPR), the
word-level pass rate (WPR) and their harmonic mean (LCPR), next to the paper's language rate.

Implemented from the definitions in LCB's ``compute_metrics.py`` (github.com/for-ai/language-confusion; Marchisio
et al., "Understanding and Mitigating Language Confusion in LLMs", EMNLP 2024):

- A response is normalised (ASCII punctuation removed, "—" made a space, the Arabic comma "،" removed) and split
  into lines at newlines. Lines of fewer than 5 words are skipped; a response with no line left is skipped and
  counts in neither rate.
- A line fails when the detector's language is not the target or its confidence is not above 0.3 (LCB's
  "unknown"). **LPR** = 1 − (checked responses with a failing line) / (checked responses).
- **WPR**, only for targets not written in Latin script (LCB: ar, hi, ja, ko, ru, zh; afp: every non-Latin target
  of its language table): among the checked responses without a failing line, the share with no English word. A
  word of the kept lines counts as English when it is, exactly as written (not lower-cased: "Python" does not count,
  "python" does), an entry of the English word list that is all lower case and longer than 3 letters.
  WPR = 1 − (responses with an English word) / (checked responses without a failing line).
- **LCPR** = 2 · LPR · WPR / (LPR + WPR), the paper's summary; where WPR is not defined (a Latin-script target)
  afp reports LCPR = LPR (afp's choice: the script computes LPR and WPR only).

Where afp differs from LCB:
- The detector: lingua, offline, among the run's languages and afp's common ones (language_id.py), not fastText's
  lid.176 over 176 languages (downloaded at run time). LCB's threshold 0.3 is applied to lingua's confidence, which
  is not on fastText's scale; the candidate set is smaller, so a line in a language outside it is named as the
  closest candidate (a fail either way unless that is the target).
- Words of Chinese and Japanese: LCB segments them with jieba and MeCab (fugashi; its dictionary downloads at run
  time), afp counts each Han or kana character as a word and each run of other letters or digits as one word. The
  English words inside Chinese or Japanese text come out the same; the 5-word rule keeps some short lines that a
  segmenter would skip. Other languages are split at whitespace, as LCB does (so Thai, written without spaces, keeps
  few lines).
- The English word list: LCB reads a copy of the Unix ``words`` file; afp uses Webster's Second (``web2``, the list
  BSD and macOS install as /usr/share/dict/words) as the ``english-words`` package ships it. Without that package
  WPR and LCPR are not reported.
- The text: the answer as afp's language rate scores it (cut at ``--stop``, the whole answer with ``--stop none``);
  LCB cuts its completions at the next "\nQ:" of its few-shot format.
- No response checked: LCB reports LPR 100 %, afp no number; every checked response failing a line: LCB reports
  WPR 100 %, afp no WPR (and no LCPR).
"""

from __future__ import annotations

import functools
import re
import string
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from afp_cli.languages import get_language

MIN_LINE_WORDS = 5  # LCB skips shorter lines
MIN_LINE_CONFIDENCE = 0.3  # LCB: a line whose detection is not above this is "unknown", a fail
MIN_ENGLISH_WORD_LETTERS = 4  # LCB's word list keeps lower-case entries longer than 3 letters
_SPACELESS = frozenset({"zh", "ja"})  # segmented by LCB (jieba, MeCab): a character a word here
_CJK = "\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff"
_CJK_WORDS = re.compile(rf"[{_CJK}]|[^\W_{_CJK}]+")
_PUNCTUATION = str.maketrans("", "", string.punctuation + "،")


def normalize(text: str) -> str:
    """LCB's normalisation: ASCII punctuation and the Arabic comma removed, the em dash made a space."""
    return text.strip().replace("—", " ").translate(_PUNCTUATION)


def words(line: str, language: str) -> list[str]:
    """The words LCB counts in a line: whitespace-separated, or for Chinese and Japanese a word per character (see
    the module docstring)."""
    if get_language(language).code in _SPACELESS:
        return _CJK_WORDS.findall(line)
    return line.split()


def wpr_applies(language: str) -> bool:
    """WPR is defined for targets not written in Latin script (LCB: "inaccurate for latin-script languages")."""
    return get_language(language).script != "Latn"


@functools.lru_cache(maxsize=1)
def english_words() -> frozenset[str] | None:
    """LCB's English word set: lower-case entries longer than 3 letters of web2 (None without english-words)."""
    try:
        from english_words import get_english_words_set
    except ImportError:
        return None
    return frozenset(
        word
        for word in get_english_words_set(["web2"], lower=False, alpha=False)
        if word.islower() and len(word) >= MIN_ENGLISH_WORD_LETTERS
    )


@dataclass(frozen=True)
class ConfusionCheck:
    """One response as LCB judges it."""

    checked: bool  # at least one line of 5 words or more
    line_error: bool  # a checked line not detected in the target language
    english_word: bool  # a word of the checked lines is in the English word list (counts for WPR only)


def check_response(
    text: str, target: str, best_language: Callable[[str], tuple[str, float]], vocabulary: frozenset[str] | None
) -> ConfusionCheck:
    """Judge one response; ``best_language(line)`` gives the detector's (language, confidence)."""
    target = get_language(target).code
    kept = [
        (line, tokens) for line in normalize(text).split("\n") if len(tokens := words(line, target)) >= MIN_LINE_WORDS
    ]
    if not kept:
        return ConfusionCheck(checked=False, line_error=False, english_word=False)
    line_error = False
    for line, _ in kept:
        language, confidence = best_language(line)
        if language != target or confidence <= MIN_LINE_CONFIDENCE:
            line_error = True
            break
    english = vocabulary is not None and any(token.strip() in vocabulary for _, tokens in kept for token in tokens)
    return ConfusionCheck(checked=True, line_error=line_error, english_word=english)


@dataclass(frozen=True)
class ConfusionRates:
    checked: int  # responses with a line long enough to check
    lpr: float | None
    wpr: float | None  # None: a Latin-script target, no English word list, or no response passed the lines
    lcpr: float | None


def confusion_rates(checks: Sequence[ConfusionCheck], target: str, vocabulary_available: bool = True) -> ConfusionRates:
    """LPR, WPR and LCPR of one group of responses, counted as LCB counts them (see the module docstring)."""
    checked = [check for check in checks if check.checked]
    if not checked:
        return ConfusionRates(checked=0, lpr=None, wpr=None, lcpr=None)
    line_errors = sum(check.line_error for check in checked)
    lpr = 1 - line_errors / len(checked)
    passing = [check for check in checked if not check.line_error]
    wpr = None
    if wpr_applies(target) and vocabulary_available and passing:
        wpr = 1 - sum(check.english_word for check in passing) / len(passing)
    if wpr is None:
        lcpr = lpr if not wpr_applies(target) else None
    else:
        lcpr = 0.0 if lpr + wpr == 0 else 2 * lpr * wpr / (lpr + wpr)
    return ConfusionRates(checked=len(checked), lpr=lpr, wpr=wpr, lcpr=lcpr)
