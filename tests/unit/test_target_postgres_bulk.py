"""target-postgres-bulk driven in-process with hand-written Singer message streams.

Pure helpers (types, connection strings, the NUL escape, COPY framing) need nothing; the rest
runs the target's real reader, sinks and loader thread against the real PostgreSQL server
(scripts/start-postgres.sh), each test in a schema of its own, then reads the tables back:
duplicates collapse to the last copy, a replay writes nothing, schemas evolve, BATCH files load,
date-times land as naive UTC, STATE only follows committed rows, and hostile values load or are
quarantined with PostgreSQL's reason while the rest of their batch loads.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import decimal
import gzip
import hashlib
import io
import json
import struct
from pathlib import Path
from typing import Any

import psycopg
import pytest
from singer_sdk.exceptions import RecordsWithoutSchemaException
from target_postgres_bulk.load import (
    BINARY_HEADER,
    BINARY_TRAILER,
    LineScreen,
    Rejected,
    frame,
    line_chunks,
)
from target_postgres_bulk.sinks import column_type, table_name
from target_postgres_bulk.target import TargetPostgresBulk, conninfo

SCHEMA = {
    "type": "object",
    "properties": {
        "message_id": {"type": "string"},
        "user_id": {"type": ["string", "null"]},
        "n": {"type": ["integer", "null"], "minimum": 0, "maximum": 2147483647},
        "price": {"type": ["number", "null"]},
        "ok": {"type": ["boolean", "null"]},
        "received_at": {"type": ["string", "null"], "format": "date-time"},
        "properties": {"type": ["object", "null"]},
        "tags": {"type": ["array", "null"], "items": {"type": "string"}},
    },
}


def schema_msg(stream: str = "tracks", schema: dict | None = None, keys=("message_id",)) -> dict:
    return {
        "type": "SCHEMA",
        "stream": stream,
        "schema": schema or SCHEMA,
        "key_properties": list(keys),
    }


def rec(mid: Any, stream: str = "tracks", **fields: Any) -> dict:
    return {"type": "RECORD", "stream": stream, "record": {"message_id": mid, **fields}}


def state(value: Any) -> dict:
    return {"type": "STATE", "value": {"bookmarks": {"tracks": {"pos": value}}}}


def lines_of(messages: list[dict]) -> bytes:
    return b"".join(json.dumps(m).encode() + b"\n" for m in messages)


@pytest.fixture
def run(pg_url: str, pg_schema: str):
    """Run the target over messages into the test's schema; return the STATE values written."""

    def run_target(messages: list[dict] | bytes, **config: Any) -> list[dict]:
        target = TargetPostgresBulk(
            config={"sqlalchemy_url": pg_url, "default_target_schema": pg_schema, **config},
            parse_env_config=False,
            validate_config=True,
        )
        data = messages if isinstance(messages, bytes) else lines_of(messages)
        out = io.StringIO()
        try:
            with contextlib.redirect_stdout(out):
                target.listen(io.BytesIO(data))
        finally:
            target.close()  # a failed load leaves the connection open in this process
        return [json.loads(line) for line in out.getvalue().splitlines() if line]

    return run_target


@pytest.fixture
def query(pg_url: str, pg_schema: str):
    """Run SQL (with `{s}` standing for the test's quoted schema) and return the rows."""

    def run_query(sql: str, params: tuple = ()) -> list[tuple]:
        with psycopg.connect(pg_url) as conn:
            conn.execute("set timezone = 'UTC'")
            return conn.execute(sql.replace("{s}", f'"{pg_schema}"'), params).fetchall()

    return run_query


# --- pure helpers ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("prop", "expected"),
    [
        ({"type": "string"}, "text"),
        ({"type": ["string", "null"]}, "text"),
        ({"type": ["string", "null"], "format": "date-time"}, "timestamp without time zone"),
        (
            {"anyOf": [{"type": "string", "format": "date-time"}, {"type": "null"}]},
            "timestamp without time zone",
        ),
        ({"type": "string", "format": "date"}, "date"),
        ({"type": "string", "format": "uuid"}, "uuid"),
        ({"type": ["integer", "null"], "minimum": 0, "maximum": 2147483647}, "integer"),
        ({"type": "integer", "minimum": -5, "maximum": 100}, "smallint"),
        ({"type": "integer"}, "bigint"),
        ({"type": "integer", "maximum": 2**31}, "bigint"),
        ({"type": "number"}, "numeric"),
        ({"type": ["integer", "number"]}, "numeric"),
        ({"type": "boolean"}, "boolean"),
        ({"type": ["object", "null"], "additionalProperties": True}, "jsonb"),
        ({"type": "array", "items": {"type": "string"}}, "jsonb"),
        ({"type": ["string", "object"]}, "jsonb"),
        ({"type": ["string", "integer"]}, "text"),
        ({}, "text"),
    ],
)
def test_column_types_match_target_postgres(prop: dict, expected: str) -> None:
    assert column_type(prop) == expected


