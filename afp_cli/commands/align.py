"""`afp align RECIPE.yaml [key=value ...]`: train LoRA adapters with MCL + CIT."""

from __future__ import annotations

import contextlib
import json
import signal
from pathlib import Path
from typing import Annotated

import typer

from afp_cli.commands.options import MODEL_FLAGS, OUTPUT_DIR_FLAGS, ForceUnlock
from afp_cli.evaluation.parallel import is_main_process

HELP = """Align a pre-trained causal LM with the two AFP objectives and write a PEFT adapter.

Example:

    afp align recipes/tiny-demo.yaml train.max_steps=50 --overwrite

Overrides are section.key=value pairs (train.lr=2e-5 lora.r=16 mcl.pooling=avg-1 output_dir=runs/x).

SIGTERM (a scheduler's preemption) and Ctrl-C stop after the current step with a checkpoint and exit 143 and 130:
requeue the same command with --resume (docs/align.md, Preemption and faults).
"""


def align(
    recipe: Annotated[Path, typer.Argument(help="YAML recipe (see recipes/).", show_default=False)],
    overrides: Annotated[
        list[str] | None, typer.Argument(help="section.key=value overrides.", show_default=False)
    ] = None,
    resume: Annotated[
        bool,
        typer.Option(
            "--resume",
            help="Continue from the newest intact checkpoint in "
            "output_dir (or start the run where none was written yet).",
        ),
    ] = False,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace a non-empty output_dir.")] = False,
    trust_checkpoint: Annotated[
        bool,
        typer.Option(
            "--trust-checkpoint",
            help="With --resume: load a checkpoint even though its files would run Python code when unpickled "
            "(refused by default: docs/trust.md). Only for checkpoints you wrote yourself.",
        ),
    ] = False,
    force_unlock: ForceUnlock = False,
    dry_run: Annotated[
        bool,
        typer.Option(
            "--dry-run",
            help="Validate recipe and data, print the resolved config, parameter and token counts; train nothing.",
        ),
    ] = False,
    stop_after: Annotated[
        int | None,
        typer.Option(
            "--stop-after",
            min=1,
            help="Stop after N steps this session (with a checkpoint); continue later with --resume.",
        ),
    ] = None,
    model: Annotated[
        str | None, typer.Option(*MODEL_FLAGS, help="Same as model.name_or_path=...", show_default=False)
    ] = None,
    output_dir: Annotated[
        Path | None, typer.Option(*OUTPUT_DIR_FLAGS, help="Same as output_dir=...", show_default=False)
    ] = None,
    seed: Annotated[int | None, typer.Option("--seed", help="Same as train.seed=...", show_default=False)] = None,
    device: Annotated[str | None, typer.Option("--device", help="Same as train.device=...", show_default=False)] = None,
    dtype: Annotated[str | None, typer.Option("--dtype", help="Same as model.dtype=...", show_default=False)] = None,
    batch_size: Annotated[
        int | None, typer.Option("--batch-size", help="Same as train.batch_size=...", show_default=False)
    ] = None,
) -> None:
    from afp_cli.align.config import load_config
    from afp_cli.align.train import align as run_alignment

    # the options every afp command shares are recipe keys here: they become overrides, after the key=value ones
    shared = {
        "model.name_or_path": model,
        "output_dir": output_dir,
        "train.seed": seed,
        "train.device": device,
        "model.dtype": dtype,
        "train.batch_size": batch_size,
    }
    if model is not None:
        shared["model.architecture"] = "null"  # a hub name or folder replaces a recipe's random architecture
    as_yaml = {
        key: json.dumps(str(value)) if isinstance(value, (str, Path)) and value != "null" else value
        for key, value in shared.items()
        if value is not None
    }  # quoted: a folder named 123 stays a string
    config = load_config(recipe, [*(overrides or []), *(f"{key}={value}" for key, value in as_yaml.items())])
    try:
        with _run_folder_lock(Path(config.output_dir), dry_run, force_unlock):
            result = run_alignment(
                config,
                resume=resume,
                overwrite=overwrite,
                dry_run=dry_run,
                stop_after=stop_after,
                trust_checkpoint=trust_checkpoint,
            )
    except KeyboardInterrupt:  # a second Ctrl-C: the step and any checkpoint being written were dropped
        typer.echo(f"aborted at once (a second Ctrl-C); {_where_to_continue(Path(config.output_dir))}", err=True)
        raise typer.Exit(130) from None
    if result.stopped_by is not None:
        # 128 + the signal's number, as a shell reports a process the signal ended: a scheduler's requeue logic
        # (and a job script's `[ $? -eq 143 ]`) reads it so; the checkpoint is there either way
        typer.echo(f"stopped after step {result.steps} ({result.stopped_by}); continue with --resume", err=True)
        raise typer.Exit(128 + signal.Signals[result.stopped_by])


def _run_folder_lock(output_dir: Path, dry_run: bool, force_unlock: bool):
    """The output folder's lock (afp_cli/run_lock.py), held by the main process of the launch (rank 0 under torchrun
    and accelerate, which set RANK): one lock per run, whatever the number of processes. A dry run writes nothing."""
    from afp_cli.run_lock import folder_lock

    if dry_run or not is_main_process():
        return contextlib.nullcontext()
    return folder_lock(output_dir, force_unlock)


def _where_to_continue(output_dir: Path) -> str:
    from afp_cli.align.checkpoint import list_checkpoints

    checkpoints = list_checkpoints(output_dir)
    if not checkpoints:
        return "no checkpoint was written yet: the run left nothing behind"
    return f"last complete checkpoint: {checkpoints[-1]}; continue with --resume"
