"""Progress of long work (a replay, a simulation, a history load, a bench) on the terminal.

rich draws the bar on standard error, at most a few times a second; where standard error is not
a terminal (CI, a log file, `make demo | tee`), it draws nothing, so logs stay clean.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    Progress,
    ProgressColumn,
    Task,
    TaskProgressColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.text import Text


class CountColumn(ProgressColumn):
    """'12,345 events' (or '12.3/45.6 MB' for bytes), with the rate so far."""

    def __init__(self, unit: str) -> None:
        super().__init__()
        self.unit = unit

    def render(self, task: Task) -> Text:
        """Render the count and the rate."""
        speed = task.finished_speed or task.speed
        if self.unit == "bytes":
            done = f"{task.completed / 1e6:,.1f}"
            of = f"/{task.total / 1e6:,.1f} MB" if task.total else " MB"
            rate = f"  {speed / 1e6:,.1f} MB/s" if speed else ""
            return Text(done + of + rate)
        of = f"/{task.total:,.0f}" if task.total else ""
        rate = f"  {speed:,.0f} {self.unit}/s" if speed else ""
        return Text(f"{task.completed:,.0f}{of} {self.unit}{rate}")


class Bar:
    """One task of a rich Progress: `advance` and `update` as the work goes on."""

    def __init__(self, progress: Progress, task: Any) -> None:
        self.progress = progress
        self.task = task

    def advance(self, amount: float = 1) -> None:
        """Count `amount` more units done."""
        self.progress.advance(self.task, amount)

    def update(self, completed: float | None = None, **fields: Any) -> None:
        """Set the units done and any extra fields the columns show."""
        self.progress.update(self.task, completed=completed, **fields)


@contextlib.contextmanager
def progress_bar(
    description: str,
    total: float | None = None,
    unit: str = "events",
    extra: str = "",
    console: Console | None = None,
    enabled: bool | None = None,
    **fields: Any,
) -> Iterator[Bar]:
    """Show a bar for the block (a count and its rate when `total` is unknown).

    `extra` is a rich format string over `fields`, e.g. "{task.fields[rejects]:,} rejected".
    `enabled`: None draws on a terminal only; True always (a `--progress` flag); False never.
    """
    console = console or Console(stderr=True, force_terminal=True if enabled else None)
    if enabled is False:
        console = Console(stderr=True, quiet=True)
    columns: list[Any] = [TextColumn("[bold]{task.description}")]
    if total is not None:
        columns += [BarColumn(), TaskProgressColumn()]
    columns.append(CountColumn(unit))
    if extra:
        columns.append(TextColumn(extra))
    columns.append(TimeElapsedColumn())
    if total is not None:
        columns.append(TimeRemainingColumn())
    progress = Progress(*columns, console=console, disable=not console.is_terminal)
    task = progress.add_task(description, total=total, **fields)
    with progress:
        yield Bar(progress, task)
