"""Durable sandbox state in one SQLite file: messages, templates, rejects, webhooks, metadata.

SQLite (stdlib) because the sandbox must survive restarts, so a test can crash a client, start
again and still find what it sent (the target reconciles `sending` rows with messages/search).
One connection guarded by a lock: the API runs on one event loop and the webhook worker on one
thread, so contention is tiny and WAL keeps readers off the writer's back.
"""

from __future__ import annotations

import datetime as dt
import json
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

_SCHEMA = """
create table if not exists messages (
    id text primary key,
    ts integer not null,
    email text not null,
    recipient_name text,
    sender text not null,
    from_name text,
    subject text not null,
    template text,
    mc_template text,
    tags text not null,
    metadata text not null,
    state text not null,
    reject_reason text,
    html text not null,
    text text not null,
    headers text not null,
    opens_detail text not null default '[]',
    clicks_detail text not null default '[]',
    smtp_events text not null default '[]',
    send_at integer,
    subaccount text,
    api_key_hash text
);
create index if not exists messages_ts on messages (ts);
create table if not exists templates (
    slug text primary key,
    data text not null
);
create table if not exists mctemplates (
    id integer primary key,
    data text not null
);
create table if not exists rejects (
    email text not null,
    subaccount text not null default '',
    reason text not null,
    detail text not null,
    created_at text not null,
    last_event_at text not null,
    expires_at text not null,
    primary key (email, subaccount)
);
create table if not exists webhooks (
    id integer primary key autoincrement,
    data text not null
);
create table if not exists metadata_fields (
    name text primary key,
    view_template text,
    state text not null
);
"""

_JSON_COLUMNS = ("tags", "metadata", "headers", "opens_detail", "clicks_detail", "smtp_events")


def mandrill_time(when: dt.datetime | None = None, micro: bool = False) -> str:
    """Mandrill's `YYYY-MM-DD HH:MM:SS[.ffffff]` UTC timestamps."""
    when = when or dt.datetime.now(dt.UTC)
    return when.strftime("%Y-%m-%d %H:%M:%S.%f" if micro else "%Y-%m-%d %H:%M:%S")


