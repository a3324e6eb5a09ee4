"""Refuse input files that are not UTF-8 text before any reader meets them, naming the file and the line.

Python's readers would fail mid-file with a ``UnicodeDecodeError`` that names neither; a Latin-1 export, a
UTF-16 file saved by a Windows editor or a binary file given by mistake is a user error (one line, exit 2).
"""

from __future__ import annotations

import gzip
from pathlib import Path

from afp_cli.errors import AfpError, located

_UTF16_BOMS = (b"\xff\xfe", b"\xfe\xff")
_HINT = "save it as UTF-8"


def require_utf8(path: str | Path, what: str = "input") -> Path:
    """``path`` itself if it is a UTF-8 text file (plain or ``.gz``); else an ``AfpError`` naming file and line."""
    path = Path(path)
    if not path.is_file():
        raise AfpError(f"{path}: {what} file not found")
    try:
        raw = gzip.decompress(path.read_bytes()) if path.name.endswith(".gz") else path.read_bytes()
    except (OSError, EOFError) as error:  # a truncated or fake .gz
        raise AfpError(f"{path}: cannot read the {what} file ({error})") from None
    if raw.startswith(_UTF16_BOMS):
        raise AfpError(f"{path}: the {what} file is UTF-16 text, not UTF-8; {_HINT}")
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError as error:
        line = raw.count(b"\n", 0, error.start) + 1
        raise located(path, line, None, f"not UTF-8 text (byte 0x{raw[error.start]:02x}); {_HINT}") from None
    if b"\x00" in raw:  # valid UTF-8 but NUL bytes: a binary file, or UTF-16 without its byte-order mark
        line = raw.count(b"\n", 0, raw.index(b"\x00")) + 1
        raise located(path, line, None, f"NUL byte: a binary file or UTF-16 text, not UTF-8; {_HINT}")
    return path
