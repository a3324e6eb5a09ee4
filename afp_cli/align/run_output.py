"""The files of an alignment run: the output folder's rules, metrics.jsonl, the saved adapter, model and summary.

Everything is written through afp_cli/text_files.py's atomic writers (a temporary name moved in place), so a folder
never holds a half-written file, and a full disk is one line naming what was being written and the last complete
checkpoint.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from afp_cli.align.checkpoint import CHECKPOINTS, list_checkpoints, resumable_checkpoint, set_aside
from afp_cli.align.event_log import EventLog
from afp_cli.errors import AfpError, warn
from afp_cli.model.loading import merge_adapter, quiet_saving
from afp_cli.report import write_json
from afp_cli.text_files import DiskFault, append_text, folder_atomically, replacing_folder, write_atomically

METRICS_FILE = "metrics.jsonl"
BASE_MODEL_DIR = "base_model"
# what a run writes before its first checkpoint: a folder holding no more is a run that never got that far
_BEFORE_FIRST_CHECKPOINT = {"recipe.yaml", METRICS_FILE, BASE_MODEL_DIR, CHECKPOINTS, "tensorboard"}
# the temporary files and folders of the atomic writers, and the engines' shards before they are moved in
_LEFTOVERS = (".tmp-*", ".*.tmp", ".staging*", f"{CHECKPOINTS}/.tmp-*", f"{CHECKPOINTS}/.engine-*")


@contextmanager
def claim_output_dir(
    output_dir: Path, resume: bool, overwrite: bool, accept_resume: Callable[[Path], None] | None = None
) -> Iterator[Path | None]:
    """Claim ``output_dir`` for one run; yields the checkpoint to resume from (None for a fresh run).

    A non-empty folder needs ``--resume`` or ``--overwrite``. ``--resume`` continues from the newest intact
    checkpoint: damaged newer ones are set aside with a warning (``checkpoints/damaged-step-N``), what a killed run
    left half-written is removed, and ``accept_resume(checkpoint)`` may refuse first (a changed recipe), with
    nothing changed yet. ``--resume`` where no run got as far as a checkpoint (no folder, an empty one, or one
    holding only what a run writes before it) starts the run, so a scheduler can requeue one command.

    Until the run's first checkpoint the claim can be undone: a fresh run that fails before it removes everything
    it wrote, and a folder it was to overwrite is put back as it was (it waits beside the new one, hidden, until
    the run succeeds or writes a checkpoint). A failure after a checkpoint keeps the run folder, and a user error
    then names the checkpoint ``--resume`` continues from.
    """
    if resume and overwrite:
        raise AfpError("--resume and --overwrite contradict each other: choose one")
    if output_dir.exists() and not output_dir.is_dir():
        raise AfpError(f"{output_dir}: output_dir is a file, not a folder: give a folder's name")
    if resume and list_checkpoints(output_dir):
        checkpoint, damaged = resumable_checkpoint(output_dir)
        if accept_resume is not None:
            accept_resume(checkpoint)
        for path, problem in damaged:
            warn(
                f"checkpoint {path} is damaged ({problem}): resuming from {checkpoint.name}; the damaged one is kept "
                f"as {set_aside(path).name}"
            )
        remove_leftovers(output_dir)
        with _naming_the_last_checkpoint(output_dir):
            yield checkpoint
        return
    if resume:
        if not _before_first_checkpoint(output_dir):
            raise AfpError(f"{output_dir}: nothing to resume (no checkpoint in {output_dir / CHECKPOINTS})")
        if output_dir.is_dir() and any(output_dir.iterdir()):
            warn(f"{output_dir}: its run stopped before its first checkpoint: starting it again from step 0")
        overwrite = True
    if output_dir.is_dir() and any(output_dir.iterdir()) and not overwrite:
        raise AfpError(
            f"{output_dir}: output folder is not empty: pass --overwrite to replace it or --resume to continue its run"
        )
    with replacing_folder(output_dir, keep_on_failure=lambda: bool(list_checkpoints(output_dir))):
        try:
            with _naming_the_last_checkpoint(output_dir):
                yield None
        except DiskFault as error:
            if list_checkpoints(output_dir):
                raise
            raise DiskFault(f"{error} (no checkpoint was written yet: the run left nothing behind)") from error


@contextmanager
def _naming_the_last_checkpoint(output_dir: Path) -> Iterator[None]:
    """A user error once a checkpoint exists names the newest one, which ``--resume`` continues from (unless the
    message names it already)."""
    try:
        yield
    except AfpError as error:
        checkpoints = list_checkpoints(output_dir)
        if not checkpoints or str(checkpoints[-1]) in str(error):
            raise
        raise type(error)(f"{error} (last complete checkpoint: {checkpoints[-1]}; continue with --resume)") from error


def _before_first_checkpoint(output_dir: Path) -> bool:
    if not output_dir.is_dir():
        return True
    return all(item.name in _BEFORE_FIRST_CHECKPOINT or item.name.startswith(".") for item in output_dir.iterdir())


def remove_leftovers(output_dir: Path) -> None:
    """Remove what a killed run left half-written (temporary files and folders): never read, only in the way."""
    for pattern in _LEFTOVERS:
        for path in output_dir.glob(pattern):
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)


def append_metrics(path: Path, record: dict[str, Any], writer: EventLog | None) -> None:
    """The record's line in metrics.jsonl (the run's record), then its TensorBoard events (a log beside it)."""
    append_text(path, json.dumps(record) + "\n")
    if writer is not None:
        writer.log(record)


def truncate_metrics(path: Path, step: int) -> None:
    """Drop metric lines written after the checkpoint we resume from, so the file reads as one run.

    A last line without its line break is half a line a killed run was appending: it goes with the rest.
    """
    if not path.exists():
        return
    lines = path.read_text(encoding="utf-8").split("\n")[:-1]  # what follows the last line break is never whole
    kept = []
    for number, line in enumerate(lines, start=1):
        try:
            logged = json.loads(line)["step"]
        except (ValueError, KeyError, TypeError):
            raise AfpError(f"{path}:{number}: not a metrics line (damaged?): remove it and resume again") from None
        if logged <= step:
            kept.append(line)
    write_atomically(path, "".join(line + "\n" for line in kept))


def open_tensorboard(output_dir: Path, enabled: bool) -> EventLog | None:
    """``train.tensorboard``: an event file under ``output_dir/tensorboard`` written by afp (event_log.py), so a
    disk that refuses it stops the run with one line instead of a background thread's log message."""
    if not enabled:
        return None
    try:
        import tensorboard  # noqa: F401 - its record format and protobufs write the events
    except ImportError:
        raise AfpError("train.tensorboard is on but tensorboard is not installed: pip install tensorboard") from None
    return EventLog(output_dir / "tensorboard")


