"""Questions in, answers out: read a question set, build CIT prompts (0- or k-shot), generate greedily in batches.

The prompt is the paper's cross-lingual instruction format, ``{question} Answer in {Language}:``. A k-shot prompt
puts k demonstrations before it, each another question in the source language answered in the target language
(taken from the question set's aligned ids), one per line.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from afp_cli.data.readers import iter_json_objects, text_field
from afp_cli.errors import AfpError, located
from afp_cli.languages import get_language, language_name

QUESTIONS_PACKAGE_FILE = "data/questions.jsonl"


@dataclass(frozen=True)
class Question:
    id: str  # the same id in several languages marks translations of one question
    lang: str
    question: str
    answer: str | None = None  # a short reference answer in ``lang``: the material of demonstrations


@dataclass(frozen=True)
class Prompt:
    question: Question
    target_lang: str
    shots: int
    text: str


@dataclass(frozen=True)
class GenerationConfig:
    max_new_tokens: int = 128
    batch_size: int = 8
    seed: int = 0

    def __post_init__(self) -> None:
        if self.max_new_tokens < 1:
            raise AfpError(f"--max-new-tokens must be at least 1, got {self.max_new_tokens}")
        if self.batch_size < 1:
            raise AfpError(f"--batch-size must be at least 1, got {self.batch_size}")


def shipped_questions_path() -> Path:
    """afp's own en/zh question set (written for afp, MIT), so the command runs offline."""
    return Path(str(resources.files("afp_cli.analyze").joinpath(QUESTIONS_PACKAGE_FILE)))


def read_questions(path: str | Path) -> list[Question]:
    """Questions from JSON lines (``id``, ``lang``, ``question``, optional ``answer``); a bad line names file:line."""
    path = Path(path)
    if not path.is_file():
        raise AfpError(f"{path}: questions file not found")
    questions: list[Question] = []
    seen: dict[tuple[str, str], int] = {}
    for number, record in iter_json_objects(path):
        question = _question_from_record(path, number, record)
        key = (question.id, question.lang)
        if key in seen:
            raise located(path, number, "id", f"'{question.id}' in '{question.lang}' repeats line {seen[key]}")
        seen[key] = number
        questions.append(question)
    if not questions:
        raise AfpError(f"{path}: no questions in the file")
    return questions


def _question_from_record(path: Path, number: int, record) -> Question:
    texts = {name: text_field(path, number, record, name) for name in ("id", "lang", "question")}
    for name, value in texts.items():
        if not value:
            raise located(path, number, name, "empty")
    try:
        lang = get_language(texts["lang"]).code
    except AfpError as error:
        raise located(path, number, "lang", str(error)) from None
    answer = text_field(path, number, record, "answer", required=False) or None
    return Question(id=texts["id"], lang=lang, question=texts["question"], answer=answer)


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
    return shots


def cit_prompt(question: str, target_lang: str, answer: str | None = None) -> str:
    prompt = f"{question} Answer in {language_name(target_lang)}:"
    return prompt if answer is None else f"{prompt} {answer}"


def build_prompts(
    questions: Sequence[Question], source: str, target: str, shots: int, seed: int, limit: int | None = None
) -> list[Prompt]:
    """Prompts for every ``source`` question; demonstrations are drawn (seeded) from the other aligned ids."""
    asked = [question for question in questions if question.lang == source][:limit]
    if not asked:
        raise AfpError(f"no questions in language '{source}' in the question set")
    by_key = {(question.id, question.lang): question for question in questions}
    demonstration_ids = sorted(
        question.id for question in questions
        if question.lang == source and (question.id, target) in by_key and by_key[(question.id, target)].answer
    )
    rng = random.Random(f"{seed}-{source}-{target}-{shots}")
    prompts = []
    for question in asked:
        candidates = [identifier for identifier in demonstration_ids if identifier != question.id]
        if len(candidates) < shots:
            raise AfpError(
                f"{shots}-shot {source}-{target} needs {shots} other questions in '{source}' whose aligned id has an "
                f"answer in '{target}'; the question set has {len(candidates)} for question '{question.id}'"
            )
        lines = [
            cit_prompt(by_key[(identifier, source)].question, target, by_key[(identifier, target)].answer)
            for identifier in rng.sample(candidates, shots)
        ]
        lines.append(cit_prompt(question.question, target))
        prompts.append(Prompt(question=question, target_lang=target, shots=shots, text="\n".join(lines)))
    return prompts


def generate_answers(
    model, tokenizer, prompts: Sequence[str], config: GenerationConfig,
    advance: Callable[[int], None] | None = None,
) -> list[str]:
    """Greedy answers, batched with left padding (so every prompt ends where generation starts), stop at EOS."""
    import torch

    tokenizer.padding_side = "left"
    torch.manual_seed(config.seed)
    answers: list[str] = []
    for start in range(0, len(prompts), config.batch_size):
        batch = list(prompts[start:start + config.batch_size])
        encoded = tokenizer(batch, return_tensors="pt", padding=True).to(model.device)
        with torch.inference_mode():
            output = model.generate(
                **encoded,
                do_sample=False,
                max_new_tokens=config.max_new_tokens,
                pad_token_id=tokenizer.pad_token_id,
                eos_token_id=tokenizer.eos_token_id,
            )
        new_tokens = output[:, encoded["input_ids"].shape[1]:]
        answers.extend(text.strip() for text in tokenizer.batch_decode(new_tokens, skip_special_tokens=True))
        if advance is not None:
            advance(len(batch))
    return answers
