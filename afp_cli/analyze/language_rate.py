"""Language rate: the share of answers written in the target language, with a Wilson interval and a breakdown.

Reads answers from files (the samples lm-eval writes, which is how `afp analyze language-rate` generates, or a
plain JSONL of texts), cuts each answer where it ends (the first stop sequence, a newline by default), scores it as
target / source / other / undetermined, and summarises per model × direction × shots. The rate's denominator is
every answer, undetermined ones included (the paper's "share of answers detected in the target language").

The cut is what makes the rate fair to a base model: one that never learned to stop writes its answer, then runs
on into a new "… Answer in Chinese:" line; scored whole, that mixed text is undetermined — a miss — although its
answer was in the target language. The same cut applies to fresh and to existing generations.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from afp_cli.analyze.language_confusion import ConfusionCheck, check_response, confusion_rates, english_words
from afp_cli.analyze.language_id import UNDETERMINED, LanguageIdentifier
from afp_cli.data.readers import iter_json_objects
from afp_cli.errors import AfpError, located
from afp_cli.languages import get_language
from afp_cli.statistics import holm, mcnemar, wilson_interval
from afp_cli.text_files import require_utf8

CATEGORIES: tuple[str, ...] = ("target", "source", "other", "undetermined")
# Where an answer ends: the first newline, the stop sequence of afp's FLORES and summarization tasks.
DEFAULT_STOPS: tuple[str, ...] = ("\n",)
NO_STOP = "none"
BASE_MODEL = "base"  # the label of the base model in generated runs
# The four cells the paper averages (Table 4: 31.1 % base, 76.0 % AFP): en→zh and zh→en, 0- and 1-shot.
PAPER_CELLS: tuple[tuple[str, int], ...] = (("en-zh", 0), ("en-zh", 1), ("zh-en", 0), ("zh-en", 1))
_ESCAPES = {"\\n": "\n", "\\t": "\t", "\\r": "\r"}


@dataclass(frozen=True)
class Generation:
    """One answer to score and the group it belongs to."""

    id: str
    text: str
    target_lang: str
    source_lang: str | None = None
    model: str = "generations"
    shots: int | None = None
    prompt: str | None = None

    @property
    def direction(self) -> str:
        return f"{self.source_lang or '?'}-{self.target_lang}"


@dataclass(frozen=True)
class ScoredAnswer:
    generation: Generation
    text: str  # what was scored: the answer up to its first stop sequence
    cut: bool  # text followed the stop sequence and was left out
    detected: str
    category: str
    lines: int  # non-empty lines
    target_lines: int  # non-empty lines detected in the target language
    confusion: ConfusionCheck | None = None  # LCB's line and word checks (language_confusion.py)


@dataclass
class RateRow:
    """The summary of one model × direction × shots group (one row of the report)."""

    model: str
    direction: str
    shots: int | None
    answers: int
    rate: float
    ci_low: float
    ci_high: float
    line_rate: float | None
    counts: dict[str, int]
    cut: int  # answers that ran on past a stop sequence (the rest was not scored)
    delta_vs_base: float | None = None  # rate − the base model's rate for the same direction and shots
    examples: list[dict[str, Any]] = field(default_factory=list)
    # Cohere's Language Confusion Benchmark, counted as its compute_metrics.py counts (language_confusion.py)
    lcb_checked: int = 0  # answers with a line of 5 words or more
    lpr: float | None = None  # line-level pass rate
    wpr: float | None = None  # word-level pass rate (non-Latin-script targets)
    lcpr: float | None = None  # harmonic mean of LPR and WPR
    # The paired test of delta_vs_base on the same questions (adapter rows): exact McNemar on "answered in the
    # target language", Newcombe's interval of the difference (afp_cli/statistics.py), Holm over the adapter rows
    delta_ci_low: float | None = None
    delta_ci_high: float | None = None
    p_value: float | None = None
    p_holm: float | None = None
    test: str | None = None
    paired: str | None = None  # what was paired ("30 questions"), or why nothing was


def categorize(detected: str, target: str, source: str | None) -> str:
    if detected == UNDETERMINED:
        return "undetermined"
    if detected == target:
        return "target"
    if detected == source:
        return "source"
    return "other"


def parse_stops(values: Sequence[str]) -> tuple[str, ...]:
    """``--stop`` values: sequences with ``\\n``/``\\t`` written as escapes, or ``none`` alone (keep whole texts)."""
    if NO_STOP in values:
        if len(values) > 1:
            raise AfpError(f"--stop {NO_STOP} keeps whole answers: it cannot be combined with other stop sequences")
        return ()
    stops = []
    for value in values:
        for escape, character in _ESCAPES.items():
            value = value.replace(escape, character)
        if not value:
            raise AfpError("--stop: an empty stop sequence would cut every answer to nothing")
        stops.append(value)
    return tuple(stops)


def cut_answer(text: str, stops: Sequence[str]) -> tuple[str, bool]:
    """The answer up to its first stop sequence, stripped, and whether text after the stop was left out.

    Leading blank lines are skipped first: an answer that starts on the line after the prompt is still an answer.
    """
    body = text.lstrip()
    ends = [(body.find(stop), stop) for stop in stops if stop in body]
    if not ends:
        return body.strip(), False
    position, stop = min(ends)
    return body[:position].strip(), bool(body[position + len(stop) :].strip())


def score(
    generations: Iterable[Generation], identifier: LanguageIdentifier, stops: Sequence[str] = DEFAULT_STOPS
) -> list[ScoredAnswer]:
    scored = []
    vocabulary = english_words()
    for generation in generations:
        text, cut = cut_answer(generation.text, stops)
        detected = identifier.detect(text)
        line_languages = identifier.detect_lines(text)
        scored.append(
            ScoredAnswer(
                generation=generation,
                text=text,
                cut=cut,
                detected=detected,
                category=categorize(detected, generation.target_lang, generation.source_lang),
                lines=len(line_languages),
                target_lines=sum(language == generation.target_lang for language in line_languages),
                confusion=check_response(text, generation.target_lang, identifier.best_language, vocabulary),
            )
        )
    return scored


def summarize(scored: Sequence[ScoredAnswer], examples_per_row: int = 3, example_chars: int = 200) -> list[RateRow]:
    """One row per model × direction × shots, in first-seen order, with a few answers not in the target language."""
    groups: dict[tuple[str, str, int | None], list[ScoredAnswer]] = {}
    for answer in scored:
        generation = answer.generation
        groups.setdefault((generation.model, generation.direction, generation.shots), []).append(answer)
    rows = []
    for (model, direction, shots), answers in groups.items():
        counts = {category: sum(answer.category == category for answer in answers) for category in CATEGORIES}
        low, high = wilson_interval(counts["target"], len(answers))
        lines = sum(answer.lines for answer in answers)
        failing = [answer for answer in answers if answer.category != "target"][:examples_per_row]
        confusion = confusion_rates(
            [answer.confusion for answer in answers if answer.confusion is not None],
            answers[0].generation.target_lang,
            english_words() is not None,
        )
        rows.append(
            RateRow(
                model=model,
                direction=direction,
                shots=shots,
                answers=len(answers),
                rate=counts["target"] / len(answers),
                ci_low=low,
                ci_high=high,
                line_rate=sum(answer.target_lines for answer in answers) / lines if lines else None,
                counts=counts,
                cut=sum(answer.cut for answer in answers),
                examples=[
                    {
                        "id": answer.generation.id,
                        "detected": answer.detected,
                        "text": answer.text[:example_chars],
                        "cut": answer.cut,
                    }
                    for answer in failing
                ],
                lcb_checked=confusion.checked,
                lpr=confusion.lpr,
                wpr=confusion.wpr,
                lcpr=confusion.lcpr,
            )
        )
    return rows


def add_deltas(rows: Sequence[RateRow], base: str = BASE_MODEL) -> list[RateRow]:
    """Each row's ``delta_vs_base``: its rate minus the base model's for the same direction and shots."""
    base_rates = {(row.direction, row.shots): row.rate for row in rows if row.model == base}
    return [
        replace(
            row,
            delta_vs_base=None
            if row.model == base or (row.direction, row.shots) not in base_rates
            else row.rate - base_rates[(row.direction, row.shots)],
        )
        for row in rows
    ]


def add_paired_tests(rows: Sequence[RateRow], scored: Sequence[ScoredAnswer], base: str = BASE_MODEL) -> list[RateRow]:
    """Each adapter row's paired test against the base on the same questions (matched by id): exact McNemar on
    "in the target language", Newcombe's 95 % interval of the rate difference; Holm over the tested rows."""
    answers: dict[tuple[str, str, int | None], dict[str, bool]] = {}
    for answer in scored:
        generation = answer.generation
        answers.setdefault((generation.model, generation.direction, generation.shots), {})[generation.id] = (
            answer.category == "target"
        )
    tested = []
    for row in rows:
        if row.model == base:
            tested.append(row)
            continue
        own, reference = (
            answers.get((row.model, row.direction, row.shots), {}),
            answers.get((base, row.direction, row.shots)),
        )
        if not reference:
            tested.append(replace(row, paired="not tested: no base answers for this direction and shots"))
            continue
        if set(own) != set(reference):
            tested.append(replace(row, paired=f"not tested: different questions ({len(own)} and {len(reference)})"))
            continue
        keys = sorted(own)
        result = mcnemar([own[key] for key in keys], [reference[key] for key in keys])
        tested.append(
            replace(
                row,
                delta_ci_low=result.ci_low,
                delta_ci_high=result.ci_high,
                p_value=result.p_value,
                test=result.test,
                paired=f"{len(keys)} questions",
            )
        )
    adjusted = holm([row.p_value for row in tested])
    return [replace(row, p_holm=p) for row, p in zip(tested, adjusted)]


