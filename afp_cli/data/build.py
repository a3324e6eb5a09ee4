"""Write a mixture to JSON lines, streaming and atomically, with its statistics; or reuse a cached build for a recipe.

Beside ``out.jsonl`` goes ``out.jsonl.meta.json``: the resolved parts and what each read, skipped and dropped, so
`afp data stats` can show them later and a mixture can be audited. Hub inputs (``hf://``) are pinned to a commit and
copied to local files first (afp_cli/data/hub.py); the builders read only local files.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from dataclasses import asdict
from pathlib import Path
from typing import Any

from afp_cli.data.hub import HubReference, cached_copy, fetched_path, resolve_revision
from afp_cli.data.mixture_config import Mixture, MixturePart
from afp_cli.data.sampling import build_examples, interleave
from afp_cli.data.stats import MixtureStats, TokenLengths, read_mixture
from afp_cli.errors import AfpError
from afp_cli.report import refuse_existing, write_json
from afp_cli.text_files import streamed_atomically

# Bump when the same config would produce different bytes (sampling or format change): invalidates caches.
FORMAT_VERSION = 1


def cache_root() -> Path:
    """afp's cache: built mixtures (``data/``), local copies of hub inputs (``hub/``). ``$AFP_CACHE_DIR``."""
    return Path(os.environ.get("AFP_CACHE_DIR", "~/.cache/afp")).expanduser()


def meta_path(output: Path) -> Path:
    return output.with_name(output.name + ".meta.json")


def as_spec(mixture: Mixture | MixturePart) -> Mixture:
    return mixture if isinstance(mixture, Mixture) else Mixture([mixture], mixture.seed)


def fetch_command(part: MixturePart, ref: HubReference) -> str:
    """What to do when the hub cannot be reached: fetch on another machine, copy, read the copy (one line)."""
    local = fetched_path(ref, part.input_kind, part.languages, Path("DIR"))
    return (
        f"on a machine with internet run `afp data fetch --{part.input_kind} {ref} --languages "
        f"{' '.join(part.languages)} -o DIR`, copy DIR here and use {local} as {part.input_kind}"
    )


def pin_hub_inputs(mixture: Mixture | MixturePart) -> Mixture:
    """The same mixture with every ``hf://`` input pinned to a commit (needs the hub, or a pin recorded earlier)."""
    spec = as_spec(mixture)
    parts = []
    for part in spec.parts:
        ref = part.hub_reference
        if ref is not None:
            pinned = resolve_revision(ref, part.input_kind, fetch_command(part, ref), cache_root() / "hub" / "refs")
            part = dataclasses.replace(part, **{part.input_kind: str(pinned)})
        parts.append(part)
    return Mixture(parts, spec.seed)


def localize(part: MixturePart) -> MixturePart:
    """``part`` reading a local copy of its (pinned) hub input; local inputs unchanged."""
    ref = part.hub_reference
    if ref is None:
        return part
    local = cached_copy(
        ref, part.input_kind, part.languages, cache_root() / "hub", part.input_kind, fetch_command(part, ref)
    )
    return dataclasses.replace(part, **{part.input_kind: str(local)})


def build_mixture(
    mixture: Mixture | MixturePart, output: str | Path, tokenizer: Any = None, overwrite: bool = False
) -> dict:
    """Build ``mixture`` into ``output`` (JSON lines) and return its statistics (see stats.MixtureStats.as_dict)."""
    output = Path(output)
    refuse_existing([output], overwrite)
    if output.is_dir():
        raise AfpError(f"{output}: is a folder; give a file name such as {output / 'mixture.jsonl'}")
    spec = pin_hub_inputs(mixture)
    # every part reads and checks all its inputs before anything is written
    built = [build_examples(localize(part)) for part in spec.parts]
    stats = MixtureStats(tokens=TokenLengths(tokenizer) if tokenizer is not None else None)
    with streamed_atomically(output) as file:
        for example in interleave(built, spec.names, spec.seed, spec.audit_fields):
            file.write(json.dumps(example, ensure_ascii=False) + "\n")
            stats.add(example)
    parts = [
        {"name": name, "config": _config_record(part), "inputs": asdict(result.counts), "examples": result.total}
        for name, part, result in zip(spec.names, spec.parts, built)
    ]
    write_json(meta_path(output), {"format_version": FORMAT_VERSION, "seed": spec.seed, "parts": parts})
    return stats.as_dict(_inputs_of(parts))


