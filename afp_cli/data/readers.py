"""Read instruction data (Bactrian-X/Alpaca JSON or JSON lines) and parallel text (TSV or JSON lines), with line
numbers.

Readers yield one record at a time so a caller keeps only what it needs; every problem names file, line and field.
Plain and gzip-compressed files are read alike (Bactrian-X ships ``{lang}.json.gz``).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from afp_cli.errors import AfpError, located
from afp_cli.languages import get_language
from afp_cli.text_files import first_text, iter_lines, read_text

INSTRUCTION_SUFFIXES = (".json", ".jsonl", ".json.gz", ".jsonl.gz")
_SPACE = re.compile(r"[ \t\r\n]*")


@dataclass(frozen=True)
class InstructionRecord:
    """One instruction-following example of one language; ``line`` is where it starts in its file."""

    id: str
    instruction: str
    input: str
    output: str
    line: int


@dataclass(frozen=True)
class ParallelPair:
    """One translation pair in the order of the requested languages; ``id`` is the file's id or the line number."""

    id: str
    source: str
    target: str
    line: int


def find_instruction_file(folder: Path, language: str) -> Path:
    """The file of ``language`` in a Bactrian-X style folder: ``{code}.json`` (or .jsonl, .gz), ISO or FLORES code."""
    if not folder.is_dir():
        raise AfpError(f"{folder}: instruction folder not found")
    lang = get_language(language)
    candidates = [folder / f"{code}{suffix}" for code in (lang.code, lang.flores) for suffix in INSTRUCTION_SUFFIXES]
    found = [path for path in candidates if path.is_file()]
    if not found:
        raise AfpError(
            f"{folder}: no instruction file for '{lang.code}' (looked for {lang.code}.json, .jsonl, .json.gz)"
        )
    if len(found) > 1:
        raise AfpError(f"{folder}: several files for '{lang.code}' ({', '.join(p.name for p in found)}): keep one")
    return found[0]


def iter_json_objects(path: Path) -> Iterator[tuple[int, Any]]:
    """Yield (line, value) for each element of a top-level JSON list, or for each line of a JSON-lines file.

    JSON lines are streamed; a JSON list is read whole (one language of Bactrian-X is about 100 MB) and its
    elements handed out one by one.
    """
    if first_text(path) == "[":
        text = read_text(path)
        yield from _iter_json_list(path, text, text.index("[") + 1)
        return
    for number, line in iter_lines(path):
        if not line.strip():
            continue
        try:
            yield number, json.loads(line)
        except json.JSONDecodeError as error:
            raise located(path, number, None, f"not valid JSON ({error.msg}){_truncated_hint(line)}") from None


def _truncated_hint(line: str) -> str:
    # A record cut off mid-way (an interrupted download or copy) no longer ends with its closing bracket.
    return "" if line.rstrip().endswith(("}", "]")) else "; the line looks truncated"


def _iter_json_list(path: Path, text: str, position: int) -> Iterator[tuple[int, Any]]:
    # raw_decode walks the list element by element, so a bad element is reported at its own line.
    decoder = json.JSONDecoder()
    line, counted_to, first = 1, 0, True
    while True:
        position = _SPACE.match(text, position).end()
        if position >= len(text):
            raise located(path, text.count("\n") + 1, None, "JSON list is not closed with ']'")
        if text[position] == "]":
            if text[position + 1 :].strip():
                raise located(path, _line_at(text, position), None, "unexpected text after the closing ']'")
            return
        if not first:
            if text[position] != ",":
                raise located(path, _line_at(text, position), None, "expected ',' or ']' between list elements")
            position = _SPACE.match(text, position + 1).end()
        line += text.count("\n", counted_to, position)
        counted_to = position
        try:
            value, position = decoder.raw_decode(text, position)
        except json.JSONDecodeError as error:
            raise located(path, error.lineno, None, f"not valid JSON ({error.msg})") from None
        yield line, value
        first = False


