"""Keep raw events only so long: `signalmail retention --days N`.

Deletes the spool segments opened more than N days ago and the events received before then
from the warehouse's event tables (raw, and the dbt models that hold one row per event).
Derived state (profiles, sessions, recommendations) stays until a full refresh rebuilds it
from the events that are left. Run it with the watch stopped on DuckDB.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any

from signalmail.privacy.erase import delete_received_before
from signalmail.privacy.spool import SpoolChange, remove_segments_before
from signalmail.watch.settings import RAW_SCHEMA, WatchSettings


@dataclass
class RetentionReport:
    """What `apply_retention` deleted."""

    before: dt.datetime
    warehouse_rows: dict[str, int] = field(default_factory=dict)
    spool: SpoolChange = field(default_factory=SpoolChange)

    def lines(self) -> list[str]:
        """Render the report as a person reads it."""
        out = [f"events received before {self.before:%Y-%m-%d %H:%M} UTC:"]
        for table, count in sorted(self.warehouse_rows.items()):
            out.append(f"  {count:>8}  rows from {table}")
        out.append(
            f"spool: {self.spool.segments_deleted} segment(s) of {self.spool.segments_read} "
            f"deleted ({self.spool.events_removed} event(s))"
        )
        for path in self.spool.damaged:
            out.append(f"  damaged segment, deleted with it its unreadable tail: {path}")
        return out


def apply_retention(
    settings: WatchSettings,
    days: float,
    now: dt.datetime | None = None,
    storage_options: dict[str, Any] | None = None,
) -> RetentionReport:
    """Delete raw events older than `days` from the spool and the warehouse."""
    if days <= 0:
        raise ValueError("retention needs a positive number of days")
    now = now or dt.datetime.now(dt.UTC).replace(tzinfo=None)
    before = now - dt.timedelta(days=days)
    report = RetentionReport(before)
    engine = settings.warehouse_engine()
    try:
        with engine.begin() as conn:
            for schema in (RAW_SCHEMA, settings.dbt_schema):
                report.warehouse_rows.update(delete_received_before(conn, schema, before))
    finally:
        engine.dispose()
    report.spool = remove_segments_before(
        settings.spool_location, before, storage_options, settings.logs_folder
    )
    return report
