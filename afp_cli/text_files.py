"""Text files in and out: UTF-8 lines with their numbers (plain or gzip), and the one atomic writer of afp.

Every input afp reads (recipes aside: instructions, parallel text, training files, questions, generations, pairs)
is UTF-8. A file that is not (Latin-1, UTF-16,
a binary file given by mistake, a gzip file without ``.gz``) is a user error that names the file and the line
where decoding failed, never a ``UnicodeDecodeError`` traceback.

Every file afp writes goes through ``streamed_atomically`` (one file; ``write_atomically`` with the data in hand,
``write_all_atomically`` for files that belong together), ``folder_atomically`` (a folder of files a library
writes: checkpoints, models, adapters, generations), ``replacing_folder`` (a folder a run writes in place, the old
one kept aside until it succeeds) or ``append_text`` (a log that grows, metrics.jsonl): each either lands whole or
leaves nothing behind, and a write the disk refuses (full, over quota, read-only, not permitted) is a
``DiskFault``: one line naming what was being written, why, and the room left on that disk.
"""

from __future__ import annotations

import contextlib
import errno
import gzip
import hashlib
import os
import re
import shutil
import tempfile
import zlib
from collections.abc import Callable, Iterator, Mapping
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
    byte = raw[position : position + 1].hex()
    return located(path, number, None, f"not UTF-8 text (byte 0x{byte}; {looks}); save it as UTF-8")


def iter_lines(path: Path) -> Iterator[tuple[int, str]]:
    """(line number, text without the line break) for each line; a UTF-8 byte-order mark is dropped."""
    try:
        with _open_binary(path) as file:
            for number, raw in enumerate(file, start=1):
                if number == 1 and raw.startswith(_BOM):
                    raw = raw[len(_BOM) :]
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
    data = data[len(_BOM) :] if data.startswith(_BOM) else data
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


