"""One batch into PostgreSQL: COPY the JSON lines into a staging table, then one upsert.

The records travel as the JSON text they arrived in: each line is one `text` value of a binary
COPY (its length and its bytes, framed with C-level iteration, never parsed in Python), and
PostgreSQL parses each line once (`jsonb_to_record`), casts it to the table's column types and
upserts the batch in one statement. Binary COPY does not scan the text for delimiters, quotes
and escapes as text and CSV COPY do (measured: the staging cost fell from 11 to 3 us a row),
and no byte of a line can end or split a row.

A row PostgreSQL refuses (a value its column type cannot hold, a NUL the settings keep, a key
too long for the index) does not stop the batch: the failing statement is retried on halves
of the batch until the refused rows are found, and those go to the quarantine table with
PostgreSQL's reason. Everything happens in one transaction per batch.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
import re
import struct
import typing as t
from dataclasses import dataclass, field
from itertools import chain, repeat

import msgspec
import psycopg
from psycopg import sql

if t.TYPE_CHECKING:
    from collections.abc import Callable, Iterator

STAGE = "target_postgres_bulk_stage"
STAGE_DDL = (
    f"CREATE TEMPORARY TABLE IF NOT EXISTS {STAGE}"
    " (seq bigint GENERATED ALWAYS AS IDENTITY, doc text) ON COMMIT DELETE ROWS"
)
COPY_SQL = f"COPY pg_temp.{STAGE} (doc) FROM STDIN WITH (FORMAT binary)"
# The binary COPY format: signature, flags, header extension length; a field count of -1 ends it.
BINARY_HEADER = b"PGCOPY\n\xff\r\n\x00" + struct.pack(">ii", 0, 0)
BINARY_TRAILER = struct.pack(">h", -1)
_ROW_HEAD = struct.Struct(">hi").pack  # a row of one field, then the field's length
# Small chunks keep the framing in the CPU cache (measured: 256 KiB a fifth faster than 4 MiB).
CHUNK_BYTES = 256 << 10

# The escape of NUL in JSON text, not preceded by an escaped backslash (`\\u0000` is the
# six characters \u0000, not NUL). Exact for any valid JSON: backslashes only occur in strings.
_NUL_ESCAPE = re.compile(rb"(?<!\\)((?:\\\\)*)\\u0000")
_NUL_REPLACEMENT = rb"\1\\ufffd"

# SQLSTATE classes of errors that belong to the row, not to the load: data exceptions (22),
# integrity violations (23: a NULL key), program limits (54: an index row too large,
# nesting too deep). Anything else (a lost connection, a missing privilege) fails the load.
ROW_ERROR_CLASSES = frozenset({"22", "23", "54"})


def quote_ident(name: str) -> sql.Identifier:
    """Quote a PostgreSQL identifier (any stream or property name is safe)."""
    return sql.Identifier(name)


@dataclass
class Rejected:
    """A record PostgreSQL cannot take, and why."""

    raw: bytes | str
    reason: str


@dataclass
class LoadResult:
    """What one batch did: lines read, rows written (inserted or changed), rows quarantined."""

    read: int = 0
    written: int = 0
    rejected: list[Rejected] = field(default_factory=list)


def line_chunks(read: Callable[[int], bytes], size: int = CHUNK_BYTES) -> Iterator[bytes]:
    """Yield the input in chunks of whole lines, each ending with a newline."""
    rest = b""
    while block := read(size):
        data = rest + block if rest else block
        cut = data.rfind(b"\n")
        if cut < 0:
            rest = data
            continue
        yield data[: cut + 1]
        rest = data[cut + 1 :]
    if rest:
        yield rest + b"\n"


def frame(lines: list[bytes]) -> bytes:
    """Encode lines as rows of one text field in COPY's binary format (C-level iteration)."""
    heads = map(_ROW_HEAD, repeat(1), map(len, lines))
    return b"".join(chain.from_iterable(zip(heads, lines, strict=True)))


