"""Text files in and out: UTF-8 lines with their numbers (plain or gzip), and atomic streamed writes.

Every input afp reads (recipes aside: instructions, parallel text, training files, questions, generations, pairs)
is UTF-8. A file that is not (Latin-1, UTF-16,
a binary file given by mistake, a gzip file without ``.gz``) is a user error that names the file and the line
where decoding failed, never a ``UnicodeDecodeError`` traceback.
"""

from __future__ import annotations

import contextlib
import gzip
import os
import tempfile
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO, TextIO

from afp_cli.errors import AfpError, located

_BOM = b"\xef\xbb\xbf"
_UTF16_BOMS = (b"\xff\xfe", b"\xfe\xff")
_GZIP_MAGIC = b"\x1f\x8b"


def _open_binary(path: Path) -> BinaryIO:
    if path.name.endswith(".gz"):
        return gzip.open(path, "rb")
    return path.open("rb")


def open_text(path: Path) -> TextIO:
    """A text handle (gzip by suffix); prefer ``iter_lines``, whose decoding errors name the line."""
    if path.name.endswith(".gz"):
        return gzip.open(path, "rt", encoding="utf-8")
    return path.open(encoding="utf-8")


def decode_line(path: Path, number: int, raw: bytes) -> str:
    """``raw`` as text, or a one-line error naming file, line and what the bytes look like."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as error:
        raise not_utf8(path, number, raw, error.start) from None
    if "\x00" in text:  # valid UTF-8, but no text file holds NUL bytes: a binary file (or UTF-16 without BOM)
        raise not_utf8(path, number, raw, raw.index(b"\x00"))
    return text


def not_utf8(path: Path, number: int, raw: bytes, position: int) -> AfpError:
    if number == 1 and raw.startswith(_UTF16_BOMS):
        looks = "it looks like UTF-16"
    elif number == 1 and raw.startswith(_GZIP_MAGIC):
        looks = "it looks gzip-compressed: name it *.gz"
    elif b"\x00" in raw:
        looks = "it looks binary or UTF-16"
    else:
        looks = "Latin-1 or another legacy encoding?"
    byte = raw[position: position + 1].hex()
    return located(path, number, None, f"not UTF-8 text (byte 0x{byte}; {looks}); save it as UTF-8")


def iter_lines(path: Path) -> Iterator[tuple[int, str]]:
    """(line number, text without the line break) for each line; a UTF-8 byte-order mark is dropped."""
    try:
        with _open_binary(path) as file:
            for number, raw in enumerate(file, start=1):
                if number == 1 and raw.startswith(_BOM):
                    raw = raw[len(_BOM):]
                yield number, decode_line(path, number, raw).rstrip("\r\n")
    except (gzip.BadGzipFile, EOFError, zlib.error) as error:
        raise AfpError(f"{path}: not a readable gzip file ({error})") from None


def read_text(path: Path) -> str:
    """The whole file as text (for JSON lists); a decoding error names the line it is on."""
    try:
        with _open_binary(path) as file:
            data = file.read()
    except (gzip.BadGzipFile, EOFError, zlib.error) as error:
        raise AfpError(f"{path}: not a readable gzip file ({error})") from None
    data = data[len(_BOM):] if data.startswith(_BOM) else data
    try:
        text = data.decode("utf-8")
        if "\x00" not in text:
            return text
        position = data.index(b"\x00")  # no text file holds NUL bytes (see decode_line)
    except UnicodeDecodeError as error:
        position = error.start
    start = data.rfind(b"\n", 0, position) + 1
    raise not_utf8(path, data.count(b"\n", 0, position) + 1, data[start:], position - start)


def require_utf8(path: str | Path, what: str = "input") -> Path:
    """``path`` itself if it is a readable UTF-8 text file (plain or ``.gz``); else one line naming file and line.

    For readers that hand the file to code of their own (``json`` on each line, ``csv``): checked before they start,
    so a Latin-1 export or a UTF-16 file is a user error, never a ``UnicodeDecodeError`` halfway through.
    """
    path = Path(path)
    if not path.is_file():
        raise AfpError(f"{path}: {what} file not found")
    read_text(path)
    return path


def first_text(path: Path, size: int = 4096) -> str:
    """The first non-blank characters of the file (to tell a JSON list from JSON lines), decoded leniently."""
    try:
        with _open_binary(path) as file:
            while chunk := file.read(size):
                stripped = chunk.lstrip(_BOM).lstrip()
                if stripped:
                    return stripped[:1].decode("latin-1")
    except (gzip.BadGzipFile, EOFError, zlib.error) as error:
        raise AfpError(f"{path}: not a readable gzip file ({error})") from None
    return ""


@contextlib.contextmanager
def streamed_atomically(path: str | Path, binary: bool = False) -> Iterator[TextIO | BinaryIO]:
    """Write to a temporary file beside ``path``, then rename: readers see the old file or the whole new one.

    The one atomic writer of afp (report.write_atomically is this with the data in hand); a failure removes the
    temporary file and leaves ``path`` as it was.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "wb") if binary else os.fdopen(handle, "w", encoding="utf-8", newline="\n") as file:
            yield file
        os.chmod(temp_name, 0o666 & ~_umask())  # mkstemp makes 0600; an output gets the usual permissions
        os.replace(temp_name, path)
    except BaseException:
        Path(temp_name).unlink(missing_ok=True)
        raise


def _umask() -> int:
    current = os.umask(0)
    os.umask(current)
    return current
