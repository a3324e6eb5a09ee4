"""Atomic training checkpoints: trainable weights, optimizer, schedule, RNG of every process and step; find, check,
load, prune.

Each checkpoint ends with ``manifest.json``, the size and SHA-256 of every file in it, written last: a resume checks
it and skips a damaged checkpoint (a truncated or changed file) for the newest intact one. Checkpoints from before
the manifest (afp 0.x) are accepted when every file parses.

The manifest proves a checkpoint whole, not who wrote it (whoever changes a file can rewrite the manifest too), and
unpickling runs code: ``optimizer.pt`` holds only tensors and plain containers (numbers, strings, lists, tuples,
dicts) and is loaded with ``torch.load(weights_only=True)``, and the engines' files are read for the globals their
pickles name before their own loaders unpickle them (afp_cli/pickle_check.py). A checkpoint that would run code is
refused unless the user vouches for it with ``--trust-checkpoint`` (docs/trust.md).
"""

from __future__ import annotations

import json
import os
import pickle
import random
import shutil
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from afp_cli.errors import AfpError, warn
from afp_cli.pickle_check import unsafe_globals
from afp_cli.text_files import folder_atomically, sha256_file

CHECKPOINTS = "checkpoints"
_PREFIX = "step-"
_DAMAGED_PREFIX = "damaged-"
WEIGHTS = "trainable.safetensors"
OPTIMIZER = "optimizer.pt"
STATE = "state.json"
MANIFEST = "manifest.json"


@dataclass
class TrainingState:
    step: int
    extra: dict[str, Any]  # JSON-serialisable bookkeeping (e.g. held-out metrics before training)


def trainable_state(model) -> dict[str, torch.Tensor]:
    """The parameters being trained (LoRA weights, or everything for full fine-tuning), by name."""
    return {name: param.detach().contiguous().cpu() for name, param in model.named_parameters() if param.requires_grad}


