"""afp_xwinograd hooks: the data loader (tasks/afp_task_common.py) with a reader for the authors' ``dataset.tsv``,
and the sentence cut at its blank."""

import json
import sys
from functools import partial
from pathlib import Path
from typing import Any

_TASKS_DIR = str(Path(__file__).resolve().parents[1])
if _TASKS_DIR not in sys.path:  # lm-eval loads this file by path: make the shared module importable
    sys.path.insert(0, _TASKS_DIR)

from afp_task_common import FixedDemonstrations, LocalDataError, read_text_lines  # noqa: E402,F401
from afp_task_common import load_splits as _load_splits  # noqa: E402

# ------------------------------------------------------------------------------------- the authors' release

RELEASE_COLUMNS = ("language", "source set", "English reference", "text", "tokens", "pronoun", "candidates")
# The release tokenizes English (and French, ...) quotes as the Penn Treebank does: `` and '' for a text's ".
_QUOTE_TOKENS = {"``": '"', "''": '"'}


def _column_json(value: str, where: str, field: str) -> Any:
    try:
        return json.loads(value)
    except json.JSONDecodeError as error:
        raise LocalDataError(f"{where}: field '{field}': invalid JSON: {error.msg}") from None


def _span(value: Any, tokens: list[str], where: str, field: str) -> tuple[int, int]:
    """A ``[start, end]`` token span (end exclusive) that lies inside the tokens and is not empty."""
    if not (isinstance(value, list) and len(value) == 2 and all(isinstance(index, int) for index in value)):
        raise LocalDataError(f"{where}: field '{field}': a token span [start, end] expected, got {json.dumps(value)}")
    start, end = value
    if not 0 <= start < end <= len(tokens):
        raise LocalDataError(f"{where}: field '{field}': span [{start}, {end}] outside the {len(tokens)} tokens")
    return start, end


def _token_offsets(text: str, tokens: list[str], where: str) -> list[tuple[int, int]]:
    """Character ``(start, end)`` of each token in ``text``: the tokens appear in order, separated by spaces or
    nothing (Chinese and Japanese are tokenized without spaces)."""
    offsets, position = [], 0
    for number, token in enumerate(tokens):
        while position < len(text) and text[position].isspace():
            position += 1
        spelled = token if text.startswith(token, position) else _QUOTE_TOKENS.get(token)
        if spelled is None or not text.startswith(spelled, position):
            raise LocalDataError(
                f"{where}: field 'tokens': token {number} {json.dumps(token, ensure_ascii=False)} is not at "
                f"character {position} of the text"
            )
        offsets.append((position, position + len(spelled)))
        position += len(spelled)
    return offsets


def schema_row(columns: list[str], where: str) -> dict[str, str]:
    """One schema of the release as a row of the hub's schema: ``sentence`` with the pronoun's token span replaced
    by ``_``, ``option1``/``option2`` the two candidates in file order, ``answer`` "1" or "2" (the true one).

    The spans index the JSON tokens (``[start, end]``, end exclusive), not characters: the tokens are found in the
    text to turn the pronoun's span into characters, so the sentence keeps the text's own spacing and
    punctuation. The text is stripped (a few zh texts end with a space); candidates are filled in as spelled.
    """
    text = columns[3]
    tokens = _column_json(columns[4], where, "tokens")
    if not (isinstance(tokens, list) and tokens and all(isinstance(token, str) for token in tokens)):
        raise LocalDataError(f"{where}: field 'tokens': a JSON list of strings expected")
    pronoun = _column_json(columns[5], where, "pronoun")
    if not (isinstance(pronoun, list) and len(pronoun) == 3):
        raise LocalDataError(f"{where}: field 'pronoun': [text, [start, end], tokens] expected")
    start, end = _span(pronoun[1], tokens, where, "pronoun")
    candidates = _column_json(columns[6], where, "candidates")
    if not (isinstance(candidates, list) and len(candidates) == 2):
        count = len(candidates) if isinstance(candidates, list) else "not a list"
        raise LocalDataError(f"{where}: field 'candidates': exactly two candidates expected, got {count}")
    if not all(isinstance(c, list) and len(c) == 4 and isinstance(c[0], str) for c in candidates):
        raise LocalDataError(f"{where}: field 'candidates': each is [text, [start, end], tokens, is_correct]")
    correct = [candidate[3] is True for candidate in candidates]
    if correct.count(True) != 1:
        raise LocalDataError(f"{where}: field 'candidates': exactly one true candidate expected, got {sum(correct)}")
    offsets = _token_offsets(text, tokens, where)
    spanned = text[offsets[start][0] : offsets[end - 1][1]]
    if spanned != pronoun[0]:  # true of every row of the release: the spans index tokens, as read here
        raise LocalDataError(
            f"{where}: field 'pronoun': tokens [{start}, {end}] spell {json.dumps(spanned, ensure_ascii=False)}, "
            f"not the pronoun {json.dumps(pronoun[0], ensure_ascii=False)}"
        )
    # stripped here, not before: a token may carry the text's trailing space (a few zh texts end with one)
    before, after = text[: offsets[start][0]].lstrip(), text[offsets[end - 1][1] :].rstrip()
    if "_" in before:  # the template cuts the sentence at its first "_": it would cut here instead
        raise LocalDataError(f"{where}: field 'text': a '_' before the pronoun, where the blank must be the first")
    return {
        "sentence": f"{before}_{after}",
        "option1": candidates[0][0],
        "option2": candidates[1][0],
        "answer": "1" if correct[0] else "2",
    }


def read_release(path: Path, layout: dict[str, Any]) -> list[dict[str, str]]:
    """The schemas of ``layout["language"]`` (``en``, ``jp``, ``zh``, ...) in XWinograd's ``dataset.tsv``, in file
    order, as rows of the hub's schema (:func:`schema_row`). No header; 7 tab-separated columns a line."""
    language, rows, seen = layout["language"], [], set()
    for number, line in read_text_lines(path):
        if not line.strip():
            continue
        where = f"{path}:{number}"
        columns = line.split("\t")
        if len(columns) != len(RELEASE_COLUMNS):
            raise LocalDataError(
                f"{where}: {len(RELEASE_COLUMNS)} tab-separated columns expected ({', '.join(RELEASE_COLUMNS)}), "
                f"got {len(columns)}"
            )
        seen.add(columns[0])
        if columns[0] == language:
            rows.append(schema_row(columns, where))
    if not rows:
        raise LocalDataError(f"{path}: no schemas for language '{language}' (it has {', '.join(sorted(seen))})")
    return rows


load_splits = partial(_load_splits, readers={"xwinograd_release": read_release})

# ------------------------------------------------------------------------------------------------ the template


def _parts(doc: dict) -> tuple[str, str]:
    """``sentence_part1`` and ``sentence_part2`` of the official code: the sentence before and after ``_``."""
    before, _, after = doc["sentence"].partition("_")
    return before, after


def before_blank(doc: dict) -> str:
    return _parts(doc)[0]


def filled_blanks(doc: dict) -> list[str]:
    after = _parts(doc)[1]
    return [doc["option1"] + after, doc["option2"] + after]