class Store:
    """Typed access to the sandbox database; every method is one short transaction."""

    def __init__(self, path: Path | str) -> None:
        self.path = str(path)
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        self._conn = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        self._conn.row_factory = sqlite3.Row
        self._lock = threading.RLock()
        with self._lock:
            self._conn.execute("pragma journal_mode=wal")
            self._conn.execute("pragma synchronous=normal")
            self._conn.executescript(_SCHEMA)

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """One write transaction; rolled back if the body raises."""
        with self._lock:
            self._conn.execute("begin immediate")
            try:
                yield self._conn
            except BaseException:
                self._conn.execute("rollback")
                raise
            self._conn.execute("commit")

    def close(self) -> None:
        """Release the database file."""
        with self._lock:
            self._conn.close()

    # ---------------------------------------------------------------- messages

    def insert_messages(self, rows: list[dict[str, Any]]) -> None:
        """Insert rendered messages (one per recipient) atomically."""
        if not rows:
            return
        columns = list(rows[0])
        # column names come from our own row dicts, values are bound parameters
        names, marks = ", ".join(columns), ", ".join("?" for _ in columns)
        sql = f"insert into messages ({names}) values ({marks})"  # noqa: S608
        with self.transaction() as conn:
            conn.executemany(
                sql,
                [[json.dumps(r[c]) if c in _JSON_COLUMNS else r[c] for c in columns] for r in rows],
            )

    def get_message(self, message_id: str) -> dict[str, Any] | None:
        """Return a message row with JSON columns decoded, or None."""
        with self._lock:
            row = self._conn.execute(
                "select * from messages where id = ?", (message_id,)
            ).fetchone()
        return _decode(row) if row else None

    def iter_messages(self, ts_from: int, ts_to: int) -> list[dict[str, Any]]:
        """Messages with `ts_from <= ts < ts_to`, newest first."""
        with self._lock:
            rows = self._conn.execute(
                "select * from messages where ts >= ? and ts < ? order by ts desc, rowid desc",
                (ts_from, ts_to),
            ).fetchall()
        return [_decode(r) for r in rows]

    def update_message(self, message_id: str, **changes: Any) -> None:
        """Set columns of one message (JSON columns encoded)."""
        if not changes:
            return
        assignments = ", ".join(f"{c} = ?" for c in changes)
        values = [json.dumps(v) if c in _JSON_COLUMNS else v for c, v in changes.items()]
        with self.transaction() as conn:
            conn.execute(f"update messages set {assignments} where id = ?", [*values, message_id])  # noqa: S608 - column names are ours

    def mark_sent(self, message_ids: list[str], ts: float) -> None:
        """Deliver queued messages: state sent with one SMTP `sent` event each."""
        if not message_ids:
            return
        event = {
            "ts": int(ts),
            "type": "sent",
            "diag": "250 2.0.0 OK (sandbox)",
            "source_ip": "127.0.0.1",
            "destination_ip": "127.0.0.1",
        }
        with self.transaction() as conn:
            conn.executemany(
                "update messages set state = 'sent', smtp_events = ? "
                "where id = ? and state = 'queued'",
                [
                    (json.dumps([{**event, "size": size}]), message_id)
                    for message_id, size in conn.execute(
                        "select id, length(html) from messages "
                        "where id in (select value from json_each(?))",
                        (json.dumps(message_ids),),
                    ).fetchall()
                ],
            )

    def count_messages(self) -> int:
        """How many messages are stored (used by tests and the admin endpoint)."""
        with self._lock:
            return self._conn.execute("select count(*) from messages").fetchone()[0]

    # ---------------------------------------------------------------- templates

    def get_template(self, slug: str) -> dict[str, Any] | None:
        """Return a Mandrill template by slug, or None."""
        with self._lock:
            row = self._conn.execute(
                "select data from templates where slug = ?", (slug,)
            ).fetchone()
        return json.loads(row[0]) if row else None

    def put_template(self, template: dict[str, Any]) -> None:
        """Insert or replace a template (keyed by its slug)."""
        with self.transaction() as conn:
            conn.execute(
                "insert or replace into templates (slug, data) values (?, ?)",
                (template["slug"], json.dumps(template)),
            )

    def delete_template(self, slug: str) -> None:
        """Remove a template."""
        with self.transaction() as conn:
            conn.execute("delete from templates where slug = ?", (slug,))

    def list_templates(self) -> list[dict[str, Any]]:
        """All templates ordered by slug."""
        with self._lock:
            rows = self._conn.execute("select data from templates order by slug").fetchall()
        return [json.loads(r[0]) for r in rows]

    # ---------------------------------------------------------------- Mailchimp templates

    def get_mctemplate(self, template_id: int) -> dict[str, Any] | None:
        """Return a Mailchimp template by numeric id, or None."""
        with self._lock:
            row = self._conn.execute(
                "select data from mctemplates where id = ?", (template_id,)
            ).fetchone()
        return json.loads(row[0]) if row else None

    def put_mctemplate(self, template: dict[str, Any]) -> None:
        """Insert or replace a Mailchimp template."""
        with self.transaction() as conn:
            conn.execute(
                "insert or replace into mctemplates (id, data) values (?, ?)",
                (template["mc_template_id"], json.dumps(template)),
            )

    def list_mctemplates(self) -> list[dict[str, Any]]:
        """All Mailchimp templates by id."""
        with self._lock:
            rows = self._conn.execute("select data from mctemplates order by id").fetchall()
        return [json.loads(r[0]) for r in rows]

    # ---------------------------------------------------------------- rejects

    def add_reject(self, email: str, reason: str, detail: str, subaccount: str = "") -> bool:
        """Add or refresh a reject entry; True when it was new."""
        now = dt.datetime.now(dt.UTC)
        expires = mandrill_time(now + dt.timedelta(days=3650 if reason != "soft-bounce" else 1))
        with self.transaction() as conn:
            existing = conn.execute(
                "select 1 from rejects where email = ? and subaccount = ?", (email, subaccount)
            ).fetchone()
            conn.execute(
                "insert into rejects values (?, ?, ?, ?, ?, ?, ?) on conflict (email, subaccount) "
                "do update set reason = excluded.reason, detail = excluded.detail, "
                "last_event_at = excluded.last_event_at, expires_at = excluded.expires_at",
                (
                    email,
                    subaccount,
                    reason,
                    detail,
                    mandrill_time(now),
                    mandrill_time(now),
                    expires,
                ),
            )
        return existing is None

    def find_rejects(self, emails: list[str], subaccount: str = "") -> dict[str, str]:
        """Return lower-cased address -> reason for every unexpired entry among `emails`."""
        wanted = sorted({e.lower() for e in emails if e})
        found: dict[str, str] = {}
        now = mandrill_time()
        for start in range(0, len(wanted), 500):  # stay under SQLite's bound-variable limit
            chunk = wanted[start : start + 500]
            marks = ", ".join("?" for _ in chunk)
            with self._lock:
                rows = self._conn.execute(
                    f"select email, reason from rejects where email in ({marks}) "  # noqa: S608
                    "and subaccount in ('', ?) and expires_at > ? order by subaccount",
                    [*chunk, subaccount, now],
                ).fetchall()
            for row in rows:  # a subaccount entry (sorted last) wins over the account-wide one
                found[row["email"]] = row["reason"]
        return found

    def delete_reject(self, email: str, subaccount: str = "") -> bool:
        """Remove a reject entry; False when there was none."""
        with self.transaction() as conn:
            cursor = conn.execute(
                "delete from rejects where email = ? and subaccount = ?", (email, subaccount)
            )
        return cursor.rowcount > 0

    def find_reject(self, email: str, subaccount: str = "") -> dict[str, Any] | None:
        """Return the unexpired reject entry for an address; account-wide entries apply to all."""
        now = mandrill_time()
        with self._lock:
            row = self._conn.execute(
                "select * from rejects where email = ? and subaccount in ('', ?) "
                "and expires_at > ? order by subaccount desc",
                (email.lower(), subaccount, now),
            ).fetchone()
        return dict(row) if row else None

    def list_rejects(
        self, email: str | None, include_expired: bool, subaccount: str | None
    ) -> list[dict[str, Any]]:
        """Reject entries filtered like rejects/list."""
        sql = "select * from rejects where 1 = 1"
        params: list[Any] = []
        if email:
            sql += " and email = ?"
            params.append(email.lower())
        if subaccount is not None:
            sql += " and subaccount = ?"
            params.append(subaccount)
        if not include_expired:
            sql += " and expires_at > ?"
            params.append(mandrill_time())
        with self._lock:
            rows = self._conn.execute(sql + " order by created_at, email", params).fetchall()
        return [dict(r) for r in rows]

    # ---------------------------------------------------------------- webhooks

    def add_webhook(self, data: dict[str, Any]) -> dict[str, Any]:
        """Store a webhook and return it with its id."""
        with self.transaction() as conn:
            cursor = conn.execute("insert into webhooks (data) values ('{}')")
            hook = {**data, "id": cursor.lastrowid}
            conn.execute(
                "update webhooks set data = ? where id = ?", (json.dumps(hook), hook["id"])
            )
        return hook

    def list_webhooks(self) -> list[dict[str, Any]]:
        """Every configured webhook."""
        with self._lock:
            rows = self._conn.execute("select data from webhooks order by id").fetchall()
        return [json.loads(r[0]) for r in rows]

    def update_webhook(self, hook_id: int, **changes: Any) -> None:
        """Merge `changes` into a webhook's stored fields."""
        with self.transaction() as conn:
            row = conn.execute("select data from webhooks where id = ?", (hook_id,)).fetchone()
            if row is None:
                return
            data = {**json.loads(row[0]), **changes}
            conn.execute("update webhooks set data = ? where id = ?", (json.dumps(data), hook_id))

    # ---------------------------------------------------------------- metadata fields

    def add_metadata_field(self, name: str, view_template: str | None) -> dict[str, Any] | None:
        """Index a metadata field; None when it already exists."""
        with self.transaction() as conn:
            if conn.execute("select 1 from metadata_fields where name = ?", (name,)).fetchone():
                return None
            conn.execute(
                "insert into metadata_fields values (?, ?, 'active')", (name, view_template)
            )
        return {"name": name, "state": "active", "view_template": view_template}

    def list_metadata_fields(self) -> list[dict[str, Any]]:
        """Indexed metadata fields."""
        with self._lock:
            rows = self._conn.execute(
                "select name, state, view_template from metadata_fields order by name"
            ).fetchall()
        return [dict(r) for r in rows]


def _decode(row: sqlite3.Row) -> dict[str, Any]:
    data = dict(row)
    for column in _JSON_COLUMNS:
        data[column] = json.loads(data[column])
    return data
