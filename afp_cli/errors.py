"""The one user-facing error type: a mistake the user can fix, reported in one line with exit code 2."""

from __future__ import annotations

import sys
from pathlib import Path

EXIT_USER_ERROR = 2


class AfpError(Exception):
    """A problem with the user's input (recipe, data, paths, options).

    The CLI prints ``error: <message>`` on one line and exits with code 2, without a traceback.
    Bugs in afp itself must not use this type: they keep their traceback.
    """

    exit_code = EXIT_USER_ERROR


def located(path: str | Path, line: int | None, field: str | None, message: str) -> AfpError:
    """Build an error that names where the problem is: ``file:line: field 'x': message``."""
    where = str(path) if line is None else f"{path}:{line}"
    what = f"field '{field}': " if field else ""
    return AfpError(f"{where}: {what}{message}")


def warn(message: str) -> None:
    """A warning the user should read (a fallback taken, a value capped): one line on stderr, never on stdout."""
    print(f"warning: {' '.join(message.split())}", file=sys.stderr)
