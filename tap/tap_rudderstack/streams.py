"""Streams of tap-rudderstack: one per RudderStack event type, plus ``rejected_events``.

Their schemas and records are built in ``records.py`` (the raw-table columns of
docs/contracts.md section 3). A normal run does not call ``get_records`` stream by stream: the
tap reads each spool file once and routes every line to its stream (see ``sync.py``), because
one file holds all event types. ``get_records`` is the same reader filtered to one stream, used
when the SDK syncs a single stream (connection tests, ``run_sync_dry_run``).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, ClassVar

from singer_sdk import Stream
from singer_sdk.helpers.conform import TypeConformanceLevel

from tap_rudderstack.records import (
    COMMON_PROPERTIES,
    EXTRA_PROPERTIES,
    REJECTED_EVENT_PROPERTIES,
)
from tap_rudderstack.sync import SpoolSync

if TYPE_CHECKING:
    from singer_sdk.helpers.types import Context


class SpoolStream(Stream):
    """Base of every stream: records come from the spool, state is the tap's spool progress.

    The bookmark is not a replication-key maximum (the SDK's model) but a spool position kept by
    ``sync.SpoolProgress`` under ``bookmarks.<stream>.spool``; ``_spool_key`` is declared as the
    replication key so catalogs show the stream as INCREMENTAL.
    """

    primary_keys: ClassVar[list[str]] = ["message_id"]
    replication_key = "_spool_key"
    is_sorted = False
    # Records are built with exactly the schema's types: conform the root level only.
    TYPE_CONFORMANCE_LEVEL = TypeConformanceLevel.ROOT_ONLY

    def _increment_stream_state(
        self, latest_record: dict, *, context: Context | None = None
    ) -> None:
        """No SDK replication-key bookkeeping: progress is the spool position (``sync.py``)."""

    def get_records(self, context: Context | None) -> Iterable[dict[str, Any]]:
        """Read this stream's records from the spool (single-stream syncs only)."""
        yield from SpoolSync(self._tap, [self]).iter_stream_records(self)


class EventStream(SpoolStream):
    """One record per RudderStack event of one type, keyed by ``messageId``."""

    def __init__(self, tap: Any, name: str) -> None:
        properties = {**COMMON_PROPERTIES, **EXTRA_PROPERTIES[name]}
        schema = {"type": "object", "properties": properties, "required": ["message_id"]}
        super().__init__(tap=tap, schema=schema, name=name)


class RejectedEventsStream(SpoolStream):
    """One record per spool line that is not a usable event, or per quarantined file tail.

    ``rejected_id`` is a hash of (file key, line number), so re-reading a file after a crash
    upserts the same rows instead of adding new ones.
    """

    primary_keys: ClassVar[list[str]] = ["rejected_id"]
    replication_key = "source_file"

    def __init__(self, tap: Any) -> None:
        schema = {
            "type": "object",
            "properties": REJECTED_EVENT_PROPERTIES,
            "required": ["rejected_id"],
        }
        super().__init__(tap=tap, schema=schema, name="rejected_events")
