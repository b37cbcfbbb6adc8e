"""What a person watching `signalmail watch` sees.

On a terminal, a live panel (rich): each step with its state and timings, the last cycle,
events loaded, emails sent by campaign, latency p50/p95/max for the last minute and overall,
the next scheduled send and the last errors. Elsewhere (a log file, CI, `make demo` piped),
one plain line per cycle that did something and one per minute of sends, so the output reads
as a log. Both end with the same summary.
"""

from __future__ import annotations

import datetime as dt
import math
import sys
from typing import IO, Any

from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from signalmail.watch.latency import Summary
from signalmail.watch.status import STEPS, CycleRecord, WatchStatus, utcnow


def _seconds(value: float) -> str:
    return "-" if math.isnan(value) else f"{value:.2f}s"


class LineView:
    """One line per cycle with work, one per minute of sends (not a terminal)."""

    def __init__(self, stream: IO[str] | None = None) -> None:
        self.console = Console(file=stream or sys.stdout, highlight=False, soft_wrap=True)
        self._minute: dt.datetime | None = None
        self._errors_shown = 0

    def __enter__(self) -> LineView:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def step_started(self, status: WatchStatus, step: str) -> None:
        """Nothing to redraw."""

    def note(self, text: str) -> None:
        """Print a message worth a line of its own (start, nightly build, stop)."""
        self.console.print(f"{utcnow():%H:%M:%S} {text}")

    def cycle_finished(self, status: WatchStatus, cycle: CycleRecord) -> None:
        """Print the cycle if it did something; at a new minute, the last minute's latency."""
        new_errors = status.totals["errors"] - self._errors_shown
        for error in list(status.errors)[-new_errors:] if new_errors > 0 else []:
            self.console.print(f"error {error}")
        self._errors_shown = status.totals["errors"]
        if cycle.events or cycle.emails or "nightly" in cycle.steps:
            steps = " ".join(f"{name} {secs:.2f}s" for name, secs in cycle.steps.items())
            self.console.print(
                f"{cycle.started_at:%H:%M:%S} cycle {cycle.number}: {steps} | "
                f"{cycle.events} events, {cycle.emails} emails"
            )
        minute = utcnow().replace(second=0, microsecond=0)
        if self._minute is not None and minute > self._minute:
            done = status.latency.minute(self._minute)
            if done.count:
                self.console.print(f"{self._minute:%H:%M} latency {done.text()}")
        self._minute = minute

    def summary(self, status: WatchStatus) -> None:
        """Print the exit summary."""
        self.console.print(render_summary(status))


class LiveView(LineView):
    """A live panel redrawn four times a second (a terminal)."""

    def __init__(self, status: WatchStatus, stream: IO[str] | None = None) -> None:
        super().__init__(stream)
        self.status = status
        self.live = Live(
            get_renderable=lambda: render_panel(self.status),
            console=self.console,
            refresh_per_second=4,
            transient=False,
        )

    def __enter__(self) -> LiveView:
        self.live.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self.live.__exit__(None, None, None)

    def note(self, text: str) -> None:
        """Print above the panel."""
        self.live.console.print(f"{utcnow():%H:%M:%S} {text}")

    def cycle_finished(self, status: WatchStatus, cycle: CycleRecord) -> None:
        """Do nothing: the panel redraws itself."""


class QuietView(LineView):
    """Only the summary."""

    def note(self, text: str) -> None:
        """Nothing."""

    def cycle_finished(self, status: WatchStatus, cycle: CycleRecord) -> None:
        """Nothing."""


def make_view(kind: str, status: WatchStatus) -> LineView:
    """`auto` is the live panel on a terminal and lines elsewhere."""
    if kind == "auto":
        kind = "live" if sys.stdout.isatty() else "lines"
    if kind == "live":
        return LiveView(status)
    if kind == "quiet":
        return QuietView()
    return LineView()


def render_panel(status: WatchStatus) -> Any:
    """Render the live panel."""
    steps = Table(title="signalmail watch", expand=False)
    for column in ("step", "state", "last", "p50", "p95", "runs"):
        steps.add_column(column, justify="right" if column != "step" else "left")
    for step in STEPS:
        summary = status.step_summary(step)
        last = status.last.get(step)
        state = "[bold yellow]running[/]" if status.running == step else "idle"
        steps.add_row(
            step,
            state,
            _seconds(last.seconds) if last else "-",
            _seconds(summary.p50),
            _seconds(summary.p95),
            str(status.step_runs[step]),
        )
    now = utcnow()
    last_minute = status.latency.last_minutes(now, minutes=2)
    overall = status.latency.overall()
    cycle = status.cycles[-1] if status.cycles else None
    lines = [
        f"cycles {status.cycle_count}"
        + (f"  (last: {cycle.seconds:.2f}s, {cycle.events} events)" if cycle else ""),
        f"events loaded {status.totals['events']:,}   emails sent {status.emails_sent:,}   "
        f"held out {status.totals['held_out']:,}   deferred {status.totals['deferred']:,}",
        f"latency last minute {last_minute.text()}",
        f"latency overall     {overall.text()}",
    ]
    if status.emails_by_campaign:
        lines.append(
            "by campaign: "
            + ", ".join(f"{c} {n}" for c, n in status.emails_by_campaign.most_common())
        )
    if status.next_deferred_at is not None:
        lines.append(f"next scheduled send {status.next_deferred_at:%Y-%m-%d %H:%M} UTC")
    for error in status.errors:
        lines.append(f"[red]error {error}[/]")
    if status.stopping:
        lines.append("[bold]stopping: finishing the current step[/]")
    return Group(steps, *(Text.from_markup(line) for line in lines))


def render_summary(status: WatchStatus) -> Any:
    """Render steps, totals and latency per minute for the exit summary."""
    table = Table(title="steps (seconds)", expand=False)
    for column in ("step", "runs", "p50", "p95", "max"):
        table.add_column(column, justify="right" if column != "step" else "left")
    for step in STEPS:
        summary = status.step_summary(step)
        if summary.count:
            table.add_row(
                step, str(status.step_runs[step]), f"{summary.p50:.2f}", f"{summary.p95:.2f}",
                f"{summary.max:.2f}",
            )  # fmt: skip
    minutes = Table(title="event-to-Mandrill latency by minute (seconds)", expand=False)
    for column in ("minute (UTC)", "emails", "p50", "p95", "max"):
        minutes.add_column(column, justify="right")
    for minute, summary in status.latency.minutes():
        minutes.add_row(*_summary_row(f"{minute:%H:%M}", summary))
    minutes.add_row(*_summary_row("all", status.latency.overall()))
    totals = Text(
        f"{status.cycle_count} cycles, {status.totals['events']:,} events loaded, "
        f"{status.emails_sent:,} emails sent, {status.totals['held_out']:,} held out, "
        f"{status.totals['errors']:,} step errors"
    )
    return Group(totals, table, minutes)


def _summary_row(label: str, summary: Summary) -> tuple[str, ...]:
    if not summary.count:
        return (label, "0", "-", "-", "-")
    return (
        label,
        str(summary.count),
        f"{summary.p50:.1f}",
        f"{summary.p95:.1f}",
        f"{summary.max:.1f}",
    )
