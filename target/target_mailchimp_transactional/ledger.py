"""The send ledger: one row per trigger, the target's exactly-once memory (docs/contracts.md 5).

Protocol: a trigger is *claimed* (state `sending`, attempts + 1) in one atomic upsert before the
Mandrill call, and its final state is written after. The claim only succeeds for a trigger that
is new or `failed` with attempts left, and the statement returns exactly the ids it claimed, so
two runs racing on the same PostgreSQL ledger can never both send one trigger. Rows left in
`sending` mean the process died between claim and result; the target reconciles them with
messages/search before sending anything else.

Statements are plain `INSERT .. ON CONFLICT .. RETURNING` with multi-row VALUES, which DuckDB,
PostgreSQL and SQLite all accept, and are chunked so 100,000 triggers never sit in memory or in
one statement.
"""

# ruff: noqa: S608 - the only interpolated SQL is the schema/table name, checked to be a
# plain identifier in Ledger.__init__; every value is a bound parameter.
from __future__ import annotations

import datetime as dt
import importlib.util
import json
import sys
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

if importlib.util.find_spec("pandas") is None:
    # DuckDB's Python binding tries `import pandas` for every bound parameter it converts; when
    # pandas is not installed each try walks sys.path, which made a 500-row ledger write take
    # ~1 s. Recording the module as absent (what Python does for a failed import anyway) turns
    # each try into a dictionary lookup. Nothing changes when pandas is installed.
    sys.modules.setdefault("pandas", None)  # type: ignore[arg-type]

SCHEMA = "signalmail_ledger"
TABLE = "send_ledger"
FINAL_STATES = frozenset({"sent", "queued", "scheduled", "rejected", "invalid", "held_out"})
STATES = FINAL_STATES | {"sending", "failed"}
COLUMNS = (
    "trigger_id", "campaign", "user_id", "email", "variant", "template", "state",
    "reject_reason", "error", "mandrill_id", "attempts", "created_at", "updated_at", "sent_at",
    "due_at",
)  # fmt: skip
TIMESTAMP_COLUMNS = frozenset({"created_at", "updated_at", "sent_at", "due_at"})
CHUNK = 500


def utcnow() -> dt.datetime:
    """Naive UTC, the contract's timestamp convention."""
    return dt.datetime.now(dt.UTC).replace(tzinfo=None)


@dataclass
class LedgerEntry:
    """One ledger row as the target writes it."""

    trigger_id: str
    campaign: str | None = None
    user_id: str | None = None
    email: str | None = None
    variant: str | None = None
    template: str | None = None
    state: str = "sending"
    reject_reason: str | None = None
    error: str | None = None
    mandrill_id: str | None = None
    #: when the email became due (email_triggers.due_at): send latency is measured from here
    due_at: dt.datetime | None = None
    #: when Mandrill accepted it; defaults to the time the row is written
    sent_at: dt.datetime | None = None

    def values(self, now: dt.datetime) -> dict[str, Any]:
        """Column values for an insert (attempts starts at 1 for a claim, 0 otherwise)."""
        sent = (self.sent_at or now) if self.state in {"sent", "queued", "scheduled"} else None
        return {
            "trigger_id": self.trigger_id,
            "campaign": self.campaign,
            "user_id": self.user_id,
            "email": self.email,
            "variant": self.variant,
            "template": self.template,
            "state": self.state,
            "reject_reason": _clip(self.reject_reason),
            "error": _clip(self.error),
            "mandrill_id": self.mandrill_id,
            "attempts": 1 if self.state == "sending" else 0,
            "created_at": now,
            "updated_at": now,
            "sent_at": sent,
            "due_at": self.due_at,
        }


_DUCK_TYPES = (
    {c: "VARCHAR" for c in COLUMNS}
    | {"attempts": "INTEGER"}
    | {c: "TIMESTAMP" for c in TIMESTAMP_COLUMNS}
)
_PG_TYPES = (
    {c: "varchar" for c in COLUMNS}
    | {"attempts": "integer"}
    | {c: "timestamp" for c in TIMESTAMP_COLUMNS}
)


def _json_default(value: Any) -> str:
    if isinstance(value, dt.datetime):
        return value.isoformat()
    raise TypeError(f"cannot store {type(value).__name__} in the ledger")


def _clip(text: str | None, limit: int = 1000) -> str | None:
    return None if text is None else text[:limit]