def _line_at(text: str, position: int) -> int:
    return text.count("\n", 0, position) + 1


def text_field(path: Path, line: int, record: Any, field: str, required: bool = True) -> str:
    """A string field of a JSON record, stripped; ``None`` or absent counts as empty unless ``required``."""
    if not isinstance(record, dict):
        raise located(path, line, None, f"expected a JSON object, found {type(record).__name__}")
    if field not in record:
        if required:
            raise located(path, line, field, "missing")
        return ""
    value = record[field]
    if value is None:
        return ""
    if isinstance(value, (int, float)) and not isinstance(value, bool) and field == "id":
        return str(value)
    if not isinstance(value, str):
        raise located(path, line, field, f"expected a string, found {type(value).__name__}")
    return value.strip()


def read_instructions(path: Path) -> Iterator[InstructionRecord]:
    """Records ``id, instruction, input, output`` (``input`` may be absent or empty: Alpaca/Bactrian-X/Dolly style)."""
    for line, record in iter_json_objects(path):
        yield InstructionRecord(
            id=text_field(path, line, record, "id"),
            instruction=text_field(path, line, record, "instruction"),
            input=text_field(path, line, record, "input", required=False),
            output=text_field(path, line, record, "output"),
            line=line,
        )


def read_parallel(path: Path, source: str, target: str) -> Iterator[ParallelPair]:
    """Translation pairs ``source -> target`` from a TSV (header optional) or JSON lines.

    TSV: exactly two tab-separated columns. A first line made of two language codes is a header and says which
    column is which language; without one, the columns are in the order of ``source, target``.
    JSON lines: ``{"en": ..., "zh": ...}`` or the Hugging Face ``{"translation": {"en": ..., "zh": ...}}``.
    """
    if not path.is_file():
        raise AfpError(f"{path}: parallel file not found")
    name = path.name.removesuffix(".gz")
    if name.endswith((".jsonl", ".json")):
        yield from _read_parallel_jsonl(path, source, target)
    else:
        yield from _read_parallel_tsv(path, source, target)


def _read_parallel_tsv(path: Path, source: str, target: str) -> Iterator[ParallelPair]:
    wanted = (get_language(source).code, get_language(target).code)
    swap = False
    for number, line in iter_lines(path):
        if not line.strip():
            continue
        columns = line.split("\t")
        if len(columns) != 2:
            raise located(path, number, "columns", f"expected 2 tab-separated columns, found {len(columns)}")
        if number == 1 and _is_header(columns):
            header = tuple(get_language(column.strip()).code for column in columns)
            if set(header) != set(wanted):
                raise located(path, 1, "header", f"columns are {'/'.join(header)}, expected {'/'.join(wanted)}")
            swap = header != wanted
            continue
        first, second = (columns[1], columns[0]) if swap else (columns[0], columns[1])
        yield ParallelPair(id=str(number), source=first.strip(), target=second.strip(), line=number)


def _is_header(columns: list[str]) -> bool:
    try:
        for column in columns:
            get_language(column.strip())
    except AfpError:
        return False
    return True


def _read_parallel_jsonl(path: Path, source: str, target: str) -> Iterator[ParallelPair]:
    languages = (get_language(source), get_language(target))
    for line, record in iter_json_objects(path):
        nested = isinstance(record, dict) and isinstance(record.get("translation"), dict)
        holder = record["translation"] if nested else record
        texts = [text_field(path, line, holder, _language_key(holder, lang)) for lang in languages]
        record_id = text_field(path, line, record, "id", required=False) or str(line)
        yield ParallelPair(id=record_id, source=texts[0], target=texts[1], line=line)


def _language_key(holder: Any, lang) -> str:
    """Records may key texts by ISO code (``en``) or FLORES-200 code (``eng_Latn``)."""
    if isinstance(holder, dict) and lang.code not in holder and lang.flores in holder:
        return lang.flores
    return lang.code
