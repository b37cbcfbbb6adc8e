"""The target-postgres-bulk plugin class and its settings.

Why it exists: MeltanoLabs' target-postgres 0.8.1 spends its time in per-record Python (the
SDK's parsing and copying, SQLAlchemy's type processors, a dict per row) and loads about
4,000 events/s from tap-rudderstack. This loader does the least Python per record (the
record's raw JSON bytes go to a buffer, a BATCH file goes to COPY as it is) and lets
PostgreSQL parse, type, deduplicate and upsert each batch (load.py, sinks.py), in a loader
thread that overlaps with reading the next batch.

Order of effects, per batch: COPY into a temporary staging table, one INSERT ... SELECT ...
ON CONFLICT upsert, quarantined rows, COMMIT; only then is a STATE message that covers the
batch written to stdout. A crash at any point before the COMMIT leaves the table as it was and
the last STATE written before it; the tap re-sends from there and the upsert absorbs the repeat.
"""

from __future__ import annotations

import copy
import sys
import threading
import typing as t
from concurrent.futures import Future, ThreadPoolExecutor

import msgspec
import psycopg
from psycopg.conninfo import make_conninfo
from singer_sdk import Target
from singer_sdk import typing as th
from singer_sdk.mapper import SameRecordTransform
from singer_sdk.singerlib.encoding.base import GenericSingerReader
from singer_sdk.singerlib.exceptions import InvalidInputLine

from target_postgres_bulk.load import STAGE_DDL, BatchLoad, LineScreen, quarantine
from target_postgres_bulk.sinks import PostgresBulkSink

if t.TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    from target_postgres_bulk.load import TablePlan

# Session settings of the loader's connection. jit: compiling each batch's upsert cost more
# than it saved. temp_buffers: the staging table of one batch stays in memory.
SESSION_SETTINGS = {
    "TimeZone": "UTC",  # a date-time without an offset is UTC, as in the rest of the pipeline
    "jit": "off",
    "temp_buffers": "256MB",
    "work_mem": "64MB",  # the sort that deduplicates a batch with a key twice in it
}


class MsgspecBytesReader(GenericSingerReader[bytes]):
    """Reads Singer messages as bytes from stdin with msgspec.

    The same reader as target-duckdb-bulk's (the loaders never import each other): a RECORD's
    record stays raw bytes (msgspec.Raw) so the fast path never parses it, and JSON numbers
    stay int/float (singer-sdk's contrib MsgSpecReader makes every float a Decimal).
    """

    _decoder = msgspec.json.Decoder()
    # Top level only: nested values stay as raw bytes, so a RECORD's record is never parsed here.
    _envelope = msgspec.json.Decoder(dict[str, msgspec.Raw])

    @property
    def default_input(self) -> t.IO[bytes]:
        """Stdin as bytes: msgspec decodes UTF-8 itself, no text layer needed."""
        return sys.stdin.buffer

    def deserialize_json(self, line: bytes | str) -> dict:
        """Decode one Singer message; a clear InvalidInputLine for anything else."""
        try:
            envelope = self._envelope.decode(line)
            kind = envelope.get("type")
            if kind is not None and bytes(kind) == b'"RECORD"':
                message: t.Any = {
                    k: (v if k == "record" else self._decoder.decode(v))
                    for k, v in envelope.items()
                }
                return message
            message = self._decoder.decode(line)
        except msgspec.DecodeError as exc:
            head = line[:500]
            shown = head if isinstance(head, str) else head.decode("utf-8", "replace")
            msg = f"Unable to parse line as JSON ({exc}): {shown}"
            raise InvalidInputLine(msg) from exc
        if not isinstance(message, dict):
            msg = f"Singer message is not a JSON object: {str(line)[:200]}"
            raise InvalidInputLine(msg)
        return message


