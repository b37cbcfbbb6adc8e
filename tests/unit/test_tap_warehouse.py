"""tap-warehouse against real DuckDB files: SDK standard tests, incremental state, selection,
paging, lock handling, errors; plus SQLite as "any other installed dialect"."""

from __future__ import annotations

import atexit
import datetime as dt
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import duckdb
import pytest
import sqlalchemy as sa
from singer_sdk.exceptions import ConfigValidationError
from singer_sdk.testing import get_tap_test_class
from tap_warehouse import connector as connector_module
from tap_warehouse.connector import WarehouseLockedError, duckdb_type
from tap_warehouse.streams import InvalidJSONColumnError, coerce_bookmark
from tap_warehouse.tap import TapWarehouse

from tests.helpers.warehouse import EMAIL_TRIGGERS_DDL, T0, run_tap, trigger_row, write_duckdb

# --------------------------------------------------------------- SDK standard tests (DuckDB)

_STANDARD_DIR = Path(tempfile.mkdtemp(prefix="tap_warehouse_std_"))
atexit.register(shutil.rmtree, _STANDARD_DIR, ignore_errors=True)
_STANDARD_DB = _STANDARD_DIR / "warehouse.duckdb"
write_duckdb(_STANDARD_DB, [trigger_row(n, T0 + dt.timedelta(minutes=n)) for n in range(1, 8)])
STANDARD_CONFIG = {
    "sqlalchemy_url": f"duckdb:///{_STANDARD_DB}",
    "schema": "marts",
    "tables": ["email_triggers", "other_mart"],
    "lock_timeout_seconds": 0,
}

TestTapWarehouseDuckDBStandard = get_tap_test_class(TapWarehouse, config=STANDARD_CONFIG)


# --------------------------------------------------------------------------- own tests


@pytest.fixture
def warehouse(tmp_path: Path) -> Path:
    path = tmp_path / "warehouse.duckdb"
    write_duckdb(path, [trigger_row(n, T0 + dt.timedelta(minutes=n)) for n in range(1, 6)])
    return path


def config_for(path: Path, **extra) -> dict:
    return {
        "sqlalchemy_url": f"duckdb:///{path}",
        "schema": "marts",
        "lock_timeout_seconds": 0,
        **extra,
    }


def test_discovery_names_stream_by_table_with_contract_keys(warehouse):
    catalog = json.loads(TapWarehouse(config=config_for(warehouse)).run_discovery())
    [entry] = catalog["streams"]
    assert entry["tap_stream_id"] == "email_triggers"
    assert entry["key_properties"] == ["trigger_id"]
    assert entry["replication_key"] == "computed_at"
    props = entry["schema"]["properties"]
    assert props["computed_at"]["format"] == "date-time"
    assert props["holdout"]["type"] == ["boolean"]
    assert props["payload"]["type"] == ["string"]  # JSON text stays text by default
    assert props["first_name"]["type"] == ["string", "null"]


def test_full_run_emits_every_row_once_in_replication_order(warehouse):
    records, _messages, state = run_tap(config_for(warehouse))
    assert [r["trigger_id"] for r in records] == ["t0001", "t0002", "t0003", "t0004", "t0005"]
    assert records[0]["computed_at"] == "2026-11-28T09:01:00.000000+00:00"
    assert json.loads(records[1]["payload"])["products"][0]["name"] == "Shoe 2"
    assert records[2]["first_name"] is None
    assert state["bookmarks"]["email_triggers"]["replication_key_value"] == (
        "2026-11-28T09:05:00.000000+00:00"
    )


