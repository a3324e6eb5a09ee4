"""`afp analyze language-rate` from start to end: answers (generated or read) -> scores -> report files."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from afp_cli.analyze.generation import (
    GenerationConfig, Prompt, build_prompts, generate_answers, parse_directions, parse_shots, read_questions,
    shipped_questions_path,
)
from afp_cli.analyze.language_id import LanguageIdConfig, LanguageIdentifier
from afp_cli.analyze.language_rate import (
    Generation, RateRow, generation_record, read_generations, rows_as_dicts, score, summarize,
)
from afp_cli.analyze.output import check_writable, progress, report_paths, write_report
from afp_cli.analyze.plots import language_rate_bars
from afp_cli.errors import AfpError
from afp_cli.languages import get_language
from afp_cli.report import markdown_table, write_atomically

REPORT_STEM = "language_rate"


@dataclass(frozen=True)
class LanguageRateConfig:
    """Either generate answers (``model`` [+ ``adapters``]) or score existing ones (``generations``)."""

    output_dir: Path
    model: str | None = None
    adapters: tuple[str, ...] = ()
    questions: Path | None = None  # None: afp's shipped en/zh question set
    directions: str = "en-zh,zh-en"
    shots: str = "0,1"
    limit: int | None = None  # first N questions per source language (quick looks)
    generations: tuple[Path, ...] = ()
    target_lang: str | None = None  # default for generation files whose lines carry none
    source_lang: str | None = None
    generation: GenerationConfig = field(default_factory=GenerationConfig)
    language_id: LanguageIdConfig = field(default_factory=LanguageIdConfig)
    examples: int = 3  # failing examples shown per row
    device: str = "auto"
    dtype: str = "auto"
    overwrite: bool = False

    def __post_init__(self) -> None:
        if (self.model is None) == (not self.generations):
            raise AfpError("give either --model (generate answers) or --generations (score existing answers)")
        if self.adapters and self.model is None:
            raise AfpError("--adapter needs --model: adapters are loaded on top of their base model")
        if self.limit is not None and self.limit < 1:
            raise AfpError(f"--limit must be at least 1, got {self.limit}")
        if self.examples < 0:
            raise AfpError(f"--examples must be 0 or more, got {self.examples}")
        for code in (self.target_lang, self.source_lang):
            if code is not None:
                get_language(code)


def run_language_rate(config: LanguageRateConfig) -> list[RateRow]:
    paths = report_paths(config.output_dir, REPORT_STEM, ("bars",))
    paths["generations"] = Path(config.output_dir) / f"{REPORT_STEM}_generations.jsonl"
    check_writable(paths, config.overwrite)
    if config.generations:
        generations = [item for path in config.generations
                       for item in read_generations(path, config.target_lang, config.source_lang)]
        languages = {item.target_lang for item in generations} | {item.source_lang for item in generations}
        identifier = LanguageIdentifier(languages - {None}, config.language_id)
    else:
        directions = parse_directions(config.directions)
        # Built before generating: a language the detector lacks must fail before the model runs.
        identifier = LanguageIdentifier({code for pair in directions for code in pair}, config.language_id)
        generations = _generate(config, directions)
    scored = score(generations, identifier)
    rows = summarize(scored, examples_per_row=config.examples)
    write_atomically(paths["generations"], "".join(
        json.dumps(generation_record(item), ensure_ascii=False) + "\n" for item in generations))
    payload = {"config": _config_summary(config), "rows": rows_as_dicts(rows)}
    write_report(paths, render_markdown(rows, config), payload, {"bars": language_rate_bars(rows_as_dicts(rows))})
    return rows


def _generate(config: LanguageRateConfig, directions: list[tuple[str, str]]) -> list[Generation]:
    """Validate every input before loading the model; then the base and each adapter answer every prompt."""
    from afp_cli.analyze.variants import load_variants

    questions = read_questions(config.questions or shipped_questions_path())
    prompts: list[Prompt] = [
        prompt
        for source, target in directions
        for shots in parse_shots(config.shots)
        for prompt in build_prompts(questions, source, target, shots, config.generation.seed, config.limit)
    ]
    loaded = load_variants(config.model, config.adapters, config.device, config.dtype)
    generations = []
    with progress("generating", total=len(prompts) * len(loaded.labels)) as advance:
        for label, model in loaded.variants():
            answers = generate_answers(model, loaded.tokenizer, [prompt.text for prompt in prompts],
                                       config.generation, advance)
            generations.extend(
                Generation(id=prompt.question.id, text=answer, target_lang=prompt.target_lang,
                           source_lang=prompt.question.lang, model=label, shots=prompt.shots, prompt=prompt.text)
                for prompt, answer in zip(prompts, answers)
            )
    return generations


def _config_summary(config: LanguageRateConfig) -> dict:
    return {
        "model": config.model,
        "adapters": list(config.adapters),
        "questions": str(config.questions) if config.questions else ("shipped" if config.model else None),
        "generations": [str(path) for path in config.generations],
        "directions": config.directions if config.model else None,
        "shots": config.shots if config.model else None,
        "max_new_tokens": config.generation.max_new_tokens,
        "seed": config.generation.seed,
        "min_letters": config.language_id.min_letters,
        "min_confidence": config.language_id.min_confidence,
        "min_script_share": config.language_id.min_script_share,
    }


def render_markdown(rows: Sequence[RateRow], config: LanguageRateConfig) -> str:
    table = [
        {
            "model": row.model, "direction": row.direction, "shots": row.shots, "answers": row.answers,
            "rate %": 100 * row.rate, "95 % CI": f"{100 * row.ci_low:.1f}–{100 * row.ci_high:.1f}",
            **row.counts, "line rate %": None if row.line_rate is None else 100 * row.line_rate,
        }
        for row in rows
    ]
    columns = ["model", "direction", "shots", "answers", "rate %", "95 % CI", "target", "source", "other",
               "undetermined", "line rate %"]
    source = f"`{config.model}`" if config.model else ", ".join(f"`{path}`" for path in config.generations)
    parts = [
        "# Language rate\n\n",
        f"Answers from {source}. Rate = answers detected in the target language / all answers "
        "(undetermined ones included); line rate = non-empty lines in the target language / all non-empty lines. "
        f"Undetermined: fewer than {config.language_id.min_letters} letters, no script above "
        f"{config.language_id.min_script_share:.0%} of the text, or detector confidence below "
        f"{config.language_id.min_confidence:.2f}.\n\n",
        markdown_table(table, columns, digits=1),
        f"\n![language rate]({REPORT_STEM}_bars.png)\n",
    ]
    failing = [row for row in rows if row.examples]
    if failing:
        parts.append("\n## Answers not in the target language (first few per row)\n")
        for row in failing:
            shots = "" if row.shots is None else f" · {row.shots}-shot"
            parts.append(f"\n**{row.model} · {row.direction}{shots}**\n\n")
            parts.extend(f"- `{example['id']}` ({example['detected']}): {_one_line(example['text'])}\n"
                         for example in row.examples)
    return "".join(parts)


def _one_line(text: str) -> str:
    return " ⏎ ".join(line.strip() for line in text.splitlines() if line.strip()) or "(empty)"
