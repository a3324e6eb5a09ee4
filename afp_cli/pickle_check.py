"""What a pickle would import and call when loaded, found by reading its opcodes without loading it.

Unpickling runs code: every ``GLOBAL`` a pickle names is imported and may be called (``__reduce__``), so a file
written by someone else can do anything its reader can. ``torch.load(weights_only=True)`` refuses every global
outside a list of tensor rebuilders and plain containers, but the libraries that write and read the engines'
checkpoints (accelerate, DeepSpeed, torch.distributed.checkpoint's ``.metadata``) load with the full unpickler.
``unsafe_globals`` lets afp look at those files first: a global outside the allowed set, or an opcode sequence whose
globals cannot be read statically, marks the file as one that could run code.
"""

from __future__ import annotations

import _compat_pickle
import functools
import io
import pickletools
import zipfile
from pathlib import Path

# the random-state tuple numpy's ``get_state`` returns (accelerate saves it beside torch's): arrays and dtypes
_NUMPY_STATE = {
    "numpy.ndarray",
    "numpy.dtype",
    "numpy.core.multiarray._reconstruct",
    "numpy._core.multiarray._reconstruct",
    "numpy.dtypes.UInt32DType",
}
# the plain dataclasses torch.distributed.checkpoint (FSDP's sharded state) describes its shards with, and the
# relative paths of the shard files in them
_CHECKPOINT_METADATA = ("torch.distributed.checkpoint.",)
_PATHS = {"pathlib.PosixPath", "pathlib.PurePosixPath", "pathlib.WindowsPath", "pathlib.PureWindowsPath"}
_STRING_PUSHES = {"SHORT_BINUNICODE", "BINUNICODE", "BINUNICODE8", "UNICODE", "STRING", "BINSTRING", "SHORT_BINSTRING"}
_MEMO_PUTS = {"PUT", "BINPUT", "LONG_BINPUT", "MEMOIZE"}
_MEMO_GETS = {"GET", "BINGET", "LONG_BINGET"}
_NO_STACK_CHANGE = {"PROTO", "FRAME"}
_UNREADABLE = "<a global the file builds at load time>"


@functools.cache
def weights_only_globals() -> frozenset[str]:
    """The globals ``torch.load(weights_only=True)`` allows: tensor and storage rebuilders, dtypes, plain containers."""
    from torch import _weights_only_unpickler

    return frozenset(_weights_only_unpickler._get_allowed_globals())


def allowed(name: str, engine: bool) -> bool:
    """Whether loading may import ``name``: what weights_only allows, and for the engines' files numpy's random
    state and the shard metadata of torch.distributed.checkpoint too."""
    if name in weights_only_globals():
        return True
    return engine and (name in _NUMPY_STATE or name in _PATHS or name.startswith(_CHECKPOINT_METADATA))


def pickle_globals(data: bytes) -> list[str]:
    """Every global ``data`` (one pickle) names, in order; ``_UNREADABLE`` for one its opcodes compute at load time
    (a ``STACK_GLOBAL`` whose two names are not the literal strings pushed just before it, an extension code)."""
    found: list[str] = []
    memo: dict[int, str | None] = {}
    pushed: list[str | None] = []  # what the last stack-changing opcodes pushed: a string, or None for anything else
    for opcode, argument, _ in pickletools.genops(io.BytesIO(data)):
        name = opcode.name
        if name in _NO_STACK_CHANGE:
            continue
        if name in _MEMO_PUTS:
            memo[len(memo) if name == "MEMOIZE" else int(argument)] = pushed[-1] if pushed else None
            continue
        if name in ("GLOBAL", "INST"):
            found.append(_python3_name(*str(argument).split(" ", 1)))
        elif name == "STACK_GLOBAL":
            module, attribute = (pushed[-2], pushed[-1]) if len(pushed) >= 2 else (None, None)
            found.append(
                _python3_name(module, attribute) if module is not None and attribute is not None else _UNREADABLE
            )
        elif name.startswith("EXT"):
            found.append(_UNREADABLE)
        if name in _STRING_PUSHES:
            pushed.append(str(argument))
        elif name in _MEMO_GETS:
            pushed.append(memo.get(int(argument)))
        else:
            pushed.append(None)
        del pushed[:-2]
    return found


def _python3_name(module: str, name: str) -> str:
    """``module.name`` as the unpickler imports it: protocol 2 (torch.save's) spells builtins ``__builtin__``."""
    module, name = _compat_pickle.NAME_MAPPING.get((module, name), (module, name))
    return f"{_compat_pickle.IMPORT_MAPPING.get(module, module)}.{name}"


def unsafe_globals(path: Path, engine: bool = False) -> list[str]:
    """The globals of the pickles in ``path`` (a ``torch.save`` zip, or a plain pickle) that loading with the full
    unpickler would import beyond what ``allowed`` lets through; [] for a file holding no pickle (safetensors, JSON,
    raw shards). A pickle whose opcodes cannot be read counts as unsafe.

    Args:
        engine: the file is one an engine (accelerate, DeepSpeed, torch.distributed.checkpoint) wrote and reads.
    """
    pickles: list[bytes] = []
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as archive:
            pickles = [archive.read(name) for name in archive.namelist() if name.endswith(".pkl")]
    else:
        with path.open("rb") as file:
            if file.read(1) == b"\x80":  # the PROTO opcode every pickle of protocol 2 or later starts with
                pickles = [path.read_bytes()]
    unsafe: list[str] = []
    for data in pickles:
        try:
            names = pickle_globals(data)
        except (ValueError, EOFError) as error:  # pickletools: an opcode it does not know, a truncated pickle
            names = [f"<unreadable pickle: {error}>"]
        unsafe.extend(name for name in names if not allowed(name, engine))
    return list(dict.fromkeys(unsafe))
