"""Deleting a person's rows, or old rows, from every table of a schema that holds them.

The tables are found, not listed: whatever the dbt project adds later (a new model keyed by
user) is covered as long as it names its columns as the project does (`user_id`,
`anonymous_id`, `email`; `received_at` for events).
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import sqlalchemy as sa

from signalmail.privacy.people import Person, existing_tables, json_columns


def _like_escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def person_filter(
    columns: set[str], person: Person, json: set[str] | frozenset[str] = frozenset()
) -> tuple[str, dict[str, Any]] | None:
    """Build the condition (and parameters) for a table's rows about `person`, if any.

    `json` names the table's JSON columns: an event can name the person only by an address in
    its properties or traits (a guest checkout from a device never linked to them).
    """
    parts: list[str] = []
    params: dict[str, Any] = {}
    if person.emails:
        for column, path in (("properties", ""), ("traits", ""), ("context", " -> 'traits'")):
            if column in json:
                parts.append(f"lower(trim({column}{path} ->> 'email')) in :emails")
                params["emails"] = sorted(person.emails)
    ids = sorted(person.user_ids | person.anonymous_ids)
    if "user_id" in columns and ids:
        parts.append("user_id in :ids")
        params["ids"] = ids
    if "anonymous_id" in columns and ids:
        parts.append("anonymous_id in :ids")
        params["ids"] = ids
    if "previous_id" in columns and ids:
        parts.append("previous_id in :ids")
        params["ids"] = ids
    if "email" in columns and person.emails:
        parts.append("lower(trim(email)) in :emails")
        params["emails"] = sorted(person.emails)
    for column in ("merge_property_1_value", "merge_property_2_value"):
        # a merge rule names people in its values (an email, a user id), not only in user_id
        if column in columns and person.identifiers():
            parts.append(f"{column} in :idents or lower({column}) in :idents")
            params["idents"] = sorted(person.identifiers())
    if "raw_text" in columns:  # rejected lines: the identifiers appear in the text
        for n, value in enumerate(sorted(person.identifiers())):
            parts.append(f"raw_text like :raw{n} escape '\\'")
            params[f"raw{n}"] = f"%{_like_escape(value)}%"
    if not parts:
        return None
    return " or ".join(f"({part})" for part in parts), params


def _statement(sql: str, params: dict[str, Any]) -> sa.TextClause:
    stmt = sa.text(sql)
    for name in ("ids", "emails", "idents"):
        if name in params:
            stmt = stmt.bindparams(sa.bindparam(name, expanding=True))
    return stmt


def delete_person(conn: sa.Connection, schema: str, person: Person) -> dict[str, int]:
    """Delete `person`'s rows from every table of `schema`; rows deleted per table."""
    deleted: dict[str, int] = {}
    json = json_columns(conn, schema)
    for table, columns in sorted(existing_tables(conn, schema).items()):
        found = person_filter(columns, person, json.get(table, set()))
        if found is None:
            continue
        condition, params = found
        relation = f'"{schema}"."{table}"'
        count = conn.execute(
            _statement(f"select count(*) from {relation} where {condition}", params),  # noqa: S608
            params,
        ).scalar_one()
        if count:
            conn.execute(
                _statement(f"delete from {relation} where {condition}", params),  # noqa: S608
                params,
            )
            deleted[f"{schema}.{table}"] = int(count)
    return deleted


def delete_received_before(conn: sa.Connection, schema: str, before: dt.datetime) -> dict[str, int]:
    """Delete events received before `before` from the event tables of `schema`.

    Event tables hold one row per event (or per product in an event): they have both
    `message_id` and `received_at`. Rejected lines (`raw_text`, which may hold anything a
    client sent) go by the time the tap set them aside, `rejected_at`. Tables of state (a
    user's profile, a session) are left alone: they are rebuilt from the events the next full
    refresh keeps.
    """
    deleted: dict[str, int] = {}
    for table, columns in sorted(existing_tables(conn, schema).items()):
        if {"message_id", "received_at"} <= columns:
            at = "received_at"
        elif {"raw_text", "rejected_at"} <= columns:
            at = "rejected_at"
        else:
            continue
        relation = f'"{schema}"."{table}"'
        params = {"before": before}
        count = conn.execute(
            sa.text(f"select count(*) from {relation} where {at} < :before"),  # noqa: S608
            params,
        ).scalar_one()
        if count:
            conn.execute(
                sa.text(f"delete from {relation} where {at} < :before"),  # noqa: S608
                params,
            )
            deleted[f"{schema}.{table}"] = int(count)
    return deleted
