"""afp_xwinograd hooks: the data loader (tasks/afp_task_common.py) and the sentence cut at its blank."""

import sys
from pathlib import Path

_TASKS_DIR = str(Path(__file__).resolve().parents[1])
if _TASKS_DIR not in sys.path:  # lm-eval loads this file by path: make the shared module importable
    sys.path.insert(0, _TASKS_DIR)

from afp_task_common import FixedDemonstrations, load_splits  # noqa: E402,F401


def _parts(doc: dict) -> tuple[str, str]:
    """``sentence_part1`` and ``sentence_part2`` of the official code: the sentence before and after ``_``."""
    before, _, after = doc["sentence"].partition("_")
    return before, after


def before_blank(doc: dict) -> str:
    return _parts(doc)[0]


def filled_blanks(doc: dict) -> list[str]:
    after = _parts(doc)[1]
    return [doc["option1"] + after, doc["option2"] + after]
