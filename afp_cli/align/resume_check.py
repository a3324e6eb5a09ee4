"""Whether a run may continue (``--resume``) under the recipe given now, measured against the run's own recipe.yaml.

A resume continues the optimisation its checkpoint holds, so whatever shapes that optimisation must be what the run
started with: the model and its LoRA, the objectives, the data and its order (seed, batch), the optimizer and its
schedule. A change there would fail deep inside torch (``The size of tensor a (8) must match …`` for another
``lora.r``) or, worse, train on silently as a different run; it is refused in one line listing every key that
differs. The keys a resume may change decide only how long the run goes, how often it reports and saves, and where
and how fast the same steps are computed.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import yaml

from afp_cli.align.config import AlignConfig, config_to_yaml
from afp_cli.errors import AfpError, warn

# length, cadence and outputs; device and speed (the last bits of the numbers may differ, nothing else does)
RESUMABLE_KEYS = (
    "train.max_steps",
    "train.log_every",
    "train.eval_every",
    "train.save_every",
    "train.keep_checkpoints",
    "train.tensorboard",
    "merge",
    "train.device",
    "train.precision",
    "train.tf32",
    "train.cpu_threads",
    "train.gradient_checkpointing",
    "train.compile",
)
# the folder being resumed: the same by construction, however it is spelled (relative, absolute)
_NOT_COMPARED = ("output_dir",)
# written by the run itself (auto's measured layer): a recipe that leaves it out takes the run's (resolved_pooling)
_FROM_THE_RUN = ("mcl.pooling_resolved",)


def check_resume(config: AlignConfig, saved_recipe: Path, checkpoint_step: int) -> None:
    """Refuse (AfpError, nothing changed) a resume whose recipe differs from ``saved_recipe`` in a key a resume must
    keep, or whose ``train.max_steps`` lies below the checkpoint's step.

    A key the saved recipe lacks (written by an afp that did not have it yet) counts as its default.
    """
    if not saved_recipe.is_file():
        warn(f"{saved_recipe} is missing: the recipe cannot be compared with the run's; resuming as given")
        return
    try:
        saved = yaml.safe_load(saved_recipe.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as error:
        raise AfpError(
            f"{saved_recipe}: unreadable ({type(error).__name__}), so the recipe cannot be compared with "
            "the run's: restore it or start a new run"
        ) from None
    if not isinstance(saved, dict):
        raise AfpError(f"{saved_recipe}: not a recipe, so the recipe cannot be compared with the run's")
    before = {**_defaults(config), **_flat(saved, config)}
    now = _flat(yaml.safe_load(config_to_yaml(config)), config)  # as recipe.yaml would hold it
    changed = [
        key
        for key in now
        if key not in _NOT_COMPARED
        and before.get(key, now[key]) != now[key]
        and not (key in _FROM_THE_RUN and now[key] is None)
    ]
    refused = [key for key in changed if key not in RESUMABLE_KEYS]
    if refused:
        listed = ", ".join(_change(key, before[key], now[key]) for key in refused)
        raise AfpError(
            f"--resume with a recipe that differs from the run's ({saved_recipe}) in {listed}: a resume "
            f"may change only {', '.join(RESUMABLE_KEYS)}; for the rest start a new run (another "
            "output_dir, or --overwrite)"
        )
    train = config.train
    if train.max_steps < checkpoint_step:
        raise AfpError(
            f"train.max_steps={train.max_steps} lies before the checkpoint resumed (step {checkpoint_step}): "
            f"give at least {checkpoint_step}"
        )
    if "train.max_steps" in changed and (train.scheduler != "constant" or train.warmup_ratio > 0):
        warn(
            f"{_change('train.max_steps', before['train.max_steps'], train.max_steps)}: the {train.scheduler} "
            f"schedule from step {checkpoint_step} on is the one of a {train.max_steps}-step run, so the learning "
            "rate moves at the resume"
        )


def resolved_pooling(saved_recipe: Path) -> str:
    """The layer ``mcl.pooling: auto`` measured when the run started (its recipe.yaml's ``mcl.pooling_resolved``),
    which a resume pools at: measuring again could choose another layer halfway through a run."""
    try:
        saved = yaml.safe_load(saved_recipe.read_text(encoding="utf-8"))
        resolved = saved["mcl"]["pooling_resolved"]
    except (OSError, UnicodeDecodeError, yaml.YAMLError, KeyError, TypeError):
        resolved = None
    if not isinstance(resolved, str):
        raise AfpError(
            f"{saved_recipe} does not record the layer mcl.pooling auto chose for this run, and a resume must not "
            "measure again: give it as mcl.pooling_resolved=last-N (the start-up line of the run names it)"
        )
    return resolved


def _flat(tree: dict[str, Any], config: AlignConfig) -> dict[str, Any]:
    """``{"lora.r": 16, …, "merge": False}``: the sections' keys dotted, values (architecture, data.build) whole."""
    sections = {
        item.name for item in dataclasses.fields(config) if dataclasses.is_dataclass(getattr(config, item.name))
    }
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        if key in sections and isinstance(value, dict):
            flat.update({f"{key}.{inner}": inner_value for inner, inner_value in value.items()})
        else:
            flat[key] = value
    return flat


def _defaults(config: AlignConfig) -> dict[str, Any]:
    defaults: dict[str, Any] = {}
    for top in dataclasses.fields(config):
        section = getattr(config, top.name)
        if not dataclasses.is_dataclass(section):
            continue
        for item in dataclasses.fields(section):
            if item.default is not dataclasses.MISSING:
                defaults[f"{top.name}.{item.name}"] = item.default
            elif item.default_factory is not dataclasses.MISSING:
                defaults[f"{top.name}.{item.name}"] = item.default_factory()
    return defaults


def _change(key: str, before: Any, now: Any) -> str:
    if isinstance(before, (dict, list)) or isinstance(now, (dict, list)):
        return f"{key} (changed)"
    return f"{key} {json.dumps(before)} → {json.dumps(now)}"
