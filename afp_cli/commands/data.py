"""`afp data`: build AFP training mixtures (bilingual, multilingual, translation, mixes of them), describe them
(stats), and copy hub inputs to a folder for machines without internet (fetch)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from afp_cli.commands.options import OUTPUT_DIR_FLAGS, OutputFile, OverwriteFile
from afp_cli.data.mixture_config import (
    DEFAULT_TEMPLATE,
    DEFAULT_TEMPLATE_NO_INPUT,
    DEFAULT_TRANSLATION_TEMPLATES,
    Mixture,
    MixturePart,
)
from afp_cli.errors import AfpError

app = typer.Typer(
    help="Build AFP training mixtures (MCL translation pairs + CIT texts) in the paper's three modes, and show "
    "their statistics. Example: afp data bilingual --instructions bactrian-x/ --languages en zh -o en-zh.jsonl",
    no_args_is_help=True,
)

# Click options take one value each, so `--languages en zh` leaves `zh` as a positional word: the build commands
# have no other positional argument, and collect such words here as further languages.
Languages = Annotated[
    list[str],
    typer.Option("--languages", "-l", help="Language codes, pivot first: --languages en zh (ISO 639-1 or FLORES-200)."),
]
MoreLanguages = Annotated[list[str] | None, typer.Argument(hidden=True, metavar="LANGUAGES")]
# Inputs are strings, not Paths: a Path would fold the two slashes of hf://.
Instructions = Annotated[
    str,
    typer.Option(
        "--instructions",
        "-i",
        help=(
            "Folder with one {lang}.json (or .jsonl, .json.gz) per language, records id/instruction/input/output, "
            "aligned by id (Bactrian-X layout); or a hub dataset: hf://MBZUAI/Bactrian-X."
        ),
    ),
]
Parallel = Annotated[
    str,
    typer.Option(
        "--parallel",
        "-p",
        help=(
            "Translation pairs: TSV with 2 columns (header of language codes optional) or JSON lines "
            '{"en": .., "zh": ..}; or a hub dataset: hf://Helsinki-NLP/opus-100@en-zh.'
        ),
    ),
]
CrossProb = Annotated[
    float,
    typer.Option(
        "--cross-prob",
        "-x",
        help="Share of CIT examples answered in another language than the question's (0: the paper's MIT ablation).",
    ),
]
ChangeProb = Annotated[
    float,
    typer.Option(
        "--change-prob",
        "-c",
        help="multilingual: other->pivot instead of pivot->other; translation: swap the direction.",
    ),
]
Repeat = Annotated[
    float, typer.Option("--repeat", "-r", help="Examples = int(repeat x usable source records); fractions allowed.")
]
BuildSeed = Annotated[int, typer.Option("--seed", help="Same seed, same inputs: byte-identical output.")]
Template = Annotated[str, typer.Option("--template", help="CIT template for records with an input.")]
TemplateNoInput = Annotated[str, typer.Option("--template-no-input", help="CIT template for records without an input.")]
OfficialFormat = Annotated[
    bool,
    typer.Option(
        "--official-format",
        help=(
            "Write only sent0, sent1, clm_text, clm_prompt_len: the official trainer counts columns and misreads "
            "extra ones."
        ),
    ),
]
Tokenizer = Annotated[
    str | None,
    typer.Option("--tokenizer", help="Also report lengths in tokens of this tokenizer (hub name or local path)."),
]


def _languages(first: list[str], more: list[str] | None) -> list[str]:
    """``--languages en zh``, ``-l en -l zh`` and ``--languages en,zh`` all give ``["en", "zh"]``."""
    return [code for value in [*first, *(more or [])] for code in value.split(",") if code]


def _build(
    mode: str,
    languages: list[str],
    more_languages: list[str] | None,
    output: Path,
    tokenizer: str | None,
    overwrite: bool,
    official_format: bool,
    **settings,
) -> None:
    config = MixturePart(
        mode=mode, languages=_languages(languages, more_languages), audit_fields=not official_format, **settings
    )
    _write(config, output, tokenizer, overwrite)


def _write(mixture: MixturePart | Mixture, output: Path, tokenizer: str | None, overwrite: bool) -> None:
    from afp_cli.data.build import build_mixture
    from afp_cli.data.stats import render

    report = build_mixture(mixture, output, tokenizer=_load_tokenizer(tokenizer), overwrite=overwrite)
    typer.echo(render(report))
    typer.echo(f"wrote {report['examples']} examples to {output}")


def _load_tokenizer(name: str | None):
    if name is None:
        return None
    from afp_cli.model.loading import load_tokenizer

    return load_tokenizer(name)


@app.command(
    epilog=(
        "Example: afp data bilingual --instructions bactrian-x/ --languages en zh --cross-prob 0.5 --repeat 3 --seed "
        "0 -o en-zh.jsonl"
    )
)
def bilingual(
    instructions: Instructions,
    output: OutputFile,
    languages: Languages,
    more_languages: MoreLanguages = None,
    cross_prob: CrossProb = 0.5,
    repeat: Repeat = 1.0,
    seed: BuildSeed = 0,
    template: Template = DEFAULT_TEMPLATE,
    template_no_input: TemplateNoInput = DEFAULT_TEMPLATE_NO_INPUT,
    official_format: OfficialFormat = False,
    tokenizer: Tokenizer = None,
    overwrite: OverwriteFile = False,
) -> None:
    """Two languages aligned by id: MCL pairs are the aligned instructions, CIT answers cross with --cross-prob."""
    _build(
        "bilingual",
        languages,
        more_languages,
        output,
        tokenizer,
        overwrite,
        official_format,
        instructions=instructions,
        cross_prob=cross_prob,
        repeat=repeat,
        seed=seed,
        template=template,
        template_no_input=template_no_input,
    )


@app.command(
    epilog=(
        "Example: afp data multilingual --instructions bactrian-x/ --languages en zh th tr sw --cross-prob 0.5 "
        "--change-prob 0.5 -o x5.jsonl"
    )
)
def multilingual(
    instructions: Instructions,
    output: OutputFile,
    languages: Languages,
    more_languages: MoreLanguages = None,
    cross_prob: CrossProb = 0.5,
    change_prob: ChangeProb = 0.5,
    repeat: Repeat = 1.0,
    seed: BuildSeed = 0,
    template: Template = DEFAULT_TEMPLATE,
    template_no_input: TemplateNoInput = DEFAULT_TEMPLATE_NO_INPUT,
    official_format: OfficialFormat = False,
    tokenizer: Tokenizer = None,
    overwrite: OverwriteFile = False,
) -> None:
    """Pivot (first language) and others: MCL pairs pivot<->other, CIT pivot->other, other->pivot or monolingual."""
    _build(
        "multilingual",
        languages,
        more_languages,
        output,
        tokenizer,
        overwrite,
        official_format,
        instructions=instructions,
        cross_prob=cross_prob,
        change_prob=change_prob,
        repeat=repeat,
        seed=seed,
        template=template,
        template_no_input=template_no_input,
    )


@app.command(
    epilog=(
        "Example: afp data translation --parallel en-zh.tsv --languages en zh --change-prob 0.5 --repeat 1.5 -o "
        "en-zh-mt.jsonl"
    )
)
def translation(
    parallel: Parallel,
    output: OutputFile,
    languages: Languages,
    more_languages: MoreLanguages = None,
    change_prob: ChangeProb = 0.5,
    repeat: Repeat = 1.0,
    seed: BuildSeed = 0,
    translation_template: Annotated[
        list[str] | None,
        typer.Option(
            "--translation-template", help="Repeat for several; one is drawn per example. Default: the paper's two."
        ),
    ] = None,
    official_format: OfficialFormat = False,
    tokenizer: Tokenizer = None,
    overwrite: OverwriteFile = False,
) -> None:
    """Parallel sentences: MCL pairs are the translations, CIT texts ask for the translation."""
    _build(
        "translation",
        languages,
        more_languages,
        output,
        tokenizer,
        overwrite,
        official_format,
        parallel=parallel,
        change_prob=change_prob,
        repeat=repeat,
        seed=seed,
        translation_templates=list(translation_template or DEFAULT_TRANSLATION_TEMPLATES),
    )


@app.command(
    epilog=(
        "Example: afp data mix recipes/parts/bactrian-x_en-zh.yaml recipes/parts/opus-100_en-zh.yaml --seed 0 -o "
        "en-zh.train.jsonl"
    )
)
def mix(
    parts: Annotated[
        list[Path],
        typer.Argument(
            help=(
                "Part files: YAML, each one part (or a list of parts) with the keys of a recipe's data.build (mode, "
                "languages, instructions or parallel, cross_prob, change_prob, repeat, seed, templates). Relative "
                "paths are relative to the file."
            ),
            show_default=False,
        ),
    ],
    output: OutputFile,
    seed: Annotated[
        int, typer.Option("--seed", help="Mixes the parts; part i is built with seed + i unless it sets its own.")
    ] = 0,
    official_format: OfficialFormat = False,
    tokenizer: Tokenizer = None,
    overwrite: OverwriteFile = False,
) -> None:
    """Several parts in one file, interleaved at random: the official training file is a bilingual build of
    Bactrian-X (cross 0.5, repeat 3) mixed with a translation build of parallel text (change 0.5, repeat 3)."""
    from afp_cli.data.part_files import read_parts

    labels, mappings = read_parts(parts)
    if official_format:
        mappings = [{**mapping, "audit_fields": False} for mapping in mappings]
    _write(Mixture.from_mappings(mappings, seed, labels=labels), output, tokenizer, overwrite)


@app.command(
    epilog="Examples: afp data fetch --recipe recipes/xglm-564m_en-zh.yaml -o afp-inputs/ · "
    "afp data fetch --instructions hf://MBZUAI/Bactrian-X --languages en zh -o afp-inputs/"
)
def fetch(
    output_dir: Annotated[
        Path,
        typer.Option(
            *OUTPUT_DIR_FLAGS, help="Folder for the copies: one subfolder per dataset, in the layout afp data reads."
        ),
    ],
    recipe: Annotated[
        Path | None,
        typer.Option("--recipe", help="Fetch every hf:// input of this recipe's data.build.", show_default=False),
    ] = None,
    instructions: Annotated[
        str | None,
        typer.Option(
            "--instructions",
            "-i",
            help="Instruction data on the hub: hf://MBZUAI/Bactrian-X (one config per language).",
        ),
    ] = None,
    parallel: Annotated[
        str | None,
        typer.Option("--parallel", "-p", help="Parallel text on the hub: hf://Helsinki-NLP/opus-100@en-zh."),
    ] = None,
    languages: Annotated[
        list[str] | None,
        typer.Option(
            "--languages", "-l", help="Languages to fetch (instructions: one config each): --languages en zh."
        ),
    ] = None,
    more_languages: MoreLanguages = None,
    limit: Annotated[int | None, typer.Option("--limit", min=1, help="Only the first N rows of each config.")] = None,
    overwrite: OverwriteFile = False,
) -> None:
    """Copy hub inputs to a folder, for a machine without internet: fetch here, copy the folder there, point the
    recipe's instructions/parallel at it (the lines to use are printed)."""
    from afp_cli.data.fetch import fetch_inputs, inputs_of_options, inputs_of_recipe

    if recipe is not None and (instructions or parallel):
        raise AfpError("fetch: give --recipe or --instructions/--parallel, not both")
    if recipe is not None:
        from afp_cli.align.config import load_config

        data = load_config(recipe).data
        wanted = inputs_of_recipe(recipe, data.mixture() if data.build is not None else None)
    else:
        wanted = inputs_of_options(instructions, parallel, _languages(languages or [], more_languages))
    for line in fetch_inputs(wanted, output_dir, limit, overwrite):
        typer.echo(line)


@app.command(epilog="Example: afp data stats en-zh.jsonl --tokenizer facebook/xglm-564M")
def stats(
    mixture: Annotated[Path, typer.Argument(help="A mixture file (afp's or the official format).")],
    tokenizer: Tokenizer = None,
    json_path: Annotated[Path | None, typer.Option("--json", help="Also write the statistics as JSON here.")] = None,
) -> None:
    """Examples per direction (and per part of a mix), cross-lingual share, MCL pairs per language pair, length
    percentiles."""
    from afp_cli.data.build import mixture_stats
    from afp_cli.data.stats import render
    from afp_cli.report import write_json

    report = mixture_stats(mixture, tokenizer=_load_tokenizer(tokenizer))
    typer.echo(render(report))
    if json_path is not None:
        write_json(json_path, report)
