"""Read and validate AFP training files: JSON lines with sent0, sent1, [hard negative], clm_text, clm_prompt_len.

This is the official code's format (chongli17/CrossLingualAlignment), read as it is so existing AFP data works
unchanged; ``clm_prompt_len`` counts characters of ``clm_text`` that belong to the prompt.

- **Hard negative.** The official trainer (src/train.py) drops ``clm_text`` and ``clm_prompt_len`` from the
  columns and reads a third remaining column, whatever its name, as the hard negative. afp does the same, after
  also setting aside the audit fields `afp data` writes (``src_lang``, ``tgt_lang``, ``id``, ``sent0_lang``,
  ``sent1_lang``, ``part``), which training ignores. More than one such column is an error, as it is there.
- **Empty answers.** The official builder writes lines whose answer is empty (Bactrian-X records with an empty
  output): ``clm_prompt_len == len(clm_text)``. Such a line gives CIT nothing to learn (with EOS appended it would
  even teach the model to stop at once), and each line feeds both objectives of a step, so with CIT on afp skips
  the whole line and counts it (one warning names the first); the official trainer keeps them.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from afp_cli.data.readers import iter_json_objects
from afp_cli.errors import AfpError, located

CIT_KEYS = ("clm_text", "clm_prompt_len")
AUDIT_KEYS = ("src_lang", "tgt_lang", "id", "sent0_lang", "sent1_lang", "part")


@dataclass(frozen=True)
class TrainingExample:
    """One line of a training file. ``line`` is 1-based, for messages."""

    line: int
    sent0: str | None
    sent1: str | None
    hard_negative: str | None
    clm_text: str | None
    clm_prompt_len: int
    # the audit fields sent0_lang / sent1_lang when the line has both (`afp data` writes them; the translation build
    # swaps a pair's columns at random, so held-out retrieval orients each pair by them: afp_cli/align/held_out.py)
    pair_languages: tuple[str, str] | None = None


def _warn(message: str) -> None:
    warnings.warn(message, stacklevel=3)


def read_training_file(
    path: str | Path, need_pairs: bool, need_instructions: bool, warn: Callable[[str], object] = _warn
) -> list[TrainingExample]:
    """Read every line, checking the fields the enabled objectives need; the first bad line is a user error.

    Args:
        path: the JSONL file.
        need_pairs: MCL is on, so ``sent0`` and ``sent1`` must be non-empty strings.
        need_instructions: CIT is on, so ``clm_text`` and ``clm_prompt_len`` must be present and consistent.
        warn: called once with a one-line summary when lines without a training signal were skipped.
    """
    path = Path(path)
    if not path.is_file():
        raise AfpError(f"{path}: training file not found")
    examples: list[TrainingExample] = []
    skipped: list[int] = []
    hard_negative_key: str | None = None
    for number, record in iter_json_objects(path):
        if not isinstance(record, dict):
            raise located(path, number, None, "each line must be a JSON object")
        if not examples and not skipped:
            hard_negative_key = hard_negative_column(path, number, record)
        example = _parse(record, path, number, need_pairs, need_instructions, hard_negative_key)
        if need_instructions and not example.clm_text[example.clm_prompt_len :].strip():
            skipped.append(number)
        else:
            examples.append(example)
    if not examples and not skipped:
        raise AfpError(f"{path}: no training examples (the file is empty)")
    if not examples:
        raise AfpError(
            f"{path}: all {len(skipped)} lines have an empty answer (clm_prompt_len = len(clm_text)): "
            "nothing for CIT to learn"
        )
    if skipped:
        warn(
            f"skipped {len(skipped)} of {len(skipped) + len(examples)} lines with an empty answer "
            f"(clm_prompt_len = len(clm_text), no CIT target); first: {path}:{skipped[0]}"
        )
    return examples


def hard_negative_column(path: Path, line: int, record: dict) -> str | None:
    """The column read as the hard negative: the one left besides sent0, sent1, the CIT and the audit fields."""
    extra = [key for key in record if key not in ("sent0", "sent1", *CIT_KEYS, *AUDIT_KEYS)]
    if len(extra) > 1:
        raise located(
            path,
            line,
            extra[1],
            f"too many columns: {', '.join(extra)} besides sent0, sent1, clm_text "
            "and clm_prompt_len; a training line holds at most one hard negative",
        )
    return extra[0] if extra else None


def _parse(
    record: dict, path: Path, line: int, need_pairs: bool, need_instructions: bool, hard_negative_key: str | None
) -> TrainingExample:
    def text(key: str, required: bool) -> str | None:
        value = record.get(key)
        if value is None:
            if required:
                raise located(path, line, key, "missing")
            return None
        if not isinstance(value, str):
            raise located(path, line, key, f"must be a string, got {type(value).__name__}")
        if required and not value.strip():
            raise located(path, line, key, "is empty")
        return value

    sent0 = text("sent0", need_pairs)
    sent1 = text("sent1", need_pairs)
    hard_negative = text(hard_negative_key, need_pairs) if hard_negative_key else None
    clm_text = text("clm_text", need_instructions)
    prompt_len = record.get("clm_prompt_len", 0 if not need_instructions else None)
    if need_instructions:
        if prompt_len is None:
            raise located(path, line, "clm_prompt_len", "missing")
        if isinstance(prompt_len, bool) or not isinstance(prompt_len, int):
            raise located(path, line, "clm_prompt_len", f"must be an integer (characters), got {prompt_len!r}")
        if not 0 <= prompt_len <= len(clm_text):
            raise located(
                path,
                line,
                "clm_prompt_len",
                f"{prompt_len} leaves no answer in a clm_text of {len(clm_text)} characters",
            )
    return TrainingExample(line, sent0, sent1, hard_negative, clm_text, int(prompt_len or 0), _pair_languages(record))


def _pair_languages(record: dict) -> tuple[str, str] | None:
    """Both audit fields as given, or None (training ignores them otherwise, so an odd value is not an error)."""
    languages = (record.get("sent0_lang"), record.get("sent1_lang"))
    if all(isinstance(code, str) and code for code in languages):
        return languages
    return None
