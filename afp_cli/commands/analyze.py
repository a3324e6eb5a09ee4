"""`afp analyze`: language rate of generated answers, and representation alignment of translation pairs by layer."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

app = typer.Typer(
    help="Analyse a base model and its adapters: does it answer in the language asked for (language-rate), and "
    "how close are translations inside it, layer by layer (alignment). "
    "Example: afp analyze alignment --model facebook/xglm-564M --adapter runs/afp --pairs en-zh.tsv",
    no_args_is_help=True,
)

Model = Annotated[Optional[str], typer.Option("--model", "-m", help="Base model: hub name or local path.")]
Adapters = Annotated[Optional[list[str]], typer.Option("--adapter", "-a", help="A LoRA adapter folder trained on --model; repeat for several (shown beside the base).")]
OutputDir = Annotated[Path, typer.Option("--output-dir", "-o", help="Folder for the report (Markdown, JSON, PNG).")]
Overwrite = Annotated[bool, typer.Option("--overwrite", help="Replace an existing report.")]
Seed = Annotated[int, typer.Option("--seed", help="Seed for demonstrations, random pairs and projections.")]
BatchSize = Annotated[int, typer.Option("--batch-size", help="Sequences (prompts or pairs) per forward pass.")]
Device = Annotated[str, typer.Option("--device", help="auto (CUDA when present), cpu, cuda, cuda:1, ...")]
Dtype = Annotated[str, typer.Option("--dtype", help="auto (bfloat16 on CUDA, float32 on CPU), float32, bfloat16, float16.")]


@app.command("language-rate", epilog=(
    "Examples: afp analyze language-rate --model facebook/xglm-564M --adapter runs/afp --directions en-zh,zh-en "
    "--shots 0,1 -o reports/rate  ·  afp analyze language-rate --generations answers.jsonl --target-lang zh "
    "--source-lang en -o reports/answers-rate"))
def language_rate(
    output_dir: OutputDir = Path("reports/language-rate"),
    model: Model = None,
    adapter: Adapters = None,
    questions: Annotated[Optional[Path], typer.Option("--questions", "-q", help="Questions JSONL (id, lang, question, optional answer); default: afp's 30 en/zh questions.")] = None,
    directions: Annotated[str, typer.Option("--directions", "-d", help="source-target pairs, comma-separated.")] = "en-zh,zh-en",
    shots: Annotated[str, typer.Option("--shots", help="Demonstration counts, comma-separated.")] = "0,1",
    limit: Annotated[Optional[int], typer.Option("--limit", help="Only the first N questions per source language.")] = None,
    generations: Annotated[Optional[list[Path]], typer.Option("--generations", "-g", help="Score existing answers instead: plain JSONL (text, optional id/target_lang/source_lang) or lm-eval --log_samples files; repeatable.")] = None,
    target_lang: Annotated[Optional[str], typer.Option("--target-lang", help="Target language of --generations lines that carry none (lm-eval samples of afp tasks: read from the task name).")] = None,
    source_lang: Annotated[Optional[str], typer.Option("--source-lang", help="Source language of --generations lines that carry none (to count fall-backs).")] = None,
    max_new_tokens: Annotated[int, typer.Option("--max-new-tokens", help="Longest answer, in tokens (greedy, stops at EOS).")] = 128,
    batch_size: BatchSize = 8,
    min_letters: Annotated[int, typer.Option("--min-letters", help="Answers with fewer letters are undetermined.")] = 3,
    min_confidence: Annotated[float, typer.Option("--min-confidence", help="Below this detector confidence an answer is undetermined.")] = 0.5,
    min_script_share: Annotated[float, typer.Option("--min-script-share", help="Mixed answers: below this share of the main script, undetermined.")] = 0.75,
    examples: Annotated[int, typer.Option("--examples", help="Failing answers shown per row.")] = 3,
    seed: Seed = 0,
    device: Device = "auto",
    dtype: Dtype = "auto",
    overwrite: Overwrite = False,
) -> None:
    """Share of answers in the target language (95 % Wilson interval, target/source/other/undetermined)."""
    from afp_cli.analyze.generation import GenerationConfig
    from afp_cli.analyze.language_id import LanguageIdConfig
    from afp_cli.analyze.rate_run import LanguageRateConfig, run_language_rate

    config = LanguageRateConfig(
        output_dir=output_dir, model=model, adapters=tuple(adapter or ()), questions=questions,
        directions=directions, shots=shots, limit=limit, generations=tuple(generations or ()),
        target_lang=target_lang, source_lang=source_lang,
        generation=GenerationConfig(max_new_tokens=max_new_tokens, batch_size=batch_size, seed=seed),
        language_id=LanguageIdConfig(min_letters=min_letters, min_confidence=min_confidence,
                                     min_script_share=min_script_share),
        examples=examples, device=device, dtype=dtype, overwrite=overwrite,
    )
    rows = run_language_rate(config)
    for row in rows:
        shots_label = "" if row.shots is None else f" {row.shots}-shot"
        typer.echo(f"{row.model} {row.direction}{shots_label}: {100 * row.rate:.1f} % "
                   f"[{100 * row.ci_low:.1f}, {100 * row.ci_high:.1f}] of {row.answers}")
    typer.echo(f"report: {output_dir / 'language_rate.md'}")


@app.command("alignment", epilog=(
    "Example: afp analyze alignment --model facebook/xglm-564M --adapter runs/afp --pairs en-zh.tsv --layers all "
    "--pooling last -o reports/alignment"))
def alignment(
    pairs: Annotated[Path, typer.Option("--pairs", "-p", help="Translation pairs: TSV with a header naming the two languages (en<TAB>zh), or JSON lines {\"en\": ..., \"zh\": ...}.")],
    model: Annotated[str, typer.Option("--model", "-m", help="Base model: hub name or local path.")],
    adapter: Adapters = None,
    output_dir: OutputDir = Path("reports/alignment"),
    languages: Annotated[Optional[str], typer.Option("--languages", "-l", help="The pairs' two languages, e.g. en,zh (default: the TSV header).")] = None,
    layers: Annotated[str, typer.Option("--layers", help="all, or indices and ranges: 0,1,8-12 (0 = embeddings).")] = "all",
    pooling: Annotated[str, typer.Option("--pooling", help="last (last non-padding token), avg (mean over tokens) or max (max over tokens).")] = "last",
    max_pairs: Annotated[int, typer.Option("--max-pairs", help="Use the first N pairs.")] = 1000,
    max_length: Annotated[int, typer.Option("--max-length", help="Tokens kept per sentence.")] = 128,
    plot_layer: Annotated[int, typer.Option("--plot-layer", help="Layer drawn on the 2-D map (1: the official MCL pooling layer).")] = 1,
    projection: Annotated[str, typer.Option("--projection", help="2-D map method: pca, or tsne (needs scikit-learn).")] = "pca",
    plot_pairs: Annotated[int, typer.Option("--plot-pairs", help="Pairs drawn on the 2-D map.")] = 200,
    joined_pairs: Annotated[int, typer.Option("--joined-pairs", help="Translation pairs joined by a line on the map.")] = 10,
    batch_size: BatchSize = 16,
    seed: Seed = 0,
    device: Device = "auto",
    dtype: Dtype = "auto",
    overwrite: Overwrite = False,
) -> None:
    """Per layer: cosine of translation vs random pairs, alignment, uniformity, top-1 retrieval both ways."""
    from afp_cli.analyze.alignment_run import AlignmentConfig, run_alignment

    config = AlignmentConfig(
        model=model, pairs=pairs, output_dir=output_dir, adapters=tuple(adapter or ()),
        languages=None if languages is None else tuple(code.strip() for code in languages.split(",")), layers=layers,
        pooling=pooling, max_pairs=max_pairs, batch_size=batch_size, max_length=max_length, plot_layer=plot_layer,
        projection=projection, plot_pairs=plot_pairs, joined_pairs=joined_pairs, seed=seed, device=device,
        dtype=dtype, overwrite=overwrite,
    )
    run_alignment(config)
    typer.echo(f"report: {output_dir / 'alignment.md'}")
