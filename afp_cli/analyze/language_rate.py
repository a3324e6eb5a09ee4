"""Language rate: the share of answers written in the target language, with a Wilson interval and a breakdown.

Reads answers from afp's own generation or from files (a plain JSONL of texts, or the samples lm-eval writes with
``--log_samples``), scores each answer as target / source / other / undetermined, and summarises per
model × direction × shots. The rate's denominator is every answer, undetermined ones included (the paper's
"share of answers detected in the target language"); the breakdown shows how many were undetermined.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from afp_cli.analyze.language_id import UNDETERMINED, LanguageIdentifier
from afp_cli.data.readers import iter_json_objects
from afp_cli.errors import AfpError, located
from afp_cli.languages import get_language

CATEGORIES: tuple[str, ...] = ("target", "source", "other", "undetermined")
WILSON_Z_95 = 1.959963984540054  # two-sided 95 % normal quantile


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
    detected: str
    category: str
    lines: int  # non-empty lines
    target_lines: int  # non-empty lines detected in the target language


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
    examples: list[dict[str, Any]] = field(default_factory=list)


def wilson_interval(successes: int, trials: int, z: float = WILSON_Z_95) -> tuple[float, float]:
    """Wilson score interval of a binomial proportion (well-behaved at 0 %, 100 % and small n)."""
    if trials <= 0:
        raise ValueError("the Wilson interval needs at least one trial")
    share = successes / trials
    denominator = 1 + z * z / trials
    center = (share + z * z / (2 * trials)) / denominator
    half_width = z * math.sqrt(share * (1 - share) / trials + z * z / (4 * trials * trials)) / denominator
    # At 0 % and 100 % the bound is exactly the share; rounding would otherwise leave it a hair inside.
    low = 0.0 if successes == 0 else max(0.0, center - half_width)
    high = 1.0 if successes == trials else min(1.0, center + half_width)
    return low, high


def categorize(detected: str, target: str, source: str | None) -> str:
    if detected == UNDETERMINED:
        return "undetermined"
    if detected == target:
        return "target"
    if detected == source:
        return "source"
    return "other"


def score(generations: Iterable[Generation], identifier: LanguageIdentifier) -> list[ScoredAnswer]:
    scored = []
    for generation in generations:
        detected = identifier.detect(generation.text)
        line_languages = identifier.detect_lines(generation.text)
        scored.append(
            ScoredAnswer(
                generation=generation,
                detected=detected,
                category=categorize(detected, generation.target_lang, generation.source_lang),
                lines=len(line_languages),
                target_lines=sum(language == generation.target_lang for language in line_languages),
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
                examples=[
                    {"id": answer.generation.id, "detected": answer.detected,
                     "text": answer.generation.text[:example_chars]}
                    for answer in failing
                ],
            )
        )
    return rows


def rows_as_dicts(rows: Sequence[RateRow]) -> list[dict[str, Any]]:
    return [asdict(row) for row in rows]


# ----------------------------------------------------------------------------------------------------------------
# Reading answers from files

_LM_EVAL_SAMPLES_NAME = re.compile(r"^samples_(?P<task>.+)_\d{4}-\d{2}-\d{2}T[\d\-.:]+$")


def _first_text(value: Any) -> str | None:
    """The first text in lm-eval's nesting: ``resps`` [[str]], ``filtered_resps`` [str], and ``arguments`` as
    written to the samples file, ``{"gen_args_0": {"arg_0": prompt, "arg_1": generation kwargs}}``."""
    while isinstance(value, (list, dict)) and value:
        value = value[0] if isinstance(value, list) else next(iter(value.values()))
    return value if isinstance(value, str) else None


def _group_name(path: Path) -> str:
    """The task name of an lm-eval samples file (``samples_<task>_<date>.jsonl``), else the file's stem."""
    match = _LM_EVAL_SAMPLES_NAME.match(path.stem)
    return match.group("task") if match else path.stem


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
    or from the samples file lm-eval writes with ``--log_samples`` (grouped under the task's name).

    A line's own ``target_lang``/``source_lang`` wins over the defaults given here, which win over the direction at
    the end of an lm-eval task's name (``samples_afp_flores_eng_Latn-zho_Hans_<date>.jsonl``: eng -> zho).
    Any bad line is a user error naming file, line and field.
    """
    path = Path(path)
    if not path.is_file():
        raise AfpError(f"{path}: generations file not found")
    model = _group_name(path)
    direction = task_direction(model) if _LM_EVAL_SAMPLES_NAME.match(path.stem) else None
    if direction is not None:
        source_lang, target_lang = source_lang or direction[0], target_lang or direction[1]
    generations, filters = [], []
    for number, record in iter_json_objects(path):
        if not isinstance(record, dict):
            raise located(path, number, None, "expected a JSON object")
        generations.append(_generation_from_record(path, number, record, model, target_lang, source_lang))
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
        identifier = record.get("doc_id", number - 1)
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
    return {"id": generation.id, "model": generation.model, "source_lang": generation.source_lang,
            "target_lang": generation.target_lang, "shots": generation.shots, "prompt": generation.prompt,
            "text": generation.text}