def _inputs_of(parts: list[dict]) -> dict:
    """One part: its input counts; several: the counts of each part by name."""
    if len(parts) == 1:
        return parts[0]["inputs"]
    return {part["name"]: part["inputs"] for part in parts}


def mixture_stats(path: str | Path, tokenizer: Any = None) -> dict:
    """Statistics of an existing mixture file (any file in the official format); inputs come from its meta file."""
    path = Path(path)
    if not path.is_file():
        raise AfpError(f"{path}: mixture file not found")
    stats = MixtureStats(tokens=TokenLengths(tokenizer) if tokenizer is not None else None)
    for example in read_mixture(path):
        stats.add(example)
    if not stats.examples:
        raise AfpError(f"{path}: no examples")
    inputs = None
    meta = meta_path(path)
    if meta.is_file():
        record = json.loads(meta.read_text(encoding="utf-8"))
        inputs = _inputs_of(record["parts"]) if "parts" in record else record.get("inputs")
    return stats.as_dict(inputs)


def ensure_mixture(mixture: Mixture | MixturePart, cache_dir: str | Path) -> Path:
    """The mixture file for ``mixture``, built once into ``cache_dir`` (for a recipe's ``data:`` section).

    The cache key covers every part's settings, the mix seed, the format version, each local input file's path,
    size and modification time, and each hub input's pinned commit, so editing an input or a setting (or a new
    commit on the hub, for an unpinned reference) builds a new file; the same key reuses the file without reading
    or downloading the inputs.
    """
    spec = pin_hub_inputs(mixture)
    modes = "+".join(part.mode for part in spec.parts)
    languages = "_".join(dict.fromkeys(code for part in spec.parts for code in part.languages))
    target = Path(cache_dir) / f"afp-data-{modes}-{languages}-{cache_key(spec)}.jsonl"
    if not target.is_file():
        build_mixture(spec, target, overwrite=True)
    return target


def _config_record(config: MixturePart) -> dict:
    record = asdict(config)
    if config.hub_reference is None:
        record[config.input_kind] = str(Path(config.source).resolve())
    return record


def cache_key(spec: Mixture) -> str:
    """Hash of what decides the bytes of a mixture (``spec``'s hub inputs must be pinned)."""
    parts = []
    for part in spec.parts:
        parts.append(
            {"config": _config_record(part), "files": None if part.hub_reference else _fingerprint(part.source_path)}
        )
    payload = json.dumps({"version": FORMAT_VERSION, "seed": spec.seed, "parts": parts}, sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def _fingerprint(source: Path) -> list:
    if not source.exists():
        raise AfpError(f"{source}: not found")
    files = sorted(source.iterdir()) if source.is_dir() else [source]
    return [(str(path.resolve()), path.stat().st_size, path.stat().st_mtime_ns) for path in files if path.is_file()]


def pinned_build_section(section: dict | list, spec: Mixture) -> dict | list:
    """A recipe's ``data.build`` with each part's hub input replaced by its pinned reference (for recipe.yaml)."""
    parts = section if isinstance(section, list) else [section]
    pinned = []
    for mapping, part in zip(parts, spec.parts):
        mapping = dict(mapping)
        if part.hub_reference is not None:
            mapping[part.input_kind] = part.source
        pinned.append(mapping)
    return pinned if isinstance(section, list) else pinned[0]