class LineScreen:
    """Splits chunks into the lines COPY gets, and sets aside the lines it cannot take.

    Usually a chunk is split and nothing else: NUL escapes are replaced in the whole chunk with
    one regex pass when `sanitize_nul` is on (PostgreSQL's text and jsonb cannot hold NUL), and
    empty lines are dropped when the chunk has any. `strict` is the retry after COPY refused
    the batch's bytes (invalid UTF-8, a raw NUL byte): each line is checked, and the ones at
    fault are set aside with the reason. Anything else a line can get wrong (it is not JSON,
    a value does not fit its column) is found by PostgreSQL, row by row (BatchLoad).
    """

    def __init__(self, *, sanitize_nul: bool) -> None:
        self.sanitize_nul = sanitize_nul

    def lines(self, chunk: bytes, rejects: list[Rejected], *, strict: bool = False) -> list[bytes]:
        """Return the chunk's lines as COPY must get them; append refused lines to `rejects`."""
        # A backslash first (memchr, 15x faster than the substring search): most chunks of
        # tap output have none at all.
        if self.sanitize_nul and b"\\" in chunk and b"\\u0000" in chunk:
            chunk = _NUL_ESCAPE.sub(_NUL_REPLACEMENT, chunk)
        lines = chunk.split(b"\n")
        if lines and not lines[-1]:
            lines.pop()  # the chunk ends with a newline
        if strict:
            return [line for line in lines if self._valid(line, rejects)]
        if not all(lines):
            lines = [line for line in lines if line]
        return lines

    @staticmethod
    def _valid(line: bytes, rejects: list[Rejected]) -> bool:
        if not line.strip():
            return False  # a blank line is not a record
        try:
            line.decode("utf-8")
        except UnicodeDecodeError as exc:
            rejects.append(Rejected(line, f"invalid UTF-8: {exc}"))
            return False
        if b"\x00" in line:
            rejects.append(Rejected(line, "invalid JSON: a raw NUL byte"))
            return False
        return True


@dataclass(frozen=True)
class TablePlan:
    """Where one stream's rows go and how they are read from the staged JSON."""

    stream: str
    schema: str
    table: str
    #: (column, its type in the table as format_type() names it), in the stream's order
    columns: tuple[tuple[str, str], ...]
    keys: tuple[str, ...]
    reject_table: str

    @property
    def relation(self) -> sql.Composed:
        """The quoted `"schema"."table"`."""
        return sql.SQL("{}.{}").format(quote_ident(self.schema), quote_ident(self.table))

    def upsert_sql(self, *, ranged: bool, dedupe: bool) -> sql.Composed:
        """Build the INSERT ... SELECT ... ON CONFLICT of the staged lines (or a seq range).

        Date-times are read with their offset (timestamptz) and stored as naive UTC, as
        target-postgres and the DuckDB loaders store them. A key met twice in the batch makes
        the plain statement fail (ON CONFLICT cannot touch a row twice); `dedupe` keeps the
        last line of each key. A row whose values equal the stored row is left alone, so a
        replayed batch writes nothing.
        """
        record_def: list[sql.Composable] = []
        select: list[sql.Composable] = []
        value: dict[str, sql.Composable] = {}  # each column's value as loaded, by name
        for name, pg_type in self.columns:
            column = quote_ident(name)
            if pg_type.startswith("timestamp") and pg_type.endswith("without time zone"):
                aware = pg_type.replace("without time zone", "with time zone")
                # Read as text and cast here: PostgreSQL also takes the words 'now', 'today',
                # 'epoch' and 'infinity' as date-times. 'now' would store the load's time (and a
                # replay would rewrite it), 'infinity' would put every later incremental dbt
                # cutoff past all data. A value that does not start with a digit (as ISO 8601
                # does) is made to fail the cast, so the row is set aside with the reason like
                # any bad time. A first-character test, not a regular expression: it costs
                # nothing measurable (docs/ingest.md, hostile values).
                record_def.append(sql.SQL("{} text").format(column))
                value[name] = sql.SQL(
                    "(CASE WHEN left(r.{c}, 1) BETWEEN '0' AND '9' THEN r.{c}"
                    " ELSE 'not a date-time: ' || r.{c} END)::{t} AT TIME ZONE 'UTC'"
                ).format(c=column, t=sql.SQL(aware))
            else:
                record_def.append(sql.SQL("{} {}").format(column, sql.SQL(pg_type)))
                value[name] = sql.SQL("r.{}").format(column)
            select.append(value[name])
        where = sql.SQL("s.doc IS NOT NULL")
        if ranged:
            where = sql.SQL("s.doc IS NOT NULL AND s.seq BETWEEN %(lo)s AND %(hi)s")
        source = sql.SQL(
            "FROM pg_temp.{stage} s CROSS JOIN LATERAL jsonb_to_record(s.doc::jsonb)"
            " AS r({record_def}) WHERE {where}"
        ).format(
            stage=sql.Identifier(STAGE), record_def=sql.SQL(", ").join(record_def), where=where
        )
        keys = sql.SQL(", ").join(quote_ident(k) for k in self.keys)
        if dedupe and self.keys:
            query = sql.SQL(
                "SELECT DISTINCT ON ({r_keys}) {select} {source} ORDER BY {r_keys}, s.seq DESC"
            ).format(
                # the keys as loaded: a date-time key written two ways (`Z`, `+00:00`) is one key
                r_keys=sql.SQL(", ").join(value[k] for k in self.keys),
                select=sql.SQL(", ").join(select),
                source=source,
            )
        else:
            query = sql.SQL("SELECT {select} {source}").format(
                select=sql.SQL(", ").join(select), source=source
            )
        insert = sql.SQL("INSERT INTO {relation} AS t ({columns}) {query}").format(
            relation=self.relation,
            columns=sql.SQL(", ").join(quote_ident(n) for n, _ in self.columns),
            query=query,
        )
        if not self.keys:
            return insert  # no key: append, as target-postgres does
        others = [(n, ty) for n, ty in self.columns if n not in self.keys]
        if not others:
            return sql.SQL("{} ON CONFLICT ({}) DO NOTHING").format(insert, keys)
        return sql.SQL(
            "{insert} ON CONFLICT ({keys}) DO UPDATE SET {assign}"
            " WHERE ({old}) IS DISTINCT FROM ({new})"
        ).format(
            insert=insert,
            keys=keys,
            assign=sql.SQL(", ").join(
                sql.SQL("{0} = EXCLUDED.{0}").format(quote_ident(n)) for n, _ in others
            ),
            old=sql.SQL(", ").join(_comparable("t", n, ty) for n, ty in others),
            new=sql.SQL(", ").join(_comparable("EXCLUDED", n, ty) for n, ty in others),
        )


