"""Write a mixture to JSON lines, streaming and atomically, with its statistics; or reuse a cached build for a recipe.

Beside ``out.jsonl`` goes ``out.jsonl.meta.json``: the resolved config and what the build read, skipped and dropped,
so `afp data stats` can show them later and a mixture can be audited.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path
from typing import Any, TextIO

from afp_cli.data.mixture_config import MixtureConfig
from afp_cli.data.sampling import build_examples
from afp_cli.data.stats import MixtureStats, TokenLengths, read_mixture
from afp_cli.errors import AfpError
from afp_cli.report import refuse_existing, write_json

# Bump when the same config would produce different bytes (sampling or format change): invalidates caches.
FORMAT_VERSION = 1


def meta_path(output: Path) -> Path:
    return output.with_name(output.name + ".meta.json")


@contextlib.contextmanager
def streamed_atomically(path: Path) -> Iterator[TextIO]:
    """Like report.write_atomically, for output too large to hold: write a temp file beside ``path``, then rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "w", encoding="utf-8", newline="\n") as file:
            yield file
        os.replace(temp_name, path)
    except BaseException:
        Path(temp_name).unlink(missing_ok=True)
        raise


def build_mixture(config: MixtureConfig, output: str | Path, tokenizer: Any = None, overwrite: bool = False) -> dict:
    """Build ``config`` into ``output`` (JSON lines) and return its statistics (see stats.MixtureStats.as_dict)."""
    output = Path(output)
    refuse_existing([output], overwrite)
    if output.is_dir():
        raise AfpError(f"{output}: is a folder; give a file name such as {output / 'mixture.jsonl'}")
    mixture = build_examples(config)  # reads and checks all inputs before anything is written
    stats = MixtureStats(tokens=TokenLengths(tokenizer) if tokenizer is not None else None)
    with streamed_atomically(output) as file:
        for example in mixture.examples:
            file.write(json.dumps(example, ensure_ascii=False) + "\n")
            stats.add(example)
    inputs = asdict(mixture.counts)
    write_json(meta_path(output), {"format_version": FORMAT_VERSION, "config": _config_record(config), "inputs": inputs})
    return stats.as_dict(inputs)


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
    meta = meta_path(path)
    inputs = json.loads(meta.read_text(encoding="utf-8")).get("inputs") if meta.is_file() else None
    return stats.as_dict(inputs)


def ensure_mixture(config: MixtureConfig, cache_dir: str | Path) -> Path:
    """The mixture file for ``config``, built once into ``cache_dir`` (for a recipe's ``data:`` section).

    The cache key covers the config, the format version and each input file's path, size and modification time,
    so editing an input or a setting builds a new file; the same key reuses the file without reading the inputs.
    """
    cache_dir = Path(cache_dir)
    target = cache_dir / f"afp-data-{config.mode}-{'_'.join(config.languages)}-{_cache_key(config)}.jsonl"
    if not target.is_file():
        build_mixture(config, target, overwrite=True)
    return target


def _config_record(config: MixtureConfig) -> dict:
    record = asdict(config)
    for name in ("instructions", "parallel"):
        if record[name]:
            record[name] = str(Path(record[name]).resolve())
    return record


def _cache_key(config: MixtureConfig) -> str:
    source = config.source_path
    if not source.exists():
        raise AfpError(f"{source}: not found")
    files = sorted(source.iterdir()) if source.is_dir() else [source]
    fingerprint = [(str(path.resolve()), path.stat().st_size, path.stat().st_mtime_ns) for path in files if path.is_file()]
    payload = json.dumps({"version": FORMAT_VERSION, "config": _config_record(config), "files": fingerprint}, sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()[:16]
