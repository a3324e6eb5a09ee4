"""`afp analyze`: language rate of generated answers, representation alignment of translation pairs by layer, and
the CIT loss and retrieval of base and adapters on an AFP file."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from afp_cli.commands.options import (
    Adapters,
    AllowOtherBase,
    BatchSize,
    Device,
    Dtype,
    ForceUnlock,
    MaxGenToks,
    Model,
    OptionalModel,
    OutputDir,
    Overwrite,
    Seed,
)
from afp_cli.commands.run_folder import report_folder, say_stopped
from afp_cli.evaluation.parallel import is_main_process
from afp_cli.model.pooling import LAYER_SPEC_HELP, METHOD_HELP

app = typer.Typer(
    help="Analyse a base model and its adapters: does it answer in the language asked for (language-rate), "
    "how close are translations inside it, layer by layer (alignment), and what aligning did to its held-out CIT "
    "loss and retrieval (loss). "
    "Example: afp analyze alignment --model facebook/xglm-564M --adapter runs/afp --pairs en-zh.tsv",
    no_args_is_help=True,
)


@app.command(
    "language-rate",
    epilog=(
        "Examples: afp analyze language-rate -m facebook/xglm-564M -a runs/afp --questions en=hc3/all.jsonl "
        "--questions zh=hc3-chinese/all.jsonl --demonstrations demos.jsonl --sample 1000 -o reports/rate  ·  "
        "afp analyze language-rate --generations answers.jsonl --target-lang zh --source-lang en -o reports/answers"
    ),
)
def language_rate(
    output_dir: OutputDir = Path("reports/language-rate"),
    model: OptionalModel = None,
    adapter: Adapters = None,
    questions: Annotated[
        list[str] | None,
        typer.Option(
            "--questions",
            "-q",
            help=(
                "Questions: LANG=FILE (HC3 JSONL: question, human_answers, chatgpt_answers; or afp's schema) or FILE "
                "(afp's schema: id, lang, question, optional answer); repeatable. Default: afp's 30 en/zh questions."
            ),
        ),
    ] = None,
    sample: Annotated[
        int,
        typer.Option(
            "--sample", help="Questions drawn (seeded) per source language; all when a set has fewer. The paper: 1000."
        ),
    ] = 1000,
    demonstrations: Annotated[
        Path | None,
        typer.Option(
            "--demonstrations",
            help=(
                "Demonstration pool, JSON lines: question, answer, question_lang, answer_lang. One fixed seeded "
                "k-shot set per direction is drawn from it. Default: the question set's aligned ids."
            ),
        ),
    ] = None,
    directions: Annotated[
        str, typer.Option("--directions", "-d", help="source-target pairs, comma-separated.")
    ] = "en-zh,zh-en",
    shots: Annotated[str, typer.Option("--shots", help="Demonstration counts, comma-separated.")] = "0,1",
    limit: Annotated[
        int | None, typer.Option("--limit", help="Only the first N sampled questions per direction (quick looks).")
    ] = None,
    generations: Annotated[
        list[Path] | None,
        typer.Option(
            "--generations",
            "-g",
            help=(
                "Score existing answers instead: plain JSONL (text, optional id/target_lang/source_lang) or lm-eval "
                "samples files; repeatable."
            ),
        ),
    ] = None,
    target_lang: Annotated[
        str | None,
        typer.Option(
            "--target-lang",
            help=(
                "Target language of --generations lines that carry none (lm-eval samples of afp tasks: read from the "
                "task name)."
            ),
        ),
    ] = None,
    source_lang: Annotated[
        str | None,
        typer.Option(
            "--source-lang", help="Source language of --generations lines that carry none (to count fall-backs)."
        ),
    ] = None,
    stop: Annotated[
        list[str] | None,
        typer.Option(
            "--stop",
            help=(
                "Where an answer ends: cut at the first of these sequences (\\n for a newline; repeatable), or 'none' "
                "to score whole answers. Default: the first newline."
            ),
        ),
    ] = None,
    backend: Annotated[
        str, typer.Option("--backend", help="lm-eval model type: hf (base weights shared across adapters), vllm, ...")
    ] = "hf",
    model_args: Annotated[
        str,
        typer.Option("--model-args", help="Extra lm-eval model arguments for non-hf backends, key=value,key=value."),
    ] = "",
    batch_size: BatchSize = 8,
    max_gen_toks: MaxGenToks = None,
    min_letters: Annotated[
        int,
        typer.Option(
            "--min-letters", help="Answers with fewer letters and no Chinese/Japanese character are undetermined."
        ),
    ] = 3,
    min_confidence: Annotated[
        float, typer.Option("--min-confidence", help="Below this detector confidence an answer is undetermined.")
    ] = 0.5,
    min_script_share: Annotated[
        float,
        typer.Option("--min-script-share", help="Mixed answers: below this share of the main script, undetermined."),
    ] = 0.75,
    examples: Annotated[int, typer.Option("--examples", help="Failing answers shown per row.")] = 3,
    seed: Seed = 0,
    device: Device = "auto",
    dtype: Dtype = "auto",
    overwrite: Overwrite = False,
    resume: Annotated[
        bool,
        typer.Option(
            "--resume",
            help="Continue the stopped run in OUTPUT_DIR: keep its complete (model, shots) cells of answers, "
            "generate the rest (the arguments must be the run's; or start the run where none was started).",
        ),
    ] = False,
    force_unlock: ForceUnlock = False,
    allow_other_base: AllowOtherBase = False,
) -> None:
    """Share of answers in the target language (95 % Wilson interval, target/source/other/undetermined), a paired
    McNemar test of each adapter against the base, and LCB's line- and word-level pass rates (LPR, WPR)."""
    from afp_cli.analyze.generation import GenerationConfig
    from afp_cli.analyze.language_id import LanguageIdConfig
    from afp_cli.analyze.language_rate import DEFAULT_STOPS, parse_stops
    from afp_cli.analyze.questions import QuestionFile, parse_directions, parse_shots
    from afp_cli.analyze.rate_run import RUN_FOLDER, LanguageRateConfig, run_language_rate
    from afp_cli.errors import AfpError
    from afp_cli.evaluation.runner import EvaluationStopped

    if adapter and model is None:
        raise AfpError("--adapter needs --model: adapters are loaded on top of their base model")
    generation = (
        None
        if model is None
        else GenerationConfig(
            model=model,
            adapters=tuple(adapter or ()),
            shots=tuple(parse_shots(shots)),
            batch_size=batch_size,
            device=device,
            dtype=dtype,
            backend=backend,
            model_args=model_args,
            seed=seed,
            allow_other_base=allow_other_base,
            max_gen_toks=max_gen_toks,
        )
    )
    config = LanguageRateConfig(
        output_dir=output_dir,
        generation=generation,
        questions=tuple(QuestionFile.parse(value) for value in questions or ()),
        sample=sample,
        demonstrations=demonstrations,
        directions=tuple(parse_directions(directions)),
        limit=limit,
        generations=tuple(generations or ()),
        target_lang=target_lang,
        source_lang=source_lang,
        stops=DEFAULT_STOPS if stop is None else parse_stops(stop),
        language_id=LanguageIdConfig(
            min_letters=min_letters, min_confidence=min_confidence, min_script_share=min_script_share
        ),
        examples=examples,
        seed=seed,
        overwrite=overwrite,
        resume=resume,
    )
    try:
        with report_folder(output_dir, force_unlock):
            try:
                rows = run_language_rate(config)
            except KeyboardInterrupt:
                _say_answers_kept(output_dir / RUN_FOLDER, generating=model is not None)
                raise
    except EvaluationStopped as stop:
        say_stopped(stop, output_dir / RUN_FOLDER / "raw", "cells of answers")
    if not is_main_process():
        return  # a launch's other processes generated their share; the main one reports
    for row in rows:
        shots_label = "" if row.shots is None else f" {row.shots}-shot"
        cut = f", {row.cut} cut" if row.cut else ""
        paired = (
            ""
            if row.p_value is None
            else (
                f", Δ base {100 * row.delta_vs_base:+.1f} pp [{100 * row.delta_ci_low:+.1f}, "
                f"{100 * row.delta_ci_high:+.1f}] p={row.p_value:.2g}"
            )
        )
        lpr = "" if row.lpr is None else f", LPR {100 * row.lpr:.1f} %"
        typer.echo(
            f"{row.model} {row.direction}{shots_label}: {100 * row.rate:.1f} % "
            f"[{100 * row.ci_low:.1f}, {100 * row.ci_high:.1f}] of {row.answers}{cut}{paired}{lpr}"
        )
    typer.echo(f"report: {output_dir / 'language_rate.md'}")


