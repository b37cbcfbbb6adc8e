"""The DuckDB sink: JSON lines in a temp file per batch, one read_json upsert per load.

Per record the only Python work is one msgspec encode and a file write; DuckDB parses, casts,
deduplicates and upserts. The explicit `columns={...}` of read_json means no sniffing at all, so
nothing like target-duckdb 0.8.0's lost header row can happen. BATCH messages (singer-sdk JSONL
batch files) are loaded with read_json directly from the file, never through Python records.
"""

from __future__ import annotations

import shutil
import typing as t
from pathlib import Path

import duckdb
import fsspec
import msgspec
from singer_bulk import RawRecordSink, non_null_types, table_name
from singer_sdk.helpers._batch import BaseBatchFileEncoding, BatchFileFormat, StorageTarget

if t.TYPE_CHECKING:
    from collections.abc import Sequence

    from target_duckdb_bulk.target import TargetDuckDBBulk

# Line number written into each buffered record so that "last one wins" among duplicate keys
# of one batch does not depend on the order DuckDB happens to scan in.
SEQ = "__target_duckdb_bulk_seq"

JSON_TYPE = "JSON"


def quote(identifier: str) -> str:
    """Double-quote a DuckDB identifier so any stream or property name is safe."""
    return '"' + identifier.replace('"', '""') + '"'


def literal(text: str) -> str:
    """Quote text as a DuckDB string literal."""
    return "'" + text.replace("'", "''") + "'"


def column_type(prop: dict[str, t.Any]) -> str:
    """Map one Singer property schema to its DuckDB column type.

    object/array (and untyped or mixed-type properties) become JSON so that every nested field
    stays reachable with json_extract; date-time becomes a naive UTC TIMESTAMP.
    """
    options = non_null_types(prop)
    kinds = {o.get("type") for o in options}
    if len(kinds) != 1 or None in kinds:
        return "DOUBLE" if kinds == {"integer", "number"} else JSON_TYPE
    kind = kinds.pop()
    if not isinstance(kind, str):  # a schema's "type" that is not a name: JSON, as any other
        return JSON_TYPE
    formats = {o.get("format") for o in options}
    if kind == "string":
        if formats == {"date-time"}:
            return "TIMESTAMP"
        if formats == {"date"}:
            return "DATE"
        if formats == {"time"}:
            return "TIME"
        return "VARCHAR"
    return {
        "integer": "BIGINT",
        "number": "DOUBLE",
        "boolean": "BOOLEAN",
        "object": JSON_TYPE,
        "array": JSON_TYPE,
    }.get(kind, JSON_TYPE)


