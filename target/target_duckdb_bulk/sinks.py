"""The DuckDB sink: JSON lines in a temp file per batch, one read_json load per batch.

Per record the only Python work is one msgspec encode and a file write; DuckDB parses, casts,
deduplicates and loads. The explicit `columns={...}` of read_json means no sniffing at all, so
nothing like target-duckdb 0.8.0's lost header row can happen. BATCH messages (singer-sdk JSONL
batch files) are loaded with read_json directly from the file, never through Python records.

How a keyed stream's batch replaces earlier copies of its keys (docs/ingest.md, "Deduplication"):

- a table with a PRIMARY KEY (created by earlier versions, or for a stream without a date-time
  window column): one `INSERT OR REPLACE`, whose key index covers the whole table;
- any other keyed table (new tables of streams with the window column, `received_at`): one
  transaction that stages the deduplicated batch in a temporary table, deletes the stored copies
  of its keys whose window column lies within `dedup_window_hours` of the batch's own range (a
  literal range, so DuckDB skips the row groups outside it by their min/max), then inserts the
  batch. No index over the table's history is built or kept in memory.
"""

from __future__ import annotations

import contextlib
import math
import shutil
import typing as t
from pathlib import Path

import duckdb
import msgspec
from singer_bulk import RawRecordSink, delete_batch_file, non_null_types, table_name
from singer_sdk.helpers._batch import BaseBatchFileEncoding, BatchFileFormat, StorageTarget

if t.TYPE_CHECKING:
    from collections.abc import Sequence

    from target_duckdb_bulk.target import TargetDuckDBBulk

# Line number written into each buffered record so that "last one wins" among duplicate keys
# of one batch does not depend on the order DuckDB happens to scan in.
SEQ = "__target_duckdb_bulk_seq"

JSON_TYPE = "JSON"

# The window of the deduplication of tables without a primary key (the settings' defaults).
DEFAULT_WINDOW_HOURS = 72.0
DEFAULT_WINDOW_COLUMN = "received_at"
# The column type a window column must have (what a date-time property becomes).
WINDOW_TYPE = "TIMESTAMP"
# The temporary table (of the loader's connection) holding one deduplicated batch while it
# replaces the earlier copies of its keys; created and dropped inside the load's transaction.
BATCH_TABLE = "__target_duckdb_bulk_batch"
BATCH_TABLE_SQL = f'temp.main."{BATCH_TABLE}"'


def quote(identifier: str) -> str:
    """Double-quote a DuckDB identifier so any stream or property name is safe."""
    return '"' + identifier.replace('"', '""') + '"'


def literal(text: str) -> str:
    """Quote text as a DuckDB string literal."""
    return "'" + text.replace("'", "''") + "'"


class NullKeyError(ValueError):
    """A record of the batch has no value for a key property (the batch is not loaded)."""


def delete_copies_sql(
    table: str,
    batch: str,
    keys: Sequence[str],
    *,
    window: tuple[str, str, str] | None = None,
    undated: str | None = None,
) -> str:
    """Build the DELETE of the stored copies of `batch`'s keys from `table`.

    `window` = (column, low, high): only stored rows whose column lies in [low, high], given as
    timestamp text and inlined as literals: a constant range is a filter of the table scan, and
    DuckDB skips every row group whose min/max misses it (a bound given as a subquery is left
    to the optimizer's dynamic join filters; the literal does not depend on them). Without
    `window`, any stored row of the key
    matches: when `undated` names the window column, only for the batch's rows whose value in it
    is NULL (they have no time to bound the search); when it is None, for every row of the batch.
    """
    match = " AND ".join(f"t.{quote(k)} = b.{quote(k)}" for k in keys)
    if window is not None:
        column, low, high = window
        match = (
            f"t.{quote(column)} BETWEEN CAST({literal(low)} AS {WINDOW_TYPE})"
            f" AND CAST({literal(high)} AS {WINDOW_TYPE}) AND {match}"
        )
    elif undated is not None:
        match = f"b.{quote(undated)} IS NULL AND {match}"
    return f"DELETE FROM {table} AS t USING {batch} AS b WHERE {match}"  # noqa: S608


