"""The PostgreSQL sink: JSON lines buffered per batch, one COPY and one upsert per load.

Per RECORD the only Python work is appending the record's JSON bytes to a buffer (or one
msgspec encode on the SDK's path); BATCH files (singer-sdk JSONL, plain or gzip) are streamed
from the file into COPY without being parsed in Python at all. The tables are created as
MeltanoLabs' target-postgres 0.8.1 creates them, so either loader can write a warehouse the
other one started and dbt reads both the same (docs/ingest.md).
"""

from __future__ import annotations

import gzip
import hashlib
import typing as t
from pathlib import Path

import msgspec
from psycopg import sql
from singer_bulk import RawRecordSink, delete_batch_file, non_null_types, table_name
from singer_sdk.helpers._batch import BaseBatchFileEncoding, BatchFileFormat, StorageTarget

from target_postgres_bulk.load import TablePlan, line_chunks, quote_ident

if t.TYPE_CHECKING:
    from collections.abc import Callable, Iterator, Sequence

    import psycopg

    from target_postgres_bulk.target import TargetPostgresBulk

JSONB = "jsonb"
TEXT = "text"
TIMESTAMP = "timestamp without time zone"


def _integer_type(prop: dict[str, t.Any]) -> str:
    """smallint, integer or bigint from the schema's bounds, as target-postgres picks them."""
    low = prop.get("minimum", float("-inf"))
    high = prop.get("maximum", float("inf"))
    if not isinstance(low, int | float) or not isinstance(high, int | float):
        return "bigint"
    if low >= -(2**15) and high < 2**15:
        return "smallint"
    if low >= -(2**31) and high < 2**31:
        return "integer"
    return "bigint"


def column_type(prop: dict[str, t.Any]) -> str:
    """Map one Singer property schema to the PostgreSQL type target-postgres 0.8.1 gives it.

    string -> text (date-time -> timestamp without time zone holding UTC, date, time, uuid),
    integer -> smallint/integer/bigint by its minimum and maximum, number -> numeric,
    boolean, object -> jsonb. Several types pick the widest as target-postgres does (jsonb,
    then text, then numeric, then bigint); no type at all is text. One difference: arrays are
    jsonb here, where target-postgres makes typed arrays (text[], jsonb[]) of typed items.
    """
    options = non_null_types(prop)
    kinds = {o.get("type") for o in options}
    if not options or None in kinds or not all(isinstance(k, str) for k in kinds):
        return TEXT
    if len(kinds) > 1:
        if kinds & {"object", "array"}:
            return JSONB
        if "string" in kinds:
            return TEXT
        if "number" in kinds:
            return "numeric"
        if "integer" in kinds:
            return "bigint"
        return TEXT
    kind = kinds.pop()
    if kind == "string":
        formats = {str(o.get("format")) for o in options}
        return {
            "date-time": TIMESTAMP,
            "date": "date",
            "time": "time without time zone",
            "uuid": "uuid",
        }.get(formats.pop() if len(formats) == 1 else "", TEXT)
    if kind == "integer":
        return _integer_type(options[0])
    return {"number": "numeric", "boolean": "boolean", "object": JSONB, "array": JSONB}.get(
        str(kind), TEXT
    )


#: PostgreSQL's identifier length (NAMEDATALEN - 1)
PG_NAME_BYTES = 63