def test_table_name_is_safe() -> None:
    assert table_name("My-Stream.v2") == "my_stream_v2"


def test_conninfo_takes_sqlalchemy_urls_and_fields_and_never_echoes_the_password() -> None:
    assert conninfo({"sqlalchemy_url": "postgresql+psycopg://u:pw@h:5433/db"}) == (
        "postgresql://u:pw@h:5433/db"
    )
    assert conninfo({"sqlalchemy_url": "postgres://u@h/db?sslmode=require"}) == (
        "postgresql://u@h/db?sslmode=require"
    )
    fields = conninfo(
        {"host": "db", "port": 6543, "user": "etl", "password": "s3cret", "database": "wh"}
    )
    assert psycopg.conninfo.conninfo_to_dict(fields) == {
        "host": "db",
        "port": "6543",
        "user": "etl",
        "password": "s3cret",
        "dbname": "wh",
    }
    with pytest.raises(ValueError, match="postgresql://") as caught:
        conninfo({"sqlalchemy_url": "mysql://u:hunter2@h/db"})
    assert "hunter2" not in str(caught.value)
    with pytest.raises(ValueError, match="host and database"):
        conninfo({})


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("postgresql://etl:Hunter 2%secret@127.0.0.1:5432/db", "unexpected spaces"),
        ("postgresql://etl:se%zzcret@127.0.0.1/db", "invalid percent-encoded token"),
        ("postgresql://etl@127.0.0.1/db?password=Hunter 2%secret", "unexpected spaces"),
        ("postgresql://etl@127.0.0.1/db?Password=Hunter 2%secret", "unexpected spaces"),
        ("postgresql://etl:Hunter@s secret@127.0.0.1/db", "unexpected spaces"),
        ('postgresql://etl:Hunter"secret x@127.0.0.1/db', "unexpected spaces"),
    ],
)
def test_a_url_libpq_cannot_read_is_refused_without_its_password(url: str, reason: str) -> None:
    """libpq quotes the token it cannot read, which in a mistyped URL is the password."""
    with pytest.raises(ValueError, match=reason) as caught:
        conninfo({"sqlalchemy_url": url})
    assert "secret" not in str(caught.value)
    assert "Hunter" not in str(caught.value)
    assert "zz" not in str(caught.value)


def test_a_url_error_keeps_libpqs_reason() -> None:
    with pytest.raises(ValueError, match='invalid URI query parameter: "\\*\\*\\*"'):
        conninfo({"sqlalchemy_url": "postgresql://etl:pw@127.0.0.1/db?nosuch=1"})


def test_settings_mark_secrets_and_describe_themselves() -> None:
    props = TargetPostgresBulk.config_jsonschema["properties"]
    assert props["sqlalchemy_url"].get("secret") is True
    assert props["password"].get("secret") is True
    for name in (
        "default_target_schema",
        "batch_size_rows",
        "sanitize_null_text_characters",
        "reject_table",
        "delete_batch_files",
        "indexed_columns",
    ):
        assert props[name].get("description"), name
    assert props["default_target_schema"]["default"] == "rudderstack_raw"
    assert props["sanitize_null_text_characters"]["default"] is True
    assert props["indexed_columns"]["default"] == ["received_at", "event"]


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        (rb'{"a":"x\u0000y"}', rb'{"a":"x\ufffdy"}'),
        (rb'{"k\u0000":1}', rb'{"k\ufffd":1}'),  # in a key
        (rb'{"a":{"b":["\u0000"]}}', rb'{"a":{"b":["\ufffd"]}}'),  # at any depth
        (rb'{"a":"\\u0000"}', rb'{"a":"\\u0000"}'),  # an escaped backslash, then text: kept
        (rb'{"a":"\\\u0000"}', rb'{"a":"\\\ufffd"}'),  # a backslash, then NUL
        (rb'{"a":"\u00001"}', rb'{"a":"\ufffd1"}'),
    ],
)
def test_nul_escapes_become_the_replacement_character(line: bytes, expected: bytes) -> None:
    rejects: list[Rejected] = []
    assert LineScreen(sanitize_nul=True).lines(line + b"\n", rejects) == [expected]
    assert LineScreen(sanitize_nul=False).lines(line + b"\n", rejects) == [line]
    assert rejects == []