class DuckDBBulkSink(RawRecordSink):
    """One stream -> one DuckDB table; each drained batch is a single INSERT OR REPLACE."""

    target: TargetDuckDBBulk  # set by Sink.__init__ via the target argument

    def __init__(self, target: TargetDuckDBBulk, *args: t.Any, **kwargs: t.Any) -> None:
        super().__init__(target, *args, **kwargs)
        self.target = target
        self._encoder = msgspec.json.Encoder()
        self._seq = 0
        if SEQ in self.schema.get("properties", {}):
            msg = (
                f"stream {self.stream_name!r} has a property named {SEQ!r}, reserved by the loader"
            )
            raise ValueError(msg)
        self.columns: dict[str, str] = {
            name: column_type(prop) for name, prop in self.schema["properties"].items()
        }
        missing = [k for k in self.key_properties if k not in self.columns]
        if missing:
            msg = f"stream {self.stream_name!r}: key properties {missing} are not in its schema"
            raise ValueError(msg)

    @property
    def full_table(self) -> str:
        """The quoted `"schema"."table"` of this stream."""
        return f"{quote(self.target_schema)}.{quote(table_name(self.stream_name))}"

    @property
    def target_schema(self) -> str:
        """The `default_target_schema` setting."""
        return self.config.get("default_target_schema") or "rudderstack_raw"

    # --- table management ------------------------------------------------------------------

    def setup(self) -> None:
        """Create the schema and table from the Singer schema, or add the columns it lacks."""
        self.target.wait_for_loads()  # no DDL while a load of the old schema is running
        con = self.target.connection
        con.execute(f"CREATE SCHEMA IF NOT EXISTS {quote(self.target_schema)}")
        existing = dict(
            con.execute(
                "SELECT column_name, data_type FROM information_schema.columns"
                " WHERE table_schema = ? AND table_name = ? ORDER BY ordinal_position",
                [self.target_schema, table_name(self.stream_name)],
            ).fetchall()
        )
        if not existing:
            cols = [f"{quote(n)} {ty}" for n, ty in self.columns.items()]
            if self.key_properties:
                cols.append(f"PRIMARY KEY ({', '.join(quote(k) for k in self.key_properties)})")
            con.execute(f"CREATE TABLE IF NOT EXISTS {self.full_table} ({', '.join(cols)})")
            self.logger.info("Created table %s", self.full_table)
            return
        for name, ty in self.columns.items():
            if name not in existing:
                con.execute(f"ALTER TABLE {self.full_table} ADD COLUMN {quote(name)} {ty}")
                self.logger.info("Added column %s %s to %s", name, ty, self.full_table)
            elif existing[name] != ty:
                # DuckDB casts on insert; a value that does not fit fails the load loudly.
                self.logger.warning(
                    "Column %s of %s is %s but the stream now declares %s; keeping %s",
                    name,
                    self.full_table,
                    existing[name],
                    ty,
                    existing[name],
                )

    # --- RECORD messages -------------------------------------------------------------------

    def start_batch(self, context: dict) -> None:
        """Open this batch's JSON-lines file (one per batch, deleted once loaded)."""
        path = self.target.temp_dir / f"{table_name(self.stream_name)}-{context['batch_id']}.jsonl"
        context["path"] = path
        context["file"] = path.open("wb", buffering=1 << 20)
        self._seq = 0

    def process_record(self, record: dict, context: dict) -> None:
        """Append the record, numbered so the last duplicate of a key wins in the load."""
        self._seq += 1
        record[SEQ] = self._seq
        context["file"].write(self._encoder.encode(record) + b"\n")

    def process_raw_record(self, raw: msgspec.Raw, context: dict) -> None:
        """Append a record given as raw JSON bytes (the target's fast path), numbered likewise."""
        self._seq += 1
        body = self.raw_object(raw)
        inner = body[1:-1].strip()
        prefix = b'{"' + SEQ.encode() + b'":' + str(self._seq).encode()
        context["file"].write(prefix + (b"," + inner if inner else b"") + b"}\n")

    def process_batch(self, context: dict) -> None:
        """Load the batch's file with one statement, then delete it."""
        file = context.get("file")
        if file is None:
            return
        file.close()
        path: Path = context["path"]
        # Full (not drained by a drain_all): ask for a full drain so that STATE follows. Only
        # then: a drain_all that asked again for every sink it drains would never stop.
        was_full = self.current_size >= self.max_size

        def load() -> None:
            try:
                self._load(str(path), compression="uncompressed", sequenced=True)
            finally:
                path.unlink(missing_ok=True)

        # In the loader thread: the next batch is read while DuckDB loads this one. STATE waits
        # for it (TargetDuckDBBulk._write_state_message).
        self.target.submit_load(load)
        if was_full:
            self.target.request_full_drain()

    def discard_batch(self) -> None:
        """Close the batch file of a run that ends before loading it (a run that raised).

        The file itself goes with the target's temp folder; left open, its handle would
        outlive the run in a process that carries on (an embedder such as `signalmail watch`).
        """
        pending = self._pending_batch
        file = pending.get("file") if pending else None
        if file is not None and not file.closed:
            file.close()

    # --- BATCH messages --------------------------------------------------------------------

    def process_batch_files(self, encoding: BaseBatchFileEncoding, files: Sequence[str]) -> None:
        """Load singer-sdk batch files (JSON lines, gzip or plain) straight into DuckDB.

        Local `file://` files are read in place; other storages are copied to the temp folder
        first. One statement per file, in manifest order, so a later file wins on a duplicate key.
        """
        if encoding.format != BatchFileFormat.JSONL:
            msg = (
                f"stream {self.stream_name!r}: BATCH encoding {encoding.format!r} is not"
                " supported (use jsonl)"
            )
            raise NotImplementedError(msg)
        self.target.wait_for_loads()  # BATCH files load in order after any pending batch
        compression = "gzip" if encoding.compression == "gzip" else "uncompressed"
        storage = self.batch_config.storage if self.batch_config else None
        delete = bool(self.config.get("delete_batch_files"))
        for url in files:
            head, tail = StorageTarget.split_url(url)
            if url.startswith("file://"):
                local = Path(head.removeprefix("file://")) / tail
                if not local.is_file():
                    msg = f"stream {self.stream_name!r}: BATCH file {url} does not exist"
                    raise FileNotFoundError(msg)
                self._load(str(local), compression=compression, sequenced=False)
            else:
                file_storage = storage or StorageTarget.from_url(head)
                copy = self.target.temp_dir / f"batch-{Path(tail).name}"
                with file_storage.open(tail, mode="rb") as src, copy.open("wb") as dst:
                    shutil.copyfileobj(src, dst, 1 << 20)
                try:
                    self._load(str(copy), compression=compression, sequenced=False)
                finally:
                    copy.unlink(missing_ok=True)
            if delete:
                # Only after its rows are committed: a crash before this point leaves the file
                # for the tap's re-run to supersede, never a hole.
                fs, path = fsspec.core.url_to_fs(url)
                fs.rm(path)

    # --- the load --------------------------------------------------------------------------

    def _load(self, path: str, *, compression: str, sequenced: bool) -> None:
        """INSERT OR REPLACE the file's rows, deduplicated on the key (the last line wins)."""
        read_columns = dict(self.columns)
        if self.include_sdc_metadata_properties:
            # The SDK adds _sdc_* to self.schema after __init__ when metadata is on.
            for name, prop in self.schema["properties"].items():
                read_columns.setdefault(name, column_type(prop))
        insert_cols = list(read_columns)
        # date-time: parse with its offset (TIMESTAMPTZ), store as naive UTC (session TZ is UTC).
        source_types = {
            n: ("TIMESTAMPTZ" if ty == "TIMESTAMP" else ty) for n, ty in read_columns.items()
        }
        if sequenced:
            source_types[SEQ] = "BIGINT"
        columns_sql = ", ".join(f"{literal(n)}: {literal(ty)}" for n, ty in source_types.items())
        select_sql = ", ".join(
            f"{quote(n)}::TIMESTAMP" if ty == "TIMESTAMP" else quote(n)
            for n, ty in read_columns.items()
        )
        scan = (
            f"read_json({literal(path)}, format='newline_delimited', columns={{{columns_sql}}},"
            f" compression={literal(compression)},"
            f" maximum_object_size={int(self.config.get('maximum_object_size') or 16_777_216)})"
        )
        col_list = ", ".join(quote(c) for c in insert_cols)
        if self.key_properties:
            keys = ", ".join(quote(k) for k in self.key_properties)
            # Without a line number (BATCH files) the scan order stands in for it.
            order = f"{quote(SEQ)} DESC" if sequenced else "__line DESC"
            line = "" if sequenced else ", row_number() OVER () AS __line"
            # Every identifier goes through quote() and every literal through literal(). A NULL
            # key is not filtered out: the primary key's NOT NULL fails the load, loudly.
            sql = (
                f"INSERT OR REPLACE INTO {self.full_table} ({col_list})"  # noqa: S608
                f" SELECT {select_sql} FROM (SELECT *{line} FROM {scan})"
                f" QUALIFY row_number() OVER (PARTITION BY {keys} ORDER BY {order}) = 1"
            )
        else:
            sql = f"INSERT INTO {self.full_table} ({col_list}) SELECT {select_sql} FROM {scan}"  # noqa: S608
        try:
            count = self.target.connection.execute(sql).fetchone()
        except duckdb.Error as exc:
            msg = f"loading stream {self.stream_name!r} into {self.full_table} failed: {exc}"
            raise RuntimeError(msg) from exc
        self.logger.info("Loaded %s rows into %s", count[0] if count else "?", self.full_table)
