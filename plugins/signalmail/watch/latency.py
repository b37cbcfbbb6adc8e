"""Event-to-inbox latency: per email, per minute and over the whole watch.

An email's latency runs from the moment it became due (email_triggers.due_at: the receipt of
the event that completed its situation, or its scheduled send time if later) to Mandrill's
answer accepting it. The ledger stores both times with the send; this book keeps the
figures of the running process for the terminal view, /metrics and the exit summary.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field


def percentile(values: Sequence[float], share: float) -> float:
    """Return the nearest-rank percentile (`share` in 0..1) of values; NaN when none."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(1, math.ceil(share * len(ordered)))
    return ordered[rank - 1]


@dataclass(frozen=True)
class Summary:
    """Count and spread of a set of latencies, in seconds."""

    count: int
    p50: float
    p95: float
    max: float

    @classmethod
    def of(cls, values: Sequence[float]) -> Summary:
        """Summarise `values` (NaN figures when empty)."""
        return cls(
            count=len(values),
            p50=percentile(values, 0.50),
            p95=percentile(values, 0.95),
            max=max(values) if values else math.nan,
        )

    def text(self) -> str:
        """'n=12 p50=3.1s p95=6.0s max=7.2s', or 'n=0'."""
        if not self.count:
            return "n=0"
        return f"n={self.count} p50={self.p50:.1f}s p95={self.p95:.1f}s max={self.max:.1f}s"


#: minutes looked at, newest entered first, for the last few minutes' latency (last_minutes)
RECENT_ENTRIES = 120


@dataclass
class LatencyBook:
    """Latencies of the emails sent so far, by the minute they were sent in (UTC)."""

    by_minute: dict[dt.datetime, list[float]] = field(default_factory=dict)
    by_campaign: dict[str, list[float]] = field(default_factory=dict)
    without_due_time: int = 0

    def add(self, campaign: str, sent_at: dt.datetime, seconds: float | None) -> None:
        """Record one accepted email (seconds None: the mart gave no due time)."""
        if seconds is None:
            self.without_due_time += 1
            return
        minute = sent_at.replace(second=0, microsecond=0)
        self.by_minute.setdefault(minute, []).append(seconds)
        self.by_campaign.setdefault(campaign, []).append(seconds)

    def extend(self, accepted: Iterable[tuple[str, dt.datetime, float | None]]) -> None:
        """Record several (campaign, sent_at, seconds) at once."""
        for campaign, sent_at, seconds in accepted:
            self.add(campaign, sent_at, seconds)

    def overall(self) -> Summary:
        """Every email so far."""
        return Summary.of([s for values in self.by_minute.values() for s in values])

    def minute(self, minute: dt.datetime) -> Summary:
        """Emails sent in one minute."""
        return Summary.of(self.by_minute.get(minute.replace(second=0, microsecond=0), []))

    def last_minutes(self, now: dt.datetime, minutes: int = 1) -> Summary:
        """Emails sent in the `minutes` full and current minutes up to `now`."""
        start = now.replace(second=0, microsecond=0) - dt.timedelta(minutes=minutes - 1)
        recent: list[float] = []
        # A minute enters the book when its first send is answered, so the recent ones are among
        # the last entered: look at those only, not at every minute since the start on each
        # cycle. Not just until the first older one: a reconciled send enters its own, older
        # minute (Mandrill's time), out of order.
        for entered, minute in enumerate(reversed(self.by_minute)):
            if entered >= RECENT_ENTRIES + minutes:
                break
            if minute >= start:
                recent.extend(self.by_minute[minute])
        return Summary.of(recent)

    def minutes(self) -> list[tuple[dt.datetime, Summary]]:
        """Each minute with sends, oldest first."""
        return [(minute, Summary.of(values)) for minute, values in sorted(self.by_minute.items())]