def test_strict_screen_sets_aside_only_the_lines_at_fault() -> None:
    rejects: list[Rejected] = []
    chunk = b'{"a":1}\n\n{"b":"\xff"}\n  \n{"c":"\x00"}\n{"d":2}\r\n'
    assert LineScreen(sanitize_nul=True).lines(chunk, rejects, strict=True) == [
        b'{"a":1}',
        b'{"d":2}\r',  # a carriage return is JSON whitespace: jsonb takes it
    ]
    assert [r.reason.split(":")[0] for r in rejects] == ["invalid UTF-8", "invalid JSON"]


def test_chunks_hold_whole_lines_and_frames_are_copy_binary() -> None:
    data = b"".join(b'{"n":%d}\n' % i for i in range(1000)) + b'{"last":1}'
    chunks = list(line_chunks(io.BytesIO(data).read, size=100))
    assert all(c.endswith(b"\n") for c in chunks)
    assert b"".join(chunks) == data + b"\n"
    framed = frame([b"ab", b""])
    assert framed == struct.pack(">hi", 1, 2) + b"ab" + struct.pack(">hi", 1, 0)
    assert BINARY_HEADER.startswith(b"PGCOPY\n\xff\r\n\x00")
    assert BINARY_TRAILER == b"\xff\xff"


# --- loading, against PostgreSQL ------------------------------------------------------------------


@pytest.mark.postgres
def test_every_row_lands_once_with_duplicates_in_a_batch_last_wins(run, query) -> None:
    run([schema_msg(), rec("a", n=1), rec("b", n=1), rec("a", n=2), rec("c", n=1), rec("a", n=3)])
    assert query("select message_id, n from {s}.tracks order by 1") == [
        ("a", 3),
        ("b", 1),
        ("c", 1),
    ]


@pytest.mark.postgres
def test_duplicates_across_batches_last_wins(run, query) -> None:
    ids = [f"m{i:03d}" for i in range(25)]
    messages = [schema_msg(), *(rec(m, n=i) for i, m in enumerate(ids))]
    messages += [rec("m000", n=100), rec("m013", n=113)]  # later batches repeat earlier keys
    run(messages, batch_size_rows=4)
    rows = dict(query("select message_id, n from {s}.tracks"))
    assert sorted(rows) == ids
    assert rows["m000"] == 100
    assert rows["m013"] == 113
    assert rows["m001"] == 1


@pytest.mark.postgres
def test_a_replayed_batch_adds_nothing_and_rewrites_nothing(run, query) -> None:
    messages = [schema_msg(), *(rec(f"m{i}", n=i, properties={"i": i}) for i in range(50))]
    run(messages, batch_size_rows=20)
    before = query("select message_id, xmin::text, n from {s}.tracks order by 1")
    run(messages, batch_size_rows=20)  # at-least-once delivery: the same records again
    after = query("select message_id, xmin::text, n from {s}.tracks order by 1")
    assert len(after) == 50
    # The same row versions: an unchanged row is not even updated (no bloat from replays).
    assert after == before
    run([schema_msg(), rec("m7", n=700, properties={"i": 7})])  # a changed copy does win
    assert query("select n from {s}.tracks where message_id = 'm7'") == [(700,)]


@pytest.mark.postgres
def test_types_json_columns_and_naive_utc_timestamps(run, query) -> None:
    run(
        [
            schema_msg(),
            rec(
                "a",
                user_id="u1",
                n=2**30,
                price=19.99,
                ok=True,
                received_at="2026-11-20T01:30:00.250+02:00",
                properties={"cart": {"id": "c1"}, "quote": 'it\'s "ok"', "big": 10**30},
                tags=["x", "y"],
            ),
            rec("b", received_at="2026-11-19T23:30:00Z", properties=None, tags=None),
            rec("c", received_at="2026-11-19T23:30:00"),  # no offset: UTC
            rec("d"),  # every optional field absent
        ]
    )
    rows = query(
        """select message_id, user_id, n, price, ok, received_at,
                  properties #>> '{cart,id}', properties ->> 'quote',
                  (properties ->> 'big')::numeric, tags ->> 1, pg_typeof(received_at)::text
           from {s}.tracks order by 1"""
    )
    assert rows[0][:10] == (
        "a",
        "u1",
        2**30,
        decimal.Decimal("19.99"),  # number is numeric, as target-postgres makes it
        True,
        dt.datetime(2026, 11, 19, 23, 30, 0, 250000),
        "c1",
        'it\'s "ok"',
        10**30,
        "y",
    )
    assert rows[0][10] == "timestamp without time zone"
    assert rows[1][5] == dt.datetime(2026, 11, 19, 23, 30)
    assert rows[1][6] is None
    assert query("select properties is null from {s}.tracks where message_id = 'b'") == [(True,)]
    assert rows[2][5] == dt.datetime(2026, 11, 19, 23, 30)
    assert rows[3][1:10] == (None,) * 9