class PostgresBulkSink(RawRecordSink):
    """One stream -> one PostgreSQL table; each drained batch is one COPY and one upsert."""

    target: TargetPostgresBulk  # set by Sink.__init__ via the target argument

    def __init__(self, target: TargetPostgresBulk, *args: t.Any, **kwargs: t.Any) -> None:
        super().__init__(target, *args, **kwargs)
        self.target = target
        self._encoder = msgspec.json.Encoder(decimal_format="number")
        self._plan: TablePlan | None = None
        missing = [k for k in self.key_properties if k not in self.schema["properties"]]
        if missing:
            msg = f"stream {self.stream_name!r}: key properties {missing} are not in its schema"
            raise ValueError(msg)
        # PostgreSQL cuts longer names to 63 bytes without a word: the table or column would be
        # created under the cut name and never found again under the full one (KeyError)
        too_long = [
            name
            for name in (table_name(self.stream_name), *self.schema["properties"])
            if len(name.encode()) > PG_NAME_BYTES
        ]
        if too_long:
            msg = (
                f"stream {self.stream_name!r}: {too_long[0]!r} is longer than PostgreSQL's"
                f" {PG_NAME_BYTES}-byte names; rename it with a stream map (or, for the table,"
                " an alias)"
            )
            raise ValueError(msg)

    @property
    def target_schema(self) -> str:
        """The `default_target_schema` setting."""
        return self.config.get("default_target_schema") or "rudderstack_raw"

    @property
    def table(self) -> str:
        """The table this stream lands in."""
        return table_name(self.stream_name)

    @property
    def plan(self) -> TablePlan:
        """How this sink's batches are loaded (set up by setup())."""
        if self._plan is None:
            msg = f"stream {self.stream_name!r}: the sink was not set up"
            raise RuntimeError(msg)
        return self._plan

    # --- table management ------------------------------------------------------------------

    def setup(self) -> None:
        """Create the schema and table from the Singer schema, or add the columns it lacks.

        Runs on the main thread while no load is in flight. A replaced sink's buffered
        records (a SCHEMA message changed the stream mid-run) are loaded first, so batches
        reach the table in the order they were read.
        """
        self.target.drain_replaced_sinks()
        self.target.wait_for_loads()
        conn = self.target.connection
        with conn.transaction():
            self._plan = self._prepare(conn)

    def _prepare(self, conn: psycopg.Connection[t.Any]) -> TablePlan:
        schema, table = self.target_schema, self.table
        relation = sql.SQL("{}.{}").format(quote_ident(schema), quote_ident(table))
        exists = conn.execute("SELECT 1 FROM pg_namespace WHERE nspname = %s", (schema,))
        if exists.fetchone() is None:
            # Only when missing: CREATE SCHEMA IF NOT EXISTS still needs CREATE on the database.
            conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(quote_ident(schema)))
        wanted = {n: column_type(p) for n, p in self.schema["properties"].items()}
        existing = self._columns(conn, schema, table)
        if not existing:
            cols = [
                sql.SQL("{} {}").format(quote_ident(n), sql.SQL(ty)) for n, ty in wanted.items()
            ]
            if self.key_properties:
                cols.append(
                    sql.SQL("PRIMARY KEY ({})").format(
                        sql.SQL(", ").join(quote_ident(k) for k in self.key_properties)
                    )
                )
            conn.execute(
                sql.SQL("CREATE TABLE IF NOT EXISTS {} ({})").format(
                    relation, sql.SQL(", ").join(cols)
                )
            )
            self.logger.info("Created table %s.%s", schema, table)
            existing = self._columns(conn, schema, table)
        else:
            for name, ty in wanted.items():
                if name not in existing:
                    conn.execute(
                        sql.SQL("ALTER TABLE {} ADD COLUMN IF NOT EXISTS {} {}").format(
                            relation, quote_ident(name), sql.SQL(ty)
                        )
                    )
                    self.logger.info("Added column %s %s to %s.%s", name, ty, schema, table)
                elif existing[name] != ty:
                    # The load casts each value to the table's type; one that does not fit is
                    # quarantined with PostgreSQL's reason.
                    self.logger.warning(
                        "Column %s of %s.%s is %s but the stream now declares %s; keeping %s",
                        name,
                        schema,
                        table,
                        existing[name],
                        ty,
                        existing[name],
                    )
            existing = self._columns(conn, schema, table)
        for column in self.target.indexed_columns:
            if column in existing:
                self._ensure_index(conn, schema, table, column)
        if self.key_properties and not self._has_unique_key(conn, schema, table):
            msg = (
                f"table {schema}.{table} has no primary key or unique index on"
                f" {list(self.key_properties)}: the upsert needs one"
            )
            raise RuntimeError(msg)
        return TablePlan(
            stream=self.stream_name,
            schema=schema,
            table=table,
            columns=tuple((n, existing[n]) for n in wanted),
            keys=tuple(self.key_properties),
            reject_table=self.target.reject_table,
        )

    @staticmethod
    def _columns(conn: psycopg.Connection[t.Any], schema: str, table: str) -> dict[str, str]:
        rows = conn.execute(
            "SELECT a.attname, format_type(a.atttypid, a.atttypmod) FROM pg_attribute a"
            " JOIN pg_class c ON c.oid = a.attrelid JOIN pg_namespace n ON n.oid = c.relnamespace"
            " WHERE n.nspname = %s AND c.relname = %s AND a.attnum > 0 AND NOT a.attisdropped"
            " ORDER BY a.attnum",
            (schema, table),
        ).fetchall()
        return {str(name): str(ty) for name, ty in rows}

    def _ensure_index(
        self, conn: psycopg.Connection[t.Any], schema: str, table: str, column: str
    ) -> None:
        """Give the table a btree index led by `column` unless one exists (any name).

        Checked in the catalogue first: CREATE INDEX would take the table's share lock, and
        wait for any writer, even when the index is there. Only a valid, whole-table btree
        counts (not one a failed CREATE INDEX CONCURRENTLY left invalid, nor a partial one).
        Two loaders starting on the same table at once (one per tap shard) take turns on a
        transaction-scoped advisory lock, so the second finds the first one's index.
        """
        conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (f"{schema}.{table}",))
        if self._has_index(conn, schema, table, column):
            return
        # PostgreSQL cuts a name to 63 bytes; a cut name could clash, so a hash keeps it unique
        name = f"{table}__{column}"
        if len(name.encode()) > 63:
            digest = hashlib.blake2s(name.encode(), digest_size=4).hexdigest()
            name = f"{name.encode()[:54].decode(errors='ignore')}_{digest}"
        conn.execute(
            sql.SQL("CREATE INDEX IF NOT EXISTS {} ON {}.{} ({})").format(
                quote_ident(name), quote_ident(schema), quote_ident(table), quote_ident(column)
            )
        )
        if self._has_index(conn, schema, table, column):
            self.logger.info("Indexed %s.%s on %s", schema, table, column)
        else:  # IF NOT EXISTS skipped it: another relation of the schema has that name
            self.logger.warning(
                "Could not index %s.%s on %s: the name %s is taken", schema, table, column, name
            )

    @staticmethod
    def _has_index(conn: psycopg.Connection[t.Any], schema: str, table: str, column: str) -> bool:
        found = conn.execute(
            "SELECT 1 FROM pg_index i JOIN pg_class c ON c.oid = i.indrelid"
            " JOIN pg_namespace n ON n.oid = c.relnamespace"
            " JOIN pg_class ic ON ic.oid = i.indexrelid JOIN pg_am am ON am.oid = ic.relam"
            " JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum = i.indkey[0]"
            " WHERE n.nspname = %s AND c.relname = %s AND a.attname = %s"
            " AND am.amname = 'btree' AND i.indisvalid AND i.indpred IS NULL",
            (schema, table, column),
        )
        return found.fetchone() is not None

    def _has_unique_key(self, conn: psycopg.Connection[t.Any], schema: str, table: str) -> bool:
        """Tell whether a primary key or unique index covers exactly the key (for ON CONFLICT)."""
        rows = conn.execute(
            "SELECT array_agg(a.attname::text ORDER BY a.attname) FROM pg_index i"
            " JOIN pg_class c ON c.oid = i.indrelid JOIN pg_namespace n ON n.oid = c.relnamespace"
            " JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey)"
            " WHERE n.nspname = %s AND c.relname = %s AND i.indisunique AND i.indpred IS NULL"
            " AND i.indexprs IS NULL GROUP BY i.indexrelid",
            (schema, table),
        ).fetchall()
        wanted = sorted(self.key_properties)
        return any(list(row[0]) == wanted for row in rows)

    # --- RECORD messages -------------------------------------------------------------------

    def start_batch(self, context: dict) -> None:
        """Start this batch's buffer of JSON lines."""
        context["buffer"] = bytearray()

    def process_record(self, record: dict, context: dict) -> None:
        """Append the record as one JSON line (the SDK's path: maps, metadata, validation)."""
        buffer: bytearray = context["buffer"]
        buffer += self._encoder.encode(record)
        buffer += b"\n"

    def process_raw_record(self, raw: msgspec.Raw, context: dict) -> None:
        """Append a record given as its raw JSON bytes (the target's fast path)."""
        body = self.raw_object(raw)
        buffer: bytearray = context["buffer"]
        buffer += body
        buffer += b"\n"

    def process_batch(self, context: dict) -> None:
        """Hand the batch's lines to the loader thread (one transaction); STATE waits for it."""
        data: bytearray | None = context.pop("buffer", None)
        context["buffer"] = bytearray()
        if not data:
            return
        # Full (not drained by a drain_all): ask for a full drain so that STATE follows. Only
        # then: a drain_all that asked again for every sink it drains would never stop.
        was_full = self.current_size >= self.max_size

        def chunks() -> Iterator[bytes]:
            return line_chunks(_reader(data))

        self.target.submit_load(self.plan, [chunks])
        if was_full:
            self.target.request_full_drain()

    # --- BATCH messages --------------------------------------------------------------------

    def process_batch_files(self, encoding: BaseBatchFileEncoding, files: Sequence[str]) -> None:
        """Load singer-sdk batch files (JSON lines, gzip or plain) with COPY, one transaction.

        Every file of the manifest is streamed into the same staging table, in manifest order
        (a later line wins a key), and upserted in one transaction. `file://` files are read in
        place, other storages through fsspec. Files are deleted (delete_batch_files) only after
        the commit.
        """
        if encoding.format != BatchFileFormat.JSONL:
            msg = (
                f"stream {self.stream_name!r}: BATCH encoding {encoding.format!r} is not"
                " supported (use jsonl)"
            )
            raise NotImplementedError(msg)
        gz = encoding.compression == "gzip"
        storage = self.batch_config.storage if self.batch_config else None
        sources: list[Callable[[], Iterator[bytes]]] = []
        for url in files:
            head, tail = StorageTarget.split_url(url)
            if url.startswith("file://"):
                local = Path(head.removeprefix("file://")) / tail
                if not local.is_file():
                    msg = f"stream {self.stream_name!r}: BATCH file {url} does not exist"
                    raise FileNotFoundError(msg)
                sources.append(_local_chunks(local, gz=gz))
            else:
                sources.append(
                    _storage_chunks(storage or StorageTarget.from_url(head), tail, gz=gz)
                )
        after: Callable[[], None] | None = None
        if self.config.get("delete_batch_files"):

            def after() -> None:
                # Only after its rows are committed: a crash before this point leaves the file
                # for the tap's re-run to supersede, never a hole.
                for url in files:
                    delete_batch_file(url, storage)

        # The STATE message that follows this batch is written once it is committed
        # (TargetPostgresBulk._process_state_message).
        self.target.submit_load(self.plan, sources, after=after)


def _reader(data: bytearray) -> Callable[[int], bytes]:
    """Give a read(n) over a buffer, without copying it whole (a batch may be 100 MB)."""
    view = memoryview(data)
    position = 0

    def read(size: int) -> bytes:
        nonlocal position
        block = bytes(view[position : position + size])
        position += len(block)
        return block

    return read


def _local_chunks(path: Path, *, gz: bool) -> Callable[[], Iterator[bytes]]:
    def chunks() -> Iterator[bytes]:
        with path.open("rb") as raw:
            if gz:
                with gzip.GzipFile(fileobj=raw) as unzipped:
                    yield from line_chunks(unzipped.read)
            else:
                yield from line_chunks(raw.read)

    return chunks


def _storage_chunks(
    storage: StorageTarget, tail: str, *, gz: bool
) -> Callable[[], Iterator[bytes]]:
    def chunks() -> Iterator[bytes]:
        with storage.open(tail, mode="rb") as raw:
            if gz:
                with gzip.GzipFile(fileobj=raw) as unzipped:
                    yield from line_chunks(unzipped.read)
            else:
                yield from line_chunks(raw.read)

    return chunks