def _say_answers_kept(run_dir: Path, generating: bool) -> None:
    """Ctrl-C once answers were generated (scoring, writing the report): they are kept, and --resume reuses them
    without generating again (the report folder's own line says nothing was kept)."""
    from afp_cli.commands.run_folder import continue_command
    from afp_cli.evaluation.cells import CELL_FILE, RAW

    if generating and any((run_dir / RAW).rglob(CELL_FILE)):
        typer.echo(
            f"aborted (Ctrl-C) before the report was written: the answers are kept in {run_dir}; continue with: "
            f"{continue_command()}",
            err=True,
        )
        raise typer.Exit(130) from None


@app.command(
    "alignment",
    epilog=(
        "Example: afp analyze alignment --model facebook/xglm-564M --adapter runs/afp --pairs en-zh.tsv --layers all "
        "--pooling last -o reports/alignment"
    ),
)
def alignment(
    pairs: Annotated[
        Path,
        typer.Option(
            "--pairs",
            "-p",
            help=(
                "Translation pairs: TSV with a header naming the two languages (en<TAB>zh), or JSON lines "
                '{"en": ..., "zh": ...}.'
            ),
        ),
    ],
    model: Model,
    adapter: Adapters = None,
    output_dir: OutputDir = Path("reports/alignment"),
    languages: Annotated[
        str | None,
        typer.Option("--languages", "-l", help="The pairs' two languages, e.g. en,zh (default: the TSV header)."),
    ] = None,
    layers: Annotated[
        str, typer.Option("--layers", help="all, or indices and ranges: 0,1,8-12 (0 = embeddings).")
    ] = "all",
    pooling: Annotated[
        str,
        typer.Option("--pooling", help=f"{METHOD_HELP}."),
    ] = "last",
    max_pairs: Annotated[int, typer.Option("--max-pairs", help="Use the first N pairs.")] = 1000,
    max_length: Annotated[int, typer.Option("--max-length", help="Tokens kept per sentence.")] = 128,
    plot_layer: Annotated[
        int, typer.Option("--plot-layer", help="Layer drawn on the 2-D map (1: the official MCL pooling layer).")
    ] = 1,
    projection: Annotated[
        str, typer.Option("--projection", help="2-D map method: pca, or tsne (needs scikit-learn).")
    ] = "pca",
    plot_pairs: Annotated[int, typer.Option("--plot-pairs", help="Pairs drawn on the 2-D map.")] = 200,
    joined_pairs: Annotated[
        int, typer.Option("--joined-pairs", help="Translation pairs joined by a line on the map.")
    ] = 10,
    batch_size: BatchSize = 16,
    seed: Seed = 0,
    device: Device = "auto",
    dtype: Dtype = "auto",
    overwrite: Overwrite = False,
    force_unlock: ForceUnlock = False,
    allow_other_base: AllowOtherBase = False,
) -> None:
    """Per layer: cosine of translation vs random pairs, alignment, uniformity, top-1 retrieval both ways."""
    from afp_cli.analyze.alignment_run import AlignmentConfig, auto_choices, run_alignment

    config = AlignmentConfig(
        model=model,
        pairs=pairs,
        output_dir=output_dir,
        adapters=tuple(adapter or ()),
        languages=None if languages is None else tuple(code.strip() for code in languages.split(",")),
        layers=layers,
        pooling=pooling,
        max_pairs=max_pairs,
        batch_size=batch_size,
        max_length=max_length,
        plot_layer=plot_layer,
        projection=projection,
        plot_pairs=plot_pairs,
        joined_pairs=joined_pairs,
        seed=seed,
        device=device,
        dtype=dtype,
        overwrite=overwrite,
        allow_other_base=allow_other_base,
    )
    with report_folder(output_dir, force_unlock):
        rows = run_alignment(config)
    for row in auto_choices(rows):
        typer.echo(f"{row['model']}: mcl.pooling auto would pool layer {row['layer']} ({pooling}-{row['layer']})")
    typer.echo(f"report: {output_dir / 'alignment.md'}")


