"""target-duckdb-bulk driven in-process with hand-written Singer message streams.

Each test builds the exact messages it needs, runs the target's real reader and sinks against a
fresh DuckDB file, then opens the file and checks the rows: duplicates collapse to the last one,
the first row of every batch survives (target-duckdb 0.8.0's bug), schemas evolve, BATCH files
load, date-times land as naive UTC, and STATE only follows loaded data.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import gzip
import io
import json
from pathlib import Path
from typing import Any

import duckdb
import pytest
from singer_sdk.exceptions import RecordsWithoutSchemaException
from target_duckdb_bulk.sinks import column_type, table_name
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