@pytest.mark.postgres
def test_tables_are_created_as_target_postgres_creates_them(run, query) -> None:
    """The tap's schemas, as SCHEMA messages: the columns and key target-postgres 0.8.1 makes.

    (tests/integration/test_target_postgres_bulk.py compares with a real target-postgres run.)
    """
    from tap_rudderstack.records import (
        COMMON_PROPERTIES,
        EXTRA_PROPERTIES,
        REJECTED_EVENT_PROPERTIES,
    )

    schemas = {
        stream: {"type": "object", "properties": {**COMMON_PROPERTIES, **extra}}
        for stream, extra in EXTRA_PROPERTIES.items()
    }
    messages = [schema_msg(s, schema) for s, schema in schemas.items()]
    messages.append(
        schema_msg(
            "rejected_events",
            {"type": "object", "properties": REJECTED_EVENT_PROPERTIES},
            keys=("rejected_id",),
        )
    )
    run(messages)
    got = query(
        "select c.relname, a.attname, format_type(a.atttypid, a.atttypmod), a.attnotnull"
        " from pg_attribute a join pg_class c on c.oid = a.attrelid"
        " where c.relnamespace = '{s}'::regnamespace and c.relkind = 'r' and a.attnum > 0"
        " order by c.relname, a.attnum"
    )
    by_table: dict[str, list[tuple[str, str, bool]]] = {}
    for table, column, pg_type, not_null in got:
        by_table.setdefault(table, []).append((column, pg_type, not_null))
    expected_type = {
        "_spool_line": "integer",
        "line_number": "integer",
        "context": "jsonb",
        "properties": "jsonb",
        "traits": "jsonb",
    }
    timestamps = {"original_timestamp", "sent_at", "received_at", "timestamp", "rejected_at"}
    for stream, schema in [*schemas.items(), ("rejected_events", None)]:
        props = schema["properties"] if schema else REJECTED_EVENT_PROPERTIES
        key = "rejected_id" if stream == "rejected_events" else "message_id"
        assert by_table[stream] == [
            (
                name,
                "timestamp without time zone"
                if name in timestamps
                else expected_type.get(name, "text"),
                name == key,
            )
            for name in props
        ], stream
    keys = query(
        "select conrelid::regclass::text, conname, pg_get_constraintdef(oid) from pg_constraint"
        " where connamespace = '{s}'::regnamespace order by 2"
    )
    assert [(name, definition) for _, name, definition in keys] == sorted(
        [(f"{s}_pkey", "PRIMARY KEY (message_id)") for s in schemas]
        + [("rejected_events_pkey", "PRIMARY KEY (rejected_id)")]
    )


@pytest.mark.postgres
def test_schema_evolution_adds_columns(run, query) -> None:
    wider = json.loads(json.dumps(SCHEMA))
    wider["properties"]["channel"] = {"type": ["string", "null"]}
    wider["properties"]["context"] = {"type": ["object", "null"]}
    run([schema_msg(), rec("a", n=1)])
    run(
        [
            schema_msg(),
            rec("b", n=1),
            schema_msg(schema=wider),  # mid-stream: the pending batch loads with its old columns
            rec("c", n=1, channel="web", context={"ip": "203.0.113.9"}),
            rec("b", n=2),  # and before this one: the later copy of b still wins
        ]
    )
    rows = query("select message_id, n, channel, context ->> 'ip' from {s}.tracks order by 1")
    assert rows == [("a", 1, None, None), ("b", 2, None, None), ("c", 1, "web", "203.0.113.9")]
    types = dict(
        query(
            "select column_name, data_type from information_schema.columns"
            " where table_schema = (select nspname from pg_namespace"
            " where oid = '{s}'::regnamespace) and table_name = 'tracks'"
        )
    )
    assert types["channel"] == "text"
    assert types["context"] == "jsonb"


@pytest.mark.postgres
def test_a_table_target_postgres_made_is_loaded_in_place(run, query, pg_url, pg_schema) -> None:
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute(
            f'create table "{pg_schema}".tracks (message_id text not null, n integer,'
            " extra text, primary key (message_id))"
        )
        conn.execute(f"insert into \"{pg_schema}\".tracks values ('a', 1, 'kept')")
    run([schema_msg(), rec("a", n=2), rec("b", n=3)])
    assert query("select message_id, n, extra from {s}.tracks order by 1") == [
        ("a", 2, "kept"),  # a column the stream does not send is left alone
        ("b", 3, None),
    ]


