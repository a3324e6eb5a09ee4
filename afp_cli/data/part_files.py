"""Read `afp data mix` part files: YAML, each one part or a list of parts, with paths relative to the file."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from afp_cli.data.hub import is_hub_reference
from afp_cli.errors import AfpError
from afp_cli.text_files import read_text

INPUT_KEYS = ("instructions", "parallel")


def read_parts(paths: list[Path]) -> tuple[list[str], list[dict[str, Any]]]:
    """(a label naming each part's file, the part mappings), in the order given."""
    labels, parts = [], []
    for path in paths:
        if not path.is_file():
            raise AfpError(f"{path}: part file not found")
        try:
            loaded = yaml.safe_load(read_text(path))
        except yaml.YAMLError as error:
            mark = getattr(error, "problem_mark", None)
            line = f":{mark.line + 1}" if mark else ""
            raise AfpError(f"{path}{line}: invalid YAML: {getattr(error, 'problem', error)}") from None
        items = loaded if isinstance(loaded, list) else [loaded]
        for index, item in enumerate(items):
            label = f"{path}[{index}]" if isinstance(loaded, list) else str(path)
            if not isinstance(item, dict):
                raise AfpError(
                    f"{label}: a part is a mapping (mode, languages, instructions or parallel, ...), got {item!r}"
                )
            labels.append(label)
            parts.append(_resolve_paths(item, path.parent))
    return labels, parts


def _resolve_paths(part: dict[str, Any], folder: Path) -> dict[str, Any]:
    resolved = dict(part)
    for key in INPUT_KEYS:
        value = part.get(key)
        if isinstance(value, str) and not is_hub_reference(value) and not Path(value).expanduser().is_absolute():
            resolved[key] = str((folder / value).resolve())
    return resolved