def model_averages(rows: Sequence[RateRow], base: str = BASE_MODEL) -> list[dict[str, Any]]:
    """Per model, the unweighted mean rate of its rows — the paper's average when the rows are its four cells
    (en→zh and zh→en, 0- and 1-shot) — and the difference to the base model's average."""
    models = list(dict.fromkeys(row.model for row in rows))
    averages = []
    for model in models:
        own = [row for row in rows if row.model == model]
        cells = {(row.direction, row.shots) for row in own}
        averages.append(
            {
                "model": model,
                "cells": len(own),
                "average": sum(row.rate for row in own) / len(own),
                "paper_cells": cells == set(PAPER_CELLS),
            }
        )
    base_average = next((item["average"] for item in averages if item["model"] == base), None)
    for item in averages:
        item["delta_vs_base"] = (
            None if base_average is None or item["model"] == base else item["average"] - base_average
        )
    return averages


def rows_as_dicts(rows: Sequence[RateRow]) -> list[dict[str, Any]]:
    return [asdict(row) for row in rows]


# ----------------------------------------------------------------------------------------------------------------
# Reading answers from files

# lm-eval names samples files samples_<task>_<date>.jsonl; `afp evaluate` writes samples_<task>.jsonl into
# raw/<model>/<k>shot/.
_LM_EVAL_SAMPLES_NAME = re.compile(r"^samples_(?P<task>.+?)(?:_\d{4}-\d{2}-\d{2}T[\d\-.:]+)?$")
_AFP_SHOTS_FOLDER = re.compile(r"^(?P<shots>\d+)shot$")