INDEXES = (
    "select i.relname, a.attname from pg_index x join pg_class c on c.oid = x.indrelid"
    " join pg_class i on i.oid = x.indexrelid join pg_namespace n on n.oid = c.relnamespace"
    " join pg_attribute a on a.attrelid = c.oid and a.attnum = x.indkey[0]"
    " where n.nspname = %s and c.relname = %s and not x.indisprimary order by 1"
)


@pytest.mark.postgres
def test_tables_get_an_index_on_received_at_once(run, query, pg_url, pg_schema) -> None:
    # a table the loader creates, and one made before the setting existed (no index yet)
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute(
            f'create table "{pg_schema}".pages (message_id text primary key, received_at timestamp)'
        )
    run([schema_msg(), rec("a", received_at="2026-03-01T00:00:00Z")])
    run([schema_msg("pages"), rec("p", "pages", received_at="2026-03-01T00:00:00Z")])
    assert query(INDEXES, (pg_schema, "tracks")) == [("tracks__received_at", "received_at")]
    assert query(INDEXES, (pg_schema, "pages")) == [("pages__received_at", "received_at")]
    # the next runs find it, under any name, and add no second one
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute(f'alter index "{pg_schema}".pages__received_at rename to pages_by_receipt')
    run([schema_msg(), rec("b")])
    run([schema_msg("pages"), rec("q", "pages")])
    assert query(INDEXES, (pg_schema, "tracks")) == [("tracks__received_at", "received_at")]
    assert query(INDEXES, (pg_schema, "pages")) == [("pages_by_receipt", "received_at")]


@pytest.mark.postgres
def test_tracks_get_an_index_on_event_by_default(run, query, pg_schema) -> None:
    # the email-events staging model reads tracks by event name (docs/ingest.md)
    named = {**SCHEMA, "properties": {**SCHEMA["properties"], "event": {"type": "string"}}}
    run([schema_msg("tracks", named), rec("a", event="Email Opened")])
    assert query(INDEXES, (pg_schema, "tracks")) == [
        ("tracks__event", "event"),
        ("tracks__received_at", "received_at"),
    ]


@pytest.mark.postgres
def test_indexed_columns_empty_or_absent_makes_no_index(run, query, pg_schema) -> None:
    run([schema_msg(), rec("a")], indexed_columns=[])
    plain = {**SCHEMA, "properties": {"message_id": {"type": "string"}}}
    run([schema_msg("log", plain), rec("a", "log")])  # no received_at column: nothing to index
    assert query(INDEXES, (pg_schema, "tracks")) == []
    assert query(INDEXES, (pg_schema, "log")) == []


@pytest.mark.postgres
def test_an_index_name_past_postgres_limit_is_shortened_uniquely(run, query, pg_schema) -> None:
    # both names are 72 bytes and share their first 63: cut as PostgreSQL cuts them, the
    # second CREATE INDEX IF NOT EXISTS would find the first one's name and make nothing
    stream = "a" * 55
    columns = ("received_at_one", "received_at_two")
    schema = {
        **SCHEMA,
        "properties": {
            "message_id": {"type": "string"},
            **{c: {"type": ["string", "null"], "format": "date-time"} for c in columns},
        },
    }
    run([schema_msg(stream, schema), rec("m", stream)], indexed_columns=list(columns))
    indexes = dict(query(INDEXES, (pg_schema, stream)))
    assert sorted(indexes.values()) == list(columns)
    assert len(set(indexes)) == 2


@pytest.mark.postgres
def test_a_table_without_a_unique_key_is_refused_clearly(run, pg_url, pg_schema) -> None:
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute(f'create table "{pg_schema}".tracks (message_id text, n integer)')
    with pytest.raises(RuntimeError, match="no primary key or unique index"):
        run([schema_msg(), rec("a", n=1)])


@pytest.mark.postgres
def test_stream_without_key_appends(run, query) -> None:
    run([schema_msg("log", keys=()), rec("a", "log"), rec("a", "log")])
    assert query("select count(*) from {s}.log") == [(2,)]


@pytest.mark.postgres
def test_state_follows_loaded_batches(run) -> None:
    """RECORDs: STATE is written after a full drain, and only once the drain committed."""
    messages = [schema_msg(), rec("a"), state(1), rec("b"), rec("c"), state(2)]
    states = run(messages, batch_size_rows=2)
    assert [s["bookmarks"]["tracks"]["pos"] for s in states] == [1, 2]


