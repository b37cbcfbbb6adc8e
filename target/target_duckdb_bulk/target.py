"""The target-duckdb-bulk plugin class and its settings.

Why it exists: target-duckdb 0.8.0 spends its time in per-record Python (validation, flattening,
CSV writing) and drops a row per batch on duckdb >= 1.3. This loader does the least Python per
record (the record's raw JSON bytes go to a temp file; see _process_record_message) and lets
DuckDB parse, type, deduplicate and upsert each batch in a single statement (sinks.py), in a
loader thread that overlaps with reading the next batch.
"""

from __future__ import annotations

import sys
import tempfile
import typing as t
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import duckdb
import msgspec
from singer_sdk import Target
from singer_sdk import typing as th
from singer_sdk.mapper import SameRecordTransform
from singer_sdk.singerlib.encoding.base import GenericSingerReader
from singer_sdk.singerlib.exceptions import InvalidInputLine

from target_duckdb_bulk.sinks import DuckDBBulkSink

if t.TYPE_CHECKING:
    from collections.abc import Callable


class MsgspecBytesReader(GenericSingerReader[bytes]):
    """Reads Singer messages as bytes from stdin with msgspec.

    The SDK's default reader decodes text with the standard json module, which was a third of
    this target's CPU. singer-sdk's contrib MsgSpecReader turns every float into a Decimal, which
    would then be written as a string; this one keeps JSON numbers as int/float.
    """

    _decoder = msgspec.json.Decoder()
    # Top level only: nested values stay as raw bytes, so a RECORD's record is never parsed here.
    _envelope = msgspec.json.Decoder(dict[str, msgspec.Raw])
    _str = msgspec.json.Decoder(str)

    @property
    def default_input(self) -> t.IO[bytes]:
        """Stdin as bytes: msgspec decodes UTF-8 itself, no text layer needed."""
        return sys.stdin.buffer

    def deserialize_json(self, line: bytes | str) -> dict:
        """Decode one Singer message; a clear InvalidInputLine for anything else."""
        # bytes from stdin; str when the SDK's `--input FILE` option opens a file in text mode.
        # A RECORD keeps its record as msgspec.Raw (the target decides whether it must parse it).
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


class TargetDuckDBBulk(Target):
    """Singer target: RECORD and BATCH messages -> DuckDB tables, upserted on the primary key."""

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
    ).to_dict()

    def __init__(self, *args: t.Any, **kwargs: t.Any) -> None:
        super().__init__(*args, **kwargs)
        # One DuckDB connection shared by every sink: sinks drain one at a time (DuckDB already
        # parallelises each statement), so no two statements race on the connection.
        self.max_parallelism = 1
        self._connection: duckdb.DuckDBPyConnection | None = None
        self._temp_dir: tempfile.TemporaryDirectory[str] | None = None
        self._drain_requested = False
        self._fast_sinks: dict[str, DuckDBBulkSink] = {}
        # One background loader thread, at most one load in flight (see submit_load).
        self._loader: ThreadPoolExecutor | None = None
        self._pending_load: Future[None] | None = None

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

    def _process_record_message(self, message_dict: dict) -> None:
        """RECORD: on the fast path the record's raw JSON goes straight to the batch file.

        The fast path applies when the stream has no stream map, flattening, metadata columns or
        validation, which is how tap-rudderstack's output is loaded. It skips the SDK's
        per-record decode, copy, map and re-encode; the key check moves to DuckDB (a missing or
        null key fails the load on the primary key's NOT NULL). Anything else is decoded and goes
        through the SDK's own path.
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

    def _fast_sink(self, stream_name: object) -> DuckDBBulkSink | None:
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
        if not isinstance(sink, DuckDBBulkSink) or not self._fast_path(stream_name, sink):
            return None
        self._fast_sinks[stream_name] = sink
        return sink

    def _fast_path(self, stream_name: str, sink: DuckDBBulkSink) -> bool:
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

    def submit_load(self, load: Callable[[], None]) -> None:
        """Run `load` in the loader thread once the previous load has finished.

        DuckDB releases the GIL while it executes, so reading and buffering the next batch
        overlaps with this load. One load at a time keeps batches in arrival order and never
        uses the connection from two threads at once.
        """
        self.wait_for_loads()
        if self._loader is None:
            self._loader = ThreadPoolExecutor(max_workers=1, thread_name_prefix="duckdb-load")
        self._pending_load = self._loader.submit(load)

    def wait_for_loads(self) -> None:
        """Block until the pending load has committed; re-raise its error here."""
        pending, self._pending_load = self._pending_load, None
        if pending is not None:
            pending.result()

    def _write_state_message(self, state: dict) -> None:
        # STATE only after everything before it is committed.
        self.wait_for_loads()
        super()._write_state_message(state)

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
        if self._loader is not None:
            self._loader.shutdown(wait=True)
            self._loader = None
        if self._connection is not None:
            self._connection.close()
            self._connection = None
        if self._temp_dir is not None:
            self._temp_dir.cleanup()
            self._temp_dir = None


if __name__ == "__main__":
    TargetDuckDBBulk.cli()
