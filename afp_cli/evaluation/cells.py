"""The cells of an evaluation run on disk: what the run is (its manifest), one folder per (model, shots, seed) cell
written whole, and which cells a resume can keep.

A cell folder holds lm-eval's ``results.json``, one ``samples_<task>.jsonl`` per task and ``cell.json`` (which cell,
the run it belongs to, the SHA-256 of each file); it is written through a temporary folder renamed at the end, so a
killed cell is absent, never half there. The comparison is always built from these folders, in an uninterrupted run
as in a resumed one, so the two are the same by construction: nothing the comparison reads lives only in memory.

The manifest (``evaluate_run.json``) is written when a run starts and names everything that decides a cell's
numbers: the base model (a local folder by its files' hashes, a hub name by its cached revision), each adapter by
the hashes of its files, the tasks and the hash of their definitions, the local data files a run reads by hash,
shots, seeds, limit, demonstrations, generation budget, bootstrap, backend and numerics. ``--resume`` compares it
with the run's: the first key that differs is the one line of the refusal.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from afp_cli.errors import AfpError
from afp_cli.report import json_text
from afp_cli.text_files import folder_atomically, sha256_file, write_atomically

MANIFEST = "evaluate_run.json"
CELL_FILE = "cell.json"
RAW = "raw"
MANIFEST_FORMAT = 1
_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".gguf")
_TASK_SUFFIXES = (".yaml", ".py", "_default_template_yaml")


@dataclass(frozen=True)
class CellKey:
    """One lm-eval run: a model (``base`` or an adapter's label), the shots asked for (None: each task's own) and
    a seed."""

    model: str
    shots: int | None
    seed: int

    def describe(self) -> str:
        shots = "own shots" if self.shots is None else f"{self.shots}-shot"
        return f"{self.model} {shots} seed {self.seed}"


# ------------------------------------------------------------------------------------------- the manifest


def model_identity(model: str) -> dict[str, Any]:
    """A local model folder by the hashes of its config and weights (its path may move); a hub name with the
    revision of its cached snapshot, where one is cached."""
    folder = Path(model)
    if folder.is_dir():
        return {
            "files": {
                path.name: sha256_file(path)
                for path in sorted(folder.iterdir())
                if path.is_file() and (path.name == "config.json" or path.name.endswith(_WEIGHT_SUFFIXES))
            }
        }
    return {"name": model, "revision": _cached_revision(model)}


def _cached_revision(name: str) -> str | None:
    try:
        from huggingface_hub import try_to_load_from_cache

        cached = try_to_load_from_cache(name, "config.json")
    except Exception:  # noqa: BLE001 - a name the hub library cannot parse: no revision to record
        return None
    return Path(cached).parent.name if isinstance(cached, str) else None


def adapter_identity(folder: str) -> dict[str, str]:
    """An adapter by the hashes of its config and weights (``adapter_config.json``, ``adapter_model.*``)."""
    return {
        path.name: sha256_file(path)
        for path in sorted(Path(folder).iterdir())
        if path.is_file() and path.name.startswith(("adapter_config", "adapter_model"))
    }


def folder_digest(folder: Path) -> str:
    """One SHA-256 over the task definitions under ``folder`` (YAML, templates, Python), names included."""
    digest = hashlib.sha256()
    for path in sorted(folder.rglob("*")):
        if path.is_file() and path.name.endswith(_TASK_SUFFIXES) and "__pycache__" not in path.parts:
            digest.update(path.relative_to(folder).as_posix().encode() + b"\0")
            digest.update(path.read_bytes() + b"\0")
    return digest.hexdigest()


def local_data_files(manager, names: list[str], data_dir: str | None, shots: list[int] | None) -> dict[str, str]:
    """The local files the run's afp tasks read under ``data_dir``, by path relative to it, with their hashes (the
    same choice of layout and of demonstration split as evaluation/tasks.py:check_local_data)."""
    from afp_cli.evaluation import tasks as task_lookup

    if data_dir is None:
        return {}
    common = task_lookup.task_common()
    files: dict[str, str] = {}
    for task in task_lookup.leaf_tasks(manager, names):
        entry = manager.task_index.get(task)
        config = (entry.cfg or {}) if entry is not None else {}
        splits = dict((config.get("dataset_kwargs") or {}).get("splits") or {})
        if not task_lookup.needs_demonstrations(config, shots):
            splits.pop(config.get("fewshot_split"), None)
        for spec in splits.values():
            for path in common.layout_files(common.choose_layout(spec, data_dir), data_dir):
                files[Path(path).relative_to(data_dir).as_posix()] = sha256_file(Path(path))
    return dict(sorted(files.items()))


def first_difference(saved: Any, current: Any, where: str = "") -> tuple[str, Any, Any] | None:
    """The first key (dotted path, in the manifest's order) whose value differs, with both values; None if equal."""
    if isinstance(saved, dict) and isinstance(current, dict):
        for key in [*current, *(key for key in saved if key not in current)]:
            found = first_difference(saved.get(key), current.get(key), f"{where}.{key}" if where else str(key))
            if found is not None:
                return found
        return None
    return None if saved == current else (where, saved, current)


def _shown(value: Any) -> str:
    text = json.dumps(value, ensure_ascii=False)
    return text if len(text) <= 72 else text[:69] + "..."  # room for a SHA-256


def check_same_run(path: Path, saved: dict[str, Any], current: dict[str, Any]) -> None:
    """``--resume``: the run whose manifest is ``saved`` was started with the arguments of ``current``, or one line
    naming the first key that differs."""
    difference = first_difference({key: value for key, value in saved.items() if key != "run_id"}, current)
    if difference is not None:
        key, then, now = difference
        raise AfpError(
            f"{path}: --resume continues a run with other arguments: {key} was {_shown(then)}, now {_shown(now)}; "
            "rerun with the run's arguments, or start it again with --overwrite"
        )


def read_manifest(output_dir: Path, name: str = MANIFEST) -> dict[str, Any] | None:
    """The manifest of the run in ``output_dir`` (``name``: afp analyze language-rate keeps its own beside
    evaluate's); None when no run was started there."""
    path = output_dir / name
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as error:
        raise AfpError(f"{path}: unreadable ({error}); start the run again with --overwrite") from None


def write_manifest(output_dir: Path, manifest: dict[str, Any], run_id: str, name: str = MANIFEST) -> None:
    """The manifest, with the id its cells carry (a new one per fresh start: --overwrite's cells are its own)."""
    write_atomically(output_dir / name, json_text({**manifest, "run_id": run_id}), "the run manifest")


# ------------------------------------------------------------------------------------------- cells


def save_cell(folder: Path, key: CellKey, run: str, results: dict[str, Any]) -> Path:
    """Write lm-eval's ``results`` (its samples included) and ``cell.json`` as one folder, whole or not at all."""
    from lm_eval.utils import handle_non_serializable

    samples = results.pop("samples", {}) or {}
    contents: dict[str, str] = {
        "results.json": json_text(json.loads(json.dumps(results, default=handle_non_serializable)))
    }
    tasks: dict[str, str] = {}
    for task, records in samples.items():
        lines = (json.dumps(record, default=handle_non_serializable, ensure_ascii=False) for record in records)
        tasks[f"samples_{task}.jsonl"] = task
        contents[f"samples_{task}.jsonl"] = "\n".join(lines) + "\n"
    with folder_atomically(folder, f"the results of {key.describe()}") as temporary:
        for name, text in contents.items():
            (temporary / name).write_text(text, encoding="utf-8")
        cell = {
            "model": key.model,
            "shots": key.shots,
            "seed": key.seed,
            "run": run,
            "samples": tasks,
            "files": {name: sha256_file(temporary / name) for name in contents},
        }
        (temporary / CELL_FILE).write_text(json_text(cell), encoding="utf-8")
    return folder


def _cell_problem(folder: Path, cell: dict[str, Any]) -> str | None:
    for name, checksum in cell["files"].items():
        if not (folder / name).is_file():
            return f"{name} missing"
        if sha256_file(folder / name) != checksum:
            return f"{name} changed since it was written"
    return None


def completed_cells(output_dir: Path, run: str) -> tuple[dict[CellKey, Path], list[tuple[Path, str]]]:
    """The complete, intact cells of the run ``run`` under ``output_dir/raw``, and the damaged ones (with what is
    wrong), which a resume runs again."""
    found: dict[CellKey, Path] = {}
    damaged: list[tuple[Path, str]] = []
    root = output_dir / RAW
    for path in sorted(root.rglob(CELL_FILE)) if root.is_dir() else []:
        if any(part.startswith(".tmp-") for part in path.relative_to(root).parts):
            continue  # a cell a killed run was writing
        try:
            cell = json.loads(path.read_text(encoding="utf-8"))
            key = CellKey(str(cell["model"]), cell["shots"], int(cell["seed"]))
            belongs = cell["run"] == run
        except (OSError, ValueError, KeyError, TypeError):
            damaged.append((path.parent, f"{CELL_FILE} unreadable"))
            continue
        if not belongs:
            continue
        problem = _cell_problem(path.parent, cell)
        if problem is None:
            found[key] = path.parent
        else:
            damaged.append((path.parent, problem))
    return found, damaged


def read_cell(folder: Path) -> dict[str, Any]:
    """lm-eval's results of a saved cell, with its samples under ``"samples"``, as the run returned them (JSON)."""
    cell = json.loads((folder / CELL_FILE).read_text(encoding="utf-8"))
    results = json.loads((folder / "results.json").read_text(encoding="utf-8"))
    results["samples"] = {
        task: [json.loads(line) for line in (folder / name).read_text(encoding="utf-8").splitlines() if line]
        for name, task in cell["samples"].items()
    }
    return results
