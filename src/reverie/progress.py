"""What long work shows on stderr: progress bars, one compact status line per step, and no library chatter."""

from __future__ import annotations

import sys
from contextlib import contextmanager
from typing import Iterator

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

console = Console(stderr=True, width=None if sys.stderr.isatty() else 200)
results = Console(width=None if sys.stdout.isatty() else 200)  # tables and answers, on stdout; never folded in pipes


class Bar:
    """A handle to advance one progress bar and show its latest figures."""

    def __init__(self, progress: Progress, task: int):
        self._progress = progress
        self._task = task

    def advance(self, steps: int = 1, status: str = "") -> None:
        self._progress.update(self._task, advance=steps, status=status)


@contextmanager
def progress_bar(description: str, total: int | None) -> Iterator[Bar]:
    """A bar on stderr; a total of None (not known ahead) shows the count and the time only."""
    columns = (
        TextColumn("  {task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
        TextColumn("eta"), TimeRemainingColumn(), TextColumn("{task.fields[status]}"),
    )
    with Progress(*columns, console=console, transient=console.is_terminal) as progress:
        yield Bar(progress, progress.add_task(description, total=total, status=""))


def status_line(text: str) -> None:
    console.print(text, highlight=False)