def conninfo(config: t.Mapping[str, t.Any]) -> str:
    """Build the libpq connection string from `sqlalchemy_url`, or host, port, user...

    Accepts the SQLAlchemy spellings target-postgres takes (postgresql+psycopg://,
    postgresql://, postgres://). Error messages never repeat the URL: it holds the password.
    """
    url = config.get("sqlalchemy_url")
    if url:
        scheme, sep, rest = str(url).partition("://")
        if not sep or scheme.split("+")[0] not in ("postgresql", "postgres"):
            msg = "sqlalchemy_url must be a postgresql:// (or postgresql+psycopg://) URL"
            raise ValueError(msg)
        return "postgresql://" + rest
    if not config.get("host") or not config.get("database"):
        msg = "set sqlalchemy_url, or host and database (with user, password, port)"
        raise ValueError(msg)
    parts = {
        "host": config.get("host"),
        "port": config.get("port"),
        "user": config.get("user"),
        "password": config.get("password"),
        "dbname": config.get("database"),
    }
    return make_conninfo(**{k: str(v) for k, v in parts.items() if v not in (None, "")})


class TargetPostgresBulk(Target):
    """Singer target: RECORD and BATCH messages -> PostgreSQL tables, upserted on the key."""

    name = "target-postgres-bulk"
    default_sink_class = PostgresBulkSink
    message_reader_class = MsgspecBytesReader

    config_jsonschema = th.PropertiesList(
        th.Property(
            "sqlalchemy_url",
            th.StringType,
            secret=True,
            description=(
                "postgresql://user:password@host:port/database (postgresql+psycopg:// too, as"
                " target-postgres takes it). Wins over the separate fields. Never logged."
            ),
        ),
        th.Property("host", th.StringType, description="Server host (without sqlalchemy_url)."),
        th.Property("port", th.IntegerType, description="Server port (default 5432)."),
        th.Property("user", th.StringType, description="Role to log in as."),
        th.Property(
            "password", th.StringType, secret=True, description="The role's password. Never logged."
        ),
        th.Property("database", th.StringType, description="Database name."),
        th.Property(
            "default_target_schema",
            th.StringType,
            default="rudderstack_raw",
            description="Schema that receives one table per stream (created if missing).",
        ),
        th.Property(
            "batch_size_rows",
            th.IntegerType,
            default=100_000,
            description=(
                "Records buffered per stream before a load. When any stream's buffer is full,"
                " every stream is loaded and the latest STATE is emitted (resume granularity)."
                " BATCH files load one BATCH message per transaction, whatever their size."
            ),
        ),
        th.Property(
            "sanitize_null_text_characters",
            th.BooleanType,
            default=True,
            description=(
                "Replace NUL characters (which PostgreSQL text and jsonb cannot hold) with"
                " U+FFFD, in every string and object key at any depth. false: a record with"
                " a NUL is quarantined instead."
            ),
        ),
        th.Property(
            "reject_table",
            th.StringType,
            default="rejected_records",
            description=(
                "Table (in default_target_schema) that receives the records PostgreSQL"
                " refuses, with its reason; created on first use. The batch loads without them."
            ),
        ),
        th.Property(
            "add_record_metadata",
            th.BooleanType,
            default=False,
            description="Add the singer-sdk _sdc_* metadata columns (received_at, batched_at...).",
        ),
        th.Property(
            "validate_records",
            th.BooleanType,
            default=False,
            description=(
                "jsonschema-validate every record in Python (slow; PostgreSQL casts every value"
                " to its column type anyway, and quarantines what does not fit)."
            ),
        ),
        th.Property(
            "delete_batch_files",
            th.BooleanType,
            default=False,
            description="Delete each BATCH file once its rows are committed.",
        ),
    ).to_dict()

    def __init__(self, *args: t.Any, **kwargs: t.Any) -> None:
        super().__init__(*args, **kwargs)
        # One connection shared by every sink, used by one load at a time (the loader thread),
        # or by the main thread for DDL while no load is in flight.
        self.max_parallelism = 1
        self._connection: psycopg.Connection[t.Any] | None = None
        self._drain_requested = False
        self._fast_sinks: dict[str, PostgresBulkSink] = {}
        self._loader: ThreadPoolExecutor | None = None
        self._pending_load: Future[None] | None = None
        # STATE messages waiting for the load submitted before them to commit, in order.
        self._states: list[dict] = []
        self._last_state_written: dict | None = None
        self._state_lock = threading.Lock()
        self.screen = LineScreen(
            sanitize_nul=bool(self.config.get("sanitize_null_text_characters", True))
        )

    @property
    def reject_table(self) -> str:
        """The quarantine table's name (in each stream's schema)."""
        return str(self.config.get("reject_table") or "rejected_records")

    @property
    def connection(self) -> psycopg.Connection[t.Any]:
        """The connection, opened on first use (after config validation)."""
        if self._connection is None:
            conn = psycopg.connect(conninfo(self.config), application_name=self.name)
            for name, value in SESSION_SETTINGS.items():
                conn.execute("SELECT set_config(%s, %s, false)", (name, value))
            conn.execute(STAGE_DDL)
            conn.commit()
            self._connection = conn
        return self._connection

    # --- RECORD fast path --------------------------------------------------------------------

    def _process_record_message(self, message_dict: dict) -> None:
        """RECORD: on the fast path the record's raw JSON goes straight to the batch buffer.

        The fast path applies when the stream has no stream map, flattening, metadata columns or
        validation, which is how tap-rudderstack's output is loaded. It skips the SDK's
        per-record decode, copy, map and re-encode; the key check moves to PostgreSQL (a record
        without its key is quarantined with the NOT NULL violation). Anything else is decoded
        and goes through the SDK's own path.
        """
        record = message_dict.get("record")
        if not isinstance(record, msgspec.Raw):
            super()._process_record_message(message_dict)
            return
        sink = self._fast_sink(message_dict.get("stream"))
        if sink is None:
            message_dict["record"] = msgspec.json.decode(record)
            super()._process_record_message(message_dict)
            return
        context = sink._get_context({})
        sink.tally_record_read()
        sink.process_raw_record(record, context)
        sink.record_counter_metric.increment()
        if sink.is_full:
            self.drain_one(sink)
        self._handle_max_record_age()

    def _fast_sink(self, stream_name: object) -> PostgresBulkSink | None:
        """Give the stream's active sink if its records take the fast path, else None."""
        if not isinstance(stream_name, str):
            return None
        sink = self._sinks_active.get(stream_name)
        if sink is None:
            return None
        known = self._fast_sinks.get(stream_name)
        if known is sink:
            return known
        # Decided once per sink (a new SCHEMA makes a new sink and a new decision).
        if not isinstance(sink, PostgresBulkSink) or not self._fast_path(stream_name, sink):
            return None
        self._fast_sinks[stream_name] = sink
        return sink

    def _fast_path(self, stream_name: str, sink: PostgresBulkSink) -> bool:
        maps = self.mapper.stream_maps.get(stream_name)
        return (
            maps is not None
            and len(maps) == 1
            and type(maps[0]) is SameRecordTransform
            and maps[0].stream_alias == stream_name
            and not maps[0].flattening_enabled
            and not sink.include_sdc_metadata_properties
            and sink._validator is None
        )

    # --- loads -------------------------------------------------------------------------------

    def submit_load(
        self,
        plan: TablePlan,
        sources: list[Callable[[], Iterator[bytes]]],
        after: Callable[[], None] | None = None,
    ) -> None:
        """Run one batch's load (one transaction) in the loader thread, after the previous one.

        One load at a time keeps batches in arrival order (a later batch wins a key) and never
        uses the connection from two threads at once; reading and buffering the next batch
        overlaps with this one. `after` runs once the batch is committed.
        """
        self.wait_for_loads()
        conn = self.connection  # opened here, on the main thread, before the thread uses it
        if self._loader is None:
            self._loader = ThreadPoolExecutor(max_workers=1, thread_name_prefix="postgres-load")
        with self._state_lock:
            pending = self._loader.submit(self._load, conn, plan, sources, after)
            self._pending_load = pending
        # The STATE messages held for this load are written the moment it commits, from the
        # loader thread: a tap that pauses (or a live stream) gets its bookmark saved at once.
        pending.add_done_callback(self._load_done)

    def _load(
        self,
        conn: psycopg.Connection[t.Any],
        plan: TablePlan,
        sources: list[Callable[[], Iterator[bytes]]],
        after: Callable[[], None] | None,
    ) -> None:
        try:
            with conn.transaction():
                result = BatchLoad(conn, plan, self.screen, self.logger).run(sources)
                quarantine(conn, plan, result.rejected)
        except psycopg.Error as exc:
            msg = f"loading stream {plan.stream!r} into {plan.schema}.{plan.table} failed: {exc}"
            raise RuntimeError(msg) from exc
        if result.rejected:
            self.logger.warning(
                "Quarantined %d of %d rows of stream %r in %s.%s (first reason: %s)",
                len(result.rejected),
                result.read,
                plan.stream,
                plan.schema,
                plan.reject_table,
                result.rejected[0].reason,
            )
        self.logger.info(
            "Loaded %d rows into %s.%s (%d written, %d unchanged or repeated)",
            result.read,
            plan.schema,
            plan.table,
            result.written,
            max(result.read - result.written - len(result.rejected), 0),
        )
        if after is not None:
            after()

    def wait_for_loads(self) -> None:
        """Block until the pending load has committed; re-raise its error here."""
        pending = self._pending_load
        if pending is not None:
            pending.result()  # raises the load's error: its STATE messages stay held forever
            with self._state_lock:
                if self._pending_load is pending:
                    self._pending_load = None
                self._emit_states()

    def drain_replaced_sinks(self) -> None:
        """Load the buffered records of sinks a new SCHEMA replaced, before the new sink's DDL."""
        for sink in list(self._sinks_to_clear):
            self.drain_one(sink)

    # --- STATE -------------------------------------------------------------------------------

    def _write_state_message(self, state: dict) -> None:
        # Held until every load submitted before it has committed: written here when none is
        # pending, else by _load_done when the pending one (the latest) commits.
        with self._state_lock:
            self._states.append(state)
            pending = self._pending_load
            if pending is None or (pending.done() and pending.exception() is None):
                self._emit_states()

    def _load_done(self, load: Future[None]) -> None:
        """Write the STATE messages held for `load` once it has committed (loader thread)."""
        if load.cancelled() or load.exception() is not None:
            return  # a failed load: the main thread raises its error, no later STATE is written
        with self._state_lock:
            if load is self._pending_load:
                self._emit_states()

    def _emit_states(self) -> None:
        """Write the held STATE messages in order (caller holds the state lock)."""
        states, self._states = self._states, []
        for state in states:
            if state != self._last_state_written:
                super()._write_state_message(state)
                self._last_state_written = state

    def _process_state_message(self, message_dict: dict) -> None:
        """STATE: written as soon as every record before it is committed.

        With nothing buffered (a tap sending BATCH messages, which load at once), the STATE
        needs no drain: it is written when the loads before it commit. Otherwise the SDK keeps
        it for the next full drain.
        """
        super()._process_state_message(message_dict)
        buffered = any(s.current_size for s in self._sinks_active.values()) or any(
            s.current_size for s in self._sinks_to_clear
        )
        if self._latest_state and not buffered:
            self._write_state_message(copy.deepcopy(self._latest_state))

    def request_full_drain(self) -> None:
        """Ask for a full drain (others loaded, then STATE) after a sink drained for being full.

        The SDK only emits STATE from drain_all (end of input, schema change, record age), so a
        long run would otherwise resume from its very first bookmark after a crash.
        """
        self._drain_requested = True

    def _handle_max_record_age(self) -> None:
        # Runs after every RECORD/BATCH message: the cheapest place to honour a drain request
        # outside the sink's own drain (drain_all from inside drain_one would recurse).
        if self._drain_requested:
            self._drain_requested = False
            self.drain_all()
        super()._handle_max_record_age()

    def process_endofpipe(self) -> None:
        """Load what is left, write the final STATE once it is committed, close."""
        super().process_endofpipe()
        self.wait_for_loads()
        self.close()

    def close(self) -> None:
        """Stop the loader thread and close the connection (also after a failed load)."""
        if self._loader is not None:
            self._loader.shutdown(wait=True)
            self._loader = None
        if self._connection is not None:
            self._connection.close()  # an open transaction (a failed load) is rolled back
            self._connection = None


if __name__ == "__main__":
    TargetPostgresBulk.cli()