def _comparable(alias: str, name: str, pg_type: str) -> sql.Composable:
    """Name a column in the changed-row test (types without `=` compare as text)."""
    column = sql.SQL("{}.{}").format(sql.SQL(alias), quote_ident(name))
    if pg_type in ("json", "xml") or pg_type.startswith(("point", "line", "box", "polygon")):
        return sql.SQL("{}::text").format(column)
    return column


def is_row_error(exc: psycopg.Error) -> bool:
    """Whether PostgreSQL refused a value of the rows, rather than the load itself."""
    state = exc.sqlstate or ""
    return state[:2] in ROW_ERROR_CLASSES


def describe(exc: psycopg.Error) -> str:
    """PostgreSQL's reason for refusing a row: SQLSTATE and its first message line."""
    primary = exc.diag.message_primary or str(exc).splitlines()[0]
    return f"{exc.sqlstate}: {primary}"


class BatchLoad:
    """Loads one batch of JSON lines for one table, inside the caller's transaction."""

    def __init__(
        self,
        conn: psycopg.Connection[t.Any],
        plan: TablePlan,
        screen: LineScreen,
        logger: logging.Logger,
    ) -> None:
        self.conn = conn
        self.plan = plan
        self.screen = screen
        self.logger = logger
        self.result = LoadResult()

    def run(self, sources: list[Callable[[], Iterator[bytes]]]) -> LoadResult:
        """COPY every source (in order: a later line wins a key), upsert, quarantine."""
        try:
            with self.conn.transaction():
                self._copy(sources, strict=False)
        except psycopg.errors.DataError as exc:
            # Invalid UTF-8 or a raw NUL byte somewhere (COPY refuses the whole input): again,
            # checking every line, so that only the lines at fault are set aside.
            self.logger.warning(
                "COPY refused the batch of stream %r (%s); screening every line",
                self.plan.stream,
                describe(exc),
            )
            self.result = LoadResult()
            with self.conn.transaction():
                self._copy(sources, strict=True)
        if self.result.read:
            self.result.written = self._apply(None, None, dedupe=False)
        return self.result

    def _copy(self, sources: list[Callable[[], Iterator[bytes]]], *, strict: bool) -> None:
        rejects = self.result.rejected
        with self.conn.cursor() as cur:
            with cur.copy(COPY_SQL) as copy:
                copy.write(BINARY_HEADER)
                for open_chunks in sources:
                    for chunk in open_chunks():
                        lines = self.screen.lines(chunk, rejects, strict=strict)
                        if lines:
                            copy.write(frame(lines))
                copy.write(BINARY_TRAILER)
            self.result.read = max(cur.rowcount, 0)

    def _apply(self, lo: int | None, hi: int | None, *, dedupe: bool) -> int:
        """Upsert the staged rows (or the seq range lo..hi); halve around refused rows."""
        query = self.plan.upsert_sql(ranged=lo is not None, dedupe=dedupe)
        try:
            with self.conn.transaction():
                cur = self.conn.execute(query, {"lo": lo, "hi": hi} if lo is not None else None)
                return max(cur.rowcount, 0)
        except psycopg.errors.CardinalityViolation:
            if dedupe:
                raise
            return self._apply(lo, hi, dedupe=True)  # a key twice in the batch: last one wins
        except psycopg.Error as exc:
            if not is_row_error(exc):
                raise
            index: sql.Identifier | None = None
            if lo is None or hi is None:
                row = self.conn.execute(
                    sql.SQL("SELECT min(seq), max(seq) FROM pg_temp.{}").format(
                        sql.Identifier(STAGE)
                    )
                ).fetchone()
                if row is None or row[0] is None:
                    raise
                lo, hi = int(row[0]), int(row[1])
                if lo == hi:
                    return self._reject_staged(lo, exc)
                # The halving reads ranges of seq, about two per refused row per level: without
                # an index each read scans the whole stage, quadratic in the batch. Made only
                # now, so a clean batch pays nothing, and dropped after: the stage lives as long
                # as the session. Should the halving raise, the batch's transaction rolls the
                # index back with the rest.
                index = sql.Identifier(f"{STAGE}_seq")
                self.conn.execute(
                    sql.SQL("CREATE INDEX {} ON pg_temp.{} (seq)").format(
                        index, sql.Identifier(STAGE)
                    )
                )
            elif lo == hi:
                return self._reject_staged(lo, exc)
            mid = (lo + hi) // 2
            written = self._apply(lo, mid, dedupe=dedupe) + self._apply(mid + 1, hi, dedupe=dedupe)
            if index is not None:
                self.conn.execute(sql.SQL("DROP INDEX pg_temp.{}").format(index))
            return written

    def _reject_staged(self, seq: int, exc: psycopg.Error) -> int:
        found = self.conn.execute(
            sql.SQL("SELECT doc FROM pg_temp.{} WHERE seq = %s").format(sql.Identifier(STAGE)),
            (seq,),
        ).fetchone()
        if found is not None and found[0] is not None:
            self.result.rejected.append(Rejected(str(found[0]), describe(exc)))
        return 0


