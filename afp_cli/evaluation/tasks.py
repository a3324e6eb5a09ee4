"""Find afp's task folder, register it with lm-eval, and check task names and local data before any model loads.

lm-eval indexes its ~15k built-in tasks in tens of seconds, so the built-ins are indexed only when a requested
name is not one of afp's own tasks.
"""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any

from afp_cli.errors import AfpError


def default_include_path() -> Path:
    """afp's task folder: ``afp_cli/tasks`` in an installed wheel, else ``tasks/`` at the repository root
    (a checkout or an editable install)."""
    package = Path(__file__).resolve().parents[1]
    installed = package / "tasks"
    return installed if installed.is_dir() else package.parent / "tasks"


def resolve_include_path(include_path: str | Path | None) -> Path:
    path = Path(include_path) if include_path is not None else default_include_path()
    if not path.is_dir():
        where = "--include-path" if include_path is not None else "the default task folder"
        raise AfpError(f"{path}: task folder not found ({where}); pass --include-path to afp's tasks/ folder")
    return path


def build_task_manager(include_path: Path, names: list[str], data_dir: str | Path | None):
    """A TaskManager with afp's tasks, plus lm-eval's built-ins only when ``names`` need them; its ``hooks``
    adjust each task as a run loads it (see run_tasks.py)."""
    from afp_cli.evaluation.run_tasks import RunTaskManager

    metadata = {"data_dir": str(Path(data_dir).resolve())} if data_dir is not None else None
    own = RunTaskManager(include_path=str(include_path), include_defaults=False, metadata=metadata)
    if all(name in own.all_tasks for name in names):
        return own
    return RunTaskManager(include_path=str(include_path), include_defaults=True, metadata=metadata)


def check_task_names(manager, names: list[str]) -> None:
    """Unknown task or group name: one line naming the closest known names."""
    known = manager.all_tasks
    for name in names:
        if name not in known:
            close = difflib.get_close_matches(name, known, n=3, cutoff=0.6)
            hint = f"; did you mean {', '.join(close)}?" if close else ""
            raise AfpError(f"unknown task or group '{name}'{hint} (see `lm_eval ls tasks` and afp's tasks/ folder)")


def with_demo_language(manager, names: list[str], demo_language: str | None) -> list[str]:
    """``--demo-lang en``: each task or group becomes its cross-lingual demonstration variant ``…_demo_en``."""
    if demo_language is None:
        return list(names)
    renamed = []
    for name in names:
        variant = f"{name}_demo_{demo_language}"
        if variant not in manager.all_tasks:
            raise AfpError(
                f"task '{name}' has no variant with demonstrations in '{demo_language}' (no task '{variant}')"
            )
        renamed.append(variant)
    return renamed


def leaf_tasks(manager, names: list[str]) -> list[str]:
    """The tasks that ``names`` stand for, groups expanded (in order, without repeats)."""
    leaves: list[str] = []

    def visit(name: str) -> None:
        entry = manager.task_index.get(name)
        members = (entry.cfg or {}).get("task") if entry is not None and entry.kind.name in {"GROUP", "TAG"} else None
        if isinstance(members, list):
            for member in members:
                visit(member if isinstance(member, str) else member.get("task", ""))
        elif name not in leaves:
            leaves.append(name)

    for name in names:
        visit(name)
    return leaves


def task_common():
    """``tasks/afp_task_common.py``, the loader every afp task runs, imported as the tasks' ``utils.py`` import it
    (so that this check and the loader apply one rule for local files, not two copies of it)."""
    import importlib
    import sys

    folder = str(default_include_path())
    if folder not in sys.path:
        sys.path.insert(0, folder)
    return importlib.import_module("afp_task_common")


def _loads_from_hub(spec: dict[str, Any]) -> bool:
    parts = [spec["source"], spec["target"]] if "source" in spec else [spec]
    return all("hub_path" in part for part in parts)


def needs_demonstrations(config: dict[str, Any], shots: list[int] | None) -> bool:
    """Whether a run reads the task's demonstration split: some requested k > 0, or without ``--num-fewshot`` the
    task's own ``num_fewshot`` > 0 (afp_cls: one-shot)."""
    if shots is not None:
        return any(k > 0 for k in shots)
    return int(config.get("num_fewshot") or 0) > 0


def check_local_data(manager, names: list[str], data_dir: str | Path | None, shots: list[int] | None = None) -> None:
    """Every afp task to run finds its local files under ``data_dir`` (lm-eval's built-ins use the hub); the
    demonstration file only when some run has k > 0 (a 0-shot run never reads it: tasks/afp_task_common.py)."""
    common = task_common()
    for task in leaf_tasks(manager, names):
        entry = manager.task_index.get(task)
        config = (entry.cfg or {}) if entry is not None else {}
        splits = dict((config.get("dataset_kwargs") or {}).get("splits") or {})
        if not needs_demonstrations(config, shots):
            splits.pop(config.get("fewshot_split"), None)
        for spec in splits.values():
            if data_dir is not None:
                try:
                    common.choose_layout(spec, data_dir)  # exactly one layout present, as the loader requires
                except common.LocalDataError as error:
                    raise AfpError(f"{error} (task '{task}' reads it from --data-dir)") from None
            elif not _loads_from_hub(spec):
                needs = common.first_local_file(spec)
                raise AfpError(f"task '{task}' has no hub dataset that loads: pass --data-dir with {needs}")
