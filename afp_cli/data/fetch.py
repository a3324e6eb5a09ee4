"""`afp data fetch`: copy hub inputs to a folder in the layout `afp data` reads, for machines without internet.

Fetch on a machine with internet, copy the folder, and point the recipe's ``instructions``/``parallel`` at the
copies. Each dataset goes to ``DIR/<dataset name>/`` with a ``source.json`` recording the pinned reference, so
the copy says which revision it holds.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

from afp_cli.data.hub import HubReference, fetched_path, local_name, resolve_revision, write_local
from afp_cli.data.mixture_config import Mixture
from afp_cli.errors import AfpError
from afp_cli.languages import get_language
from afp_cli.progress import counting
from afp_cli.report import refuse_existing, write_json


@dataclass
class HubInput:
    kind: str  # instructions or parallel
    reference: HubReference
    languages: list[str]

    @property
    def option(self) -> str:
        return f"--{self.kind}"


def inputs_of_options(instructions: str | None, parallel: str | None, languages: list[str]) -> list[HubInput]:
    if not instructions and not parallel:
        raise AfpError("fetch: give --instructions hf://… and/or --parallel hf://… (or --recipe RECIPE.yaml)")
    if len(languages) < (2 if parallel else 1):
        raise AfpError("--languages: name the languages to fetch, e.g. --languages en zh")
    codes = [get_language(code).code for code in languages]
    wanted = []
    for kind, text in (("instructions", instructions), ("parallel", parallel)):
        if text:
            if kind == "parallel" and len(codes) != 2:
                raise AfpError(f"--languages: parallel text has two languages, got {len(codes)}")
            wanted.append(HubInput(kind, HubReference.parse(text, f"--{kind}"), codes))
    return wanted


def inputs_of_recipe(recipe: Path, mixture: Mixture | None) -> list[HubInput]:
    """Every hf:// input of a recipe's ``data.build``; instruction parts of one dataset share one fetch.

    Args:
        recipe: the recipe's path, named in the errors.
        mixture: its ``data.build`` as a Mixture (the command layer reads the recipe); None when the recipe reads
            ``data.train_file`` instead.
    """
    if mixture is None:
        raise AfpError(f"{recipe}: the recipe reads data.train_file; only data.build inputs come from the hub")
    wanted: dict[tuple[str, HubReference], HubInput] = {}
    for part in mixture.parts:
        ref = part.hub_reference
        if ref is None:
            continue
        key = (part.input_kind, ref)
        if key in wanted:
            wanted[key].languages = list(dict.fromkeys(wanted[key].languages + part.languages))
        else:
            wanted[key] = HubInput(part.input_kind, ref, list(part.languages))
    if not wanted:
        raise AfpError(f"{recipe}: data.build names no hf:// input; nothing to fetch")
    return list(wanted.values())


def fetch_inputs(inputs: list[HubInput], output_dir: Path, limit: int | None, overwrite: bool) -> list[str]:
    """Copy each input to ``output_dir``; returns the lines that tell the user where each copy is."""
    plans = []
    for item in inputs:
        ref = item.reference if limit is None else dataclasses.replace(item.reference, limit=limit)
        target = fetched_path(ref, item.kind, item.languages, output_dir)
        folder = target if item.kind == "instructions" else target.parent
        files = [folder / local_name(config) for config, _ in ref.configs(item.kind, item.languages)]
        plans.append((item, ref, folder, files))
    refuse_existing([path for *_, files in plans for path in files], overwrite)  # before any download
    lines = []
    for item, ref, folder, _ in plans:
        hint = "afp data fetch needs the hub: run it on a machine with internet (or check HF_HUB_OFFLINE)"
        pinned = resolve_revision(ref, item.option, hint)
        target = write_local(pinned, item.kind, item.languages, folder, item.option, hint, progress=counting)
        write_json(folder / "source.json", {"reference": str(pinned), "kind": item.kind, "languages": item.languages})
        lines.append(f"{item.kind}: {target}   # {pinned}")
    lines.append(
        "copy the folder to the machine that trains and set these paths as data.build's "
        "instructions / parallel (or pass them to afp data --instructions / --parallel)"
    )
    return lines