@pytest.mark.postgres
def test_full_drain_happens_once_per_full_batch_with_several_streams(run, query) -> None:
    messages: list[dict] = [schema_msg("tracks"), schema_msg("pages")]
    for i in range(30):
        messages += [rec(f"t{i}", "tracks"), rec(f"p{i}", "pages"), state(i)]
    states = [s["bookmarks"]["tracks"]["pos"] for s in run(messages, batch_size_rows=5)]
    # tracks fills at t4 (STATE 3 seen) and pages, drained then with 4, fills at p8 (STATE 7):
    # the streams take turns, one full drain each time. After a drain nothing is buffered, so
    # the STATE that comes next (8) is written as soon as the drain commits, without waiting
    # for another drain. A drain that requested another drain for every sink it loaded would
    # write a STATE after every record.
    assert states == [3, 7, 8, 12, 16, 17, 21, 25, 26, 29]
    assert query("select count(*) from {s}.tracks") == [(30,)]
    assert query("select count(*) from {s}.pages") == [(30,)]


def _batch_file(folder: Path, name: str, rows: list[dict] | bytes, *, gz: bool = True) -> str:
    path = folder / name
    data = (
        rows if isinstance(rows, bytes) else b"".join(json.dumps(r).encode() + b"\n" for r in rows)
    )
    path.write_bytes(gzip.compress(data) if gz else data)
    return path.as_uri()


def batch_msg(files: list[str], *, gz: bool = True, fmt: str = "jsonl") -> dict:
    return {
        "type": "BATCH",
        "stream": "tracks",
        "encoding": {"format": fmt, "compression": "gzip" if gz else None},
        "manifest": files,
    }


@pytest.mark.postgres
def test_batch_messages_load_and_state_follows_each(run, query, tmp_path: Path) -> None:
    first = _batch_file(
        tmp_path,
        "b1.json.gz",
        [
            {"message_id": "a", "n": 1, "received_at": "2026-11-20T00:00:00+01:00"},
            {"message_id": "b", "n": 1, "properties": {"k": "v"}},
            {"message_id": "a", "n": 5},  # a key twice in one file: the later line wins
        ],
    )
    second = _batch_file(tmp_path, "b2.jsonl", [{"message_id": "b", "n": 2}], gz=False)
    states = run(
        [schema_msg(), batch_msg([first]), state(1), batch_msg([second], gz=False), state(2)]
    )
    assert [s["bookmarks"]["tracks"]["pos"] for s in states] == [1, 2]
    # The whole latest copy wins: a's later line has no received_at, b's later file no k.
    assert query(
        "select message_id, n, received_at, properties ->> 'k' from {s}.tracks order by 1"
    ) == [("a", 5, None, None), ("b", 2, None, None)]


@pytest.mark.postgres
def test_delete_batch_files_only_once_committed(run, query, tmp_path: Path) -> None:
    loaded = _batch_file(tmp_path, "ok.json.gz", [{"message_id": "a", "n": 1}])
    run([schema_msg(), batch_msg([loaded])], delete_batch_files=True)
    assert not (tmp_path / "ok.json.gz").exists()
    kept = _batch_file(tmp_path, "keep.json.gz", [{"message_id": "b"}])
    run([schema_msg(), batch_msg([kept])])  # by default the files stay
    assert (tmp_path / "keep.json.gz").exists()
    assert sorted(query("select message_id from {s}.tracks")) == [("a",), ("b",)]


@pytest.mark.postgres
def test_missing_batch_file_and_parquet_fail_loudly(run, tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"gone\.json\.gz"):
        run([schema_msg(), batch_msg([(tmp_path / "gone.json.gz").as_uri()])])
    url = _batch_file(tmp_path, "b.parquet", [{"message_id": "a"}], gz=False)
    with pytest.raises(NotImplementedError, match="parquet"):
        run([schema_msg(), batch_msg([url], gz=False, fmt="parquet")])


@pytest.mark.postgres
def test_record_before_schema_is_refused(run) -> None:
    with pytest.raises(RecordsWithoutSchemaException):
        run([rec("a")])


# --- hostile values ---------------------------------------------------------------------------


# Incompressible, so that even compressed it exceeds a btree entry's ~2.7 kB.
LONG_KEY = "".join(hashlib.sha256(str(i).encode()).hexdigest() for i in range(200))


def deep(levels: int) -> Any:
    value: Any = 1
    for _ in range(levels):
        value = {"a": value}
    return value