def _first_text(value: Any) -> str | None:
    """The first text in lm-eval's nesting: ``resps`` [[str]], ``filtered_resps`` [str], and ``arguments`` as
    written to the samples file, ``{"gen_args_0": {"arg_0": prompt, "arg_1": generation kwargs}}``."""
    while isinstance(value, (list, dict)) and value:
        value = value[0] if isinstance(value, list) else next(iter(value.values()))
    return value if isinstance(value, str) else None


def _group_name(path: Path) -> str:
    """The task name of an lm-eval samples file (``samples_<task>[_<date>].jsonl``), else the file's stem."""
    match = _LM_EVAL_SAMPLES_NAME.match(path.stem)
    return match.group("task") if match else path.stem


def _afp_run_folder(path: Path) -> tuple[str, int] | None:
    """``(model, shots)`` of a samples file that `afp evaluate` wrote to ``raw/<model>/<k>shot/``, else None."""
    match = _AFP_SHOTS_FOLDER.match(path.parent.name)
    if match is None or not _LM_EVAL_SAMPLES_NAME.match(path.stem) or path.parent.parent.parent.name != "raw":
        return None
    return path.parent.parent.name, int(match.group("shots"))


# afp's lm-eval tasks end with their direction: afp_flores_eng_Latn-zho_Hans, afp_cls_en-zh.
_CODE = r"(?:[a-z]{2}|[a-z]{3}_[A-Z][a-z]{3})"
_TASK_DIRECTION = re.compile(rf"_(?P<source>{_CODE})-(?P<target>{_CODE})$")