def _chunks(items: Sequence[Any], size: int = CHUNK) -> Iterator[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


class Ledger:
    """The `signalmail_ledger.send_ledger` table on any SQLAlchemy URL (DuckDB, PostgreSQL)."""

    def __init__(self, url: str, schema: str = SCHEMA) -> None:
        self.url = url
        self.engine = sa.create_engine(url, future=True)
        self.dialect = self.engine.dialect.name
        if not schema.replace("_", "").isalnum():
            raise ValueError(f"ledger schema {schema!r} must be a plain identifier")
        self.schema = None if self.dialect == "sqlite" else schema
        self.table_ref = f"{self.schema}.{TABLE}" if self.schema else TABLE
        self._create()

    def _create(self) -> None:
        ts = "timestamp"
        ddl = f"""
            create table if not exists {self.table_ref} (
                trigger_id varchar primary key,
                campaign varchar, user_id varchar, email varchar, variant varchar,
                template varchar, state varchar not null, reject_reason varchar,
                error varchar, mandrill_id varchar, attempts integer not null default 0,
                created_at {ts} not null, updated_at {ts} not null, sent_at {ts}, due_at {ts}
            )"""
        with self.engine.begin() as conn:
            if self.schema:
                conn.execute(sa.text(f"create schema if not exists {self.schema}"))
            conn.execute(sa.text(ddl))
            # ledgers written before due_at existed gain the column (null for their rows)
            if "due_at" not in self._column_names(conn):
                conn.execute(sa.text(f"alter table {self.table_ref} add column due_at {ts}"))

    def _column_names(self, conn: sa.Connection) -> set[str]:
        """Columns of the ledger table as the database has them.

        information_schema on DuckDB and PostgreSQL (duckdb-engine's SQLAlchemy inspector
        queries catalogs DuckDB 1.2 lacks); SQLite's table_info pragma otherwise.
        """
        if self.dialect == "sqlite":
            return {row[1] for row in conn.execute(sa.text(f"pragma table_info({TABLE})"))}
        rows = conn.execute(
            sa.text(
                "select column_name from information_schema.columns "
                "where table_schema = :schema and table_name = :table"
            ),
            {"schema": self.schema, "table": TABLE},
        )
        return {row[0] for row in rows}

    def close(self) -> None:
        """Release the file lock (DuckDB) or the pool."""
        self.engine.dispose()

    def states(self, trigger_ids: Iterable[str]) -> dict[str, tuple[str, int]]:
        """Known triggers among `trigger_ids`: id -> (state, attempts)."""
        ids = list(dict.fromkeys(trigger_ids))
        found: dict[str, tuple[str, int]] = {}
        with self.engine.connect() as conn:
            for chunk in _chunks(ids):
                sql, params = self._ids_filter(list(chunk))
                stmt = sa.text(
                    f"select trigger_id, state, attempts from {self.table_ref} where {sql}"
                )
                if "ids" in params and isinstance(params["ids"], list):
                    stmt = stmt.bindparams(sa.bindparam("ids", expanding=True))
                for tid, state, attempts in conn.execute(stmt, params):
                    found[tid] = (state, attempts)
        return found

    def _ids_filter(self, ids: list[str]) -> tuple[str, dict[str, Any]]:
        """`trigger_id in (...)` with one bound parameter where the dialect allows it."""
        if self.dialect == "duckdb":
            return (
                "trigger_id in (select unnest(from_json(cast(:ids as json), '[\"VARCHAR\"]')))",
                {"ids": json.dumps(ids)},
            )
        if self.dialect == "postgresql":
            return (
                "trigger_id in (select jsonb_array_elements_text(cast(:ids as jsonb)))",
                {"ids": json.dumps(ids)},
            )
        return "trigger_id in :ids", {"ids": ids}

    def _insert_sql(self, n: int, conflict: str) -> str:
        """INSERT .. <rows> <conflict>; rows come as one JSON parameter on DuckDB/PostgreSQL.

        DuckDB binds each parameter slowly (a 500-row VALUES list of 14 columns took ~0.3 s), so
        rows travel as one JSON document unpacked in SQL; other dialects get multi-row VALUES.
        """
        cols = ", ".join(COLUMNS)
        if self.dialect == "duckdb":
            shape = json.dumps([{c: _DUCK_TYPES[c] for c in COLUMNS}]).replace("'", "''")
            source = (
                f"select {cols} from (select unnest(from_json(cast(:rows as json), '{shape}'), "
                "recursive := true))"
            )
        elif self.dialect == "postgresql":
            typed = ", ".join(f"{c} {_PG_TYPES[c]}" for c in COLUMNS)
            source = f"select {cols} from jsonb_to_recordset(cast(:rows as jsonb)) as x({typed})"
        else:
            source = "values " + ", ".join(
                "(" + ", ".join(f":{c}_{i}" for c in COLUMNS) + ")" for i in range(n)
            )
        return f"insert into {self.table_ref} as l ({cols}) {source} {conflict}"

    def _params(self, entries: Sequence[LedgerEntry], now: dt.datetime) -> dict[str, Any]:
        if self.dialect in ("duckdb", "postgresql"):
            rows = [entry.values(now) for entry in entries]
            return {"rows": json.dumps(rows, default=_json_default)}
        params: dict[str, Any] = {}
        for i, entry in enumerate(entries):
            for key, value in entry.values(now).items():
                params[f"{key}_{i}"] = value
        return params

    def claim(self, entries: Sequence[LedgerEntry], max_attempts: int) -> set[str]:
        """Mark triggers `sending`; returns the ids this call claimed (new, or retryable failed).

        A trigger in any other state (final, or `sending` in another run) is not claimed and
        must not be sent.
        """
        claimed: set[str] = set()
        now = utcnow()
        conflict = (
            "on conflict (trigger_id) do update set state = 'sending', "
            "attempts = l.attempts + 1, error = null, updated_at = excluded.updated_at, "
            "variant = excluded.variant, template = excluded.template, "
            "due_at = coalesce(excluded.due_at, l.due_at) "
            f"where l.state = 'failed' and l.attempts < {int(max_attempts)} returning trigger_id"
        )
        with self.engine.begin() as conn:
            for chunk in _chunks(entries):
                result = conn.execute(
                    sa.text(self._insert_sql(len(chunk), conflict)), self._params(chunk, now)
                )
                claimed.update(row[0] for row in result)
        return claimed

    def record(self, entries: Sequence[LedgerEntry]) -> None:
        """Write final states (after a call, or after reconciliation)."""
        if not entries:
            return
        for entry in entries:
            if entry.state not in STATES or entry.state == "sending":
                raise ValueError(f"not a final ledger state: {entry.state!r}")
        now = utcnow()
        conflict = (
            "on conflict (trigger_id) do update set state = excluded.state, "
            "reject_reason = excluded.reject_reason, error = excluded.error, "
            "mandrill_id = coalesce(excluded.mandrill_id, l.mandrill_id), "
            "updated_at = excluded.updated_at, "
            "sent_at = coalesce(excluded.sent_at, l.sent_at), "
            "due_at = coalesce(excluded.due_at, l.due_at)"
        )
        with self.engine.begin() as conn:
            for chunk in _chunks(entries):
                conn.execute(
                    sa.text(self._insert_sql(len(chunk), conflict)), self._params(chunk, now)
                )

    def record_new(self, entries: Sequence[LedgerEntry]) -> set[str]:
        """Insert final states for triggers never sent (held out, expired, bad data).

        Never overwrites an existing row: a trigger the ledger already knows keeps its state.
        Returns the ids actually inserted.
        """
        inserted: set[str] = set()
        now = utcnow()
        with self.engine.begin() as conn:
            for chunk in _chunks(entries):
                result = conn.execute(
                    sa.text(
                        self._insert_sql(
                            len(chunk), "on conflict (trigger_id) do nothing returning trigger_id"
                        )
                    ),
                    self._params(chunk, now),
                )
                inserted.update(row[0] for row in result)
        return inserted

    def in_flight(self) -> list[dict[str, Any]]:
        """Rows left in `sending` (a crash or an ambiguous answer), oldest claim first."""
        with self.engine.connect() as conn:
            rows = conn.execute(
                sa.text(
                    f"select * from {self.table_ref} where state = 'sending' order by updated_at"
                )
            )
            return [dict(r) for r in rows.mappings()]

    def get(self, trigger_id: str) -> dict[str, Any] | None:
        """One row as a dict (tests and operators)."""
        with self.engine.connect() as conn:
            row = (
                conn.execute(
                    sa.text(f"select * from {self.table_ref} where trigger_id = :t"),
                    {"t": trigger_id},
                )
                .mappings()
                .first()
            )
            return dict(row) if row else None

    def sent_between(
        self, start: dt.datetime, end: dt.datetime | None = None
    ) -> list[dict[str, Any]]:
        """List accepted sends with `start <= sent_at < end`: campaign, due_at and sent_at.

        What latency reports read: the ledger is the record of when each email went out.
        """
        bound = "" if end is None else " and sent_at < :end"
        with self.engine.connect() as conn:
            rows = conn.execute(
                sa.text(
                    f"select trigger_id, campaign, due_at, sent_at from {self.table_ref} "
                    f"where state in ('sent', 'queued', 'scheduled') and sent_at >= :start{bound} "
                    "order by sent_at"
                ),
                {"start": start, "end": end},
            )
            return [dict(r) for r in rows.mappings()]

    def all_rows(self) -> list[dict[str, Any]]:
        """Every row (tests, small ledgers)."""
        with self.engine.connect() as conn:
            rows = conn.execute(sa.text(f"select * from {self.table_ref} order by trigger_id"))
            return [dict(r) for r in rows.mappings()]
