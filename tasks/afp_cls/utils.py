"""afp_cls hooks: local NCLS-style JSONL loading and ROUGE-1/2/L with CJK-aware tokenization."""

import sys
from pathlib import Path

_TASKS_DIR = str(Path(__file__).resolve().parents[1])
if _TASKS_DIR not in sys.path:  # lm-eval loads this file by path: make the shared module importable
    sys.path.insert(0, _TASKS_DIR)

from afp_task_common import FixedDemonstrations, first_line, load_splits, rouge_scores  # noqa: E402,F401


def process_results(doc, results):
    return rouge_scores(first_line(results[0]), doc["summary"])