def test_second_run_with_state_emits_only_newer_rows(warehouse):
    _, _, state = run_tap(config_for(warehouse))
    # dbt runs again: two new triggers, one recomputed row (computed_at moves), one late row
    # whose computed_at is older than the bookmark (never read without a lookback).
    con = duckdb.connect(str(warehouse))
    con.execute(
        "update marts.email_triggers set computed_at = ? where trigger_id = 't0002'",
        [T0 + dt.timedelta(minutes=20)],
    )
    con.close()
    write_duckdb(
        warehouse,
        [
            trigger_row(6, T0 + dt.timedelta(minutes=10)),
            trigger_row(7, T0 + dt.timedelta(minutes=30)),
            trigger_row(8, T0 + dt.timedelta(minutes=2)),  # late
        ],
        create=False,
    )
    records, _, new_state = run_tap(config_for(warehouse), state=state)
    # >= on the bookmark: t0005 (computed_at == bookmark) comes again; the ledger drops it.
    assert [r["trigger_id"] for r in records] == ["t0005", "t0006", "t0002", "t0007"]
    assert new_state["bookmarks"]["email_triggers"]["replication_key_value"] == (
        "2026-11-28T09:30:00.000000+00:00"
    )
    # Nothing new: only the rows sharing the bookmark value.
    records, _, _ = run_tap(config_for(warehouse), state=new_state)
    assert [r["trigger_id"] for r in records] == ["t0007"]


def test_lookback_rereads_late_rows(warehouse):
    _, _, state = run_tap(config_for(warehouse))
    write_duckdb(warehouse, [trigger_row(9, T0 + dt.timedelta(minutes=3))], create=False)
    records, _, _ = run_tap(config_for(warehouse), state=state)
    assert "t0009" not in {r["trigger_id"] for r in records}
    records, _, new_state = run_tap(
        config_for(warehouse, replication_lookback_seconds=180), state=state
    )
    # bookmark 09:05 - 180 s = 09:02; t0009 (09:03) sorts after t0003 on the key tie-break.
    assert [r["trigger_id"] for r in records] == ["t0002", "t0003", "t0009", "t0004", "t0005"]
    # The bookmark never moves backwards because of the re-read.
    assert new_state["bookmarks"]["email_triggers"]["replication_key_value"] == (
        "2026-11-28T09:05:00.000000+00:00"
    )


def test_paging_keeps_order_and_ties_without_loss_or_duplicates(tmp_path):
    path = tmp_path / "w.duckdb"
    same = T0 + dt.timedelta(minutes=1)
    write_duckdb(
        path,
        [trigger_row(n, same if n <= 7 else T0 + dt.timedelta(minutes=n)) for n in range(1, 12)],
    )
    records, _, _ = run_tap(config_for(path, page_size=3))
    ids = [r["trigger_id"] for r in records]
    assert ids == [f"t{n:04d}" for n in range(1, 12)]