@pytest.mark.postgres
def test_hostile_values_load_or_are_quarantined_without_stopping_the_batch(run, query) -> None:
    messages = [
        schema_msg(),
        rec("ok-1", n=1),
        rec("nul-text", user_id="a\x00b", properties={"k\x00": ["x\x00y", {"z": "\x00"}]}),
        rec("huge-in-json", properties={"big": 10**40, "small": -(10**40), "f": 1.7e308}),
        rec("deep", properties=deep(900)),  # the tap's msgspec refuses ~1000 levels and more
        rec("huge-int", n=2**40),  # the column is integer (the schema's maximum says so)
        rec("text-in-int", n="twelve"),
        rec("bad-time", received_at="2026-13-45T99:00:00Z"),
        # refused for n; its received_at is before year 1 in UTC (Python cannot convert it)
        rec("bc-time", n="x", received_at="0001-01-01T00:30:00+01:00"),
        # date-time words PostgreSQL takes: the load's time, or a time past all data
        rec("now-time", received_at="now"),
        rec("inf-time", received_at="infinity"),
        rec(None, n=7),  # a record without its key
        rec(LONG_KEY, n=8),  # a key too long for the primary key's index
        rec("ok-2", n=2),
        state(1),
    ]
    states = run(messages)
    assert states == [state(1)["value"]]  # the batch went through: STATE follows
    loaded = {row[0]: row[1:] for row in query("select message_id, user_id, n from {s}.tracks")}
    assert set(loaded) == {"ok-1", "ok-2", "nul-text", "huge-in-json", "deep"}
    # NUL, which PostgreSQL cannot store, is U+FFFD, at any depth and in keys too.
    assert loaded["nul-text"][0] == "a\ufffdb"
    assert query("select properties from {s}.tracks where message_id = 'nul-text'") == [
        ({"k\ufffd": ["x\ufffdy", {"z": "\ufffd"}]},)
    ]
    assert query(
        "select (properties ->> 'big')::numeric = 1e40, (properties ->> 'small')::numeric = -1e40,"
        " (properties ->> 'f')::numeric = 1.7e308 from {s}.tracks where message_id = 'huge-in-json'"
    ) == [(True, True, True)]
    assert query(
        "select jsonb_path_query_first(properties, %s)::text from {s}.tracks"
        " where message_id = 'deep'",
        ("$" + ".a" * 900,),
    ) == [("1",)]
    rejected = {
        row[0]: row[1:]
        for row in query("select message_id, reason, raw_text, stream from {s}.rejected_records")
    }
    assert set(rejected) == {
        "huge-int", "text-in-int", "bad-time", "bc-time", "now-time", "inf-time", None, LONG_KEY
    }  # fmt: skip
    assert "not a date-time: infinity" in rejected["inf-time"][0]
    assert rejected["huge-int"][0].startswith("22003")  # numeric_value_out_of_range
    assert "integer" in rejected["huge-int"][0]
    assert rejected["text-in-int"][0].startswith("22P02")  # invalid_text_representation
    assert rejected["bad-time"][0].startswith(("22008", "22007"))
    assert rejected[None][0].startswith("23502")  # not_null_violation on message_id
    assert rejected[LONG_KEY][0].startswith("54000")  # index row size
    assert json.loads(rejected["text-in-int"][1])["n"] == "twelve"  # the record, for a replay
    assert {row[2] for row in rejected.values()} == {"tracks"}


@pytest.mark.postgres
def test_replaying_a_batch_with_rejects_is_idempotent(run, query) -> None:
    messages = [schema_msg(), rec("ok", n=1), rec("bad", n="x"), rec("ok2", n=2)]
    run(messages)
    run(messages)
    assert query("select count(*) from {s}.tracks") == [(2,)]
    assert query("select message_id from {s}.rejected_records") == [("bad",)]


@pytest.mark.postgres
def test_names_past_postgres_limit_fail_clearly(run) -> None:
    """PostgreSQL would cut the name to 63 bytes and the loader look for the full one."""
    wide = json.loads(json.dumps(SCHEMA))
    wide["properties"]["context_" + "x" * 60] = {"type": ["string", "null"]}
    with pytest.raises(ValueError, match="longer than PostgreSQL's 63-byte names"):
        run([schema_msg(schema=wide), rec("a", n=1)])
    with pytest.raises(ValueError, match="longer than PostgreSQL's 63-byte names"):
        run([schema_msg(stream="s" * 64), rec("a", stream="s" * 64, n=1)])


