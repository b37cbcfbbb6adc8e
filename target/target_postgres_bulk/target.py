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
import functools
import re
import typing as t

import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from singer_bulk import FullDrainTarget, MsgspecBytesReader, OrderedLoader, RawRecordTarget
from singer_sdk import typing as th

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
        url = "postgresql://" + rest
        try:
            conninfo_to_dict(url)
        except psycopg.ProgrammingError as exc:
            msg = f"sqlalchemy_url is not a URL libpq can read: {_without_secrets(str(exc))}"
            raise ValueError(msg) from None
        return url
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


def _without_secrets(message: str) -> str:
    """Return libpq's message about a URL with every quoted token hidden.

    libpq quotes the token it cannot read (`unexpected spaces found in "Hunter 2"`), and in a
    URL with a mistyped password that token is, or contains, the password: an unencoded `@`
    moves the host into it, a `"` in it ends the quote early. Its reason is kept (it says what
    to fix); no quoted part is, not even a query parameter's name.
    """
    return re.sub(r'".*"', '"***"', message, flags=re.DOTALL)


class TargetPostgresBulk(RawRecordTarget, FullDrainTarget):
    """Singer target: RECORD and BATCH messages -> PostgreSQL tables, upserted on the key.

    On the raw-record fast path (singer_bulk.records) the key check moves to PostgreSQL: a
    record without its key is quarantined with the NOT NULL violation.
    """

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
        th.Property(
            "indexed_columns",
            th.ArrayType(th.StringType),
            default=["received_at", "event"],
            description=(
                "Columns that get a btree index in every table that has them, made when the"
                " loader creates the table or first finds it without one. dbt's incremental"
                " models read each raw table by receipt time, and the email-events staging"
                " model reads tracks by event name: without the indexes every tick scans the"
                " whole history. [] makes none."
            ),
        ),
    ).to_dict()

    def __init__(self, *args: t.Any, **kwargs: t.Any) -> None:
        super().__init__(*args, **kwargs)
        # One connection shared by every sink, used by one load at a time (the loader thread),
        # or by the main thread for DDL while no load is in flight.
        self.max_parallelism = 1
        self._connection: psycopg.Connection[t.Any] | None = None
        # One loader thread; a STATE message is held until the load submitted before it has
        # committed, then written by the loader thread (singer_bulk.ordered_loader).
        self._loader = OrderedLoader(
            super()._write_state_message, thread_name_prefix="postgres-load", hold_states=True
        )
        self.screen = LineScreen(
            sanitize_nul=bool(self.config.get("sanitize_null_text_characters", True))
        )

    @property
    def indexed_columns(self) -> tuple[str, ...]:
        """Columns each table gets a btree index on, when it has them."""
        return tuple(self.config.get("indexed_columns", ["received_at", "event"]) or ())

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
        # The STATE messages held for this load are written the moment it commits, from the
        # loader thread: a tap that pauses (or a live stream) gets its bookmark saved at once.
        self._loader.submit(functools.partial(self._load, conn, plan, sources, after))

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
        """Block until the pending load has committed; re-raise its error here.

        A failed load raises at every wait: its STATE messages, and every later one, stay held.
        """
        self._loader.wait()

    # --- STATE -------------------------------------------------------------------------------

    def _write_state_message(self, state: dict) -> None:
        # Held until every load submitted before it has committed: written now when none is
        # pending, else from the loader thread when the pending one (the latest) commits. A
        # STATE equal to the last one written is not written again.
        self._loader.write_state(state)

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

    def process_endofpipe(self) -> None:
        """Load what is left, write the final STATE once it is committed, close."""
        super().process_endofpipe()
        self.wait_for_loads()
        self.close()

    def close(self) -> None:
        """Stop the loader thread and close the connection (also after a failed load)."""
        self._loader.shutdown()
        if self._connection is not None:
            self._connection.close()  # an open transaction (a failed load) is rolled back
            self._connection = None


if __name__ == "__main__":
    TargetPostgresBulk.cli()
