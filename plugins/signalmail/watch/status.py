"""What the watch has done so far.

The one record the terminal view, /metrics and the summary read, so the three always show the
same figures.
"""

from __future__ import annotations

import datetime as dt
import math
from collections import Counter, deque
from dataclasses import dataclass, field
from typing import Any

from signalmail.watch.latency import LatencyBook, Summary, percentile
from signalmail.watch.steps import StepResult

STEPS = ("capture", "signals", "activate", "checkpoint", "nightly", "intent")
#: email target outcomes counted as accepted by Mandrill
ACCEPTED = ("sent", "queued", "scheduled")


def utcnow() -> dt.datetime:
    """Naive UTC, the convention of every table the watch writes."""
    return dt.datetime.now(dt.UTC).replace(tzinfo=None)


@dataclass
class CycleRecord:
    """One cycle: when it started and each step's seconds (only the steps that ran)."""

    number: int
    started_at: dt.datetime
    steps: dict[str, float] = field(default_factory=dict)
    events: int = 0
    emails: int = 0

    @property
    def seconds(self) -> float:
        """Wall time of the steps that ran."""
        return sum(self.steps.values())

    def to_dict(self) -> dict[str, Any]:
        """JSON form for --summary-json."""
        return {
            "cycle": self.number,
            "started_at": self.started_at.isoformat(),
            "steps": {k: round(v, 4) for k, v in self.steps.items()},
            "events": self.events,
            "emails": self.emails,
        }


#: Cycles kept for the summary, and step durations per step for the panel's percentiles: the
#: watch runs for months at one or two cycles a second, and unbounded lists grew by about
#: 35 MB a day (the totals are counters and never forget).
KEEP_CYCLES = 50_000
KEEP_DURATIONS = 10_000


@dataclass
class WatchStatus:
    """Running totals of one watch process."""

    started_at: dt.datetime = field(default_factory=utcnow)
    cycles: deque[CycleRecord] = field(default_factory=lambda: deque(maxlen=KEEP_CYCLES))
    #: cycles begun since the start (the kept `cycles` are the latest of them)
    cycle_count: int = 0
    running: str | None = None
    last: dict[str, StepResult] = field(default_factory=dict)
    durations: dict[str, deque[float]] = field(default_factory=dict)
    #: runs of each step since the start (its kept durations are the latest KEEP_DURATIONS)
    step_runs: Counter[str] = field(default_factory=Counter)
    totals: Counter[str] = field(default_factory=Counter)
    emails_by_campaign: Counter[str] = field(default_factory=Counter)
    latency: LatencyBook = field(default_factory=LatencyBook)
    errors: deque[str] = field(default_factory=lambda: deque(maxlen=5))
    next_deferred_at: dt.datetime | None = None
    stopping: bool = False
    #: why the watch stopped to start afresh (DuckDB invalidated the warehouse), else None
    restart_reason: str | None = None

    def begin_cycle(self) -> CycleRecord:
        """Open the record of a new cycle."""
        self.cycle_count += 1
        record = CycleRecord(self.cycle_count, utcnow())
        self.cycles.append(record)
        return record

    def record(self, cycle: CycleRecord, result: StepResult) -> None:
        """Take a finished step into the totals."""
        if result.step == "activate" and not result.ran:
            # no trigger to read: any scheduled send the last run deferred is gone (the shopper
            # bought, say), and waiting for its time would rebuild the read every cycle
            self.next_deferred_at = None
        if not result.ran:
            return
        self.last[result.step] = result
        self.step_runs[result.step] += 1
        durations = self.durations.get(result.step)
        if durations is None:
            durations = self.durations[result.step] = deque(maxlen=KEEP_DURATIONS)
        durations.append(result.seconds)
        cycle.steps[result.step] = cycle.steps.get(result.step, 0.0) + result.seconds
        if result.step == "capture":
            events = result.counts.get("events", 0)
            cycle.events += events
            self.totals["events"] += events
            self.totals["rejected_events"] += result.counts.get("rejected", 0)
        if result.step == "activate":
            for outcome in (*ACCEPTED, "held_out", "rejected", "invalid", "failed"):
                self.totals[outcome] += result.counts.get(outcome, 0)
            self.totals["deferred"] = result.counts.get("deferred_not_due", 0)
            for campaign, sent_at, seconds in result.accepted:
                self.emails_by_campaign[campaign] += 1
                self.latency.add(campaign, sent_at, seconds)
            cycle.emails += len(result.accepted)
            self.next_deferred_at = result.next_deferred_at

    def error(self, step: str, message: str) -> None:
        """Remember a failed step (the last few are shown)."""
        self.totals[f"errors_{step}"] += 1
        self.totals["errors"] += 1
        self.errors.append(f"{utcnow():%H:%M:%S} {step}: {message}")

    @property
    def emails_sent(self) -> int:
        """Emails Mandrill accepted."""
        return sum(self.totals[k] for k in ACCEPTED)

    def step_summary(self, step: str) -> Summary:
        """Durations of one step (count, p50, p95, max)."""
        return Summary.of(self.durations.get(step, ()))

    def cycle_p95(self) -> float:
        """p95 of whole cycles that did work."""
        values = [c.seconds for c in self.cycles if c.steps]
        return percentile(values, 0.95) if values else math.nan
