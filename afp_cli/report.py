"""Write reports a person reads (Markdown tables) and a program reads (JSON), atomically.

Shared by `afp evaluate` and `afp analyze` so every report looks alike and none is ever half-written.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from afp_cli.errors import AfpError
from afp_cli.text_files import write_atomically


def json_text(payload: Any) -> str:
    """How afp writes every JSON report: UTF-8 as it is (Chinese stays readable), indented, newline-terminated."""
    return json.dumps(payload, ensure_ascii=False, indent=2) + "\n"


def write_json(path: str | Path, payload: Any, what: str | None = None) -> Path:
    return write_atomically(path, json_text(payload), what)


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
