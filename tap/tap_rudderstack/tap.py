"""tap-rudderstack: RudderStack object-storage dumps (local folder or S3) as Singer streams."""

from __future__ import annotations

from collections import Counter
from typing import Any, ClassVar

from singer_sdk import Stream, Tap
from singer_sdk import typing as th
from singer_sdk.helpers.capabilities import PluginCapabilities, TapCapabilities

from tap_rudderstack.spool import DEFAULT_LOGS_FOLDER, EVENT_STREAMS
from tap_rudderstack.streams import EventStream, RejectedEventsStream
from tap_rudderstack.sync import FastWriter, ReceivedRange, SpoolSync


class TapRudderStack(Tap):
    """Singer tap over a RudderStack spool: one pass per run feeding every event stream.

    Streams: tracks, identifies, pages, screens, groups, aliases, merges and rejected_events;
    each run resumes from the spool position kept in state (see sync.py).
    """

    name = "tap-rudderstack"
    #: What the last sync read, for embedders (`signalmail watch`): records per stream name,
    #: `files`, `late_files`, `files_quarantined`, `blank_lines`.
    last_sync_counts: Counter[str]
    #: The earliest and latest receivedAt among those records.
    last_sync_received: ReceivedRange
    package_name = "signalmail"  # the distribution that ships this tap (version in --about)
    message_writer_class = FastWriter
    capabilities: ClassVar[list[Any]] = [
        TapCapabilities.CATALOG,
        TapCapabilities.STATE,
        TapCapabilities.DISCOVER,
        PluginCapabilities.ABOUT,
        PluginCapabilities.STREAM_MAPS,
        PluginCapabilities.FLATTENING,
        PluginCapabilities.BATCH,
    ]

    config_jsonschema = th.PropertiesList(
        th.Property(
            "source",
            th.StringType,
            required=True,
            title="Spool location",
            description=(
                "Spool root: a local path or s3://bucket/prefix, the folder that holds "
                "rudder-logs/<source_id>/<date>/<ts>.<source_id>.<uuid>.json.gz."
            ),
        ),
        th.Property(
            "logs_folder",
            th.StringType,
            default=DEFAULT_LOGS_FOLDER,
            description="The top folder under `source` (RudderStack's object-storage destination "
            "can be told another name than rudder-logs).",
        ),
        th.Property(
            "source_ids",
            th.ArrayType(th.StringType),
            description="Only read these RudderStack source ids (default: every source).",
        ),
        th.Property(
            "start_date",
            th.DateTimeType,
            description=(
                "Skip spool files whose segment was opened before this instant (UTC when no "
                "offset). Applies to files, by the timestamp in their name."
            ),
        ),
        th.Property(
            "late_file_window_minutes",
            th.IntegerType(minimum=0, maximum=10_000_000),
            default=120,
            description=(
                "A file never seen before is still read if its segment opened at most this many "
                "minutes before the newest file read (late uploads, several writers). Must exceed "
                "the writers' segment age plus upload delay. Bounds the state size."
            ),
        ),
        th.Property(
            "state_every_records",
            th.IntegerType(minimum=1, maximum=100_000_000),
            default=10000,
            description=(
                "Emit a STATE bookmark at least every N records (resume granularity). With"
                " batch_config a STATE follows each batch instead (batch_config.batch_size"
                " records), since every STATE closes a batch file per stream."
            ),
        ),
        th.Property(
            "max_records_per_sync",
            th.IntegerType(minimum=1),
            description=(
                "Stop the sync at the first bookmark (STATE) after this many records; the next"
                " sync resumes there. Unset: read everything there is. A process that loads and"
                " acts between syncs (signalmail watch) bounds each catch-up step with it."
            ),
        ),
        th.Property(
            "max_raw_text_chars",
            th.IntegerType(minimum=0, maximum=10_000_000),
            default=2000,
            description="rejected_events.raw_text keeps at most this many characters of a line.",
        ),
        th.Property(
            "aws_access_key_id",
            th.StringType,
            description="S3 access key id (default: the AWS credential chain).",
        ),
        th.Property(
            "aws_secret_access_key",
            th.StringType,
            secret=True,
            description="S3 secret access key.",
        ),
        th.Property(
            "aws_session_token",
            th.StringType,
            secret=True,
            description="S3 session token (temporary credentials).",
        ),
        th.Property(
            "endpoint_url",
            th.StringType,
            description="S3-compatible endpoint URL (MinIO, R2, moto); empty for AWS itself.",
        ),
        th.Property("region", th.StringType, description="S3 region name."),
    ).to_dict()

    def discover_streams(self) -> list[Stream]:
        """Return the seven event streams, in RudderStack type order, then rejected_events."""
        streams: list[Stream] = [EventStream(self, name) for name in EVENT_STREAMS.values()]
        streams.append(RejectedEventsStream(self))
        return streams

    def sync_all(self) -> None:  # type: ignore[misc]  # the SDK marks it final; see sync.py
        """One pass over the spool for all selected streams instead of one pass per stream."""
        self._reset_state_progress_markers()
        if self.state:
            self.state_writer.write_state(self.state)
        selected = []
        for stream in self.streams.values():
            if stream.selected:
                selected.append(stream)
            else:
                self.logger.info("Skipping deselected stream '%s'.", stream.name)
        self.last_sync_counts = Counter()
        self.last_sync_received = ReceivedRange()
        #: the sync stopped at max_records_per_sync: the spool may hold more for the next one
        self.last_sync_limited = False
        if selected:
            sync = SpoolSync(self, selected)
            sync.run()
            self.last_sync_counts = sync.counts
            self.last_sync_received = sync.received
            self.last_sync_limited = sync.limited
        for stream in selected:
            stream.log_sync_costs()


if __name__ == "__main__":
    TapRudderStack.cli()