def test_connection_is_released_between_pages(tmp_path):
    """While the stream is paused between pages (the target is busy), a writer can open the file."""
    path = tmp_path / "w.duckdb"
    write_duckdb(path, [trigger_row(n, T0 + dt.timedelta(minutes=n)) for n in range(1, 6)])
    tap = TapWarehouse(config=config_for(path, page_size=2), parse_env_config=False)
    stream = tap.streams["email_triggers"]
    rows = iter(stream.get_records(None))
    assert next(rows)["trigger_id"] == "t0001"
    writer = subprocess.run(
        [sys.executable, "-c", f"import duckdb; duckdb.connect({str(path)!r}).close()"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert writer.returncode == 0, writer.stderr
    assert [r["trigger_id"] for r in rows] == ["t0002", "t0003", "t0004", "t0005"]


def test_selection_drops_deselected_columns_and_streams(warehouse):
    config = config_for(warehouse, tables=["email_triggers", "other_mart"])
    catalog = json.loads(TapWarehouse(config=config).run_discovery())
    for entry in catalog["streams"]:
        for item in entry["metadata"]:
            if entry["tap_stream_id"] == "other_mart" and item["breadcrumb"] == []:
                item["metadata"]["selected"] = False
            if item["breadcrumb"] == ["properties", "email"]:
                item["metadata"]["selected"] = False
    records, messages, _ = run_tap(config, catalog=catalog)
    assert {m["stream"] for m in messages if m["type"] == "RECORD"} == {"email_triggers"}
    assert len(records) == 5
    assert all("email" not in r for r in records)
    # Primary and replication keys are automatic: they stay even when deselected.
    assert all(r["trigger_id"] and r["computed_at"] for r in records)


def test_other_marts_by_name_full_table_and_declared_key(warehouse):
    records, messages, _ = run_tap(config_for(warehouse, tables=["other_mart"]))
    schema = next(m for m in messages if m["type"] == "SCHEMA")
    assert schema["stream"] == "other_mart"
    assert schema["key_properties"] == ["id"]  # declared primary key, reflected
    assert records == [{"id": 1, "label": "one"}, {"id": 2, "label": "two"}]


def test_json_columns_parse_payload_and_reject_invalid_json(warehouse):
    config = config_for(warehouse, json_columns={"email_triggers": ["payload"]})
    records, messages, _ = run_tap(config)
    schema = next(m for m in messages if m["type"] == "SCHEMA")["schema"]
    assert "object" in schema["properties"]["payload"]["type"]
    assert records[0]["payload"]["currency"] == "EUR"
    write_duckdb(
        warehouse, [trigger_row(50, T0 + dt.timedelta(hours=1), payload="{oops")], create=False
    )
    with pytest.raises(InvalidJSONColumnError, match=r"'trigger_id': 't0050'.*'payload'"):
        run_tap(config)


def test_missing_table_lists_what_exists(warehouse):
    with pytest.raises(ConfigValidationError, match=r"'email_trigers'.*email_triggers.*other_mart"):
        run_tap(config_for(warehouse, tables=["email_trigers"]))


def test_unknown_replication_key_column_is_named(warehouse):
    with pytest.raises(ConfigValidationError, match=r"replication_keys.*\['computed'\]"):
        run_tap(config_for(warehouse, replication_keys={"email_triggers": "computed"}))


def test_replication_key_null_means_full_table(warehouse):
    records, _messages, state = run_tap(
        config_for(warehouse, replication_keys={"email_triggers": None})
    )
    assert len(records) == 5
    assert state["bookmarks"]["email_triggers"] == {}


def test_missing_duckdb_file_is_a_clear_config_error(tmp_path):
    with pytest.raises(ConfigValidationError, match=r"does not exist.*dbt"):
        run_tap(config_for(tmp_path / "nope.duckdb"))
    assert not (tmp_path / "nope.duckdb").exists()


def test_tap_never_writes_to_duckdb(warehouse):
    tap = TapWarehouse(config=config_for(warehouse), parse_env_config=False)
    with tap.tap_connector._connect() as conn, pytest.raises(sa.exc.DBAPIError, match="read-only"):
        conn.execute(sa.text("delete from marts.email_triggers"))


@pytest.fixture
def writer(warehouse):
    """A separate process holding the DuckDB file read-write, as dbt would.

    Leaving the `with` closes its stdin, which ends it, and waits for it.
    """
    with subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import duckdb, sys; c = duckdb.connect(sys.argv[1]); print('locked', flush=True); "
            "sys.stdin.read(); c.close()",
            str(warehouse),
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    ) as proc:
        assert proc.stdout.readline().strip() == "locked"
        yield proc


def test_locked_file_fails_clearly(warehouse, writer):
    with pytest.raises(WarehouseLockedError) as info:
        run_tap(config_for(warehouse))
    message = str(info.value)
    assert str(warehouse) in message
    assert "lock_timeout_seconds" in message
    assert f"PID {writer.pid}" in message


def test_lock_wait_succeeds_once_the_writer_finishes(warehouse, writer, monkeypatch):
    waits = []

    def release_then_sleep(seconds):
        # The tap reports it is waiting: let the "dbt run" finish, then continue polling.
        waits.append(seconds)
        if writer.poll() is None:
            writer.stdin.close()
            writer.wait(timeout=10)

    monkeypatch.setattr(connector_module, "sleep", release_then_sleep)
    records, _, _ = run_tap(config_for(warehouse, lock_timeout_seconds=30))
    assert len(records) == 5
    assert waits, "the tap should have met the lock and waited"


def test_sqlite_as_any_other_dialect(tmp_path):
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'w.sqlite'}")
    with engine.begin() as conn:
        conn.execute(sa.text(EMAIL_TRIGGERS_DDL.format(table="email_triggers")))
        # Through SQLAlchemy's types, as a loader would: SQLite keeps timestamps as text.
        table = sa.Table("email_triggers", sa.MetaData(), autoload_with=conn)
        conn.execute(
            table.insert(), [trigger_row(n, T0 + dt.timedelta(minutes=n)) for n in range(1, 4)]
        )
    engine.dispose()
    config = {"sqlalchemy_url": f"sqlite:///{tmp_path / 'w.sqlite'}"}
    records, _, state = run_tap(config)
    assert [r["trigger_id"] for r in records] == ["t0001", "t0002", "t0003"]
    records, _, _ = run_tap(config, state=state)
    assert [r["trigger_id"] for r in records] == ["t0003"]