@app.command(
    "loss",
    epilog=(
        "Example: afp analyze loss -m facebook/xglm-564M -a runs/afp -a runs/cit-only --data held_out.afp.jsonl "
        "-o reports/loss"
    ),
)
def loss(
    data: Annotated[
        Path,
        typer.Option(
            "--data",
            "-d",
            help=(
                "AFP JSON lines (sent0, sent1, clm_text, clm_prompt_len; either pair of fields alone is enough), e.g. "
                "a held-out file or another language pair."
            ),
            show_default=False,
        ),
    ],
    model: Model,
    adapter: Adapters = None,
    output_dir: OutputDir = Path("reports/loss"),
    pooling: Annotated[
        str,
        typer.Option(
            "--pooling",
            help=(
                f"Sentence vector for retrieval, spelled as mcl.pooling in recipes: {LAYER_SPEC_HELP}. last-1: the "
                "official MCL pooling."
            ),
        ),
    ] = "last-1",
    max_examples: Annotated[
        int | None, typer.Option("--max-examples", help="Score the first N examples (default: all).")
    ] = None,
    max_length: Annotated[
        int,
        typer.Option(
            "--max-length", help="Tokens kept per sentence and per instruction text (as align's data.max_length)."
        ),
    ] = 512,
    batch_size: BatchSize = 8,
    seed: Seed = 0,
    device: Device = "auto",
    dtype: Dtype = "auto",
    overwrite: Overwrite = False,
    force_unlock: ForceUnlock = False,
    allow_other_base: AllowOtherBase = False,
) -> None:
    """CIT loss over the answer tokens and top-1 retrieval both ways, base and each adapter side by side."""
    from afp_cli.analyze.loss_run import METRICS, LossConfig, run_loss

    config = LossConfig(
        model=model,
        data=data,
        output_dir=output_dir,
        adapters=tuple(adapter or ()),
        pooling=pooling,
        max_examples=max_examples,
        max_length=max_length,
        batch_size=batch_size,
        seed=seed,
        device=device,
        dtype=dtype,
        overwrite=overwrite,
        allow_other_base=allow_other_base,
    )
    with report_folder(output_dir, force_unlock):
        rows = run_loss(config)
    for row in rows:
        parts = [f"{name.rstrip(' ↑↓')} {row[key]:.4f}" for key, name, _ in METRICS if key in row]
        typer.echo(f"{row['model']}: {' · '.join(parts)}")
    typer.echo(f"report: {output_dir / 'loss.md'}")
