"""The send ledger: one row per trigger, the target's exactly-once memory (docs/contracts.md 5).

Protocol (docs/activation.md, "Exactly once"): a trigger is *claimed* (state `claimed`,
`claimed_by` the run, attempts + 1) in one atomic upsert; the worker marks its call's triggers
`sending` just before the request leaves, and the final state is written after the answer.
The claim only succeeds for a trigger that is new or `failed` with attempts left, and the
statement returns exactly the ids it claimed, so two runs racing on the same PostgreSQL ledger
can never both send one trigger.

What a stopped run leaves tells the next one what it may do: `claimed` means the request never
left (sendable again at once, once the run is known to be gone: `RunLease`); `sending` means it
may have reached Mandrill, and only evidence from messages/search settles it.

Statements are plain `INSERT .. ON CONFLICT .. RETURNING` with multi-row VALUES, which DuckDB,
PostgreSQL and SQLite all accept, and are chunked so 100,000 triggers never sit in memory or in
one statement.
"""

# ruff: noqa: S608 - the only interpolated SQL is the schema/table name, checked to be a
# plain identifier in Ledger.__init__; every value is a bound parameter.
from __future__ import annotations

import datetime as dt
import hashlib
import json
from collections.abc import Collection, Iterable, Iterator, Sequence
from dataclasses import dataclass, replace
from typing import Any

import sqlalchemy as sa

SCHEMA = "signalmail_ledger"
TABLE = "send_ledger"
#: one-way marks of people who asked to be forgotten (`signalmail forget`): never mailed again
TOMBSTONES = "tombstones"
#: states never left again by the target (`unconfirmed`: a lost answer Mandrill never showed,
#: kept from being sent twice; an operator may release it, docs/activation.md)
FINAL_STATES = frozenset(
    {"sent", "queued", "scheduled", "rejected", "invalid", "held_out", "unconfirmed"}
)
#: a run holds these: `claimed` before its request leaves, `sending` once it may have
IN_FLIGHT_STATES = frozenset({"claimed", "sending"})
STATES = FINAL_STATES | IN_FLIGHT_STATES | {"failed"}
COLUMNS = (
    "trigger_id", "campaign", "user_id", "email", "variant", "template", "state",
    "reject_reason", "error", "mandrill_id", "attempts", "created_at", "updated_at", "sent_at",
    "due_at", "claimed_by",
)  # fmt: skip
TIMESTAMP_COLUMNS = frozenset({"created_at", "updated_at", "sent_at", "due_at"})
CHUNK = 500


