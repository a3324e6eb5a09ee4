"""Does an adapter belong to the base model it is about to be loaded on? Compare what matters, not the name.

An adapter records the path or hub name of the base it was trained on. That name changes when a base model is copied
to another disk, or when two demo runs each save the same seeded base under their own folder, while the model stays
the same. So the check compares the architecture (config.json, names and versions aside) and a fingerprint of the
weights; it refuses a real mismatch, warns where only the name differs, and can be overridden for the cases it
cannot see (``--allow-other-base``).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from afp_cli.errors import AfpError, warn

# config.json keys that name or describe a saved copy rather than the model itself
_NOT_ARCHITECTURE = {
    "_name_or_path",
    "name_or_path",
    "transformers_version",
    "torch_dtype",
    "dtype",
    "use_cache",
    "_commit_hash",
    "_attn_implementation_autoset",
    "output_hidden_states",
}
_SAMPLE_BYTES = 1 << 20  # fingerprint: the first and last MiB of every weights file (header, names, shapes included)


def check_adapter_base(adapter_dir: str | Path, base_model: str, allow_other_base: bool = False) -> None:
    """Refuse an adapter trained on a different model than ``base_model``; warn when only the name differs."""
    from afp_cli.model.loading import read_adapter_config

    trained_on = read_adapter_config(adapter_dir).get("base_model_name_or_path")
    if trained_on is None or _same_name(trained_on, base_model):
        return
    override = "pass --allow-other-base to load it anyway"
    recorded, given = _architecture(trained_on), _architecture(base_model)
    if recorded is None or given is None:
        warn(
            f"{adapter_dir}: adapter was trained on '{trained_on}', which cannot be compared here; loading it on "
            f"'{base_model}' as given"
        )
        return
    differences = sorted(key for key in recorded.keys() | given.keys() if recorded.get(key) != given.get(key))
    if differences:
        shown = ", ".join(f"{key} {recorded.get(key)!r} vs {given.get(key)!r}" for key in differences[:3])
        message = (
            f"{adapter_dir}: adapter was trained on '{trained_on}', whose architecture differs from "
            f"'{base_model}' ({shown})"
        )
        if not allow_other_base:
            raise AfpError(f"{message}; {override}")
        warn(message)
        return
    recorded_weights, given_weights = weights_fingerprint(trained_on), weights_fingerprint(base_model)
    if recorded_weights is not None and given_weights is not None and recorded_weights != given_weights:
        message = (
            f"{adapter_dir}: adapter was trained on '{trained_on}'; '{base_model}' has the same architecture "
            "but other weights"
        )
        if not allow_other_base:
            raise AfpError(f"{message}; {override}")
        warn(message)
        return
    same = "same architecture and weights" if recorded_weights is not None else "same architecture"
    warn(f"{adapter_dir}: adapter records base '{trained_on}'; loading it on '{base_model}' ({same})")


def weights_fingerprint(model: str) -> str | None:
    """A SHA-256 over the size and first and last MiB of each weights file of a local model folder; None elsewhere.

    Sampled, so a 14 GB model is fingerprinted in milliseconds: the sample holds the safetensors header (every
    tensor's name, shape and offset) and the first and last weights, which differ between any two trainings.
    """
    folder = Path(model)
    files = sorted([*folder.glob("*.safetensors"), *folder.glob("*.bin")]) if folder.is_dir() else []
    if not files:
        return None
    digest = hashlib.sha256()
    for path in files:
        size = path.stat().st_size
        digest.update(f"{path.name}:{size}".encode())
        with path.open("rb") as file:
            digest.update(file.read(_SAMPLE_BYTES))
            file.seek(max(0, size - _SAMPLE_BYTES))
            digest.update(file.read(_SAMPLE_BYTES))
    return digest.hexdigest()


def _architecture(model: str) -> dict[str, Any] | None:
    """config.json of a local folder (or of a hub model the hub client can give), without name-only keys."""
    local = Path(model) / "config.json"
    if local.is_file():
        try:
            config = json.loads(local.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError):
            return None
    else:
        try:
            from transformers import AutoConfig

            config = AutoConfig.from_pretrained(model).to_dict()
        except (OSError, ValueError):
            return None  # not a local folder, and the hub cannot tell (offline, or no such model)
    return {key: value for key, value in config.items() if key not in _NOT_ARCHITECTURE}


def _same_name(a: str, b: str) -> bool:
    if a == b:
        return True
    path_a, path_b = Path(a), Path(b)
    if path_a.exists() and path_b.exists():
        return path_a.resolve() == path_b.resolve()
    return a.rstrip("/") == b.rstrip("/")