def task_direction(task: str) -> tuple[str, str] | None:
    """``(source, target)`` ISO codes from a task name that ends with ``_{source}-{target}``, else None."""
    match = _TASK_DIRECTION.search(task)
    if match is None:
        return None
    try:
        return get_language(match.group("source")).code, get_language(match.group("target")).code
    except AfpError:
        return None


def _language_field(path: Path, number: int, name: str, value: Any) -> str:
    if not isinstance(value, str):
        raise located(path, number, name, f"expected a language code, got {value!r}")
    try:
        return get_language(value).code
    except AfpError as error:
        raise located(path, number, name, str(error)) from None


def read_generations(
    path: str | Path, target_lang: str | None = None, source_lang: str | None = None
) -> list[Generation]:
    """Answers from a plain JSONL (``text``; optional ``id``, ``target_lang``, ``source_lang``, ``model``, ``shots``)
    or from the samples file lm-eval writes with ``--log_samples`` (grouped under the task's name, or under the
    model and shot count of the ``raw/<model>/<k>shot/`` folder that `afp evaluate` writes).

    A line's own ``target_lang``/``source_lang`` wins over the defaults given here, which win over the direction at
    the end of an lm-eval task's name (``samples_afp_flores_eng_Latn-zho_Hans_<date>.jsonl``: eng -> zho).
    Any bad line is a user error naming file, line and field.
    """
    path = require_utf8(path, "generations")
    model, shots = _group_name(path), None
    direction = task_direction(model) if _LM_EVAL_SAMPLES_NAME.match(path.stem) else None
    if direction is not None:
        source_lang, target_lang = source_lang or direction[0], target_lang or direction[1]
    if (run_folder := _afp_run_folder(path)) is not None:
        model, shots = run_folder
    generations, filters = [], []
    for number, record in iter_json_objects(path):
        if not isinstance(record, dict):
            raise located(path, number, None, "expected a JSON object")
        generation = _generation_from_record(path, number, record, model, target_lang, source_lang)
        generations.append(generation if shots is None else replace(generation, shots=shots))
        filters.append(record.get("filter"))
    if not generations:
        raise AfpError(f"{path}: no answers in the file")
    return _split_by_filter(generations, filters)


def _split_by_filter(generations: list[Generation], filters: list[str | None]) -> list[Generation]:
    """lm-eval writes each document once per filter: with several filters, each becomes its own group."""
    if len(set(filters)) <= 1:
        return generations
    return [replace(generation, model=f"{generation.model}/{name}") for generation, name in zip(generations, filters)]


def _generation_from_record(
    path: Path, number: int, record: dict[str, Any], model: str, target_lang: str | None, source_lang: str | None
) -> Generation:
    is_lm_eval = "resps" in record or "filtered_resps" in record
    if is_lm_eval:
        text_field = "filtered_resps" if "filtered_resps" in record else "resps"
        text = _first_text(record[text_field])
        doc = record.get("doc")
        # afp_langrate documents carry the question's own id; other tasks are numbered by lm-eval
        identifier = doc["id"] if isinstance(doc, dict) and "id" in doc else record.get("doc_id", number - 1)
    else:
        text_field = "text"
        text = record.get("text")
        identifier = record.get("id", number)
    if not isinstance(text, str):
        raise located(path, number, text_field, "missing or not a text")
    target = record.get("target_lang", target_lang)
    if target is None:
        raise located(path, number, "target_lang", "missing: add it to the line or pass --target-lang")
    source = record.get("source_lang", source_lang)
    shots = record.get("shots")
    if shots is not None and (not isinstance(shots, int) or isinstance(shots, bool) or shots < 0):
        raise located(path, number, "shots", f"expected a count of 0 or more, got {shots!r}")
    return Generation(
        id=str(identifier),
        text=text,
        target_lang=_language_field(path, number, "target_lang", target),
        source_lang=None if source is None else _language_field(path, number, "source_lang", source),
        model=str(record.get("model", model)),
        shots=shots,
        prompt=_first_text(record.get("arguments")) if is_lm_eval else record.get("prompt"),
    )


def generation_record(generation: Generation) -> dict[str, Any]:
    """The plain-JSONL line of one answer; ``read_generations`` reads it back into the same group."""
    return {
        "id": generation.id,
        "model": generation.model,
        "source_lang": generation.source_lang,
        "target_lang": generation.target_lang,
        "shots": generation.shots,
        "prompt": generation.prompt,
        "text": generation.text,
    }
