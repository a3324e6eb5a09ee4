"""afp_langrate hooks: the run's local question files, and the share of non-empty answers.

The language of each answer is scored by `afp analyze language-rate` (lingua, with an `undetermined` class);
here only `answered` is computed: the share of answers with text before their first newline.
"""

import sys
from pathlib import Path

_TASKS_DIR = str(Path(__file__).resolve().parents[1])
if _TASKS_DIR not in sys.path:  # lm-eval loads this file by path: make the shared module importable
    sys.path.insert(0, _TASKS_DIR)

from afp_task_common import FixedDemonstrations, load_splits  # noqa: E402,F401


def process_results(doc, results):
    # Leading blank lines are skipped as afp's scoring skips them: the answer may start on the next line.
    return {"answered": float(bool(results[0].lstrip().split("\n", 1)[0].strip()))}