def finite_timestamp(name: str) -> str:
    """Return a date-time column as stored (naive UTC), refusing `infinity` and `-infinity`.

    DuckDB reads those words as date-times. In received_at, infinity would put every later
    incremental dbt cutoff past all data; like a date-time that does not parse, it fails the
    load, naming the column. (The window column may be staged from text: hence the cast.)
    """
    column = quote(name)
    message = literal(f"{name}: infinity is not a date-time")
    return (
        f"CASE WHEN {column} IS NULL OR isfinite({column}::TIMESTAMPTZ) THEN {column}::TIMESTAMP"
        f" ELSE error({message}) END"
    )


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
    """One stream -> one DuckDB table; each drained batch is loaded in one transaction."""

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
        hours = self.config.get("dedup_window_hours")
        self.window_hours = DEFAULT_WINDOW_HOURS if hours is None else float(hours)
        if not math.isfinite(self.window_hours) or self.window_hours < 0:
            msg = f"dedup_window_hours must be a number >= 0, not {hours!r}"
            raise ValueError(msg)
        column = self.config.get("dedup_window_column")
        # "" turns the window off: new keyed tables get a primary key, as before.
        self.window_setting: str = DEFAULT_WINDOW_COLUMN if column is None else str(column)
        # Set by setup() from the table itself: the load path of a keyed stream.
        self.primary_key = False
        self.window_column: str | None = None

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
        """Create the schema and table from the Singer schema, or add the columns it lacks.

        Then pick the load path of a keyed stream from the table (_choose_load_path). Records a
        replaced sink still buffers (a SCHEMA message changed the stream mid-run) are loaded
        first, so batches reach the table in the order they were read.
        """
        self.target.drain_replaced_sinks()
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
            # A keyed stream with a date-time window column gets no primary key (whose index
            # would grow with the table): its key columns are NOT NULL, and each load replaces
            # the earlier copies within the window (_replace_in_window).
            windowed = bool(self.key_properties) and self._usable_window(self.columns) is not None
            cols = [
                f"{quote(n)} {ty}" + (" NOT NULL" if windowed and n in self.key_properties else "")
                for n, ty in self.columns.items()
            ]
            if self.key_properties and not windowed:
                cols.append(f"PRIMARY KEY ({', '.join(quote(k) for k in self.key_properties)})")
            con.execute(f"CREATE TABLE IF NOT EXISTS {self.full_table} ({', '.join(cols)})")
            self.logger.info("Created table %s", self.full_table)
        else:
            self._add_columns(existing)
        self._choose_load_path({**self.columns, **existing})

    def _add_columns(self, existing: dict[str, str]) -> None:
        """Add the stream's new properties to the table; keep the types it already has."""
        con = self.target.connection
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

    def _usable_window(self, types: dict[str, str]) -> str | None:
        """Name the `dedup_window_column` if the table (column -> type) has it as a TIMESTAMP."""
        name = self.window_setting
        return name if name and types.get(name) == WINDOW_TYPE else None

    def _choose_load_path(self, types: dict[str, str]) -> None:
        """Pick how a keyed stream's batches replace earlier copies, from the table as it is.

        A table with a PRIMARY KEY keeps INSERT OR REPLACE, so no existing warehouse changes
        behaviour silently; any other keyed table is deduplicated within the window.
        """
        if not self.key_properties:
            return
        row = self.target.connection.execute(
            "SELECT count(*) FROM duckdb_constraints() WHERE database_name = current_database()"
            " AND schema_name = ? AND table_name = ? AND constraint_type = 'PRIMARY KEY'",
            [self.target_schema, table_name(self.stream_name)],
        ).fetchone()
        self.primary_key = bool(row and row[0])
        self.window_column = self._usable_window(types)
        keys = ", ".join(self.key_properties)
        if self.primary_key:
            if self.window_column is not None:
                self.logger.info(
                    "%s has a PRIMARY KEY: loading with INSERT OR REPLACE, whose key index grows"
                    " with the table (docs/ingest.md, 'Deduplication', moves it to the window)",
                    self.full_table,
                )
        elif self.window_column is not None:
            self.logger.info(
                "%s: a batch replaces the stored copies of its keys (%s) whose %s lies within"
                " %s hours of the batch's own %s range",
                self.full_table,
                keys,
                self.window_column,
                f"{self.window_hours:g}",
                self.window_column,
            )
        else:
            self.logger.warning(
                "%s has neither a PRIMARY KEY nor a TIMESTAMP column %r: each batch scans the"
                " key column of the whole table to replace earlier copies of its keys (%s)",
                self.full_table,
                self.window_setting,
                keys,
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
                delete_batch_file(url, storage)

    # --- the load --------------------------------------------------------------------------

    def _load(self, path: str, *, compression: str, sequenced: bool) -> None:
        """Load the file's rows: appended, or deduplicated on the key (the last line wins).

        A keyed stream's rows replace the stored copies of their keys: INSERT OR REPLACE into a
        table with a primary key, else _replace_in_window (docs/ingest.md, "Deduplication").
        """
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
            finite_timestamp(n) if ty == "TIMESTAMP" else quote(n) for n, ty in read_columns.items()
        )
        scan = (
            f"read_json({literal(path)}, format='newline_delimited', columns={{{columns_sql}}},"
            f" compression={literal(compression)},"
            f" maximum_object_size={int(self.config.get('maximum_object_size') or 16_777_216)})"
        )
        col_list = ", ".join(quote(c) for c in insert_cols)
        replaced: int | None = None
        try:
            if not self.key_properties:
                sql = f"INSERT INTO {self.full_table} ({col_list}) SELECT {select_sql} FROM {scan}"  # noqa: S608
                count = self.target.connection.execute(sql).fetchone()
                loaded = count[0] if count else "?"
            else:
                # Every identifier goes through quote() and every literal through literal().
                if self.primary_key:
                    keys = ", ".join(quote(k) for k in self.key_properties)
                    # Without a line number (BATCH files) the scan order stands in for it.
                    order = f"{quote(SEQ)} DESC" if sequenced else "__line DESC"
                    line = "" if sequenced else ", row_number() OVER () AS __line"
                    last_copy = (
                        f" QUALIFY row_number() OVER (PARTITION BY {keys} ORDER BY {order}) = 1"
                    )
                    # A NULL key is not filtered out: the primary key's NOT NULL fails the load.
                    sql = (
                        f"INSERT OR REPLACE INTO {self.full_table} ({col_list})"  # noqa: S608
                        f" SELECT {select_sql} FROM (SELECT *{line} FROM {scan}){last_copy}"
                    )
                    count = self.target.connection.execute(sql).fetchone()
                    loaded = count[0] if count else "?"
                else:
                    # The window column is TIMESTAMP in the table even if the stream now declares
                    # it otherwise (setup keeps the table's type): staged as TIMESTAMP too, so
                    # that the window arithmetic works; text that is no time fails the load, as
                    # the insert's own cast would.
                    named = ", ".join(
                        f"{finite_timestamp(n)} AS {quote(n)}"
                        if ty == "TIMESTAMP" or n == self.window_column
                        else quote(n)
                        for n, ty in read_columns.items()
                    )
                    # A column named rowid (a SQLite or Oracle source's) hides DuckDB's own: the
                    # stage then numbers its rows itself, as it did before it used rowid
                    line = "rowid"
                    if any(n.lower() == "rowid" for n in read_columns):
                        line = quote(SEQ)
                        named += f", row_number() OVER () AS {line}"
                    staged = f"SELECT {named} FROM {scan}"  # noqa: S608
                    loaded, replaced = self._replace_in_window(staged, insert_cols, line)
        except (duckdb.Error, NullKeyError) as exc:
            msg = f"loading stream {self.stream_name!r} into {self.full_table} failed: {exc}"
            raise RuntimeError(msg) from exc
        if replaced is None:
            self.logger.info("Loaded %s rows into %s", loaded, self.full_table)
        else:
            self.logger.info(
                "Loaded %s rows into %s, replacing %s stored copies of their keys",
                loaded,
                self.full_table,
                replaced,
            )

    def _replace_in_window(
        self, staged: str, columns: list[str], line: str = "rowid"
    ) -> tuple[int, int]:
        """Stage the batch, delete the stored copies of its keys, insert it.

        `staged` selects the batch file's rows in line order. DuckDB keeps that order (the
        target pins preserve_insertion_order), so the stage's rowid follows the lines, and every
        row but each key's last is deleted from the stage: the last line wins, in a BATCH file
        and in the numbered file of RECORD messages alike. Numbering the scan and a window over
        the numbers took a fifth longer to stage.

        One transaction: a failure anywhere (a NULL key, a value the table refuses, a crash)
        leaves the table as it was. The stored copies searched are those whose window column
        lies within `dedup_window_hours` of the batch's [min, max] in it, a range inlined as
        literals so that DuckDB reads only the row groups whose min/max meet it (delete_copies_sql).
        A batch row whose window column is NULL has no time to bound the search: its key's
        copies are searched in the whole table, in a second DELETE run only when the batch holds
        such rows. Memory: the batch (staged, and the hash table of its keys that each DELETE
        joins against); the table's rows are streamed through the join, never indexed.

        `line` is the stage's line order: its rowid, or a number `staged` adds when a column
        of the stream is itself named rowid.

        Returns (rows inserted, stored copies deleted).
        """
        con = self.target.connection
        window = self.window_column if self.window_column in columns else None
        null_key = " OR ".join(f"{quote(k)} IS NULL" for k in self.key_properties)
        if window is not None:
            span = f"to_microseconds({round(self.window_hours * 3_600_000_000)})"
            w = quote(window)
            stats = (
                f"SELECT count(*) FILTER (WHERE {null_key}),"  # noqa: S608
                f" CAST(min({w}) - {span} AS VARCHAR), CAST(max({w}) + {span} AS VARCHAR),"
                f" count(*) - count({w}) FROM {BATCH_TABLE_SQL}"
            )
        else:  # the batch does not carry the column (an older SCHEMA): no time to bound it by
            stats = (
                f"SELECT count(*) FILTER (WHERE {null_key}), NULL, NULL, count(*)"  # noqa: S608
                f" FROM {BATCH_TABLE_SQL}"
            )
        col_list = ", ".join(quote(c) for c in columns)
        con.execute("BEGIN TRANSACTION")
        try:
            con.execute(f"CREATE OR REPLACE TEMPORARY TABLE {quote(BATCH_TABLE)} AS {staged}")
            keys = ", ".join(quote(k) for k in self.key_properties)
            con.execute(
                f"DELETE FROM {BATCH_TABLE_SQL} WHERE {line} NOT IN"  # noqa: S608
                f" (SELECT max({line}) FROM {BATCH_TABLE_SQL} GROUP BY {keys})"
            )
            row = con.execute(stats).fetchone()
            null_keys, low, high, undated = row if row else (0, None, None, 0)
            if null_keys:
                keys = ", ".join(self.key_properties)
                msg = (
                    f"NOT NULL constraint failed: a record has no value for the key ({keys});"
                    " nothing of this batch was loaded"
                )
                raise NullKeyError(msg)
            deleted = 0
            statements = []
            if window is not None and low is not None and high is not None:
                statements.append(
                    delete_copies_sql(
                        self.full_table,
                        BATCH_TABLE_SQL,
                        self.key_properties,
                        window=(window, low, high),
                    )
                )
            if undated:
                statements.append(
                    delete_copies_sql(
                        self.full_table, BATCH_TABLE_SQL, self.key_properties, undated=window
                    )
                )
            for sql in statements:
                count = con.execute(sql).fetchone()
                deleted += count[0] if count else 0
            count = con.execute(
                f"INSERT INTO {self.full_table} ({col_list})"  # noqa: S608
                f" SELECT {col_list} FROM {BATCH_TABLE_SQL}"
            ).fetchone()
            con.execute(f"DROP TABLE {BATCH_TABLE_SQL}")
            con.execute("COMMIT")
        except BaseException:
            # The DELETE is undone with the rest; a connection DuckDB has invalidated cannot
            # roll back, and its error must not hide the one that caused it.
            with contextlib.suppress(duckdb.Error):
                con.execute("ROLLBACK")
            raise
        return (count[0] if count else 0), deleted