def sha256_file(path: Path) -> str:
    """The SHA-256 of a file's bytes, read a MiB at a time (checkpoints, adapters, data files)."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as file:
        while chunk := file.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


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


# ------------------------------------------------------------------------------------------- writing

# Writes the disk refuses for reasons the user fixes on their machine (room, quota, permissions, a file-size
# limit), never afp: one line each instead of a traceback.
DISK_FAULTS = {
    errno.ENOSPC: "no space left on device",
    errno.EDQUOT: "disk quota exceeded",
    errno.EROFS: "read-only file system",
    errno.EACCES: "permission denied",
    errno.EFBIG: "file too large for the file-size limit (ulimit -f)",
    errno.ENOTDIR: "a part of the path is a file, not a folder",
}
# torch.save's zip writer reports a failed write in its own words and without the errno
_TORCH_WRITE_FAILURES = ("inline_container.cc", "PytorchStreamWriter failed writing")
_NEARLY_FULL = 1 << 20  # bytes: a disk with less room than this after a failed write is the reason it failed


class DiskFault(AfpError):
    """A write the disk refused: what was being written, where, why, and the room left there."""


def write_fault(error: BaseException, path: str | Path) -> str | None:
    """Why the disk refused the write that raised ``error`` (one of DISK_FAULTS), or None when it is no such fault.

    Libraries with I/O of their own say it their own way: safetensors raises a ``SafetensorError`` ending in
    ``(os error 28)``, torch.save a ``RuntimeError`` from its zip writer (``[enforce fail at inline_container.cc]
    unexpected pos …``) that carries no errno, so the disk itself is asked (call this before removing what was
    half-written: a full disk must still be full).
    """
    if isinstance(error, OSError):
        return DISK_FAULTS.get(error.errno)
    message = str(error)
    if type(error).__name__ == "SafetensorError":
        found = re.search(r"os error (\d+)", message)
        return DISK_FAULTS.get(int(found.group(1))) if found else None
    if isinstance(error, RuntimeError) and any(sign in message for sign in _TORCH_WRITE_FAILURES):
        detail = " ".join(message.split())[-80:]
        return _probed_fault(Path(path)) or f"the write failed (torch: {detail}); is the disk over its quota?"
    return None


def _probed_fault(path: Path) -> str | None:
    """Why a write under ``path`` failed, asked of the disk and the process (torch's writer does not say)."""
    import resource

    folder = _existing_ancestor(path)
    disk = os.statvfs(folder)
    if disk.f_flag & os.ST_RDONLY:
        return DISK_FAULTS[errno.EROFS]
    if disk.f_bavail * disk.f_frsize < _NEARLY_FULL:
        return DISK_FAULTS[errno.ENOSPC]
    if not os.access(folder, os.W_OK):
        return DISK_FAULTS[errno.EACCES]
    if resource.getrlimit(resource.RLIMIT_FSIZE)[0] != resource.RLIM_INFINITY:
        return DISK_FAULTS[errno.EFBIG]
    return None


def _existing_ancestor(path: Path) -> Path:
    path = Path(path).absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def human_size(count: float) -> str:
    """``1.5 MiB``: a size in the binary units ``df -h`` prints."""
    units = ("B", "KiB", "MiB", "GiB", "TiB")
    power = 0
    while count >= 1024 and power < len(units) - 1:
        count, power = count / 1024, power + 1
    return f"{count:.0f} B" if power == 0 else f"{count:.1f} {units[power]}"


@contextlib.contextmanager
def _whole_or_nothing(path: Path, what: str | None, undo: Callable[[], None]) -> Iterator[None]:
    """Run the body; any failure first undoes what it half-wrote, and a write the disk refused becomes a DiskFault."""
    try:
        yield
    except BaseException as error:
        reason = write_fault(error, path)  # asked before undo() frees the room
        with contextlib.suppress(OSError):  # a read-only disk may refuse the undo too; the first error is the news
            undo()
        if reason is None:
            raise
        subject = f"{what} ({path})" if what else str(path)
        free = human_size(shutil.disk_usage(_existing_ancestor(path)).free)
        raise DiskFault(f"could not write {subject}: {reason} ({free} free there)") from error


def _made_folders(folder: Path) -> list[Path]:
    """Create ``folder`` and its missing parents; returns the ones created, deepest first, for an undo to remove."""
    missing = []
    while not folder.exists() and folder != folder.parent:
        missing.append(folder)
        folder = folder.parent
    for created in reversed(missing):
        created.mkdir(exist_ok=True)
    return missing


def _remove_if_empty(folders: list[Path]) -> None:
    for folder in folders:
        with contextlib.suppress(OSError):
            folder.rmdir()


def _put_in_place(source: Path, target: Path) -> None:
    """Rename ``source`` to ``target``, replacing it: a file in one step, a folder set aside first and then removed."""
    if target.is_dir() and not target.is_symlink():
        aside = target.with_name(f".tmp-old-{target.name}")
        shutil.rmtree(aside, ignore_errors=True)
        os.replace(target, aside)
        os.replace(source, target)
        shutil.rmtree(aside, ignore_errors=True)
        return
    if source.is_dir() and target.exists():
        target.unlink()
    os.replace(source, target)


@contextlib.contextmanager
def streamed_atomically(path: str | Path, binary: bool = False, what: str | None = None) -> Iterator[TextIO | BinaryIO]:
    """Write to a temporary file beside ``path``, then rename: readers see the old file or the whole new one.

    write_atomically is this with the data in hand. A failure removes the temporary file and leaves
    ``path`` as it was; a write the disk refused is a DiskFault naming ``what`` (default: the path).
    """
    path = Path(path)
    temporary: list[Path] = []
    created: list[Path] = []

    def undo() -> None:
        for name in temporary:
            name.unlink(missing_ok=True)
        _remove_if_empty(created)

    with _whole_or_nothing(path, what, undo):
        created.extend(_made_folders(path.parent))
        handle, temp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        temporary.append(Path(temp_name))
        with os.fdopen(handle, "wb") if binary else os.fdopen(handle, "w", encoding="utf-8", newline="\n") as file:
            yield file
        os.chmod(temp_name, 0o666 & ~_umask())  # mkstemp makes 0600; an output gets the usual permissions
        _put_in_place(Path(temp_name), path)


def write_atomically(path: str | Path, data: str | bytes, what: str | None = None) -> Path:
    """Write to a temporary file beside ``path``, then rename: readers see the old file or the whole new one.

    A full disk, a quota or an unwritable folder is one line (a DiskFault, exit 2) naming ``what`` (default: the
    path) and the room left, and nothing half-written is left beside ``path``.
    """
    with streamed_atomically(path, binary=isinstance(data, bytes), what=what) as file:
        file.write(data)
    return Path(path)


def write_all_atomically(contents: Mapping[str | Path, str | bytes], what: str | None = None) -> list[Path]:
    """Files that belong together (a report's Markdown, JSON and figures): every one is written to its temporary
    file first and renamed only when all are, so a full disk leaves none of them changed, not half a report."""
    with contextlib.ExitStack() as stack:
        for path, data in contents.items():
            file = stack.enter_context(streamed_atomically(path, binary=isinstance(data, bytes), what=what))
            file.write(data)
            file.flush()  # a full disk says so here, before any file of the set is renamed
    return [Path(path) for path in contents]


@contextlib.contextmanager
def folder_atomically(final: str | Path, what: str | None = None, into: bool = False) -> Iterator[Path]:
    """A hidden temporary folder to write a folder of files into (``save_pretrained``, a checkpoint), put in place
    at the end: it replaces ``final`` whole, or with ``into`` each of its files replaces its namesake in ``final``
    (the run folder, which holds other files too). A failure removes the temporary folder and leaves ``final`` as
    it was; a write the disk refused is a DiskFault naming ``what``.

    The temporary folder is ``.tmp-<name>`` beside ``final`` (``final/.tmp-outputs`` with ``into``): a run killed
    while writing leaves it behind, and whatever finds it (a resume) knows it for a leftover by its name.
    """
    final = Path(final)
    temporary = final / ".tmp-outputs" if into else final.with_name(f".tmp-{final.name}")
    created: list[Path] = []

    def undo() -> None:
        shutil.rmtree(temporary, ignore_errors=True)
        _remove_if_empty(created)

    with _whole_or_nothing(final, what, undo):
        shutil.rmtree(temporary, ignore_errors=True)  # left by a run that was killed, not failed
        created.extend(_made_folders(temporary.parent))
        temporary.mkdir()
        yield temporary
        if into:
            for item in sorted(temporary.iterdir()):
                _put_in_place(item, final / item.name)
            temporary.rmdir()
        else:
            _put_in_place(temporary, final)


@contextlib.contextmanager
def replacing_folder(folder: Path, keep_on_failure: Callable[[], bool]) -> Iterator[None]:
    """Empty ``folder`` for a body that writes into it in place (a training run: its checkpoints must lie where a
    resume looks for them), and put it back as it was if the body fails.

    What ``folder`` held waits beside it, hidden as ``.<name>.replaced``, and is removed when the body succeeds. A
    failure removes what the body wrote (``folder``, or the outermost folder it was missing) and puts the old
    contents back, unless ``keep_on_failure()`` says what the body wrote is worth more (a run with a checkpoint):
    then the old contents go. A ``.<name>.replaced`` left by a body that was killed, not failed, is removed first.
    """
    existed = folder.is_dir()
    created = folder  # the outermost folder the body creates (folder or a missing parent of it)
    while not created.parent.exists():
        created = created.parent
    replaced = folder.with_name(f".{folder.name}.replaced")
    shutil.rmtree(replaced, ignore_errors=True)
    if existed and any(folder.iterdir()):
        os.replace(folder, replaced)
        folder.mkdir()
    try:
        yield
    except BaseException:
        if keep_on_failure():
            shutil.rmtree(replaced, ignore_errors=True)
            raise
        shutil.rmtree(folder if existed else created, ignore_errors=True)
        if replaced.exists():
            os.replace(replaced, folder)
        elif existed:
            folder.mkdir()  # it was there, empty, before the body
        raise
    shutil.rmtree(replaced, ignore_errors=True)


def append_text(path: str | Path, text: str, what: str | None = None) -> None:
    """Append ``text`` whole or not at all: a write the disk refuses is cut off the file again (a DiskFault), so a
    log never ends in half a line. For logs that grow a line at a time, which rewriting would make quadratic."""
    append_bytes(path, text.encode("utf-8"), what)


def append_bytes(path: str | Path, data: bytes, what: str | None = None) -> None:
    """Append ``data`` whole or not at all, written through to the file before returning (append_text)."""
    path = Path(path)
    size = path.stat().st_size if path.exists() else None

    def undo() -> None:
        if size is None:
            path.unlink(missing_ok=True)
        else:
            os.truncate(path, size)

    with _whole_or_nothing(path, what, undo):
        _append_to(path, data)


def _append_to(path: Path, data: bytes) -> None:
    with path.open("ab") as file:
        file.write(data)


def _umask() -> int:
    current = os.umask(0)
    os.umask(current)
    return current
