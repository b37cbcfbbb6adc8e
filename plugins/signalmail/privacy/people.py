"""Who a person is in the data: every user id, anonymous id and address that is theirs.

A request names a user id or an email address; the events know more. Their identify calls
link the user id to the devices (anonymous ids) they used before and after logging in, an
alias links an earlier id, and Mandrill's webhooks name the address only (the collector gives
such an event the anonymous id `mandrill:<sha1(email)>`, docs/contracts.md section 2).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import sqlalchemy as sa

from signalmail.collector.webhooks import anonymous_id_for

RAW_EVENT_TABLES = ("identifies", "tracks", "pages", "screens", "groups", "aliases", "merges")


@dataclass
class Person:
    """The identifiers of one person, as far as the events tell."""

    user_ids: set[str] = field(default_factory=set)
    anonymous_ids: set[str] = field(default_factory=set)
    emails: set[str] = field(default_factory=set)

    def identifiers(self) -> set[str]:
        """Every identifier, for matching raw text (rejected lines, spool segments)."""
        return self.user_ids | self.anonymous_ids | self.emails

    def __bool__(self) -> bool:
        return bool(self.user_ids or self.anonymous_ids or self.emails)


def existing_tables(conn: sa.Connection, schema: str) -> dict[str, set[str]]:
    """Map the base tables of `schema` to their column names (DuckDB and PostgreSQL alike)."""
    return _base_table_columns(conn, schema, json_only=False)


def json_columns(conn: sa.Connection, schema: str) -> dict[str, set[str]]:
    """Map the base tables of `schema` to their JSON columns (DuckDB `JSON`, PostgreSQL json(b))."""
    return _base_table_columns(conn, schema, json_only=True)


def _base_table_columns(
    conn: sa.Connection, schema: str, *, json_only: bool
) -> dict[str, set[str]]:
    json_filter = " and lower(c.data_type) in ('json', 'jsonb')" if json_only else ""
    rows = conn.execute(
        sa.text(
            "select c.table_name, c.column_name from information_schema.columns c "  # noqa: S608
            "join information_schema.tables t on t.table_schema = c.table_schema "
            "and t.table_name = c.table_name "
            f"where c.table_schema = :schema and t.table_type = 'BASE TABLE'{json_filter}"
        ),
        {"schema": schema},
    )
    tables: dict[str, set[str]] = {}
    for table, column in rows:
        tables.setdefault(table, set()).add(column)
    return tables


def _linked_user_ids(
    conn: sa.Connection, tables: dict[str, set[str]], schema: str, person: Person
) -> set[str]:
    """User ids tied to the person's ids by an alias, in either direction."""
    if "aliases" not in tables or "previous_id" not in tables["aliases"]:
        return set()
    ids = sorted(person.user_ids | person.anonymous_ids)
    found = conn.execute(
        sa.text(
            f'select user_id, previous_id from "{schema}".aliases '  # noqa: S608
            "where user_id in :ids or previous_id in :ids"
        ).bindparams(sa.bindparam("ids", expanding=True)),
        {"ids": ids},
    )
    return {value for row in found for value in row if value}


#: the derived table that pairs a user with their address (from identify calls), which
#: retention keeps after the raw identifies are gone
PROFILE_TABLE = "int_user_profiles"


def _user_ids_of_address(conn: sa.Connection, schema: str, address: str) -> set[str]:
    """User ids the profile model pairs with the address (see PROFILE_TABLE)."""
    if not {"user_id", "email"} <= existing_tables(conn, schema).get(PROFILE_TABLE, set()):
        return set()
    found = conn.execute(
        sa.text(
            f'select distinct user_id from "{schema}"."{PROFILE_TABLE}" '  # noqa: S608
            "where user_id is not null and lower(trim(email)) = :email"
        ),
        {"email": address},
    )
    return {str(row[0]) for row in found}


def find_person(
    conn: sa.Connection,
    raw_schema: str,
    user_id: str | None,
    email: str | None,
    derived_schema: str | None = None,
) -> Person:
    """Gather a person's identifiers from the events, starting from a user id or address.

    Each link is followed one step from what the request names, never on from what a link
    found: the address's user ids (identify calls, and the profile in `derived_schema`, which
    outlives the raw identifies under retention), the user ids an alias ties to those from
    either side, then every address those user ids gave. A shared address found that way
    (a family's, a placeholder many guests typed) is tombstoned as theirs, but its other users
    are not taken for this person: following links on would erase strangers. Addresses
    compare trimmed and lower-cased, as dbt's models compare them.
    """
    person = Person()
    tables = existing_tables(conn, raw_schema)
    email_expr = "lower(trim(coalesce(traits ->> 'email', context -> 'traits' ->> 'email')))"
    if user_id:
        person.user_ids.add(user_id)
    if email:
        address = email.strip().lower()
        person.emails.add(address)
        person.anonymous_ids.add(anonymous_id_for(address))
        if "identifies" in tables:
            found = conn.execute(
                sa.text(
                    f'select distinct user_id from "{raw_schema}".identifies '  # noqa: S608
                    f"where user_id is not null and {email_expr} = :email"
                ),
                {"email": address},
            )
            person.user_ids.update(row[0] for row in found)
        if derived_schema:
            person.user_ids.update(_user_ids_of_address(conn, derived_schema, address))
    if person.user_ids:
        person.user_ids.update(_linked_user_ids(conn, tables, raw_schema, person))
    if "identifies" in tables and person.user_ids:
        found = conn.execute(
            sa.text(
                f'select distinct {email_expr} from "{raw_schema}".identifies '  # noqa: S608
                "where user_id in :ids"
            ).bindparams(sa.bindparam("ids", expanding=True)),
            {"ids": sorted(person.user_ids)},
        )
        for (address,) in found:
            if address:
                person.emails.add(address)
                person.anonymous_ids.add(anonymous_id_for(address))
    if not person.user_ids:
        return person
    linked = [(table, "anonymous_id") for table in RAW_EVENT_TABLES if table in tables]
    if "aliases" in tables and "previous_id" in tables["aliases"]:
        linked.append(("aliases", "previous_id"))
    for table, column in linked:
        found = conn.execute(
            sa.text(
                f'select distinct {column} from "{raw_schema}"."{table}" '  # noqa: S608
                f"where user_id in :ids and {column} is not null"
            ).bindparams(sa.bindparam("ids", expanding=True)),
            {"ids": sorted(person.user_ids)},
        )
        person.anonymous_ids.update(row[0] for row in found)
    return person
