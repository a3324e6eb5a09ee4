"""`afp analyze language-rate` from start to end: questions -> answers (lm-eval) or answer files -> scores -> report.

Every input is read and checked before a model loads. The lm-eval run (task data, samples, lm-eval's own
comparison) is written to ``language_rate_run/`` one cell (model, shot count) at a time, each cell whole, so that
``--resume`` generates only the cells a stopped run did not finish (rate_resume.py); the answers and the report are
always built from the cells on disk, so a resumed run's report is an uninterrupted one's.
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from afp_cli.analyze.generation import GenerationConfig, check_backend, generate
from afp_cli.analyze.language_id import LanguageIdConfig, LanguageIdentifier
from afp_cli.analyze.language_rate import (
    DEFAULT_STOPS,
    RateRow,
    add_deltas,
    add_paired_tests,
    generation_record,
    model_averages,
    read_generations,
    rows_as_dicts,
    score,
    summarize,
)
from afp_cli.analyze.output import check_writable, report_paths, write_report
from afp_cli.analyze.plots import language_rate_bars
from afp_cli.analyze.questions import (
    DirectionInputs,
    QuestionFile,
    direction_inputs,
    read_demonstrations,
    read_questions,
)
from afp_cli.analyze.rate_report import render_markdown
from afp_cli.analyze.rate_resume import claim_run_folder, nothing_left_without_a_cell, rate_manifest
from afp_cli.errors import AfpError
from afp_cli.evaluation import cells
from afp_cli.evaluation.parallel import is_main_process, launched_processes
from afp_cli.languages import get_language
from afp_cli.text_files import write_atomically

REPORT_STEM = "language_rate"
RUN_FOLDER = "language_rate_run"
PAPER_SAMPLE = 1000  # the paper's 1,000 HC3 questions


@dataclass(frozen=True)
class LanguageRateConfig:
    """Either generate answers (``generation``: model, adapters, backend) or score existing ones (``generations``)."""

    output_dir: Path
    generation: GenerationConfig | None = None
    questions: tuple[QuestionFile, ...] = ()  # none: afp's shipped en/zh question set
    sample: int = PAPER_SAMPLE  # questions drawn (seeded) per source language
    demonstrations: Path | None = None  # none: from the question set's aligned ids
    directions: tuple[tuple[str, str], ...] = (("en", "zh"), ("zh", "en"))
    limit: int | None = None  # first N sampled questions per direction (quick looks)
    generations: tuple[Path, ...] = ()
    target_lang: str | None = None  # default for generation files whose lines carry none
    source_lang: str | None = None
    stops: tuple[str, ...] = DEFAULT_STOPS  # () scores whole answers
    language_id: LanguageIdConfig = field(default_factory=LanguageIdConfig)
    examples: int = 3  # failing examples shown per row
    seed: int = 0
    overwrite: bool = False
    resume: bool = False  # keep the complete cells of the stopped run in output_dir, generate the rest

    def __post_init__(self) -> None:
        if (self.generation is None) == (not self.generations):
            raise AfpError("give either --model (generate answers) or --generations (score existing answers)")
        if self.resume and self.overwrite:
            raise AfpError("--resume and --overwrite contradict each other: choose one")
        if self.resume and self.generation is None:
            raise AfpError("--resume continues a run that generates answers (--model); --generations only scores")
        if self.sample < 1:
            raise AfpError(f"--sample must be at least 1, got {self.sample}")
        if self.limit is not None and self.limit < 1:
            raise AfpError(f"--limit must be at least 1, got {self.limit}")
        if self.examples < 0:
            raise AfpError(f"--examples must be 0 or more, got {self.examples}")
        for code in (self.target_lang, self.source_lang):
            if code is not None:
                get_language(code)


def run_language_rate(config: LanguageRateConfig) -> list[RateRow]:
    """Generate (or read) the answers, score them and write the report; returns its rows. Launched as several
    processes, every process generates a share of the answers and the main one alone writes and reports."""
    if config.generation is not None and launched_processes() > 1 and not is_main_process():
        _generate_share(config.generation, plan_directions(config))
        return []
    output_dir = Path(config.output_dir)
    paths = report_paths(output_dir, REPORT_STEM, ("bars",))
    paths["generations"] = output_dir / f"{REPORT_STEM}_generations.jsonl"
    if config.generation is not None:
        paths["run"] = output_dir / RUN_FOLDER
    inputs: list[DirectionInputs] = []
    if config.generation is None:
        check_writable(paths, config.overwrite)
        generations = [
            item
            for path in config.generations
            for item in read_generations(path, config.target_lang, config.source_lang)
        ]
        languages = {item.target_lang for item in generations} | {item.source_lang for item in generations}
        identifier = LanguageIdentifier(languages - {None}, config.language_id)
    else:
        # Built before generating: a language the detector lacks must fail before the model runs.
        identifier = LanguageIdentifier({code for pair in config.directions for code in pair}, config.language_id)
        inputs = plan_directions(config)
        check_backend(config.generation.backend)
        created = not output_dir.exists()
        reports = [path for name, path in paths.items() if name != "run"]
        claim_run_folder(paths["run"], reports, rate_manifest(config), config.resume, config.overwrite)
        with nothing_left_without_a_cell(paths["run"], output_dir, created):
            # evaluate's runner keeps the cells of its own run there (its manifest: a run got as far as lm-eval)
            resume = (paths["run"] / cells.MANIFEST).is_file()
            generations = generate(config.generation, inputs, paths["run"], resume=resume)
    scored = score(generations, identifier, config.stops)
    rows = add_paired_tests(add_deltas(summarize(scored, examples_per_row=config.examples)), scored)
    averages = model_averages(rows)
    write_atomically(
        paths["generations"],
        "".join(json.dumps(generation_record(item), ensure_ascii=False) + "\n" for item in generations),
    )
    payload = {
        "config": _config_summary(config),
        "inputs": [_inputs_summary(item, config) for item in inputs],
        "rows": rows_as_dicts(rows),
        "averages": averages,
    }
    markdown = render_markdown(rows, averages, config, inputs, bars_file=paths["bars"].name)
    write_report(paths, markdown, payload, {"bars": language_rate_bars(rows_as_dicts(rows))})
    return rows


def plan_directions(config: LanguageRateConfig) -> list[DirectionInputs]:
    """Read the question and demonstration files and choose, per direction, what is asked (no model yet)."""
    assert config.generation is not None
    questions = read_questions(config.questions)
    pool = read_demonstrations(config.demonstrations) if config.demonstrations is not None else None
    shots = max(config.generation.shots)
    return [
        direction_inputs(
            questions, source, target, shots, config.sample, config.seed, pool, config.demonstrations, config.limit
        )
        for source, target in config.directions
    ]


def _generate_share(generation: GenerationConfig, inputs: list[DirectionInputs]) -> None:
    """A process other than the main one of a launch: the same run, its own copy of the task data in a scratch
    folder, so that it scores its share of every cell's requests (evaluation/parallel.py); it writes nothing
    else (the main process writes the run folder, the answers and the report)."""
    with tempfile.TemporaryDirectory(prefix="afp-language-rate-") as scratch:
        try:
            generate(generation, inputs, Path(scratch) / RUN_FOLDER)
        except FileNotFoundError as error:  # the comparison it reads back at the end is the main process's
            if Path(str(error.filename)).name != "comparison.json":
                raise


def _inputs_summary(inputs: DirectionInputs, config: LanguageRateConfig) -> dict[str, Any]:
    return {
        "direction": f"{inputs.source}-{inputs.target}",
        "asked": len(inputs.questions),
        "available": inputs.available,
        "sample": config.sample,
        "limit": config.limit,
        "demonstrations_from": inputs.demonstrations_from,
        "demonstrations": [{"question": item.question, "answer": item.answer} for item in inputs.demonstrations],
    }


def _config_summary(config: LanguageRateConfig) -> dict[str, Any]:
    generation = config.generation
    return {
        "model": generation.model if generation else None,
        "adapters": list(generation.adapters) if generation else [],
        "backend": generation.backend if generation else None,
        "questions": [spec.describe() for spec in config.questions] or (["shipped"] if generation else []),
        "sample": config.sample if generation else None,
        "demonstrations": str(config.demonstrations) if config.demonstrations else None,
        "generations": [str(path) for path in config.generations],
        "directions": [f"{source}-{target}" for source, target in config.directions] if generation else None,
        "shots": list(generation.shots) if generation else None,
        "stops": list(config.stops),
        "seed": config.seed,
        "min_letters": config.language_id.min_letters,
        "min_confidence": config.language_id.min_confidence,
        "min_script_share": config.language_id.min_script_share,
    }
