"""One process per run folder: a lock file beside it naming its holder (host, pid, start time, command).

Two processes writing one folder (a Slurm requeue that overlaps the job it replaces, the same command started
twice) would interleave checkpoints, cells and reports. The lock is ``.<name>.afp.lock`` beside the folder, not in
it: a run may replace its folder whole (``--overwrite``), and an empty output folder must stay empty. It is created
with ``O_CREAT | O_EXCL``, so of two starters exactly one creates it; the other reads the holder and stops with one
line naming it. A lock whose holder is gone (same host, no such process) is taken over with a warning; one held on
another host cannot be judged from here and is taken over only with ``--force-unlock``.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import os
import socket
import sys
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

from afp_cli.errors import AfpError, warn

FORCE_UNLOCK = "--force-unlock"
_HALF_WRITTEN_GRACE_S = 60.0  # an empty lock younger than this is a starter between creating and writing it


@dataclass(frozen=True)
class Holder:
    host: str
    pid: int
    started: str  # ISO 8601, local time with its offset
    command: str

    @classmethod
    def this_process(cls) -> Holder:
        started = datetime.datetime.now().astimezone().isoformat(timespec="seconds")
        return cls(socket.gethostname(), os.getpid(), started, " ".join(["afp", *sys.argv[1:]])[:300])

    def describe(self) -> str:
        return f"pid {self.pid} on {self.host}, since {self.started}: {self.command}"

    def is_gone(self) -> bool:
        """The holder ran on this host and no process has its pid any more (never judged for another host)."""
        if self.host != socket.gethostname():
            return False
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return True
        except PermissionError:  # another user's process: alive
            return False
        return False


class FolderInUse(AfpError):
    """Another process holds the run folder's lock."""


def lock_path(folder: Path) -> Path:
    folder = Path(folder).absolute()
    return folder.with_name(f".{folder.name}.afp.lock")


def _read_holder(path: Path) -> Holder | None:
    """The holder written in the lock; None while it is empty or unreadable (being written, or damaged)."""
    try:
        return Holder(**json.loads(path.read_text(encoding="utf-8")))
    except (OSError, ValueError, TypeError):
        return None


def _create(path: Path, holder: Holder) -> bool:
    """Create the lock with ``holder`` in it; False when it exists already (another starter won)."""
    try:
        handle = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
        return False
    with os.fdopen(handle, "w", encoding="utf-8") as file:
        file.write(json.dumps(asdict(holder)) + "\n")
    return True


def _take_over(path: Path, seen: Holder | None) -> bool:
    """Move the lock that held ``seen`` out of the way; False when another starter took it over first (the file
    there now holds someone else: it is put back)."""
    aside = path.with_name(f"{path.name}.taken-{os.getpid()}")
    try:
        os.replace(path, aside)
    except FileNotFoundError:
        return True  # its holder released it meanwhile
    if _read_holder(aside) != seen:
        with contextlib.suppress(OSError):
            os.link(aside, path)  # someone else's fresh lock: back, unless a third starter holds the name now
        aside.unlink(missing_ok=True)
        return False
    aside.unlink(missing_ok=True)
    return True


@contextlib.contextmanager
def folder_lock(folder: str | Path, force_unlock: bool = False) -> Iterator[Path]:
    """Hold the lock of the run folder ``folder`` for the body; yields the lock file's path.

    Raises:
        FolderInUse: another live process holds it (one line naming it, exit 2).
    """
    folder = Path(folder)
    path = lock_path(folder)
    created: list[Path] = []
    parent = path.parent
    while not parent.exists():
        created.append(parent)
        parent = parent.parent
    path.parent.mkdir(parents=True, exist_ok=True)
    mine = Holder.this_process()
    while not _create(path, mine):
        holder = _read_holder(path)
        if holder is None and not path.exists():
            continue  # released between our two looks
        if holder is None and time.time() - _mtime(path) < _HALF_WRITTEN_GRACE_S:
            time.sleep(0.05)  # a starter between creating and writing it: its name comes in a moment
            continue
        if holder is not None and not holder.is_gone() and not force_unlock:
            raise FolderInUse(
                f"{folder}: in use by another afp process ({holder.describe()}); wait for it to end, or if it "
                f"is gone (it ran on another host) remove {path} or pass {FORCE_UNLOCK}"
            )
        if _take_over(path, holder):
            why = "by --force-unlock" if holder is not None and not holder.is_gone() else "its process is gone"
            warn(f"{folder}: taking over the lock of {holder.describe() if holder else 'an unreadable lock'} ({why})")
    try:
        yield path
    finally:
        if _read_holder(path) == mine:
            path.unlink(missing_ok=True)
        for folder_made in created:
            with contextlib.suppress(OSError):
                folder_made.rmdir()


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except FileNotFoundError:
        return 0.0
