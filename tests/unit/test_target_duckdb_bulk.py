"""target-duckdb-bulk driven in-process with hand-written Singer message streams.

Each test builds the exact messages it needs, runs the target's real reader and sinks against a
fresh DuckDB file, then opens the file and checks the rows: duplicates collapse to the last one,
the first row of every batch survives (target-duckdb 0.8.0's bug), schemas evolve, BATCH files
load, date-times land as naive UTC, and STATE only follows loaded data. The last section covers
the deduplication within a window of received_at of tables without a primary key (the default
for new event tables) and the INSERT OR REPLACE kept for tables with one.
"""

from __future__ import annotations

import contextlib
import copy
import datetime as dt
import gzip
import io
import json
from pathlib import Path
from typing import Any

import duckdb
import pytest
from singer_sdk.exceptions import RecordsWithoutSchemaException
from target_duckdb_bulk.sinks import column_type, delete_copies_sql, table_name
from target_duckdb_bulk.target import TargetDuckDBBulk

SCHEMA = {
    "type": "object",
    "properties": {
        "message_id": {"type": "string"},
        "user_id": {"type": ["string", "null"]},
        "n": {"type": ["integer", "null"]},
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


def rec(mid: str, stream: str = "tracks", **fields: Any) -> dict:
    return {"type": "RECORD", "stream": stream, "record": {"message_id": mid, **fields}}


def state(value: Any) -> dict:
    return {"type": "STATE", "value": {"bookmarks": {"tracks": {"pos": value}}}}


def run_target(db: Path, messages: list[dict], **config: Any) -> list[dict]:
    """Run the target over `messages`; return the STATE values it wrote to stdout."""
    target = TargetDuckDBBulk(
        config={"filepath": str(db), **config}, parse_env_config=False, validate_config=True
    )
    data = b"".join(json.dumps(m).encode() + b"\n" for m in messages)
    out = io.StringIO()
    try:
        with contextlib.redirect_stdout(out):
            target.listen(io.BytesIO(data))
    finally:
        target.close()  # a failed load leaves the connection open in this process
    return [json.loads(line) for line in out.getvalue().splitlines() if line]


def query(db: Path, sql: str) -> list[tuple]:
    con = duckdb.connect(str(db), read_only=True)
    try:
        return con.execute(sql).fetchall()
    finally:
        con.close()


@pytest.mark.parametrize(
    ("prop", "expected"),
    [
        ({"type": "string"}, "VARCHAR"),
        ({"type": ["string", "null"], "format": "date-time"}, "TIMESTAMP"),
        ({"anyOf": [{"type": "string", "format": "date-time"}, {"type": "null"}]}, "TIMESTAMP"),
        ({"type": "string", "format": "date"}, "DATE"),
        ({"type": ["integer", "null"]}, "BIGINT"),
        ({"type": "number"}, "DOUBLE"),
        ({"type": ["integer", "number"]}, "DOUBLE"),
        ({"type": "boolean"}, "BOOLEAN"),
        ({"type": ["object", "null"]}, "JSON"),
        ({"type": "array", "items": {"type": "string"}}, "JSON"),
        ({}, "JSON"),
        ({"type": ["string", "integer"]}, "JSON"),
    ],
)
def test_column_types(prop: dict, expected: str) -> None:
    assert column_type(prop) == expected


def test_table_name_is_safe() -> None:
    assert table_name("My-Stream.v2") == "my_stream_v2"


def test_every_row_lands_once_with_duplicates_in_a_batch_last_wins(tmp_path: Path) -> None:
    db = tmp_path / "w.duckdb"
    messages = [
        schema_msg(),
        rec("a", n=1),  # first row of the batch: target-duckdb 0.8.0 lost this one
        rec("b", n=1),
        rec("a", n=2),
        rec("c", n=1),
        rec("a", n=3),
    ]
    run_target(db, messages)
    assert query(db, "select message_id, n from rudderstack_raw.tracks order by 1") == [
        ("a", 3),
        ("b", 1),
        ("c", 1),
    ]


def test_first_row_of_every_batch_survives_small_batches(tmp_path: Path) -> None:
    db = tmp_path / "w.duckdb"
    ids = [f"m{i:03d}" for i in range(25)]
    run_target(db, [schema_msg(), *(rec(m, n=i) for i, m in enumerate(ids))], batch_size_rows=4)
    got = [r[0] for r in query(db, "select message_id from rudderstack_raw.tracks order by 1")]
    assert got == ids


def test_rerun_upserts_instead_of_duplicating(tmp_path: Path) -> None:
    db = tmp_path / "w.duckdb"
    run_target(db, [schema_msg(), rec("a", n=1), rec("b", n=1)])
    run_target(db, [schema_msg(), rec("b", n=2), rec("c", n=2)])
    assert query(db, "select message_id, n from rudderstack_raw.tracks order by 1") == [
        ("a", 1),
        ("b", 2),
        ("c", 2),
    ]


def test_types_json_columns_and_naive_utc_timestamps(tmp_path: Path) -> None:
    db = tmp_path / "w.duckdb"
    run_target(
        db,
        [
            schema_msg(),
            rec(
                "a",
                user_id="u1",
                n=2**40,
                price=19.99,
                ok=True,
                received_at="2026-11-20T01:30:00.250+02:00",
                properties={"cart": {"id": "c1"}, "quote": 'it\'s "ok"'},
                tags=["x", "y"],
            ),
            rec("b", received_at="2026-11-19T23:30:00Z", properties=None, tags=None),
            rec("c"),  # every optional field absent
        ],
        default_target_schema="raw test",
    )
    rows = query(
        db,
        """select message_id, user_id, n, price, ok, received_at,
                  json_extract_string(properties, '$.cart.id'),
                  json_extract_string(properties, '$.quote'),
                  json_extract_string(tags, '$[1]'), typeof(received_at)
           from "raw test".tracks order by 1""",
    )
    assert rows[0] == (
        "a",
        "u1",
        2**40,
        19.99,
        True,
        dt.datetime(2026, 11, 19, 23, 30, 0, 250000),
        "c1",
        'it\'s "ok"',
        "y",
        "TIMESTAMP",
    )
    assert rows[1][5] == dt.datetime(2026, 11, 19, 23, 30)
    assert rows[1][6] is None
    assert rows[2] == ("c", None, None, None, None, None, None, None, None, "TIMESTAMP")


def test_schema_evolution_adds_columns(tmp_path: Path) -> None:
    db = tmp_path / "w.duckdb"
    wider = json.loads(json.dumps(SCHEMA))
    wider["properties"]["channel"] = {"type": ["string", "null"]}
    wider["properties"]["context"] = {"type": ["object", "null"]}
    run_target(db, [schema_msg(), rec("a", n=1)])
    run_target(
        db,
        [
            schema_msg(),
            rec("b", n=1),
            schema_msg(schema=wider),  # mid-stream: the pending batch loads with its old columns
            rec("c", n=1, channel="web", context={"ip": "203.0.113.9"}),
        ],
    )
    rows = query(
        db,
        "select message_id, channel, json_extract_string(context, '$.ip')"
        " from rudderstack_raw.tracks order by 1",
    )
    assert rows == [("a", None, None), ("b", None, None), ("c", "web", "203.0.113.9")]
    types = dict(
        query(
            db,
            "select column_name, data_type from information_schema.columns"
            " where table_name = 'tracks'",
        )
    )
    assert types["channel"] == "VARCHAR"
    assert types["context"] == "JSON"


def test_a_schema_change_mid_stream_keeps_the_newer_copy_of_a_key(tmp_path: Path) -> None:
    """The replaced sink's buffered copy of `b` loads before the new sink's: otherwise the new
    sink, full first, loads its newer copy and the old one overwrites it at the next drain."""
    db = tmp_path / "w.duckdb"
    wider = json.loads(json.dumps(SCHEMA))
    wider["properties"]["extra"] = {"type": ["string", "null"]}
    run_target(
        db,
        [schema_msg(), rec("b", n=1), schema_msg(schema=wider), rec("b", n=2, extra="x"),
         rec("c", n=1)],
        batch_size_rows=2,
    )  # fmt: skip
    rows = query(db, "select message_id, n, extra from rudderstack_raw.tracks order by 1")
    assert rows == [("b", 2, "x"), ("c", 1, None)]


def test_a_column_named_rowid_still_keeps_each_keys_last_copy(tmp_path: Path) -> None:
    """DuckDB's rowid, by which the stage keeps each key's last line, is hidden by a column of
    that name (a SQLite source's, say)."""
    db = tmp_path / "w.duckdb"
    with_rowid = json.loads(json.dumps(SCHEMA))
    with_rowid["properties"]["RowId"] = {"type": ["integer", "null"]}
    run_target(
        db,
        [schema_msg(schema=with_rowid), rec("a", n=1, received_at="2026-12-01T00:00:00Z"),
         rec("a", n=2, received_at="2026-12-01T00:00:01Z"),
         rec("a", n=3, received_at="2026-12-01T00:00:02Z")],
    )  # fmt: skip
    assert query(db, "select message_id, n from rudderstack_raw.tracks") == [("a", 3)]


def test_stream_without_key_appends(tmp_path: Path) -> None:
    db = tmp_path / "w.duckdb"
    run_target(db, [schema_msg("log", keys=()), rec("a", "log"), rec("a", "log")])
    assert query(db, "select count(*) from rudderstack_raw.log") == [(2,)]


def test_state_follows_loaded_batches(tmp_path: Path) -> None:
    """STATE is written only from a full drain: after a sink filled up and at the end."""
    db = tmp_path / "w.duckdb"
    messages = [
        schema_msg(),
        rec("a"),
        state(1),
        rec("b"),  # batch of 2 is full: every sink drains, then STATE 1 is written
        rec("c"),
        state(2),
    ]
    states = run_target(db, messages, batch_size_rows=2)
    assert [s["bookmarks"]["tracks"]["pos"] for s in states] == [1, 2]


def test_full_drain_happens_once_per_full_batch_with_several_streams(tmp_path: Path) -> None:
    """One stream filling up loads every stream once, not on every following record."""
    db = tmp_path / "w.duckdb"
    messages: list[dict] = [schema_msg("tracks"), schema_msg("pages")]
    for i in range(30):
        messages += [rec(f"t{i}", "tracks"), rec(f"p{i}", "pages"), state(i)]
    states = [s["bookmarks"]["tracks"]["pos"] for s in run_target(db, messages, batch_size_rows=5)]
    # tracks fills at t4 (STATE 3 seen) and pages, drained then with 4, fills at p8 (STATE 7):
    # the streams take turns, one full drain each time, plus the one at the end. A drain that
    # requested another drain for every sink it loaded would write a STATE after every record.
    assert states == [3, 7, 12, 16, 21, 25, 29]
    assert query(db, "select count(*) from rudderstack_raw.tracks") == [(30,)]
    assert query(db, "select count(*) from rudderstack_raw.pages") == [(30,)]


def _batch_file(folder: Path, name: str, rows: list[dict], *, gz: bool = True) -> str:
    path = folder / name
    data = b"".join(json.dumps(r).encode() + b"\n" for r in rows)
    path.write_bytes(gzip.compress(data) if gz else data)
    return path.as_uri()


def batch_msg(files: list[str], *, gz: bool = True, fmt: str = "jsonl") -> dict:
    return {
        "type": "BATCH",
        "stream": "tracks",
        "encoding": {"format": fmt, "compression": "gzip" if gz else None},
        "manifest": files,
    }


def test_batch_messages_are_loaded(tmp_path: Path) -> None:
    db = tmp_path / "w.duckdb"
    first = _batch_file(
        tmp_path,
        "b1.json.gz",
        [
            {"message_id": "a", "n": 1, "received_at": "2026-11-20T00:00:00+01:00"},
            {"message_id": "b", "n": 1, "properties": {"k": "v"}},
        ],
    )
    second = _batch_file(tmp_path, "b2.jsonl", [{"message_id": "a", "n": 2}], gz=False)
    states = run_target(db, [schema_msg(), batch_msg([first]), batch_msg([second], gz=False)])
    assert states == []  # no STATE was sent, none invented
    rows = query(
        db,
        "select message_id, n, received_at, json_extract_string(properties, '$.k')"
        " from rudderstack_raw.tracks order by 1",
    )
    # "a" came again in a later file: the later file wins; the first row of each file is kept.
    assert rows == [("a", 2, None, None), ("b", 1, None, "v")]


def test_a_batch_files_duplicates_keep_the_last_line_even_where_insertion_order_was_off(
    tmp_path: Path,
) -> None:
    """A BATCH file is staged as read and deduplicated by rowid, which follows the file's lines
    only while DuckDB preserves insertion order. Another user of the same database in this
    process (dbt, in `signalmail watch`) turns it off here: the loader must turn it back on.
    The reader's buffer follows maximum_object_size: at 64 KiB the copies of a key lie many
    buffers apart."""
    db = tmp_path / "w.duckdb"
    other = duckdb.connect(str(db))  # the same database instance as the target's connection
    other.execute("SET preserve_insertion_order = false")
    keys = 60_000
    rows = [
        {"message_id": f"m{k}", "n": copy, "received_at": "2026-11-20T00:00:00Z"}
        for copy in (1, 2, 3)
        for k in range(keys)
    ]
    rows.append({"message_id": "m7", "n": 4, "received_at": "2026-11-20T00:00:00Z"})
    url = _batch_file(tmp_path, "big.jsonl", rows, gz=False)
    target = TargetDuckDBBulk(
        config={"filepath": str(db), "maximum_object_size": 1 << 16},
        parse_env_config=False,
        validate_config=True,
    )
    data = b"".join(
        json.dumps(m).encode() + b"\n" for m in [schema_msg(), batch_msg([url], gz=False)]
    )
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            target.listen(io.BytesIO(data))
        (pinned,) = other.execute("SELECT current_setting('preserve_insertion_order')").fetchone()
        counts = other.execute(
            "select count(*), count(distinct message_id), min(n), max(n),"
            " max(n) filter (where message_id = 'm7') from rudderstack_raw.tracks"
        ).fetchall()
    finally:
        target.close()
        other.close()
    assert pinned is True
    assert counts == [(keys, keys, 3, 4, 4)]


def test_batch_file_first_row_and_timestamp(tmp_path: Path) -> None:
    db = tmp_path / "w.duckdb"
    url = _batch_file(
        tmp_path,
        "b.json.gz",
        [{"message_id": f"m{i}", "received_at": "2026-11-20T00:00:00+01:00"} for i in range(3)],
    )
    run_target(db, [schema_msg(), batch_msg([url])])
    assert query(db, "select message_id, received_at from rudderstack_raw.tracks order by 1") == [
        (f"m{i}", dt.datetime(2026, 11, 19, 23, 0)) for i in range(3)
    ]


def test_delete_batch_files_removes_each_file_once_loaded(tmp_path: Path) -> None:
    db = tmp_path / "w.duckdb"
    loaded = _batch_file(tmp_path, "ok.json.gz", [{"message_id": "a", "n": 1}])
    bad = _batch_file(tmp_path, "bad.json.gz", [{"message_id": "b", "n": "not a number"}])
    run_target(db, [schema_msg(), batch_msg([loaded])], delete_batch_files=True)
    assert not (tmp_path / "ok.json.gz").exists()
    assert query(db, "select message_id, n from rudderstack_raw.tracks") == [("a", 1)]
    # A file whose load fails stays where it is, for the operator and for a re-run.
    with pytest.raises(RuntimeError, match="stream 'tracks'"):
        run_target(db, [schema_msg(), batch_msg([bad])], delete_batch_files=True)
    assert (tmp_path / "bad.json.gz").exists()


def test_batch_files_are_kept_by_default(tmp_path: Path) -> None:
    url = _batch_file(tmp_path, "keep.json.gz", [{"message_id": "a"}])
    run_target(tmp_path / "w.duckdb", [schema_msg(), batch_msg([url])])
    assert (tmp_path / "keep.json.gz").exists()


def test_missing_batch_file_fails_loudly(tmp_path: Path) -> None:
    missing = (tmp_path / "gone.json.gz").as_uri()
    with pytest.raises(FileNotFoundError, match=r"gone\.json\.gz"):
        run_target(tmp_path / "w.duckdb", [schema_msg(), batch_msg([missing])])


def test_parquet_batch_is_refused(tmp_path: Path) -> None:
    url = _batch_file(tmp_path, "b.parquet", [{"message_id": "a"}], gz=False)
    with pytest.raises(NotImplementedError, match="parquet"):
        run_target(tmp_path / "w.duckdb", [schema_msg(), batch_msg([url], gz=False, fmt="parquet")])


def test_bad_timestamp_fails_with_stream_and_table(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError, match=r"stream 'tracks'.*rudderstack_raw"):
        run_target(tmp_path / "w.duckdb", [schema_msg(), rec("a", received_at="not a time")])


def test_an_infinite_date_time_fails_the_load(tmp_path: Path) -> None:
    """DuckDB reads 'infinity' as a date-time; in received_at it would put every later
    incremental dbt cutoff past all data."""
    db = tmp_path / "w.duckdb"
    for value in ("infinity", "-infinity"):
        with pytest.raises(RuntimeError, match="received_at: infinity is not a date-time"):
            run_target(db, [schema_msg(), rec("a", received_at=value)])
        with pytest.raises(RuntimeError, match="received_at: infinity is not a date-time"):
            run_target(db, [schema_msg(), rec("a", received_at=value)], dedup_window_column="")


def test_lines_python_json_writes_but_json_does_not_allow_load(tmp_path: Path) -> None:
    """singer-sdk taps write with Python's json: NaN and Infinity for float values, and a lone
    surrogate escaped as \\ud800. The line loads (null, U+FFFD) and the run goes on."""
    db = tmp_path / "w.duckdb"
    run_target(
        db,
        [schema_msg(), rec("a", user_id="u\ud800", properties={"score": float("nan")}),
         rec("b", n=1, properties={"big": float("inf")})],
    )  # fmt: skip
    rows = query(
        db,
        "select message_id, user_id, properties from rudderstack_raw.tracks order by 1",
    )
    assert rows == [("a", "u\ufffd", '{"score":null}'), ("b", None, '{"big":null}')]


def test_record_before_schema_is_refused(tmp_path: Path) -> None:
    with pytest.raises(RecordsWithoutSchemaException):
        run_target(tmp_path / "w.duckdb", [rec("a")])


def test_record_without_key_fails_the_load(tmp_path: Path) -> None:
    db = tmp_path / "w.duckdb"
    bad = {"type": "RECORD", "stream": "tracks", "record": {"n": 1}}
    with pytest.raises(RuntimeError, match=r"stream 'tracks'.*NOT NULL.*message_id"):
        run_target(db, [schema_msg(), rec("a"), bad])
    assert query(db, "select count(*) from rudderstack_raw.tracks") == [(0,)]


def test_failed_background_load_writes_no_later_state(tmp_path: Path) -> None:
    """Loads run in a loader thread; a failure there still stops STATE and fails the run."""
    db = tmp_path / "w.duckdb"
    target = TargetDuckDBBulk(
        config={"filepath": str(db), "batch_size_rows": 2}, parse_env_config=False
    )
    bad = {"type": "RECORD", "stream": "tracks", "record": {"n": 1}}  # no key
    # [a, b] loads, then STATE 1; [bad, c] fails in the loader thread: STATE 2 is never written.
    messages = [schema_msg(), rec("a"), state(1), rec("b"), bad, state(2), rec("c"), state(3)]
    out = io.StringIO()
    try:
        with contextlib.redirect_stdout(out), pytest.raises(RuntimeError, match="NOT NULL"):
            target.listen(io.BytesIO(b"".join(json.dumps(m).encode() + b"\n" for m in messages)))
    finally:
        target.close()
    written = [
        json.loads(line)["bookmarks"]["tracks"]["pos"] for line in out.getvalue().splitlines()
    ]
    assert written == [1]
    assert query(db, "select message_id from rudderstack_raw.tracks order by 1") == [("a",), ("b",)]


def test_record_that_is_not_an_object_is_refused(tmp_path: Path) -> None:
    bad = {"type": "RECORD", "stream": "tracks", "record": [1, 2]}
    with pytest.raises(ValueError, match="not an object"):
        run_target(tmp_path / "w.duckdb", [schema_msg(), bad])


def test_stream_maps_take_the_sdk_path(tmp_path: Path) -> None:
    """With a stream map the record is decoded and mapped by the SDK before it is buffered."""
    db = tmp_path / "w.duckdb"
    run_target(
        db,
        [schema_msg(), rec("a", user_id="secret", n=1), rec("a", user_id="secret", n=2)],
        stream_maps={"tracks": {"user_id": None}},
    )
    cols = {r[0] for r in query(db, "select column_name from information_schema.columns")}
    assert "user_id" not in cols
    assert query(db, "select message_id, n from rudderstack_raw.tracks") == [("a", 2)]


def test_a_batch_file_is_refused_where_a_stream_map_would_not_apply(tmp_path: Path) -> None:
    """A BATCH file loads as it is: with a map configured for the stream, the column the map
    drops (an address, say) would land anyway."""
    db = tmp_path / "w.duckdb"
    url = _batch_file(tmp_path, "b1", [{"message_id": "a", "user_id": "secret", "n": 1}])
    with pytest.raises(ValueError, match="BATCH message for stream 'tracks' refused"):
        run_target(db, [schema_msg(), batch_msg([url])], stream_maps={"tracks": {"user_id": None}})
    run_target(db, [schema_msg(), batch_msg([url])])  # without the map it loads
    assert query(db, "select message_id, n from rudderstack_raw.tracks") == [("a", 1)]


def test_key_check_on_the_sdk_path(tmp_path: Path) -> None:
    bad = {"type": "RECORD", "stream": "tracks", "record": {"n": 1}}
    with pytest.raises(Exception, match="key_properties"):
        run_target(tmp_path / "w.duckdb", [schema_msg(), bad], validate_records=True)


def test_null_key_fails_the_load_instead_of_vanishing(tmp_path: Path) -> None:
    db = tmp_path / "w.duckdb"
    with pytest.raises(RuntimeError, match="NOT NULL"):
        run_target(db, [schema_msg(), rec("a"), rec(None)])  # type: ignore[arg-type]
    assert query(db, "select count(*) from rudderstack_raw.tracks") == [(0,)]  # all or nothing


def test_key_missing_from_schema_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"key properties \['id'\]"):
        run_target(tmp_path / "w.duckdb", [schema_msg(keys=("id",))])


def test_add_record_metadata(tmp_path: Path) -> None:
    db = tmp_path / "w.duckdb"
    run_target(db, [schema_msg(), rec("a")], add_record_metadata=True)
    cols = {r[0] for r in query(db, "select column_name from information_schema.columns")}
    assert {"_sdc_received_at", "_sdc_batched_at"} <= cols
    assert query(db, "select count(_sdc_batched_at) from rudderstack_raw.tracks") == [(1,)]


def test_about_lists_settings_with_descriptions() -> None:
    props = TargetDuckDBBulk.config_jsonschema["properties"]
    for name in ("filepath", "default_target_schema", "batch_size_rows", "add_record_metadata"):
        assert props[name].get("description"), name
    assert TargetDuckDBBulk.config_jsonschema["required"] == ["filepath"]


# --- deduplication within a window (tables without a primary key) ------------------------------
#
# A new keyed table whose stream has `received_at` gets no primary key (its index would grow with
# the table, docs/ingest.md "Deduplication"): each batch replaces the stored copies of its keys
# whose received_at lies within `dedup_window_hours` (72) of the batch's own received_at range.

T0 = dt.datetime(2026, 11, 20, 12, 0)


def at(hours: float) -> str:
    """received_at `hours` after T0, as the tap writes it (UTC text)."""
    return (T0 + dt.timedelta(hours=hours)).isoformat() + "Z"


def when(hours: float) -> dt.datetime:
    return T0 + dt.timedelta(hours=hours)


def tracks(db: Path) -> list[tuple]:
    return query(db, "select message_id, n, received_at from rudderstack_raw.tracks order by 1, 3")


def primary_keys(db: Path) -> list[tuple]:
    return query(
        db,
        "select table_name, constraint_column_names from duckdb_constraints()"
        " where constraint_type = 'PRIMARY KEY' order by 1",
    )


def test_new_keyed_table_with_received_at_has_no_primary_key_but_not_null_keys(
    tmp_path: Path,
) -> None:
    db = tmp_path / "w.duckdb"
    no_window = {"type": "object", "properties": {"rejected_id": {"type": "string"}}}
    run_target(
        db,
        [
            schema_msg(),
            schema_msg("rejected_events", no_window, keys=("rejected_id",)),
            rec("a", received_at=at(0)),
        ],
    )
    # A stream without the window column keeps the primary key (INSERT OR REPLACE).
    assert primary_keys(db) == [("rejected_events", ["rejected_id"])]
    nullable = dict(
        query(
            db,
            "select column_name, is_nullable from information_schema.columns"
            " where table_name = 'tracks'",
        )
    )
    assert nullable["message_id"] == "NO"
    assert nullable["n"] == "YES"


def test_duplicates_within_one_batch_last_copy_wins(tmp_path: Path) -> None:
    db = tmp_path / "w.duckdb"
    run_target(
        db,
        [
            schema_msg(),
            rec("a", n=1, received_at=at(0)),
            rec("b", n=1, received_at=at(0)),
            rec("a", n=2, received_at=at(0.01)),  # an SDK retry in the same batch
            rec("a", n=3, received_at=at(0)),  # a replayed line: the last line wins
        ],
    )
    assert tracks(db) == [("a", 3, when(0)), ("b", 1, when(0))]


def test_replay_in_a_later_batch_leaves_one_row_with_the_latest_copy(tmp_path: Path) -> None:
    db = tmp_path / "w.duckdb"
    first = [rec(m, n=1, received_at=at(0)) for m in ("a", "b", "c")]
    run_target(db, [schema_msg(), *first])
    # The same spool file read again (same received_at), in batches of 2 and in a later run.
    replay = [rec(m, n=2, received_at=at(0)) for m in ("c", "a", "b")]
    run_target(db, [schema_msg(), *replay, rec("d", n=2, received_at=at(1))], batch_size_rows=2)
    assert tracks(db) == [
        ("a", 2, when(0)),
        ("b", 2, when(0)),
        ("c", 2, when(0)),
        ("d", 2, when(1)),
    ]


def test_sdk_retry_received_an_hour_later_leaves_one_row(tmp_path: Path) -> None:
    db = tmp_path / "w.duckdb"
    run_target(db, [schema_msg(), rec("a", n=1, received_at=at(0)), rec("b", received_at=at(0))])
    run_target(db, [schema_msg(), rec("a", n=2, received_at=at(1))])
    assert tracks(db) == [("a", 2, when(1)), ("b", None, when(0))]
    # A copy that was received earlier but is loaded later (a late file) is found as well:
    # the window reaches both ways from the batch's received_at range. It is the latest loaded.
    run_target(db, [schema_msg(), rec("a", n=3, received_at=at(-2))])
    assert tracks(db) == [("a", 3, when(-2)), ("b", None, when(0))]


def test_window_holds_when_the_stream_stops_declaring_received_at_a_date_time(
    tmp_path: Path,
) -> None:
    """The table keeps its TIMESTAMP column (setup keeps existing types); the batch is staged
    with it as TIMESTAMP too, so the window still bounds the search and the copy is replaced."""
    db = tmp_path / "w.duckdb"
    run_target(db, [schema_msg(), rec("a", n=1, received_at=at(0))])
    drifted = copy.deepcopy(SCHEMA)
    drifted["properties"]["received_at"] = {"type": ["string", "null"]}
    run_target(db, [schema_msg(schema=drifted), rec("a", n=2, received_at=at(1))])
    assert tracks(db) == [("a", 2, when(1))]


def test_copy_received_later_than_the_window_stays_twice_in_raw(tmp_path: Path) -> None:
    """Copies further apart than the window are not matched: both stay in the raw table.

    That is the documented cost of the window; dbt staging (deduplicated_source in
    dbt_project/macros/incremental/deduplication.sql) keeps one row per message_id whatever the
    raw table holds (the first copy by received_at), so the signals see the event once.
    """
    db = tmp_path / "w.duckdb"
    run_target(db, [schema_msg(), rec("a", n=1, received_at=at(0))])
    run_target(db, [schema_msg(), rec("a", n=2, received_at=at(73))])  # default window: 72 h
    run_target(db, [schema_msg(), rec("a", n=3, received_at=at(-80))])  # and the other way
    assert tracks(db) == [("a", 3, when(-80)), ("a", 1, when(0)), ("a", 2, when(73))]
    # Within the window of a copy, that copy is replaced, and only that one.
    run_target(db, [schema_msg(), rec("a", n=4, received_at=at(100))])
    assert tracks(db) == [("a", 3, when(-80)), ("a", 1, when(0)), ("a", 4, when(100))]


def test_dedup_window_hours_setting(tmp_path: Path) -> None:
    db = tmp_path / "w.duckdb"
    run_target(db, [schema_msg(), rec("a", n=1, received_at=at(0))], dedup_window_hours=0.5)
    run_target(db, [schema_msg(), rec("a", n=2, received_at=at(0.25))], dedup_window_hours=0.5)
    assert tracks(db) == [("a", 2, when(0.25))]
    run_target(db, [schema_msg(), rec("a", n=3, received_at=at(1))], dedup_window_hours=0.5)
    assert tracks(db) == [("a", 2, when(0.25)), ("a", 3, when(1))]
    with pytest.raises(ValueError, match="dedup_window_hours"):
        run_target(db, [schema_msg()], dedup_window_hours=-1)


def test_rows_without_received_at_replace_their_keys_copies_anywhere(tmp_path: Path) -> None:
    """A batch row whose received_at is NULL has no time to bound the search: no bound."""
    db = tmp_path / "w.duckdb"
    run_target(db, [schema_msg(), rec("a", n=1, received_at=at(-1000)), rec("b", n=1)])
    run_target(
        db,
        [
            schema_msg(),
            rec("a", n=2),  # its dated copy is far outside any window: found all the same
            rec("b", n=2, received_at=at(0)),  # the undated stored copy is not in the range
            rec("c", n=2, received_at=at(0)),
        ],
    )
    assert tracks(db) == [("a", 2, None), ("b", 2, when(0)), ("b", 1, None), ("c", 2, when(0))]


def test_composite_key_in_the_window(tmp_path: Path) -> None:
    db = tmp_path / "w.duckdb"
    keys = ("message_id", "user_id")
    run_target(
        db,
        [
            schema_msg(keys=keys),
            rec("a", user_id="u1", n=1, received_at=at(0)),
            rec("a", user_id="u2", n=1, received_at=at(0)),
        ],
    )
    run_target(db, [schema_msg(keys=keys), rec("a", user_id="u1", n=2, received_at=at(1))])
    assert query(db, "select message_id, user_id, n from rudderstack_raw.tracks order by 2") == [
        ("a", "u1", 2),
        ("a", "u2", 1),
    ]
    with pytest.raises(RuntimeError, match=r"NOT NULL.*message_id, user_id"):
        run_target(db, [schema_msg(keys=keys), rec("b", n=1, received_at=at(0))])


def test_null_key_in_the_window_fails_loudly_and_loads_nothing_of_the_batch(
    tmp_path: Path,
) -> None:
    db = tmp_path / "w.duckdb"
    run_target(db, [schema_msg(), rec("a", n=1, received_at=at(0))])
    batch = [rec("a", n=2, received_at=at(0)), rec("c", received_at=at(0))]
    with pytest.raises(RuntimeError, match=r"stream 'tracks'.*NOT NULL.*message_id"):
        run_target(db, [schema_msg(), *batch, rec(None, received_at=at(0))])  # type: ignore[arg-type]
    assert tracks(db) == [("a", 1, when(0))]  # the stored copy of "a" was not deleted either


def test_failure_after_the_delete_loses_no_row(tmp_path: Path) -> None:
    """Staging, DELETE and INSERT are one transaction: a failing INSERT undoes the DELETE.

    The table's `n` is narrower than the stream declares (TINYINT, kept with a warning): 1000
    is staged fine as BIGINT and the stored copy of "a" is deleted, then the INSERT's cast of
    "c" fails. A crash at that point (SIGKILL) commits nothing either, for the same reason.
    """
    db = tmp_path / "w.duckdb"
    con = duckdb.connect(str(db))
    con.execute("create schema rudderstack_raw")
    con.execute(
        "create table rudderstack_raw.tracks"
        " (message_id varchar not null, n tinyint, received_at timestamp)"
    )
    con.close()
    run_target(db, [schema_msg(), rec("a", n=1, received_at=at(0)), rec("b", received_at=at(0))])
    with pytest.raises(RuntimeError, match=r"(?s)stream 'tracks'.*1000"):
        run_target(
            db,
            [schema_msg(), rec("a", n=2, received_at=at(0)), rec("c", n=1000, received_at=at(0))],
        )
    assert tracks(db) == [("a", 1, when(0)), ("b", None, when(0))]
    # Nothing was left behind on the loader's side either: the next batch loads as usual.
    run_target(db, [schema_msg(), rec("a", n=2, received_at=at(0))])
    assert tracks(db) == [("a", 2, when(0)), ("b", None, when(0))]


def test_existing_table_with_a_primary_key_keeps_insert_or_replace(tmp_path: Path) -> None:
    db = tmp_path / "w.duckdb"
    # dedup_window_column "" turns the window off: a primary key, as earlier versions made.
    run_target(db, [schema_msg(), rec("a", n=1, received_at=at(0))], dedup_window_column="")
    assert primary_keys(db) == [("tracks", ["message_id"])]
    # Default settings now; a copy 500 h later is still replaced: the key index covers it all.
    run_target(db, [schema_msg(), rec("a", n=2, received_at=at(500)), rec("b", received_at=at(0))])
    assert tracks(db) == [("a", 2, when(500)), ("b", None, when(0))]
    assert primary_keys(db) == [("tracks", ["message_id"])]


def test_migration_from_a_primary_key_table(tmp_path: Path) -> None:
    """The one-off migration of docs/ingest.md ("Deduplication"), then the window applies."""
    db = tmp_path / "w.duckdb"
    run_target(
        db,
        [schema_msg(), rec("b", n=1, received_at=at(1)), rec("a", n=1, received_at=at(0))],
        dedup_window_column="",
    )
    con = duckdb.connect(str(db))
    try:
        con.execute(
            """
            begin;
            create table rudderstack_raw.tracks_by_window as
                select * from rudderstack_raw.tracks order by received_at;
            alter table rudderstack_raw.tracks_by_window alter column message_id set not null;
            drop table rudderstack_raw.tracks;
            alter table rudderstack_raw.tracks_by_window rename to tracks;
            commit;
            checkpoint;
            """
        )
    finally:
        con.close()
    assert primary_keys(db) == []
    run_target(db, [schema_msg(), rec("a", n=2, received_at=at(1))])
    run_target(db, [schema_msg(), rec("b", received_at=at(100))])  # beyond the window of b's copy
    assert tracks(db) == [("a", 2, when(1)), ("b", 1, when(1)), ("b", None, when(100))]
    with pytest.raises(RuntimeError, match="NOT NULL"):
        run_target(db, [schema_msg(), rec(None, received_at=at(0))])  # type: ignore[arg-type]


def test_delete_reads_only_the_row_groups_of_the_window(tmp_path: Path) -> None:
    """The DELETE's range is a literal that DuckDB pushes into the table scan as a filter:
    row groups whose min/max of received_at miss it are skipped, read by neither bound.

    DuckDB's profile counts the row groups each scan read; no timing is involved. The keys are
    random-looking, as messageIds are, so that their own min/max prune nothing.
    """
    group = 122_880  # rows per DuckDB row group
    con = duckdb.connect(str(tmp_path / "w.duckdb"))
    try:
        con.execute("set threads = 1")  # row groups filled one after the other
        con.execute("create table t (message_id varchar not null, received_at timestamp)")
        for day in range(4):  # one row group per day received, 10 days apart, in receive order
            con.execute(
                "insert into t select md5((? + i)::varchar), timestamp '2026-11-01' + to_days(?)"
                " from range(?) r(i)",
                [day * group, day * 10, group],
            )
        con.execute("checkpoint")
        # A batch holding copies of 1,000 events stored on day 10 (2026-11-11).
        con.execute(
            "create temp table batch as select md5((? + i)::varchar) as message_id"
            " from range(1000) r(i)",
            [group],
        )

        def scan_of_t(sql: str) -> dict[str, Any]:
            con.execute("begin")
            try:
                ((_, profile),) = con.execute(f"explain (analyze, format json) {sql}").fetchall()
            finally:
                con.execute("rollback")
            found = []

            def walk(node: dict[str, Any]) -> None:
                if node.get("type") == "TABLE_SCAN" and node["extra_info"]["Table"].endswith(".t"):
                    found.append(node)
                for child in node.get("children", []):
                    walk(child)

            for node in json.loads(profile)["operator"]:
                walk(node)
            (scan,) = found
            return scan

        windowed = delete_copies_sql(
            "t",
            "temp.main.batch",
            ["message_id"],
            window=("received_at", "2026-11-08", "2026-11-14"),
        )
        scan = scan_of_t(windowed)
        assert (scan["row_groups_scanned"], scan["total_row_groups_to_scan"]) == (1, 4)
        assert "received_at >=" in scan["extra_info"]["Filters"]  # a static filter of the scan
        assert "received_at <=" in scan["extra_info"]["Filters"]
        # Without the range every row group is read (the keys' min/max span them all).
        unbounded = scan_of_t(delete_copies_sql("t", "temp.main.batch", ["message_id"]))
        assert (unbounded["row_groups_scanned"], unbounded["total_row_groups_to_scan"]) == (4, 4)
        assert con.execute(windowed).fetchone() == (1000,)
    finally:
        con.close()


def test_memory_limit_applies_to_the_loaders_database_and_a_bad_one_is_named(
    tmp_path: Path,
) -> None:
    target = TargetDuckDBBulk(
        config={"filepath": str(tmp_path / "w.duckdb"), "memory_limit": "512MB"},
        parse_env_config=False,
        validate_config=True,
    )
    try:
        (limit,) = target.connection.execute("SELECT current_setting('memory_limit')").fetchone()
    finally:
        target.close()
    assert limit == "488.2 MiB"  # 512 MB as DuckDB prints it; its default is 80% of RAM
    bad = TargetDuckDBBulk(
        config={"filepath": str(tmp_path / "w.duckdb"), "memory_limit": "lots"},
        parse_env_config=False,
        validate_config=True,
    )
    with pytest.raises(ValueError, match="memory_limit 'lots' is not a size DuckDB takes"):
        bad.connection  # noqa: B018 (the property opens the database)
    bad.close()
