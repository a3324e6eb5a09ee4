"""Write reports a person reads (Markdown tables) and a program reads (JSON), atomically.

Shared by `afp evaluate` and `afp analyze` so every report looks alike and none is ever half-written.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from afp_cli.errors import AfpError


def write_atomically(path: str | Path, data: str | bytes) -> Path:
    """Write to a temporary file beside ``path``, then rename: readers see the old file or the whole new one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    mode = "wb" if isinstance(data, bytes) else "w"
    handle, temp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, mode, **({} if isinstance(data, bytes) else {"encoding": "utf-8"})) as file:
            file.write(data)
        os.chmod(temp_name, 0o666 & ~_umask())  # mkstemp makes 0600; a report should get the usual permissions
        os.replace(temp_name, path)
    except BaseException:
        Path(temp_name).unlink(missing_ok=True)
        raise
    return path


def _umask() -> int:
    current = os.umask(0)
    os.umask(current)
    return current


def write_json(path: str | Path, payload: Any) -> Path:
    return write_atomically(path, json.dumps(payload, ensure_ascii=False, indent=2) + "\n")


def format_cell(value: Any, digits: int = 4) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value).replace("|", "\\|")


def markdown_table(rows: Sequence[dict[str, Any]], columns: Sequence[str], digits: int = 4) -> str:
    """A GitHub Markdown table of ``rows`` restricted to ``columns`` (missing cells show as –)."""
    header = "| " + " | ".join(columns) + " |"
    rule = "|" + "|".join("---" for _ in columns) + "|"
    body = ["| " + " | ".join(format_cell(row.get(column), digits) for column in columns) + " |" for row in rows]
    return "\n".join([header, rule, *body]) + "\n"


def refuse_existing(paths: Sequence[str | Path], overwrite: bool) -> None:
    """An existing report is not replaced unless the user asked for it (``--overwrite``)."""
    if overwrite:
        return
    existing = [str(path) for path in paths if Path(path).exists()]
    if existing:
        raise AfpError(f"{existing[0]} already exists: pass --overwrite to replace it")
