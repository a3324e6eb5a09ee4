"""Identify the language of a generated answer (offline, with lingua), or say `undetermined` instead of guessing.

An answer is `undetermined` when it has too few letters, when no single writing system dominates it (a mixed
answer), or when lingua's confidence in its best language is below the threshold. Codes are afp's ISO 639-1 codes.
"""

from __future__ import annotations

import functools
import unicodedata
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass

from afp_cli.errors import AfpError
from afp_cli.languages import get_language

UNDETERMINED = "undetermined"

# Always offered to the detector besides the run's own languages: the languages a drifting model most often
# falls back to. Fewer candidate languages make lingua faster and its confidences sharper.
COMMON_LANGUAGES: tuple[str, ...] = ("en", "zh", "ja", "ko", "de", "fr", "es", "pt", "ru", "ar")

# Chinese and Japanese are written without spaces between words: each of their letters counts as one unit when
# weighing a mix of scripts, so "我喜欢用Python编程" reads as mostly Chinese and not as one Chinese "word" against
# one English one. Japanese mixes kanji and kana in every sentence, so they are one script here.
_CJK_SCRIPTS = frozenset({"CJK", "HIRAGANA", "KATAKANA", "KATAKANA-HIRAGANA"})


@dataclass(frozen=True)
class LanguageIdConfig:
    """When to call an answer `undetermined` rather than trust the detector."""

    # fewer letters than this (digits and punctuation do not count): undetermined; one Chinese or Japanese character
    # is enough (a word is one or two of them, and lingua names 1-2 Han characters right 99.6 % of the time and
    # never wrongly: bench/langid_short_answers.py, bench/RESULTS.md)
    min_letters: int = 3
    min_confidence: float = 0.5  # lingua's confidence in its best language, 0..1
    min_script_share: float = 0.75  # share of the dominant script's units; below it the answer is mixed

    def __post_init__(self) -> None:
        if self.min_letters < 1:
            raise AfpError(f"min_letters must be at least 1, got {self.min_letters}")
        if not 0.0 <= self.min_confidence <= 1.0:
            raise AfpError(f"min_confidence must be within 0..1, got {self.min_confidence}")
        if not 0.0 <= self.min_script_share <= 1.0:
            raise AfpError(f"min_script_share must be within 0..1, got {self.min_script_share}")


def _lingua_language(code: str):
    from lingua import IsoCode639_1, Language

    iso = get_language(code).code
    try:
        return Language.from_iso_code_639_1(IsoCode639_1.from_str(iso))
    except ValueError:
        raise AfpError(f"language '{iso}' is not supported by the language identifier (lingua)") from None


@functools.lru_cache(maxsize=8)
def _detector(codes: frozenset[str]):
    from lingua import LanguageDetectorBuilder

    return LanguageDetectorBuilder.from_languages(*(_lingua_language(code) for code in sorted(codes))).build()


def _script(character: str) -> str:
    script = unicodedata.name(character, "UNKNOWN").split(" ", 1)[0]
    return "CJK" if script in _CJK_SCRIPTS else script


def script_units(text: str) -> Counter[str]:
    """Count writing-system units: a run of letters of one script, or one letter in Chinese/Japanese scripts."""
    units: Counter[str] = Counter()
    previous = None
    for character in text:
        if not character.isalpha():
            previous = None
            continue
        script = _script(character)
        if script == "CJK" or script != previous:
            units[script] += 1
        previous = script
    return units


class LanguageIdentifier:
    """Detect answers' languages among the run's languages plus COMMON_LANGUAGES; built once per language set."""

    def __init__(self, languages: Iterable[str], config: LanguageIdConfig | None = None) -> None:
        self.config = config or LanguageIdConfig()
        codes = {get_language(code).code for code in languages} | set(COMMON_LANGUAGES)
        self._detector = _detector(frozenset(codes))

    def detect(self, text: str) -> str:
        """The ISO 639-1 code of ``text``'s language, or ``UNDETERMINED`` (too short, mixed or unsure)."""
        units = script_units(text)
        letters = sum(character.isalpha() for character in text)
        if letters < self.config.min_letters and not units["CJK"]:
            return UNDETERMINED
        if not units:
            return UNDETERMINED
        if max(units.values()) / sum(units.values()) < self.config.min_script_share:
            return UNDETERMINED
        best = self._detector.compute_language_confidence_values(text)[0]
        if best.value < self.config.min_confidence:
            return UNDETERMINED
        return best.language.iso_code_639_1.name.lower()

    def best_language(self, text: str) -> tuple[str, float]:
        """lingua's most likely language among the candidates and its confidence (0..1), with none of the
        undetermined rules: what LCB's line check asks of its own detector (language_confusion.py)."""
        best = self._detector.compute_language_confidence_values(text)[0]
        return best.language.iso_code_639_1.name.lower(), best.value

    def detect_lines(self, text: str) -> list[str]:
        """The language of each non-empty line: a right first sentence must not hide a drift further down."""
        return [self.detect(line) for line in text.splitlines() if line.strip()]
