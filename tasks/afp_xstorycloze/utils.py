"""afp_xstorycloze hooks: the data loader (hub, or local files under data_dir); the code lives in
tasks/afp_task_common.py."""

import sys
from pathlib import Path

_TASKS_DIR = str(Path(__file__).resolve().parents[1])
if _TASKS_DIR not in sys.path:  # lm-eval loads this file by path: make the shared module importable
    sys.path.insert(0, _TASKS_DIR)

from afp_task_common import FixedDemonstrations, load_splits  # noqa: E402,F401
