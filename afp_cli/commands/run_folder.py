"""What the commands that write a run folder share: the ``--force-unlock`` option, and the exact command that
continues a stopped run (``--resume`` in place of ``--overwrite``)."""

from __future__ import annotations

import shlex
import sys
from typing import Annotated

import typer

from afp_cli.run_lock import FORCE_UNLOCK

ForceUnlock = Annotated[
    bool,
    typer.Option(
        FORCE_UNLOCK,
        help="Take over the output folder's lock even though its holder may still run (it ran on another host, "
        "where afp cannot tell whether it is gone). A holder gone on this host is taken over without it.",
    ),
]


def continue_command(argv: list[str] | None = None) -> str:
    """``afp <the arguments of this run> --resume`` (without ``--overwrite``), quoted for a shell."""
    dropped = ("--overwrite", "--resume", "--force-unlock")
    arguments = [arg for arg in (sys.argv[1:] if argv is None else argv) if arg not in dropped]
    return shlex.join(["afp", *arguments, "--resume"])
