"""Read and validate AFP training files: JSON lines with sent0, sent1, [hard_neg], clm_text, clm_prompt_len.

This is the official code's format (chongli17/CrossLingualAlignment), read as it is so existing AFP data works
unchanged; ``clm_prompt_len`` counts characters of ``clm_text`` that belong to the prompt. Extra keys
(``src_lang``, ``tgt_lang``, ``id`` written by `afp data`) are kept for auditing and ignored by training.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from afp_cli.data.readers import iter_json_objects
from afp_cli.errors import AfpError, located

HARD_NEGATIVE_KEYS = ("hard_neg", "sent2")


@dataclass(frozen=True)
class TrainingExample:
    """One line of a training file. ``line`` is 1-based, for messages."""

    line: int
    sent0: str | None
    sent1: str | None
    hard_negative: str | None
    clm_text: str | None
    clm_prompt_len: int


def read_training_file(path: str | Path, need_pairs: bool, need_instructions: bool) -> list[TrainingExample]:
    """Read every line, checking the fields the enabled objectives need; the first bad line is a user error.

    Args:
        path: the JSONL file.
        need_pairs: MCL is on, so ``sent0`` and ``sent1`` must be non-empty strings.
        need_instructions: CIT is on, so ``clm_text`` and ``clm_prompt_len`` must be present and consistent.
    """
    path = Path(path)
    if not path.is_file():
        raise AfpError(f"{path}: training file not found")
    examples: list[TrainingExample] = []
    hard_negative_key: str | None = None
    for number, record in iter_json_objects(path):
        if not isinstance(record, dict):
            raise located(path, number, None, "each line must be a JSON object")
        if not examples:
            hard_negative_key = next((key for key in HARD_NEGATIVE_KEYS if key in record), None)
        examples.append(_parse(record, path, number, need_pairs, need_instructions, hard_negative_key))
    if not examples:
        raise AfpError(f"{path}: no training examples (the file is empty)")
    return examples


def _parse(record: dict, path: Path, line: int, need_pairs: bool, need_instructions: bool,
           hard_negative_key: str | None) -> TrainingExample:
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
        if not 0 <= prompt_len < len(clm_text):
            raise located(path, line, "clm_prompt_len",
                          f"{prompt_len} leaves no answer in a clm_text of {len(clm_text)} characters")
    return TrainingExample(line, sent0, sent1, hard_negative, clm_text, int(prompt_len or 0))
