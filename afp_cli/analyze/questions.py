"""What a language-rate run asks: question files (afp's own or HC3's), a seeded sample, one fixed demonstration set.

Question files come in two schemas, told apart line by line:

- **afp's own** (``id``, ``lang``, ``question``, optional ``answer``): the same ``id`` in two languages marks
  translations of one question, so a question in the source language and the answer of its translation make a
  demonstration (afp's shipped set, ``data/questions.jsonl``, is of this kind).
- **HC3** as published (Hello-SimpleAI/HC3 and HC3-Chinese: ``question``, ``human_answers``, ``chatgpt_answers``,
  optional ``id`` and ``source``): one language per file, given on the command line (``--questions en=all.jsonl``).
  The two HC3 sets are not translations of each other, so their demonstrations come from ``--demonstrations``.

Demonstrations follow the official evaluation (``demos_str`` in ``src/*_prompt.py`` of chongli17/
CrossLingualAlignment): ONE k-shot set, drawn once with the seed (``random.seed(seed)``, shuffle the pool, take
the first k) and put before every question. The questions those demonstrations come from are held out of the
questions asked, so no question is its own demonstration.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from afp_cli.data.readers import iter_json_objects, text_field
from afp_cli.errors import AfpError, located
from afp_cli.languages import get_language, language_name
from afp_cli.text_files import require_utf8

QUESTIONS_PACKAGE_FILE = "data/questions.jsonl"
HC3_ANSWER_FIELDS = ("human_answers", "chatgpt_answers")


@dataclass(frozen=True)
class Question:
    id: str
    lang: str
    question: str
    answer: str | None = None  # afp's schema: a short answer in ``lang``, the material of aligned demonstrations
    aligned: bool = False  # afp's schema: the same id in another language is this question's translation


@dataclass(frozen=True)
class Demonstration:
    """A question in the source language answered in the target language: one line before every question."""

    question: str
    answer: str
    question_lang: str
    answer_lang: str


@dataclass(frozen=True)
class QuestionFile:
    """One ``--questions`` value: ``FILE`` (afp's schema, languages on each line) or ``LANG=FILE``."""

    path: Path
    lang: str | None = None

    @classmethod
    def parse(cls, text: str) -> QuestionFile:
        prefix, separator, rest = text.partition("=")
        if separator and prefix and not Path(text).exists():
            try:
                return cls(path=Path(rest), lang=get_language(prefix).code)
            except AfpError as error:
                raise AfpError(f"--questions {text}: {error}") from None
        return cls(path=Path(text))

    def describe(self) -> str:
        return f"{self.lang}={self.path}" if self.lang else str(self.path)


@dataclass(frozen=True)
class DirectionInputs:
    """Everything one direction asks: the sampled questions and the fixed demonstrations (first k for k-shot)."""

    source: str
    target: str
    questions: list[Question]
    available: int  # source-language questions to sample from (demonstrations held out)
    pool: list[Demonstration]  # the direction's demonstration pool, in file order (the task draws from it)
    demonstrations: list[Demonstration]  # the fixed draw from ``pool`` for the largest shot count
    demonstrations_from: str  # where the demonstration pool came from, for the report


def shipped_questions_path() -> Path:
    """afp's own en/zh question set (written for afp, MIT), so the command runs offline."""
    return Path(str(resources.files("afp_cli.analyze").joinpath(QUESTIONS_PACKAGE_FILE)))


def one_line(text: str) -> str:
    """Whitespace runs (newlines included) become one space: every prompt example is one line."""
    return " ".join(text.split())


# ----------------------------------------------------------------------------------------------------------------
# Reading


def read_question_file(spec: QuestionFile) -> list[Question]:
    """The questions of one file; with ``LANG=``, afp-schema lines of other languages are left out."""
    path = require_utf8(spec.path, "questions")
    questions: list[Question] = []
    seen: dict[tuple[str, str], int] = {}
    for number, record in iter_json_objects(path):
        if not isinstance(record, dict):
            raise located(path, number, None, f"expected a JSON object, found {type(record).__name__}")
        if "lang" in record or spec.lang is None:
            question = _afp_question(path, number, record)
            if spec.lang is not None and question.lang != spec.lang:
                continue
            key = (question.id, question.lang)
            if key in seen:
                raise located(path, number, "id", f"'{question.id}' in '{question.lang}' repeats line {seen[key]}")
            seen[key] = number
        else:
            question = _hc3_question(path, number, record, spec.lang)
        questions.append(question)
    if not questions:
        where = f" in '{spec.lang}'" if spec.lang else ""
        raise AfpError(f"{path}: no questions{where} in the file")
    return questions


def _afp_question(path: Path, number: int, record: dict[str, Any]) -> Question:
    if "lang" not in record:
        raise located(
            path,
            number,
            "lang",
            "missing: afp's question files name each line's language; "
            "for an HC3 file give its language, --questions en=FILE",
        )
    texts = {name: text_field(path, number, record, name) for name in ("id", "lang", "question")}
    for name, value in texts.items():
        if not value:
            raise located(path, number, name, "empty")
    try:
        lang = get_language(texts["lang"]).code
    except AfpError as error:
        raise located(path, number, "lang", str(error)) from None
    answer = text_field(path, number, record, "answer", required=False) or None
    return Question(
        id=texts["id"],
        lang=lang,
        question=one_line(texts["question"]),
        answer=None if answer is None else one_line(answer),
        aligned=True,
    )


def _hc3_question(path: Path, number: int, record: dict[str, Any], lang: str) -> Question:
    question = text_field(path, number, record, "question")
    if not question:
        raise located(path, number, "question", "empty")
    for name in HC3_ANSWER_FIELDS:  # not used for scoring, but a wrong schema is said where it is found
        value = record.get(name, [])
        if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
            raise located(path, number, name, "expected a list of strings (HC3 schema)")
    identifier = text_field(path, number, record, "id", required=False) or f"{path.stem}:{number}"
    return Question(id=identifier, lang=lang, question=one_line(question))


def read_questions(specs: Sequence[QuestionFile]) -> list[Question]:
    """Every file's questions, in order; without files, afp's shipped set."""
    return [
        question for spec in specs or [QuestionFile(shipped_questions_path())] for question in read_question_file(spec)
    ]


def read_demonstrations(path: str | Path) -> list[Demonstration]:
    """JSON lines ``question``, ``answer``, ``question_lang``, ``answer_lang``; a bad line names file:line:field."""
    path = require_utf8(path, "demonstrations")
    demonstrations = []
    for number, record in iter_json_objects(path):
        texts = {
            name: text_field(path, number, record, name)
            for name in ("question", "answer", "question_lang", "answer_lang")
        }
        for name, value in texts.items():
            if not value:
                raise located(path, number, name, "empty")
        codes = {}
        for name in ("question_lang", "answer_lang"):
            try:
                codes[name] = get_language(texts[name]).code
            except AfpError as error:
                raise located(path, number, name, str(error)) from None
        demonstrations.append(
            Demonstration(question=one_line(texts["question"]), answer=one_line(texts["answer"]), **codes)
        )
    if not demonstrations:
        raise AfpError(f"{path}: no demonstrations in the file")
    return demonstrations


# ----------------------------------------------------------------------------------------------------------------
# Choosing


def aligned_demonstrations(questions: Sequence[Question], source: str, target: str) -> list[Demonstration]:
    """Demonstrations from afp-schema ids present in both languages whose target-language line has an answer."""
    by_key = {(question.id, question.lang): question for question in questions if question.aligned}
    pool = []
    for question in questions:
        translation = by_key.get((question.id, target)) if question.aligned and question.lang == source else None
        if translation is not None and translation.answer:
            pool.append(
                Demonstration(
                    question=question.question, answer=translation.answer, question_lang=source, answer_lang=target
                )
            )
    return pool


def fixed_demonstrations(pool: Sequence[Demonstration], count: int, seed: int) -> list[Demonstration]:
    """The official draw: ``random.seed(seed)``, shuffle the pool, the first ``count`` (one set for every item)."""
    rows = list(pool)
    random.Random(seed).shuffle(rows)  # the same Mersenne Twister stream as random.seed(seed); random.shuffle(rows)
    return rows[:count]


def sample_questions(questions: Sequence[Question], count: int, seed: int) -> list[Question]:
    """``count`` questions drawn with the seed, kept in file order; all of them when there are fewer."""
    if len(questions) <= count:
        return list(questions)
    chosen = sorted(random.Random(seed).sample(range(len(questions)), count))
    return [questions[index] for index in chosen]


def direction_inputs(
    questions: Sequence[Question],
    source: str,
    target: str,
    shots: int,
    sample: int,
    seed: int,
    demonstration_pool: Sequence[Demonstration] | None = None,
    demonstrations_path: Path | None = None,
    limit: int | None = None,
) -> DirectionInputs:
    """The sampled questions and the fixed ``shots`` demonstrations of ``source`` → ``target``."""
    if demonstration_pool is None:
        pool = aligned_demonstrations(questions, source, target)
        origin = "the question set's aligned ids (question in the source language, answer of its translation)"
    else:
        pool = [item for item in demonstration_pool if (item.question_lang, item.answer_lang) == (source, target)]
        origin = f"{demonstrations_path}"
    if len(pool) < shots:
        raise AfpError(
            f"{shots}-shot {source}-{target} needs {shots} demonstrations (a question in '{source}' answered in "
            f"'{target}'); {origin} has {len(pool)}: pass --demonstrations FILE"
        )
    demonstrations = fixed_demonstrations(pool, shots, seed)
    held_out = {item.question for item in demonstrations}
    candidates = [question for question in questions if question.lang == source and question.question not in held_out]
    if not candidates:
        raise AfpError(f"no questions in '{source}' ({language_name(source)}) to ask: add --questions {source}=FILE")
    asked = sample_questions(candidates, sample, seed)[:limit]
    return DirectionInputs(
        source=source,
        target=target,
        questions=asked,
        available=len(candidates),
        pool=pool,
        demonstrations=demonstrations,
        demonstrations_from=origin,
    )


# ----------------------------------------------------------------------------------------------------------------
# Options and the prompt


def parse_directions(text: str) -> list[tuple[str, str]]:
    """``"en-zh,zh-en"`` -> ``[("en", "zh"), ("zh", "en")]``; every code must be known."""
    directions = []
    for item in (part.strip() for part in text.split(",")):
        source, separator, target = item.partition("-")
        if not separator or not source or not target:
            raise AfpError(f"--directions: '{item}' is not of the form source-target, e.g. en-zh")
        directions.append((get_language(source).code, get_language(target).code))
    return directions


def parse_shots(text: str) -> list[int]:
    try:
        shots = [int(part) for part in text.split(",")]
    except ValueError:
        raise AfpError(f"--shots: '{text}' is not a comma-separated list of integers, e.g. 0,1") from None
    if any(count < 0 for count in shots):
        raise AfpError(f"--shots: counts must be 0 or more, got '{text}'")
    return sorted(set(shots))


def cit_prompt(question: str, target_lang: str, answer: str | None = None) -> str:
    """The paper's cross-lingual instruction format, as the afp_langrate tasks render it."""
    prompt = f"{question} Answer in {language_name(target_lang)}:"
    return prompt if answer is None else f"{prompt} {answer}"
