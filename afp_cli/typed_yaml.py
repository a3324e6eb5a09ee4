"""Typed sections from YAML: a recipe file and ``key=value`` overrides into dataclasses, each error with file and line.

The generic half of a recipe loader, for any stage: it knows YAML line numbers, dotted keys, typed coercion
against a field's annotation and near-miss suggestions, and nothing about which sections a stage has (afp align's
are in afp_cli/align/config.py). A section is a dataclass whose ``__post_init__`` raises ``ConfigValueError``
naming the bad field; ``build_section`` reports it at that field's line.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from afp_cli.errors import AfpError
from afp_cli.text_files import read_text


class ConfigValueError(ValueError):
    """A value rejected by ``__post_init__``; ``key`` is the field's name inside its section."""

    def __init__(self, key: str, message: str):
        super().__init__(message)
        self.key = key


@dataclass
class Located:
    """Where each key came from, for error messages: file and line, or the command-line override."""

    source: str
    lines: dict[str, int]

    def where(self, dotted_key: str) -> str:
        line = self.lines.get(dotted_key)
        if line is None:
            section = dotted_key.split(".")[0]
            line = self.lines.get(section)
        return f"{self.source}:{line}" if line else self.source


def _node_to_python(node: yaml.Node, prefix: str, lines: dict[str, int]) -> Any:
    """Convert a composed YAML node, recording the line of every mapping key (dotted, 1-based)."""
    if isinstance(node, yaml.MappingNode):
        result: dict[str, Any] = {}
        for key_node, value_node in node.value:
            key = str(key_node.value)
            dotted = f"{prefix}.{key}" if prefix else key
            lines[dotted] = key_node.start_mark.line + 1
            # free-form mappings (model.architecture) keep plain values below this point
            result[key] = _node_to_python(value_node, dotted, lines)
        return result
    if isinstance(node, yaml.SequenceNode):
        return [_node_to_python(item, prefix, lines) for item in node.value]
    return yaml.safe_load(yaml.serialize(node))


def read_recipe(path: Path) -> tuple[dict[str, Any], dict[str, int]]:
    """The recipe's mapping of sections, and the 1-based line of every dotted key in it."""
    try:
        text = read_text(path)  # not UTF-8: one line naming the line
    except FileNotFoundError:
        raise AfpError(f"{path}: recipe not found") from None
    except OSError as error:
        raise AfpError(f"{path}: cannot read recipe: {error.strerror}") from None
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        line = f":{mark.line + 1}" if mark else ""
        raise AfpError(f"{path}{line}: invalid YAML: {getattr(error, 'problem', error)}") from None
    lines: dict[str, int] = {}
    if node is None:
        return {}, lines
    if not isinstance(node, yaml.MappingNode):
        raise AfpError(f"{path}:{node.start_mark.line + 1}: a recipe must be a mapping of sections")
    return _node_to_python(node, "", lines), lines


def parse_override(text: str) -> tuple[str, Any]:
    """``train.lr=2e-5`` → ``("train.lr", 2e-5)``; values are parsed as YAML scalars/lists."""
    if "=" not in text:
        raise AfpError(f"override '{text}' must look like section.key=value (e.g. train.lr=2e-5)")
    key, raw = text.split("=", 1)
    key = key.strip()
    if not key:
        raise AfpError(f"override '{text}' has no key")
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError:
        value = raw
    return key, value


def set_dotted(tree: dict[str, Any], dotted: str, value: Any) -> None:
    """Set ``tree["train"]["lr"]`` for ``train.lr``, making the sections on the way."""
    parts = dotted.split(".")
    node = tree
    for part in parts[:-1]:
        child = node.get(part)
        if child is None:
            child = node[part] = {}
        if not isinstance(child, dict):
            raise AfpError(f"override '{dotted}': '{part}' is not a section")
        node = child
    node[parts[-1]] = value


def build_section(section: str, cls: type, values: dict[str, Any], where) -> Any:
    """``cls(**values)``, every value checked against its field's type, every error at its key's ``where``."""
    known = {f.name: f for f in dataclasses.fields(cls)}
    kwargs = {}
    for key, value in values.items():
        dotted = f"{section}.{key}"
        if key not in known:
            raise AfpError(f"{where(dotted)}: unknown key '{dotted}'{suggest(key, known)}")
        kwargs[key] = coerce(dotted, known[key].type, value, where)
    try:
        return cls(**kwargs)
    except ConfigValueError as error:
        dotted = f"{section}.{error.key}"
        raise AfpError(f"{where(dotted)}: '{dotted}' {error}") from None


def suggest(key: str, known) -> str:
    """`` (did you mean 'x'?)`` for the closest of ``known``, or nothing."""
    import difflib

    close = difflib.get_close_matches(key, list(known), n=1)
    return f" (did you mean '{close[0]}'?)" if close else ""


_SCIENTIFIC = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+")


def coerce(dotted: str, annotation: Any, value: Any, where) -> Any:
    """Check a value against its field's annotation (string form, as ``from __future__ import annotations``).

    A union (``list[str] | str | None``) accepts a value any of its members accepts.
    """
    expected = str(annotation)
    members = [member.strip() for member in expected.split("|")]
    if value is None:
        if "None" in members:
            return None
        raise AfpError(f"{where(dotted)}: '{dotted}' must not be empty")
    for member in members:
        if member == "None":
            continue
        accepted, converted = _accepts(member, value)
        if accepted:
            return converted
    kind = " or ".join(member for member in members if member != "None")
    raise AfpError(f"{where(dotted)}: '{dotted}' must be {kind}, got {value!r}")


def _accepts(member: str, value: Any) -> tuple[bool, Any]:
    if member == "bool":
        return isinstance(value, bool), value
    if member == "int":
        return isinstance(value, int) and not isinstance(value, bool), value
    if member == "float":
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return True, float(value)
        # YAML 1.1 reads "1e-4" (no dot) as a string; accept the notation everyone writes learning rates in.
        if isinstance(value, str) and _SCIENTIFIC.fullmatch(value):
            return True, float(value)
        return False, value
    if member == "str":
        return isinstance(value, str), value
    if member == "list[str]":
        return isinstance(value, list) and all(isinstance(item, str) for item in value), value
    if member.startswith("dict"):
        return isinstance(value, dict), value
    if member.startswith("list"):
        return isinstance(value, list), value
    raise TypeError(f"config field type {member!r} has no check")  # a field type afp does not know yet: a bug
