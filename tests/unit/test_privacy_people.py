"""Who `forget` finds, and what retention deletes, on a DuckDB warehouse built here.

The raw tables carry the columns the loaders give them; the derived tables stand for what the
dbt project builds (a profile pairing a user id with an address). tests/integration/
test_privacy.py runs both commands on a pipeline the watch ran.
"""

from __future__ import annotations

import datetime as dt
import json

import pytest
import sqlalchemy as sa
from signalmail.collector.webhooks import anonymous_id_for
from signalmail.privacy.erase import delete_received_before
from signalmail.privacy.people import find_person

NOW = dt.datetime(2026, 12, 1, 12, 0)


@pytest.fixture
def conn(tmp_path):
    engine = sa.create_engine(f"duckdb:///{tmp_path / 'warehouse.duckdb'}")
    with engine.begin() as connection:
        for statement in (
            "create schema raw",
            "create schema signals",
            "create table raw.identifies (message_id varchar, received_at timestamp, "
            "user_id varchar, anonymous_id varchar, traits json, context json)",
            "create table raw.aliases (message_id varchar, received_at timestamp, "
            "user_id varchar, anonymous_id varchar, previous_id varchar)",
            "create table raw.rejected_events (rejected_id varchar, rejected_at timestamp, "
            "reason varchar, raw_text varchar)",
            "create table signals.int_user_profiles (user_id varchar, email varchar)",
        ):
            connection.execute(sa.text(statement))
        yield connection
    engine.dispose()


def _identify(conn, user_id: str, anonymous_id: str, email: str) -> None:
    conn.execute(
        sa.text(
            "insert into raw.identifies values ('m-' || :user || :anon, :at, :user, :anon, "
            "json_object('email', :email), '{}')"
        ),
        {"user": user_id, "anon": anonymous_id, "email": email, "at": NOW},
    )


def test_an_address_padded_with_spaces_is_the_same_person(conn):
    """dbt compares addresses trimmed: an identify with " Ann@X.com " is ann's."""
    _identify(conn, "ann", "a-1", " Ann@Example.com ")
    by_address = find_person(conn, "raw", None, "ann@example.com")
    assert by_address.user_ids == {"ann"}
    assert "a-1" in by_address.anonymous_ids
    by_id = find_person(conn, "raw", "ann", None)
    assert by_id.emails == {"ann@example.com"}  # not " ann@example.com ", which Mandrill refuses


def test_an_alias_is_followed_from_either_side(conn):
    conn.execute(
        sa.text("insert into raw.aliases values ('m-al', :at, 'ann-new', 'x', 'ann-old')"),
        {"at": NOW},
    )
    _identify(conn, "ann-new", "a-2", "ann@example.com")
    from_old = find_person(conn, "raw", "ann-old", None)
    assert {"ann-old", "ann-new"} <= from_old.user_ids
    assert from_old.emails == {"ann@example.com"}  # reached through the alias, then identify
    assert "a-2" in from_old.anonymous_ids
    from_new = find_person(conn, "raw", "ann-new", None)
    assert "ann-old" in from_new.user_ids


def test_after_retention_the_profile_still_ties_the_address_to_the_user(conn):
    """Retention deleted the raw identify; the derived profile keeps the link, and forget by
    address must still find the user id its other rows are keyed by."""
    conn.execute(sa.text("insert into signals.int_user_profiles values ('ann', 'Ann@Example.com')"))
    assert find_person(conn, "raw", None, "ann@example.com").user_ids == set()
    found = find_person(conn, "raw", None, "ann@example.com", derived_schema="signals")
    assert found.user_ids == {"ann"}
    assert anonymous_id_for("ann@example.com") in found.anonymous_ids


def test_retention_deletes_old_rejected_lines_by_when_they_were_set_aside(conn):
    """A rejected line's raw text may hold anything a client sent: it is kept no longer than
    the events (it has no received_at, and retention used to skip it forever)."""
    for n, days in enumerate((40, 35, 1)):
        conn.execute(
            sa.text("insert into raw.rejected_events values (:id, :at, 'invalid_json', :text)"),
            {"id": f"r{n}", "at": NOW - dt.timedelta(days=days), "text": "{oops ann@x.com"},
        )
    _identify(conn, "ann", "a-1", "ann@example.com")
    deleted = delete_received_before(conn, "raw", NOW - dt.timedelta(days=30))
    assert deleted == {"raw.rejected_events": 2}
    left = conn.execute(sa.text("select rejected_id from raw.rejected_events")).scalars().all()
    assert left == ["r2"]
    assert conn.execute(sa.text("select count(*) from raw.identifies")).scalar_one() == 1


def test_forget_deletes_an_event_that_names_the_address_only_in_its_properties(conn):
    """A guest checkout from a device never linked to ann carries her address in its
    properties alone: it went back to the warehouse untouched while the spool lost it."""
    from signalmail.privacy.erase import delete_person

    conn.execute(sa.text(
        "create table raw.tracks (message_id varchar, received_at timestamp, user_id varchar, "
        "anonymous_id varchar, properties json, context json)"
    ))  # fmt: skip
    for n, (properties, context) in enumerate([
        ({"email": " Ann@Example.com", "order_id": "o1"}, {}),
        ({"order_id": "o2"}, {"traits": {"email": "ann@example.com"}}),
        ({"email": "bob@example.com"}, {}),
    ]):  # fmt: skip
        conn.execute(
            sa.text("insert into raw.tracks values (:id, :at, null, :anon, :props, :ctx)"),
            {"id": f"m{n}", "at": NOW, "anon": f"guest-{n}", "props": json.dumps(properties),
             "ctx": json.dumps(context)},
        )  # fmt: skip
    person = find_person(conn, "raw", None, "ann@example.com")
    assert delete_person(conn, "raw", person) == {"raw.tracks": 2}
    left = conn.execute(sa.text("select message_id from raw.tracks")).scalars().all()
    assert left == ["m2"]


def test_a_shared_address_does_not_bring_in_the_others_who_used_it(conn):
    """ann and bob both gave the family's address. Forgetting ann tombstones it with hers, but
    following links on from it would have erased bob, his score and his own address."""
    _identify(conn, "ann", "a-1", "ann@example.com")
    _identify(conn, "ann", "a-1", "family@example.com")
    _identify(conn, "bob", "b-1", "family@example.com")
    _identify(conn, "bob", "b-1", "bob@example.com")
    found = find_person(conn, "raw", None, "ann@example.com")
    assert found.user_ids == {"ann"}
    assert found.emails == {"ann@example.com", "family@example.com"}
    assert "b-1" not in found.anonymous_ids