@pytest.mark.postgres
def test_lines_python_json_writes_but_json_does_not_allow_load(run, query) -> None:
    """NaN, Infinity and a lone surrogate escape, as Python's json writes them: null, U+FFFD."""
    run([schema_msg(), rec("a", user_id="u\ud800", properties={"score": float("nan")})])
    assert query("select user_id, properties from {s}.tracks") == [("u\ufffd", {"score": None})]


@pytest.mark.postgres
def test_a_date_time_key_written_two_ways_is_one_key(run, query) -> None:
    """Two copies of one key in a batch, its date-time written with `Z` and with `+00:00`: the
    later copy wins, as for any key (the stage compares the times, not their text)."""
    schema = {
        "type": "object",
        "properties": {
            "at": {"type": ["string"], "format": "date-time"},
            "n": {"type": ["integer", "null"]},
        },
    }
    run([
        {"type": "SCHEMA", "stream": "readings", "schema": schema, "key_properties": ["at"]},
        {"type": "RECORD", "stream": "readings", "record": {"at": "2026-12-07T10:00:00Z", "n": 1}},
        {"type": "RECORD", "stream": "readings",
         "record": {"at": "2026-12-07T10:00:00+00:00", "n": 2}},
    ])  # fmt: skip
    assert query("select n from {s}.readings") == [(2,)]


@pytest.mark.postgres
def test_every_batch_of_a_run_can_set_rows_aside(run, query) -> None:
    """The halving indexes the session's stage table for one batch and drops the index after:
    the next batch with refused rows, in the same session, does the same."""
    messages = [schema_msg(), *(rec(f"r{i}", n="x" if i % 2 else i) for i in range(9))]
    run(messages, batch_size_rows=3)
    assert query("select count(*) from {s}.tracks") == [(5,)]
    assert query("select count(*) from {s}.rejected_records") == [(4,)]


@pytest.mark.postgres
def test_nul_is_quarantined_when_sanitizing_is_off(run, query) -> None:
    run(
        [schema_msg(), rec("ok"), rec("nul", user_id="a\x00b")], sanitize_null_text_characters=False
    )
    assert query("select message_id from {s}.tracks") == [("ok",)]
    [(message_id, reason, raw)] = query(
        "select message_id, reason, raw_text from {s}.rejected_records"
    )
    assert message_id == "nul"
    assert reason.startswith("22P05")  # untranslatable_character: PostgreSQL's own word
    assert "\\u0000" in raw


@pytest.mark.postgres
def test_bad_lines_of_a_batch_file_are_quarantined_and_the_rest_loads(
    run, query, tmp_path: Path
) -> None:
    lines = b"".join(
        [
            b'{"message_id":"a","n":1}\n',
            b'{"message_id":"b","user_id":"\xff\xfe"}\n',  # invalid UTF-8: COPY refuses it
            b"\n",
            b'{"message_id":"c","user_id":"\\ud800"}\n',  # a lone surrogate: jsonb refuses it
            b"not json at all\n",
            b'{"message_id":"d","n":4}\r\n',
        ]
    )
    url = _batch_file(tmp_path, "mixed.jsonl", lines, gz=False)
    run([schema_msg(), batch_msg([url], gz=False)])
    assert sorted(query("select message_id, n from {s}.tracks")) == [("a", 1), ("d", 4)]
    reasons = sorted(r[0].split(":")[0] for r in query("select reason from {s}.rejected_records"))
    assert reasons == ["22P02", "22P02", "invalid UTF-8"]


@pytest.mark.postgres
def test_stream_maps_take_the_sdk_path(run, query) -> None:
    """With a stream map the record is decoded and mapped by the SDK before it is buffered."""
    run(
        [schema_msg(), rec("a", user_id="secret", n=1), rec("a", user_id="secret", n=2)],
        stream_maps={"tracks": {"user_id": None}},
    )
    columns = {
        r[0]
        for r in query(
            "select attname from pg_attribute where attrelid = '{s}.tracks'::regclass"
            " and attnum > 0"
        )
    }
    assert "user_id" not in columns
    assert query("select message_id, n from {s}.tracks") == [("a", 2)]


@pytest.mark.postgres
def test_add_record_metadata(run, query) -> None:
    run([schema_msg(), rec("a")], add_record_metadata=True)
    columns = {
        r[0]
        for r in query(
            "select attname from pg_attribute where attrelid = '{s}.tracks'::regclass"
            " and attnum > 0"
        )
    }
    assert {"_sdc_received_at", "_sdc_batched_at"} <= columns
    assert query("select count(_sdc_batched_at) from {s}.tracks") == [(1,)]
