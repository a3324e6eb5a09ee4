"""Atomic training checkpoints: trainable weights, optimizer, schedule, RNG of every process and step; find, load, prune."""

from __future__ import annotations

import json
import os
import random
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

CHECKPOINTS = "checkpoints"
_PREFIX = "step-"


@dataclass
class TrainingState:
    step: int
    extra: dict[str, Any]  # JSON-serialisable bookkeeping (e.g. held-out metrics before training)


def trainable_state(model) -> dict[str, torch.Tensor]:
    """The parameters being trained (LoRA weights, or everything for full fine-tuning), by name."""
    return {name: param.detach().contiguous().cpu() for name, param in model.named_parameters() if param.requires_grad}


def rng_state() -> dict[str, Any]:
    """This process's random generators (torch, Python, CUDA), to be restored bit for bit."""
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


def save_checkpoint(output_dir: Path, model, optimizer, scheduler, state: TrainingState, keep: int,
                    rng_per_process: list[dict[str, Any]] | None = None, engine_state: Path | None = None) -> Path:
    """Write ``checkpoints/step-NNNNNNNN`` through a temporary folder renamed at the end, then prune old ones.

    A checkpoint folder either exists complete or not at all, so a run killed mid-write resumes from the
    previous one. One process writes it; ``rng_per_process`` holds the random state of every process (rank
    order; default: this one's), and their number is the world size a resume must have. ``engine_state``: a
    folder every process already wrote its shard of weights and optimizer to, moved in instead.
    """
    rng_per_process = rng_per_process or [rng_state()]
    root = output_dir / CHECKPOINTS
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"{_PREFIX}{state.step:08d}"
    temporary = root / f".tmp-{final.name}"
    shutil.rmtree(temporary, ignore_errors=True)
    temporary.mkdir()
    if engine_state is None:
        save_file(trainable_state(model), temporary / "trainable.safetensors")
        saved = {"optimizer": optimizer.state_dict()}
    else:
        os.replace(engine_state, temporary / ENGINE_STATE)
        saved = {}
    torch.save({**saved, "scheduler": scheduler.state_dict(), "rng": rng_per_process}, temporary / "optimizer.pt")
    (temporary / "state.json").write_text(json.dumps({"step": state.step, "world_size": len(rng_per_process),
                                                      "extra": state.extra}, indent=2))
    shutil.rmtree(final, ignore_errors=True)
    os.replace(temporary, final)
    for old in list_checkpoints(output_dir)[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def list_checkpoints(output_dir: Path) -> list[Path]:
    """Complete checkpoints, oldest first."""
    root = output_dir / CHECKPOINTS
    if not root.is_dir():
        return []
    return sorted(path for path in root.iterdir() if path.is_dir() and path.name.startswith(_PREFIX))


def checkpoint_world_size(path: Path) -> int:
    """How many processes wrote the checkpoint (1 for checkpoints from before afp ran on several)."""
    return json.loads((path / "state.json").read_text()).get("world_size", 1)


def load_checkpoint(path: Path, model, optimizer, scheduler, rank: int = 0, load_engine_state=None) -> TrainingState:
    """Restore weights, optimizer, schedule and process ``rank``'s RNG in place; returns the step and bookkeeping.

    Args:
        load_engine_state: reads the sharded weights and optimizer of an FSDP / DeepSpeed checkpoint (a folder).
    """
    saved = torch.load(path / "optimizer.pt", map_location="cpu", weights_only=False)
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
    info = json.loads((path / "state.json").read_text())
    return TrainingState(step=info["step"], extra=info["extra"])


def _load_weights(path: Path, model) -> None:
    weights = load_file(path / "trainable.safetensors")
    parameters = dict(model.named_parameters())
    missing = [name for name in weights if name not in parameters]
    if missing:
        raise RuntimeError(f"checkpoint {path} has weights the model lacks, e.g. {missing[0]}")
    with torch.no_grad():
        for name, value in weights.items():
            parameters[name].copy_(value.to(parameters[name].device, parameters[name].dtype))
