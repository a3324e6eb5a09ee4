"""`afp align RECIPE.yaml [key=value ...]`: train LoRA adapters with MCL + CIT."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

HELP = """Align a pre-trained causal LM with the two AFP objectives and write a PEFT adapter.

Example:

    afp align recipes/tiny-demo.yaml train.max_steps=50 --overwrite

Overrides are section.key=value pairs (train.lr=2e-5 lora.r=16 mcl.pooling=avg-1 output_dir=runs/x).
"""


def align(
    recipe: Annotated[Path, typer.Argument(help="YAML recipe (see recipes/).", show_default=False)],
    overrides: Annotated[Optional[list[str]], typer.Argument(help="section.key=value overrides.",
                                                              show_default=False)] = None,
    resume: Annotated[bool, typer.Option("--resume", help="Continue from the last checkpoint in output_dir.")] = False,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace a non-empty output_dir.")] = False,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Validate recipe and data, print the resolved config, "
                                                            "parameter and token counts; train nothing.")] = False,
    stop_after: Annotated[Optional[int], typer.Option("--stop-after", min=1, help="Stop after N steps this session "
                                                      "(with a checkpoint); continue later with --resume.")] = None,
) -> None:
    from afp_cli.config import load_config
    from afp_cli.train import align as run_alignment

    config = load_config(recipe, overrides or [])
    run_alignment(config, resume=resume, overwrite=overwrite, dry_run=dry_run, stop_after=stop_after)
