"""The options every afp command shares, defined once so the same option has the same name everywhere.

`-m/--model`, `-a/--adapter`, `-o/--output-dir`, `--overwrite`, `--seed`, `--device`, `--dtype` and
`--batch-size` mean the same thing in `afp evaluate`, `afp analyze …` and `afp data …`; a command that needs
another help text or default still uses the name and short flag from here (``typer.Option(*MODEL_FLAGS, …)``).
The one exception: `afp data`'s builders write one file, so their `-o` is `--output`, a file (``OutputFile``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from afp_cli.model.precision import SCORING_AUTO_HELP
from afp_cli.run_lock import FORCE_UNLOCK

MODEL_FLAGS = ("--model", "-m")
ADAPTER_FLAGS = ("--adapter", "-a")
OUTPUT_DIR_FLAGS = ("--output-dir", "-o")
OUTPUT_FILE_FLAGS = ("--output", "-o")  # afp data: a file, where every other command's -o is a folder

Model = Annotated[str, typer.Option(*MODEL_FLAGS, help="Base model: hub name or local folder.", show_default=False)]
OptionalModel = Annotated[
    str | None, typer.Option(*MODEL_FLAGS, help="Base model: hub name or local folder.", show_default=False)
]
Adapters = Annotated[
    list[str] | None,
    typer.Option(
        *ADAPTER_FLAGS,
        help="PEFT adapter folder trained on --model; repeat for several (each shown beside the base).",
        show_default=False,
    ),
]
OutputDir = Annotated[Path, typer.Option(*OUTPUT_DIR_FLAGS, help="Folder for the results (Markdown, JSON, PNG).")]
Overwrite = Annotated[bool, typer.Option("--overwrite", help="Replace existing results in the output folder.")]
OutputFile = Annotated[
    Path, typer.Option(*OUTPUT_FILE_FLAGS, help="Output JSON lines file (a .meta.json goes beside it).")
]
OverwriteFile = Annotated[bool, typer.Option("--overwrite", help="Replace an existing output file.")]
Seed = Annotated[int, typer.Option("--seed", help="Seed for every random choice (demonstrations, sampling, pairs).")]
Device = Annotated[str, typer.Option("--device", help="auto (CUDA when present), cpu, cuda, cuda:1, ...")]
Dtype = Annotated[str, typer.Option("--dtype", help=f"{SCORING_AUTO_HELP}, float32, bfloat16, float16.")]
AllowOtherBase = Annotated[
    bool,
    typer.Option(
        "--allow-other-base",
        help="Load adapters even on a base model whose architecture or weights differ from the "
        "one they were trained on (by default refused; a base that differs only in its path is accepted with a "
        "warning).",
    ),
]
BatchSize = Annotated[int, typer.Option("--batch-size", min=1, help="Sequences per forward pass.")]
MaxGenToks = Annotated[
    int | None,
    typer.Option(
        "--max-gen-toks",
        min=1,
        help="Generate at most N new tokens per answer (lower than a task's own max_gen_toks "
        "only; e.g. 64 for sentence-level translation on a CPU). Default: each task's own.",
        show_default=False,
    ),
]
ForceUnlock = Annotated[
    bool,
    typer.Option(
        FORCE_UNLOCK,
        help="Take over the output folder's lock even though its holder may still run (it ran on another host, "
        "where afp cannot tell whether it is gone). A holder gone on this host is taken over without it.",
    ),
]
