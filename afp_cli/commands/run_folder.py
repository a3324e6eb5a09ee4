"""What the commands that write a run folder share: the exact command that continues a stopped run (``--resume`` in
place of ``--overwrite``), and the lock of a report folder (its ``--force-unlock`` option is in options.py)."""

from __future__ import annotations

import contextlib
import shlex
import sys
from collections.abc import Iterator
from pathlib import Path

import typer

from afp_cli.evaluation.parallel import is_main_process


def continue_command(argv: list[str] | None = None) -> str:
    """``afp <the arguments of this run> --resume`` (without ``--overwrite``), quoted for a shell."""
    dropped = ("--overwrite", "--resume", "--force-unlock")
    arguments = [arg for arg in (sys.argv[1:] if argv is None else argv) if arg not in dropped]
    return shlex.join(["afp", *arguments, "--resume"])


def say_stopped(stop, kept_in: Path, cells: str = "cells") -> None:
    """A run a signal stopped (evaluation/runner.py's EvaluationStopped): one line naming the kept cells and the
    command that continues, then the exit a shell gives a process that signal ended (143, 130). A launch's other
    processes only exit."""
    if is_main_process():
        kept = "; ".join(key.describe() for key in stop.done) or "none"
        typer.echo(
            f"stopped ({stop.signal_name}) with {len(stop.done)} of {stop.total} {cells} done and kept in {kept_in} "
            f"({kept}); continue with: {continue_command()}",
            err=True,
        )
    raise typer.Exit(stop.exit_code) from None


@contextlib.contextmanager
def report_folder(output_dir: Path, force_unlock: bool) -> Iterator[None]:
    """A command that writes its report whole at the end (afp analyze): its folder's lock for the body, and Ctrl-C
    told as what it is, nothing kept, instead of a bare exit 130."""
    from afp_cli.run_lock import folder_lock

    # several launched processes (torchrun): the main one holds the lock, as for afp align and afp evaluate
    try:
        with folder_lock(output_dir, force_unlock) if is_main_process() else contextlib.nullcontext():
            yield
    except KeyboardInterrupt:
        typer.echo(
            f"aborted (Ctrl-C): nothing was written to {output_dir} (its report and generations are written whole, at "
            "the end); run the same command again",
            err=True,
        )
        raise typer.Exit(130) from None
