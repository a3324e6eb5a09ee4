"""The files of an alignment run: the output folder's rules, metrics.jsonl, the saved adapter, model and summary.

Everything is written under a temporary name and moved in place, so a folder never holds a half-written file.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from afp_cli.align.checkpoint import list_checkpoints
from afp_cli.errors import AfpError
from afp_cli.model import merge_adapter, quiet_saving
from afp_cli.report import write_atomically, write_json

METRICS_FILE = "metrics.jsonl"
BASE_MODEL_DIR = "base_model"


@contextmanager
def claim_output_dir(output_dir: Path, resume: bool, overwrite: bool) -> Iterator[Path | None]:
    """Claim ``output_dir`` for one run; yields the checkpoint to resume from (None for a fresh run).

    A non-empty folder needs ``--resume`` or ``--overwrite``. Until the run's first checkpoint the claim can be
    undone: a fresh run that fails before it removes everything it wrote, and a folder it was to overwrite is put
    back as it was (it waits beside the new one, hidden, until the run succeeds or writes a checkpoint). A failure
    after a checkpoint keeps the run folder, and a user error then names the checkpoint ``--resume`` continues from.
    """
    if resume and overwrite:
        raise AfpError("--resume and --overwrite contradict each other: choose one")
    if resume:
        checkpoints = list_checkpoints(output_dir)
        if not checkpoints:
            raise AfpError(f"{output_dir}: nothing to resume (no checkpoint in {output_dir / 'checkpoints'})")
        yield checkpoints[-1]
        return
    existed = output_dir.is_dir()
    created = output_dir  # the outermost folder this run creates (output_dir or a missing parent of it)
    while not created.parent.exists():
        created = created.parent
    if existed and any(output_dir.iterdir()) and not overwrite:
        raise AfpError(f"{output_dir}: output folder is not empty: pass --overwrite to replace it or --resume to "
                       "continue its run")
    replaced = output_dir.with_name(f".{output_dir.name}.replaced")
    shutil.rmtree(replaced, ignore_errors=True)  # left by a run that was killed, not failed
    if existed and any(output_dir.iterdir()):
        os.replace(output_dir, replaced)
        output_dir.mkdir()
    try:
        yield None
    except BaseException as error:
        checkpoints = list_checkpoints(output_dir)
        if checkpoints:
            shutil.rmtree(replaced, ignore_errors=True)
            if isinstance(error, AfpError) and "checkpoint" not in str(error):
                raise AfpError(f"{error} (last complete checkpoint: {checkpoints[-1]}; continue with --resume)") \
                    from None
            raise
        _undo_claim(output_dir, created, existed, replaced)
        raise
    shutil.rmtree(replaced, ignore_errors=True)


def _undo_claim(output_dir: Path, created: Path, existed: bool, replaced: Path) -> None:
    shutil.rmtree(output_dir if existed else created, ignore_errors=True)
    if replaced.exists():
        os.replace(replaced, output_dir)
    elif existed:
        output_dir.mkdir()  # it was there, empty, before the run


def append_metrics(path: Path, record: dict[str, Any], writer) -> None:
    with path.open("a", encoding="utf-8") as file:
        file.write(json.dumps(record) + "\n")
    if writer is not None:
        for key, value in record.items():
            if key != "step":
                writer.add_scalar(key, value, record["step"])


def truncate_metrics(path: Path, step: int) -> None:
    """Drop metric lines written after the checkpoint we resume from, so the file reads as one run."""
    if not path.exists():
        return
    kept = [line for line in path.read_text(encoding="utf-8").splitlines() if json.loads(line)["step"] <= step]
    write_atomically(path, "".join(line + "\n" for line in kept))


def open_tensorboard(output_dir: Path, enabled: bool):
    if not enabled:
        return None
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise AfpError("train.tensorboard is on but tensorboard is not installed: pip install tensorboard") from None
    return SummaryWriter(str(output_dir / "tensorboard"))


def save_outputs(model, tokenizer, config, output_dir: Path, state_dict: dict | None, summary: dict[str, Any]) -> None:
    """Adapter (or full model), tokenizer, optional merged model and ``summary.json`` (``summary`` plus the base
    model's name), each written to a temporary name then moved in place.

    Args:
        state_dict: the model's weights gathered from the processes of a sharded run (FSDP, DeepSpeed); None: the
            model's own.
    """
    staging = output_dir / ".staging"
    shutil.rmtree(staging, ignore_errors=True)
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
    with quiet_saving():
        model.save_pretrained(staging, **options)
        tokenizer.save_pretrained(staging)
    for item in staging.iterdir():
        _move_into(item, output_dir / item.name)
    staging.rmdir()
    if config.merge and config.lora.enabled:
        merged_staging = output_dir / ".staging-merged"
        merged = merge_adapter(model)
        with quiet_saving():
            merged.save_pretrained(merged_staging)
            tokenizer.save_pretrained(merged_staging)
        _move_into(merged_staging, output_dir / "merged")
    write_json(output_dir / "summary.json", {**summary, "base_model": base_name, "adapter": config.lora.enabled})


def save_built_base_model(model, tokenizer, folder: Path) -> None:
    """A model built from an architecture exists nowhere else: save it once so its adapter can be loaded later.

    On resume the folder is already there (the seed rebuilt identical weights), so it is kept as it is.
    """
    if folder.exists():
        return
    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = folder.with_name(f".staging-{folder.name}")
    shutil.rmtree(staging, ignore_errors=True)
    with quiet_saving():
        model.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
    os.replace(staging, folder)


def _move_into(source: Path, target: Path) -> None:
    if target.is_dir():
        shutil.rmtree(target)
    elif target.exists():
        target.unlink()
    os.replace(source, target)