def tombstone_digest(kind: str, value: str) -> str:
    """Compute the one-way mark of a forgotten user id (`user`) or address (`email`).

    A hash, so the ledger keeps no trace of who asked, yet recognises them if they come back.
    """
    normal = value.strip().lower() if kind == "email" else value
    return hashlib.sha256(f"signalmail-tombstone:{kind}:{normal}".encode()).hexdigest()


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
    #: the run that claimed it (RunLease.run_id)
    claimed_by: str | None = None

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
            "attempts": 1 if self.state in IN_FLIGHT_STATES else 0,
            "created_at": now,
            "updated_at": now,
            "sent_at": sent,
            "due_at": self.due_at,
            "claimed_by": self.claimed_by,
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
                created_at {ts} not null, updated_at {ts} not null, sent_at {ts}, due_at {ts},
                claimed_by varchar
            )"""
        tombstones = f"{self.schema}.{TOMBSTONES}" if self.schema else TOMBSTONES
        self.tombstones_ref = tombstones
        with self.engine.begin() as conn:
            if self.schema:
                conn.execute(sa.text(f"create schema if not exists {self.schema}"))
            conn.execute(sa.text(ddl))
            conn.execute(
                sa.text(
                    f"create table if not exists {tombstones} (digest varchar primary key, "
                    f"kind varchar not null, created_at {ts} not null)"
                )
            )
            # ledgers written before these columns existed gain them (null for their rows)
            have = self._column_names(conn)
            for column, kind in (("due_at", ts), ("claimed_by", "varchar")):
                if column not in have:
                    conn.execute(
                        sa.text(f"alter table {self.table_ref} add column {column} {kind}")
                    )

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

    def claim(self, entries: Sequence[LedgerEntry], max_attempts: int, run_id: str) -> set[str]:
        """Mark triggers `claimed` by `run_id`; return the ids claimed (new, or retryable failed).

        A trigger in any other state (final, or held by another run) is not claimed and must
        not be sent.
        """
        claimed: set[str] = set()
        now = utcnow()
        conflict = (
            "on conflict (trigger_id) do update set state = 'claimed', "
            "attempts = l.attempts + 1, error = null, updated_at = excluded.updated_at, "
            "variant = excluded.variant, template = excluded.template, "
            "claimed_by = excluded.claimed_by, due_at = coalesce(excluded.due_at, l.due_at) "
            f"where l.state = 'failed' and l.attempts < {int(max_attempts)} returning trigger_id"
        )
        rows = [replace(e, state="claimed", claimed_by=run_id) for e in entries]
        with self.engine.begin() as conn:
            for chunk in _chunks(rows):
                result = conn.execute(
                    sa.text(self._insert_sql(len(chunk), conflict)), self._params(chunk, now)
                )
                claimed.update(row[0] for row in result)
        return claimed

    def mark_sending(self, trigger_ids: Sequence[str], run_id: str) -> set[str]:
        """Record that `run_id`'s request for these triggers leaves now; return the ids it holds.

        Written (and committed) before every request, retries included, so `updated_at` is the
        moment the latest request left: reconciliation measures its grace from there. From
        here on only Mandrill knows whether the emails went out, and a run that finds the row
        must ask it. Only the ids returned may be sent: a trigger missing from them is no
        longer this run's claim (another run settled it), and sending it could send it twice.
        """
        sql, params = self._ids_filter(list(trigger_ids))
        stmt = sa.text(
            f"update {self.table_ref} set state = 'sending', updated_at = :now "
            f"where state in ('claimed', 'sending') and claimed_by = :run and {sql} "
            "returning trigger_id"
        )
        if "ids" in params and isinstance(params["ids"], list):
            stmt = stmt.bindparams(sa.bindparam("ids", expanding=True))
        with self.engine.begin() as conn:
            rows = conn.execute(stmt, {**params, "now": utcnow(), "run": run_id})
            return {row[0] for row in rows}

    def refund_attempts(self, trigger_ids: Sequence[str], run_id: str) -> None:
        """Give back the try a claim counted, for `failed` rows this run just settled.

        For failures of configuration or account (a template Mandrill does not know, a
        revoked key, an unpaid account, a call never made because the run stopped): the email
        itself was never tried, and counting it would spend every pending trigger's tries
        within a few runs, before anyone could fix the cause.
        """
        if not trigger_ids:
            return
        sql, params = self._ids_filter(list(trigger_ids))
        stmt = sa.text(
            # `case`, not greatest(): SQLite has no greatest()
            f"update {self.table_ref} "
            "set attempts = case when attempts > 0 then attempts - 1 else 0 end "
            f"where state = 'failed' and claimed_by = :run and {sql}"
        )
        if "ids" in params and isinstance(params["ids"], list):
            stmt = stmt.bindparams(sa.bindparam("ids", expanding=True))
        with self.engine.begin() as conn:
            conn.execute(stmt, {**params, "run": run_id})

    def record(self, entries: Sequence[LedgerEntry]) -> None:
        """Write final states of triggers no run holds (new, or `failed` ones settled again).

        Only a `failed` row is overwritten: this run read it as failed, and since then another
        run on the same ledger may have claimed it (the row is that run's, see `settle`) or
        sent it; a `sent` overwritten with `failed` would be sent again.
        """
        self._write_final(entries, "l.state = 'failed'")

    def settle(
        self, entries: Sequence[LedgerEntry], *, seen: Collection[str] = IN_FLIGHT_STATES
    ) -> set[str]:
        """Write the final state of in-flight triggers; return the ids written.

        Each entry carries, as `claimed_by`, the run whose claim the writer saw: a row is only
        written while it is still `claimed` or `sending` under that run. A slow reconciliation
        therefore cannot overwrite what another run has since settled, claimed or sent (which
        would make the trigger sendable again), and a worker cannot settle a claim it lost.
        `seen` narrows that to the states the writer read: a `claimed` row settled as never
        sent must still be `claimed`, because its run, wrongly taken for dead (a lease lost
        with its session), may have marked it `sending` and posted it since.
        """
        if not set(seen) <= set(IN_FLIGHT_STATES):
            raise ValueError(f"not in-flight states: {seen!r}")
        states = ", ".join(f"'{state}'" for state in sorted(seen))
        return self._write_final(
            entries,
            f"l.state in ({states}) and l.claimed_by is not distinct from excluded.claimed_by",
            returning=True,
        )

    def _write_final(
        self, entries: Sequence[LedgerEntry], guard: str, *, returning: bool = False
    ) -> set[str]:
        if not entries:
            return set()
        for entry in entries:
            if entry.state not in STATES or entry.state in IN_FLIGHT_STATES:
                raise ValueError(f"not a final ledger state: {entry.state!r}")
        now = utcnow()
        conflict = (
            "on conflict (trigger_id) do update set state = excluded.state, "
            "reject_reason = excluded.reject_reason, error = excluded.error, "
            "mandrill_id = coalesce(excluded.mandrill_id, l.mandrill_id), "
            "updated_at = excluded.updated_at, "
            "sent_at = coalesce(excluded.sent_at, l.sent_at), "
            f"due_at = coalesce(excluded.due_at, l.due_at) where {guard}"
            + (" returning trigger_id" if returning else "")
        )
        written: set[str] = set()
        with self.engine.begin() as conn:
            for chunk in _chunks(entries):
                result = conn.execute(
                    sa.text(self._insert_sql(len(chunk), conflict)), self._params(chunk, now)
                )
                if returning:
                    written.update(row[0] for row in result)
        return written

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
        """Rows `claimed` or `sending` (by a run now, a stopped run, an ambiguous answer)."""
        with self.engine.connect() as conn:
            rows = conn.execute(
                sa.text(
                    f"select * from {self.table_ref} where state in ('claimed', 'sending') "
                    "order by updated_at"
                )
            )
            return [dict(r) for r in rows.mappings()]

    def controls(self, accepted_after: dt.datetime, limit: int = 3) -> list[dict[str, Any]]:
        """List the first sends Mandrill accepted after `accepted_after`, with their ids.

        Reconciliation searches for one of them with the triggers it must settle: an answer
        that holds the control is neither lost nor behind it (docs/activation.md). `queued`
        counts: Mandrill answers it for every call of more than ten recipients, so a shop that
        batches its sends may have no `sent` row at all after the doubtful one; a queued
        message the index does not show yet simply proves nothing.
        """
        with self.engine.connect() as conn:
            rows = conn.execute(
                sa.text(
                    f"select trigger_id, mandrill_id, sent_at from {self.table_ref} "
                    "where state in ('sent', 'queued') and mandrill_id is not null "
                    "and sent_at >= :after "
                    "order by sent_at limit :limit"
                ),
                {"after": accepted_after, "limit": int(limit)},
            )
            return [dict(r) for r in rows.mappings()]

    def add_tombstones(self, user_ids: Iterable[str], emails: Iterable[str]) -> int:
        """Mark these user ids and addresses as forgotten; return how many marks are new."""
        marks = [("user", u) for u in user_ids if u] + [("email", e) for e in emails if e]
        added = 0
        now = utcnow()
        with self.engine.begin() as conn:
            for kind, value in marks:
                result = conn.execute(
                    sa.text(
                        f"insert into {self.tombstones_ref} (digest, kind, created_at) "
                        "values (:digest, :kind, :now) on conflict (digest) do nothing "
                        "returning digest"
                    ),
                    {"digest": tombstone_digest(kind, value), "kind": kind, "now": now},
                )
                added += len(result.fetchall())
        return added

    def tombstoned(self, digests: Iterable[str]) -> set[str]:
        """Give the digests among `digests` that mark a forgotten person."""
        wanted = sorted(set(digests))
        found: set[str] = set()
        with self.engine.connect() as conn:
            for chunk in _chunks(wanted):
                stmt = sa.text(
                    f"select digest from {self.tombstones_ref} where digest in :digests"
                ).bindparams(sa.bindparam("digests", expanding=True))
                found.update(row[0] for row in conn.execute(stmt, {"digests": list(chunk)}))
        return found

    def forget(self, user_ids: Iterable[str], emails: Iterable[str]) -> int:
        """Delete the rows of these user ids and addresses; return how many."""
        users = sorted(set(user_ids))
        addresses = sorted({e.strip().lower() for e in emails})
        if not users and not addresses:
            return 0
        condition = " or ".join(
            part
            for part, present in (
                ("user_id in :users", users),
                ("lower(email) in :emails", addresses),
            )
            if present
        )
        params: dict[str, Any] = {}
        binds: list[sa.BindParameter[Any]] = []
        if users:
            params["users"] = users
            binds.append(sa.bindparam("users", expanding=True))
        if addresses:
            params["emails"] = addresses
            binds.append(sa.bindparam("emails", expanding=True))
        with self.engine.begin() as conn:
            count = conn.execute(
                sa.text(f"select count(*) from {self.table_ref} where {condition}").bindparams(
                    *binds
                ),
                params,
            ).scalar_one()
            conn.execute(
                sa.text(f"delete from {self.table_ref} where {condition}").bindparams(*binds),
                params,
            )
        return int(count)

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
