"""Late events: how far back the next dbt tick must look.

A tick re-reads `lookback_seconds` of events before each incremental model's high-water mark
(dbt var `lookback_minutes`). The collector publishes one-second segments in order, so that
window is enough while it runs; but a collector that crashed publishes the journal it
recovered when it restarts, and those events were received minutes before the warehouse's
high-water mark. A tick with the usual window would never read them: the cart they abandon
would get no email.

So the capture says which `receivedAt` range it loaded, and the next tick looks back far
enough to reach the earliest event received before what the ticks have already counted. The
`signals` bookmark keeps that account, written in the same file write as the capture's
bookmark: a watch killed between the load and the tick still widens the tick after its
restart. With no account yet (a new state folder on an existing warehouse) everything
loaded counts as late, once.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from signalmail.watch.state import StateFile

NAME = "signals"


def _parse(value: str | None) -> dt.datetime | None:
    return dt.datetime.fromisoformat(value) if value else None


class LateEvents:
    """The `signals` bookmark: received-at the ticks counted to, and any late load pending."""

    name = NAME

    def __init__(self, state: StateFile, lookback_seconds: float) -> None:
        self.state = state
        self.window = dt.timedelta(seconds=lookback_seconds)

    @property
    def counted_until(self) -> dt.datetime | None:
        """The latest receivedAt loaded before the last tick that succeeded."""
        return _parse(self.state.get(NAME).get("counted_until"))

    @property
    def late_from(self) -> dt.datetime | None:
        """The earliest receivedAt loaded since then that the usual window does not reach."""
        return _parse(self.state.get(NAME).get("late_from"))

    def noted(self, earliest: dt.datetime | None, latest: dt.datetime | None) -> dict[str, Any]:
        """Give the bookmark after a load of receipts in [earliest, latest] (not saved here)."""
        bookmark = self.state.get(NAME)
        counted = _parse(bookmark.get("counted_until"))
        if earliest is not None and (counted is None or earliest < counted - self.window):
            pending = _parse(bookmark.get("late_from"))
            bookmark["late_from"] = min(earliest, pending or earliest).isoformat()
        loaded = _parse(bookmark.get("loaded_until"))
        if latest is not None and (loaded is None or latest > loaded):
            bookmark["loaded_until"] = latest.isoformat()
        return bookmark

    def tick_lookback(self) -> float | None:
        """Seconds the next tick must look back; None when the usual window reaches."""
        late, counted = self.late_from, self.counted_until
        if late is None:
            return None
        if counted is None:  # nothing counted yet: reach every event loaded
            counted = _parse(self.state.get(NAME).get("loaded_until")) or late
        # +1 s: receipts are kept to the second, the models' marks to the millisecond
        return max((counted - late).total_seconds(), 0.0) + self.window.total_seconds() + 1

    def counted(self) -> None:
        """Record that a tick succeeded: everything loaded before it is counted."""
        bookmark = self.state.get(NAME)
        loaded = bookmark.get("loaded_until")
        if loaded is None and "late_from" not in bookmark:
            return
        self.state.save(NAME, {"counted_until": loaded, "loaded_until": loaded})
