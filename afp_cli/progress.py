"""The one way afp draws progress: a Rich bar, drawn only on a terminal, so logs and pipes get results, not frames.

Every stage uses it (align's step bar, evaluate's task bar, analyze's and data's counting bars); rich is imported
when a bar is made, not when this module is.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any


def progress_bar(console: Any = None, *, stats: bool = False, eta: bool = False, transient: bool = False) -> Any:
    """A ``rich.progress.Progress``: description, bar, done/total[, the task's ``stats`` field], elapsed[, eta].

    Args:
        console: where it draws (default: a new stdout console); off unless that console is a terminal.
        stats: a column showing the task's ``stats`` field (``add_task(..., stats="")``, then ``update(stats=…)``).
        eta: the estimated time left.
        transient: the bar disappears when done (counting bars whose result is printed afterwards).
    """
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    console = console if console is not None else Console()
    columns: list[Any] = [TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn()]
    if stats:
        columns.append(TextColumn("{task.fields[stats]}"))
    columns.append(TimeElapsedColumn())
    if eta:
        columns += [TextColumn("eta"), TimeRemainingColumn()]
    return Progress(*columns, console=console, transient=transient, disable=not console.is_terminal)


@contextlib.contextmanager
def counting(description: str, total: int) -> Iterator[Callable[[int], None]]:
    """A transient bar on stderr (reports printed on stdout stay clean); yields ``advance(n=1)``."""
    from rich.console import Console

    bar = progress_bar(Console(stderr=True), transient=True)
    with bar:
        task = bar.add_task(description, total=total)
        yield lambda count=1: bar.advance(task, count)