def rng_state() -> dict[str, Any]:
    """This process's random generators (torch, Python, CUDA), to be restored bit for bit: byte tensors and Python's
    state tuple of integers, which ``torch.load(weights_only=True)`` reads back."""
    state = {"torch": torch.get_rng_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


ENGINE_STATE = "engine"  # FSDP / DeepSpeed: the sharded weights and optimizer, as accelerate's save_state wrote them


def save_checkpoint(
    output_dir: Path,
    model,
    optimizer,
    scheduler,
    state: TrainingState,
    keep: int,
    rng_per_process: list[dict[str, Any]] | None = None,
    engine_state: Path | None = None,
) -> Path:
    """Write ``checkpoints/step-NNNNNNNN`` through a temporary folder renamed at the end, then prune old ones.

    A checkpoint folder either exists complete, its manifest last, or not at all, so a run killed mid-write
    resumes from the previous one, and a full disk (a DiskFault) leaves the previous one as it was. One process
    writes it; ``rng_per_process`` holds the random state of every process (rank order; default: this one's),
    and their number is the world size a resume must have. ``engine_state``: a folder every process already wrote
    its shard of weights and optimizer to, moved in instead.
    """
    rng_per_process = rng_per_process or [rng_state()]
    final = output_dir / CHECKPOINTS / f"{_PREFIX}{state.step:08d}"
    with folder_atomically(final, f"the checkpoint of step {state.step}") as temporary:
        if engine_state is None:
            save_file(trainable_state(model), temporary / WEIGHTS)
            saved = {"optimizer": optimizer.state_dict()}
        else:
            os.replace(engine_state, temporary / ENGINE_STATE)
            saved = {}
        torch.save({**saved, "scheduler": scheduler.state_dict(), "rng": rng_per_process}, temporary / OPTIMIZER)
        (temporary / STATE).write_text(
            json.dumps({"step": state.step, "world_size": len(rng_per_process), "extra": state.extra}, indent=2)
        )
        (temporary / MANIFEST).write_text(json.dumps({"format": 1, "files": _file_digests(temporary)}, indent=2))
    for old in list_checkpoints(output_dir)[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def list_checkpoints(output_dir: Path) -> list[Path]:
    """Complete checkpoints, oldest first (temporary ``.tmp-*`` folders and set-aside damaged ones are not)."""
    root = output_dir / CHECKPOINTS
    if not root.is_dir():
        return []
    return sorted(path for path in root.iterdir() if path.is_dir() and path.name.startswith(_PREFIX))


def _file_digests(folder: Path) -> dict[str, dict[str, Any]]:
    """Size and SHA-256 of every file below ``folder`` but the manifest, by path relative to it."""
    return {
        path.relative_to(folder).as_posix(): {"bytes": path.stat().st_size, "sha256": sha256_file(path)}
        for path in sorted(folder.rglob("*"))
        if path.is_file() and path.name != MANIFEST
    }


def checkpoint_damage(path: Path) -> str | None:
    """What is wrong with the checkpoint at ``path`` (``"optimizer.pt: its checksum differs from the manifest's"``),
    or None when it is intact: every file of its manifest there, with the size and checksum written."""
    missing = [name for name in (STATE, OPTIMIZER) if not (path / name).is_file()]
    if not (path / WEIGHTS).is_file() and not (path / ENGINE_STATE).is_dir():
        missing.append(WEIGHTS)
    if missing:
        return f"{', '.join(missing)} missing"
    if not (path / MANIFEST).is_file():
        return _legacy_damage(path)
    try:
        written = {
            name: (int(entry["bytes"]), str(entry["sha256"]))
            for name, entry in json.loads((path / MANIFEST).read_text(encoding="utf-8"))["files"].items()
        }
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return f"{MANIFEST} is unreadable"
    for name, (size, _) in written.items():  # sizes first: a truncated file is found without reading any
        if not (path / name).is_file():
            return f"{name} missing"
        if (path / name).stat().st_size != size:
            return f"{name} has {(path / name).stat().st_size:,} bytes, {size:,} were written"
    for name, (_, checksum) in written.items():
        if sha256_file(path / name) != checksum:
            return f"{name}: its checksum differs from the manifest's"
    return None


def _legacy_damage(path: Path) -> str | None:
    """A checkpoint without a manifest (written before afp had one): each file must at least parse whole."""
    try:
        json.loads((path / STATE).read_text(encoding="utf-8"))["step"]
    except (OSError, ValueError, KeyError, TypeError):
        return f"{STATE} does not parse"
    # the readers' errors are their own (safetensors' Rust, torch's C++ zip reader): any of them means damage
    readers = [(OPTIMIZER, _parses_without_running_code)]
    if (path / WEIGHTS).is_file():
        readers.append((WEIGHTS, load_file))
    for name, read in readers:
        try:
            read(path / name)
        except Exception:  # noqa: BLE001 - see above
            return f"{name} does not parse"
    return None


def _parses_without_running_code(path: Path) -> None:
    """Read ``optimizer.pt`` whole without unpickling anything but tensors and plain containers; one that names other
    globals is checked as a zip archive only (whether it may be loaded is check_trusted's question, not damage's)."""
    try:
        torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        with zipfile.ZipFile(path) as archive:
            if archive.testzip() is not None:
                raise ValueError("a damaged member") from None


def resumable_checkpoint(output_dir: Path) -> tuple[Path, list[tuple[Path, str]]]:
    """The newest intact checkpoint of the run, and the damaged ones newer than it (newest first, with what is
    wrong with each); an AfpError when none is intact. Changes nothing on disk."""
    damaged: list[tuple[Path, str]] = []
    for path in reversed(list_checkpoints(output_dir)):
        problem = checkpoint_damage(path)
        if problem is None:
            return path, damaged
        damaged.append((path, problem))
    found = "; ".join(f"{path.name}: {problem}" for path, problem in damaged)
    raise AfpError(
        f"no intact checkpoint in {output_dir / CHECKPOINTS} to resume from ({found}): start the run "
        "again with --overwrite"
    )


def set_aside(checkpoint: Path) -> Path:
    """Rename a damaged checkpoint to ``damaged-step-NNNNNNNN``: out of the resume's way and of pruning (which would
    otherwise count it among the ones to keep), and kept for a look."""
    target = checkpoint.with_name(_DAMAGED_PREFIX + checkpoint.name)
    shutil.rmtree(target, ignore_errors=True)
    os.replace(checkpoint, target)
    return target


def checkpoint_step(path: Path) -> int:
    """The optimizer step the checkpoint was written after."""
    return json.loads((path / STATE).read_text())["step"]


def checkpoint_world_size(path: Path) -> int:
    """How many processes wrote the checkpoint (1 for checkpoints from before afp ran on several)."""
    return json.loads((path / STATE).read_text()).get("world_size", 1)


TRUST_FLAG = "--trust-checkpoint"


def code_it_would_run(path: Path) -> list[tuple[Path, list[str]]]:
    """The files of the checkpoint at ``path`` whose loading would import globals beyond tensors, plain containers
    (and, for the engines' files, numpy's random state and torch.distributed.checkpoint's shard metadata), each
    with the globals it names. Nothing is loaded: the pickles are read as opcodes."""
    found = []
    if (path / OPTIMIZER).is_file():
        names = unsafe_globals(path / OPTIMIZER)
        if names:
            found.append((path / OPTIMIZER, names))
    engine = path / ENGINE_STATE
    for file in sorted(engine.rglob("*")) if engine.is_dir() else []:
        if file.is_file() and (names := unsafe_globals(file, engine=True)):
            found.append((file, names))
    return found


def untrusted_error(file: Path, names: list[str]) -> AfpError:
    shown = ", ".join(names[:3]) + (", ..." if len(names) > 3 else "")
    return AfpError(
        f"{file}: loading it would run Python code ({shown}), and a checkpoint copied from someone else can run "
        f"anything that way: resume only from a checkpoint you wrote yourself, with {TRUST_FLAG}; nothing was changed"
    )


def check_trusted(path: Path, trust: bool) -> None:
    """Refuse a checkpoint whose loading would run code (an AfpError naming the file, the risk and the flag), unless
    ``trust``: then warn that it will be unpickled."""
    found = code_it_would_run(path)
    if not found:
        return
    if not trust:
        raise untrusted_error(*found[0])
    warn(
        f"{found[0][0]}: loaded with Python's unpickler ({TRUST_FLAG}): it imports {', '.join(found[0][1][:3])}"
        + (f" (and {len(found) - 1} more file(s))" if len(found) > 1 else "")
    )


def load_checkpoint(
    path: Path, model, optimizer, scheduler, rank: int = 0, load_engine_state=None, trust: bool = False
) -> TrainingState:
    """Restore weights, optimizer, schedule and process ``rank``'s RNG in place; returns the step and bookkeeping.

    Args:
        load_engine_state: reads the sharded weights and optimizer of an FSDP / DeepSpeed checkpoint (a folder).
        trust: the user vouches for the checkpoint (``--trust-checkpoint``): its files are unpickled whatever they
            name. Without it a file that would run code is refused before any is loaded.
    """
    if not trust:
        check_trusted(path, trust=False)
    try:
        saved = torch.load(path / OPTIMIZER, map_location="cpu", weights_only=not trust)
    except pickle.UnpicklingError as error:  # a global the static read could not see: torch's own check caught it
        raise untrusted_error(path / OPTIMIZER, [str(error).splitlines()[0]]) from None
    if (path / ENGINE_STATE).is_dir():
        load_engine_state(path / ENGINE_STATE)
    else:
        _load_weights(path, model)
        optimizer.load_state_dict(saved["optimizer"])
    scheduler.load_state_dict(saved["scheduler"])
    # The learning rate of the next step is the schedule's. torch's own optimizer state carries it too, but an
    # engine that restores its optimizer itself (DeepSpeed, with or without CPU offload) need not put it back.
    for group, rate in zip(optimizer.param_groups, scheduler.get_last_lr(), strict=True):
        group["lr"] = rate
    rng = saved["rng"]
    _set_rng_state((rng if isinstance(rng, list) else [rng])[rank])
    info = json.loads((path / STATE).read_text())
    return TrainingState(step=info["step"], extra=info["extra"])


def _load_weights(path: Path, model) -> None:
    weights = load_file(path / WEIGHTS)
    parameters = dict(model.named_parameters())
    missing = [name for name in weights if name not in parameters]
    if missing:
        raise RuntimeError(f"checkpoint {path} has weights the model lacks, e.g. {missing[0]}")
    with torch.no_grad():
        for name, value in weights.items():
            parameters[name].copy_(value.to(parameters[name].device, parameters[name].dtype))