@pytest.mark.parametrize(
    ("value", "column_type", "expected"),
    [
        ("2026-11-28T09:00:00.000000+00:00", sa.DateTime(), dt.datetime(2026, 11, 28, 9)),
        ("2026-11-28T10:00:00+01:00", sa.DateTime(), dt.datetime(2026, 11, 28, 9)),
        (
            "2026-11-28T09:00:00",
            sa.DateTime(timezone=True),
            dt.datetime(2026, 11, 28, 9, tzinfo=dt.UTC),
        ),
        ("2026-11-28", sa.Date(), dt.date(2026, 11, 28)),
        ("42", sa.Integer(), 42),
        ("abc", sa.String(), "abc"),
        (None, sa.DateTime(), None),
    ],
)
def test_coerce_bookmark(value, column_type, expected):
    assert coerce_bookmark(value, column_type) == expected


def test_duckdb_type_mapping():
    assert isinstance(duckdb_type("TIMESTAMP WITH TIME ZONE"), sa.DateTime)
    assert duckdb_type("TIMESTAMP WITH TIME ZONE").timezone is True
    decimal = duckdb_type("DECIMAL(18,3)")
    assert (decimal.precision, decimal.scale) == (18, 3)
    assert isinstance(duckdb_type("VARCHAR[]"), sa.ARRAY)
    assert isinstance(duckdb_type("STRUCT(a INTEGER)"), sa.JSON)
    assert isinstance(duckdb_type("JSON"), sa.JSON)


def test_console_script_runs_incrementally_with_a_state_file(warehouse, tmp_path):
    """The installed `tap-warehouse` executable, as Meltano invokes it."""
    executable = Path(sys.executable).with_name("tap-warehouse")
    config = tmp_path / "config.json"
    config.write_text(json.dumps(config_for(warehouse)))
    about = subprocess.run(
        [executable, "--about", "--format", "json"], capture_output=True, text=True, check=True
    )
    settings = json.loads(about.stdout)["settings"]["properties"]
    assert settings["sqlalchemy_url"]["secret"] is True
    assert {
        "sqlalchemy_url",
        "schema",
        "tables",
        "replication_keys",
        "lock_timeout_seconds",
    } <= set(settings)
    first = subprocess.run(
        [executable, "--config", config], capture_output=True, text=True, check=True
    )
    messages = [json.loads(line) for line in first.stdout.splitlines()]
    assert sum(m["type"] == "RECORD" for m in messages) == 5
    state = tmp_path / "state.json"
    state.write_text(json.dumps([m for m in messages if m["type"] == "STATE"][-1]["value"]))
    second = subprocess.run(
        [executable, "--config", config, "--state", state],
        capture_output=True,
        text=True,
        check=True,
    )
    records = [json.loads(line) for line in second.stdout.splitlines()]
    assert [m["record"]["trigger_id"] for m in records if m["type"] == "RECORD"] == ["t0005"]
    assert str(warehouse) not in first.stderr  # the URL (a secret setting) is never logged


def test_file_open_read_write_in_this_process_is_explained(warehouse):
    con = duckdb.connect(str(warehouse))
    try:
        with pytest.raises(WarehouseLockedError, match=r"already open read-write in this process"):
            run_tap(config_for(warehouse))
    finally:
        con.close()
    assert len(run_tap(config_for(warehouse))[0]) == 5


def test_column_comments_become_descriptions(warehouse):
    """dbt's persist_docs writes column descriptions as comments; the catalog carries them."""
    con = duckdb.connect(str(warehouse))
    con.execute("comment on column marts.email_triggers.computed_at is 'Naive UTC build time'")
    con.close()
    catalog = json.loads(TapWarehouse(config=config_for(warehouse)).run_discovery())
    props = catalog["streams"][0]["schema"]["properties"]
    assert props["computed_at"]["description"] == "Naive UTC build time"
    assert "description" not in props["email"]