# --- the quarantine table -----------------------------------------------------------------------

_key_decoder = msgspec.json.Decoder()


def reject_rows(
    plan: TablePlan, rejects: list[Rejected], now: dt.datetime
) -> list[tuple[str, str, str | None, dt.datetime, str, str, dt.datetime]]:
    """Quarantine rows: id, stream, key, received_at, reason, raw_text, rejected_at.

    The id hashes the stream and the raw text, so a replayed batch rewrites the same rows.
    `received_at` is the record's own when it has a readable one, else the time of rejection,
    so that retention (docs/watch.md) ages quarantined rows out like events.
    """
    rows = []
    for item in rejects:
        raw = item.raw
        text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else raw
        text = text.replace("\x00", "\ufffd")
        key, received = None, now
        try:
            record = _key_decoder.decode(text)
        except (msgspec.DecodeError, RecursionError):
            record = None
        if isinstance(record, dict):
            parts = [record.get(k) for k in plan.keys]
            if any(p is not None for p in parts):
                key = ",".join("" if p is None else str(p) for p in parts).replace("\x00", "\ufffd")
            received = _naive_utc(record.get("received_at")) or now
        digest = hashlib.sha1(f"{plan.stream}\n{text}".encode(), usedforsecurity=False)
        rows.append((digest.hexdigest(), plan.stream, key, received, item.reason[:2000], text, now))
    return rows


def _naive_utc(value: object) -> dt.datetime | None:
    if not isinstance(value, str):
        return None
    try:
        moment = dt.datetime.fromisoformat(value)
        if moment.tzinfo is not None:
            # 0001-01-01T00:30:00+01:00 is before year 1 in UTC: OverflowError, which would
            # stop the quarantine of a record that was refused for another field
            moment = moment.astimezone(dt.UTC).replace(tzinfo=None)
    except (ValueError, OverflowError):
        return None
    return moment


def quarantine(conn: psycopg.Connection[t.Any], plan: TablePlan, rejects: list[Rejected]) -> None:
    """Write `rejects` to the quarantine table (created on first use), in the same transaction."""
    if not rejects:
        return
    table = sql.SQL("{}.{}").format(quote_ident(plan.schema), quote_ident(plan.reject_table))
    conn.execute(
        sql.SQL(
            "CREATE TABLE IF NOT EXISTS {} (reject_id text PRIMARY KEY, stream text NOT NULL,"
            " message_id text, received_at timestamp, reason text NOT NULL, raw_text text,"
            " rejected_at timestamp NOT NULL)"
        ).format(table)
    )
    now = dt.datetime.now(dt.UTC).replace(tzinfo=None)
    with conn.cursor() as cur:
        cur.executemany(
            sql.SQL(
                "INSERT INTO {} (reject_id, stream, message_id, received_at, reason, raw_text,"
                " rejected_at) VALUES (%s, %s, %s, %s, %s, %s, %s) ON CONFLICT (reject_id)"
                " DO UPDATE SET reason = EXCLUDED.reason, rejected_at = EXCLUDED.rejected_at"
            ).format(table),
            reject_rows(plan, rejects, now),
        )