def save_outputs(model, tokenizer, config, output_dir: Path, state_dict: dict | None, summary: dict[str, Any]) -> None:
    """Adapter (or full model), tokenizer, optional merged model and ``summary.json`` (``summary`` plus the base
    model's name), each written to a temporary name then moved in place.

    Args:
        state_dict: the model's weights gathered from the processes of a sharded run (FSDP, DeepSpeed); None: the
            model's own.
    """
    if config.model.architecture is not None:
        base_name = str((output_dir / BASE_MODEL_DIR).resolve())
    else:
        base_name = config.model.name_or_path
    if config.lora.enabled:
        model.peft_config["default"].base_model_name_or_path = base_name
    # afp never resizes the vocabulary, so the base embeddings need not be copied into the adapter (peft would
    # when embed_tokens is a LoRA target)
    options = {"save_embedding_layers": False} if config.lora.enabled else {}
    if state_dict is not None:
        options["state_dict"] = state_dict
    with folder_atomically(output_dir, "the adapter" if config.lora.enabled else "the model", into=True) as staging:
        _save_pretrained(staging, model, tokenizer, **options)
    if config.merge and config.lora.enabled:
        merged = merge_adapter(model)
        with folder_atomically(output_dir / "merged", "the merged model") as staging:
            _save_pretrained(staging, merged, tokenizer)
    write_json(output_dir / "summary.json", {**summary, "base_model": base_name, "adapter": config.lora.enabled})


def save_built_base_model(model, tokenizer, folder: Path) -> None:
    """A model built from an architecture exists nowhere else: save it once so its adapter can be loaded later.

    On resume the folder is already there (the seed rebuilt identical weights), so it is kept as it is.
    """
    if folder.exists():
        return
    with folder_atomically(folder, "the built base model") as staging:
        _save_pretrained(staging, model, tokenizer)


def _save_pretrained(folder: Path, model, tokenizer, **options) -> None:
    with quiet_saving():
        model.save_pretrained(folder, **options)
        tokenizer.save_pretrained(folder)
