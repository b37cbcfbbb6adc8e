"""The target-duckdb-bulk plugin class and its settings.

Why it exists: target-duckdb 0.8.0 spends its time in per-record Python (validation, flattening,
CSV writing) and drops a row per batch on duckdb >= 1.3. This loader does the least Python per
record (the record's raw JSON bytes go to a temp file: singer_bulk.records) and lets
DuckDB parse, type, deduplicate and upsert each batch in one transaction (sinks.py), in a
loader thread that overlaps with reading the next batch.
"""

from __future__ import annotations

import tempfile
import typing as t
from pathlib import Path

import duckdb
from singer_bulk import FullDrainTarget, MsgspecBytesReader, OrderedLoader, RawRecordTarget
from singer_sdk import typing as th

from target_duckdb_bulk.sinks import DuckDBBulkSink, literal

if t.TYPE_CHECKING:
    from collections.abc import Callable


class TargetDuckDBBulk(RawRecordTarget, FullDrainTarget):
    """Singer target: RECORD and BATCH messages -> DuckDB tables, one row per key.

    A keyed stream's batch replaces the stored copies of its keys: within `dedup_window_hours`
    of `dedup_window_column` (no index over the table's history), or with INSERT OR REPLACE
    into a table with a primary key (sinks.py). On the raw-record fast path
    (singer_bulk.records) the key check moves to DuckDB: a missing or null key fails the load.
    """

    name = "target-duckdb-bulk"
    default_sink_class = DuckDBBulkSink
    message_reader_class = MsgspecBytesReader

    config_jsonschema = th.PropertiesList(
        th.Property(
            "filepath",
            th.StringType,
            required=True,
            description="DuckDB database file (created if missing). One writer at a time.",
        ),
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
                "jsonschema-validate every record in Python (slow; DuckDB still enforces the"
                " column types, so a value that does not fit fails the load either way)."
            ),
        ),
        th.Property(
            "temp_dir",
            th.StringType,
            description="Folder for the per-batch JSON-lines files (default: the system temp dir).",
        ),
        th.Property(
            "delete_batch_files",
            th.BooleanType,
            default=False,
            description=(
                "Delete each BATCH file once its rows are committed (the tap's batch folder"
                " then holds only what is not loaded yet)."
            ),
        ),
        th.Property(
            "checkpoint_at_end",
            th.BooleanType,
            default=True,
            description=(
                "CHECKPOINT once the input ends, folding the write-ahead log into the database"
                " file. false leaves that to whoever keeps the database open: `signalmail watch`"
                " shares one open database between this loader and dbt and checkpoints on its"
                " own schedule instead of once per few-second cycle."
            ),
        ),
        th.Property(
            "maximum_object_size",
            th.IntegerType,
            default=16_777_216,
            description="Largest single record, in bytes, that DuckDB's read_json accepts.",
        ),
        th.Property(
            "memory_limit",
            th.StringType,
            description=(
                "DuckDB's memory_limit for the database this loader opens (e.g. '2GB'). Unset:"
                " DuckDB's default, 80% of RAM. DuckDB keeps the blocks a run writes in memory"
                " until it needs the room, so a long load grows to the limit; a limit makes it"
                " evict them instead (they are on disk already). The limit is the database's,"
                " not the connection's: where dbt shares the database in one process"
                " (`signalmail watch`), the last one set holds for both."
            ),
        ),
        th.Property(
            "dedup_window_hours",
            th.NumberType,
            default=72,
            description=(
                "Deduplication window of keyed tables without a primary key (new tables of"
                " streams that have dedup_window_column): a batch replaces the stored copies of"
                " its keys whose dedup_window_column lies within this many hours of the batch's"
                " own range. Copies further apart both stay in the raw table (dbt staging keeps"
                " the first); a longer window reads more row groups per batch. Tables with a"
                " PRIMARY KEY keep INSERT OR REPLACE. See docs/ingest.md, 'Deduplication'."
            ),
        ),
        th.Property(
            "dedup_window_column",
            th.StringType,
            default="received_at",
            description=(
                "The date-time column (a TIMESTAMP in the table) that bounds the deduplication"
                " window. A new table of a keyed stream that has it gets no PRIMARY KEY (whose"
                " index grows with the table) but NOT NULL key columns. An empty string turns"
                " the window off: new keyed tables get a PRIMARY KEY and INSERT OR REPLACE."
            ),
        ),
    ).to_dict()

    def __init__(self, *args: t.Any, **kwargs: t.Any) -> None:
        super().__init__(*args, **kwargs)
        # One DuckDB connection shared by every sink: sinks drain one at a time (DuckDB already
        # parallelises each statement), so no two statements race on the connection.
        self.max_parallelism = 1
        self._connection: duckdb.DuckDBPyConnection | None = None
        self._temp_dir: tempfile.TemporaryDirectory[str] | None = None
        # One background loader thread, at most one load in flight (see submit_load); a STATE
        # is written by the thread that emits it, once the pending load has committed.
        self._loader = OrderedLoader(
            super()._write_state_message, thread_name_prefix="duckdb-load", hold_states=False
        )

    @property
    def connection(self) -> duckdb.DuckDBPyConnection:
        """The read-write connection, opened on first use (after config validation)."""
        if self._connection is None:
            path = Path(self.config["filepath"]).expanduser()
            path.parent.mkdir(parents=True, exist_ok=True)
            try:
                con = duckdb.connect(str(path))
            except duckdb.IOException as exc:
                msg = (
                    f"cannot open DuckDB file {path} for writing"
                    f" (is another process using it?): {exc}"
                )
                raise RuntimeError(msg) from exc
            # Date-time columns are read as TIMESTAMPTZ and stored as naive UTC TIMESTAMP; the
            # cast between them uses the session time zone, so pin it.
            con.execute("SET TimeZone = 'UTC'")
            con.execute("SET enable_progress_bar = false")
            # A batch's duplicate keys are resolved by the order its lines were read in, which
            # a table keeps only with this on (DuckDB's default, which a shared database's other
            # user may have turned off: dbt's profile in `signalmail watch`).
            con.execute("SET preserve_insertion_order = true")
            limit = self.config.get("memory_limit")
            if limit:
                try:
                    con.execute(f"SET memory_limit = {literal(str(limit))}")
                except duckdb.Error as exc:
                    con.close()
                    msg = f"memory_limit {limit!r} is not a size DuckDB takes (e.g. '2GB'): {exc}"
                    raise ValueError(msg) from exc
            # No automatic checkpoint in the middle of a run: at DuckDB's default (16 MB of
            # WAL) every few batches stalled on rewriting the table, a third of the load time.
            # process_endofpipe checkpoints once; a crash leaves a WAL that DuckDB replays.
            con.execute("SET checkpoint_threshold = '1GB'")
            self._connection = con
        return self._connection

    @property
    def temp_dir(self) -> Path:
        """A private folder for batch files, removed when the target exits cleanly."""
        if self._temp_dir is None:
            base = self.config.get("temp_dir") or None
            if base:
                Path(base).mkdir(parents=True, exist_ok=True)
            self._temp_dir = tempfile.TemporaryDirectory(prefix="target-duckdb-bulk-", dir=base)
        return Path(self._temp_dir.name)

    def submit_load(self, load: Callable[[], None]) -> None:
        """Run `load` in the loader thread once the previous load has finished.

        DuckDB releases the GIL while it executes, so reading and buffering the next batch
        overlaps with this load. One load at a time keeps batches in arrival order and never
        uses the connection from two threads at once.
        """
        self._loader.submit(load)

    def wait_for_loads(self) -> None:
        """Block until the pending load has committed; re-raise its error here."""
        self._loader.wait()

    def _write_state_message(self, state: dict) -> None:
        # STATE only after everything before it is committed.
        self._loader.write_state(state)

    def process_endofpipe(self) -> None:
        """Load what is left, emit the final STATE, checkpoint (unless told not to), close."""
        super().process_endofpipe()
        self.wait_for_loads()
        if self._connection is not None and self.config.get("checkpoint_at_end", True):
            self._connection.execute("CHECKPOINT")
        self.close()

    def close(self) -> None:
        """Close DuckDB and remove the batch files (also after a failed load, for embedders)."""
        # A run that raised in the middle of a batch (a record refused by the SDK's checks)
        # leaves that batch's file open in its sink.
        for sink in [*self._sinks_active.values(), *self._sinks_to_clear]:
            if isinstance(sink, DuckDBBulkSink):
                sink.discard_batch()
        self._loader.shutdown()
        if self._connection is not None:
            self._connection.close()
            self._connection = None
        if self._temp_dir is not None:
            self._temp_dir.cleanup()
            self._temp_dir = None


if __name__ == "__main__":
    TargetDuckDBBulk.cli()
