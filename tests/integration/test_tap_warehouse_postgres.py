"""tap-warehouse against the real PostgreSQL server: the same settings as on DuckDB."""

from __future__ import annotations

import atexit
import datetime as dt
import json
import os
import uuid

import psycopg
import pytest
import sqlalchemy as sa
from singer_sdk.exceptions import ConfigValidationError
from singer_sdk.testing import get_tap_test_class
from tap_warehouse.connector import WarehouseConnectionError
from tap_warehouse.tap import TapWarehouse

from tests.helpers.servers import DEFAULT_PG_URL
from tests.helpers.warehouse import EMAIL_TRIGGERS_DDL, T0, run_tap, trigger_row

pytestmark = pytest.mark.postgres

PG_URL = os.environ.get("SIGNALMAIL_PG_URL", DEFAULT_PG_URL)
SA_URL = PG_URL.replace("postgresql://", "postgresql+psycopg://", 1)


def _server_up() -> bool:
    try:
        with psycopg.connect(PG_URL, connect_timeout=3) as conn:
            conn.execute("select 1")
    except psycopg.OperationalError:
        if os.environ.get("CI"):
            raise
        return False
    return True


def load_rows(schema: str, rows: list[dict], create: bool = True) -> None:
    engine = sa.create_engine(SA_URL, poolclass=sa.pool.NullPool)
    with engine.begin() as conn:
        if create:
            conn.execute(sa.text(EMAIL_TRIGGERS_DDL.format(table=f'"{schema}".email_triggers')))
        table = sa.Table("email_triggers", sa.MetaData(), schema=schema, autoload_with=conn)
        if rows:
            conn.execute(table.insert(), rows)


if not _server_up():
    pytest.skip("PostgreSQL not reachable; run scripts/start-postgres.sh", allow_module_level=True)

# The SDK's standard suite needs its config when the class is built, so its schema is made here.
_STANDARD_SCHEMA = f"t_std_{uuid.uuid4().hex[:10]}"
with psycopg.connect(PG_URL, autocommit=True) as _conn:
    _conn.execute(f'create schema "{_STANDARD_SCHEMA}"')
load_rows(_STANDARD_SCHEMA, [trigger_row(n, T0 + dt.timedelta(minutes=n)) for n in range(1, 6)])


def _drop_standard_schema() -> None:
    with psycopg.connect(PG_URL, autocommit=True) as conn:
        conn.execute(f'drop schema if exists "{_STANDARD_SCHEMA}" cascade')


atexit.register(_drop_standard_schema)

TestTapWarehousePostgresStandard = get_tap_test_class(
    TapWarehouse,
    config={"sqlalchemy_url": SA_URL, "schema": _STANDARD_SCHEMA},
)


def pg_config(schema: str, **extra) -> dict:
    return {"sqlalchemy_url": SA_URL, "schema": schema, **extra}


def test_incremental_runs_on_postgres(pg_schema):
    load_rows(pg_schema, [trigger_row(n, T0 + dt.timedelta(minutes=n)) for n in range(1, 4)])
    records, messages, state = run_tap(pg_config(pg_schema))
    assert [r["trigger_id"] for r in records] == ["t0001", "t0002", "t0003"]
    schema = next(m for m in messages if m["type"] == "SCHEMA")
    assert schema["stream"] == "email_triggers"  # same stream name as on DuckDB
    assert schema["key_properties"] == ["trigger_id"]
    assert records[0]["computed_at"] == "2026-11-28T09:01:00.000000+00:00"
    assert state["bookmarks"]["email_triggers"]["replication_key_value"] == (
        "2026-11-28T09:03:00.000000+00:00"
    )
    load_rows(
        pg_schema,
        [
            trigger_row(4, T0 + dt.timedelta(minutes=4)),
            trigger_row(5, T0 - dt.timedelta(minutes=4)),
        ],
        create=False,
    )
    records, _, _ = run_tap(pg_config(pg_schema), state=state)
    assert [r["trigger_id"] for r in records] == ["t0003", "t0004"]


def test_timestamptz_key_and_jsonb_payload(pg_schema):
    engine = sa.create_engine(SA_URL, poolclass=sa.pool.NullPool)
    with engine.begin() as conn:
        conn.execute(
            sa.text(
                f'create table "{pg_schema}".events_mart (id text primary key, '
                f"computed_at timestamptz not null, payload jsonb not null)"
            )
        )
        conn.execute(
            sa.text(
                f'insert into "{pg_schema}".events_mart values '
                "('a', '2026-11-28 10:00:00+01', '{\"k\": [1, 2]}'), "
                "('b', '2026-11-28 09:30:00+00', '{\"k\": []}')"
            )
        )
    config = pg_config(
        pg_schema, tables=["events_mart"], replication_keys={"events_mart": "computed_at"}
    )
    records, _, state = run_tap(config)
    assert [r["id"] for r in records] == ["a", "b"]  # 09:00 UTC before 09:30 UTC
    assert records[0]["payload"] == {"k": [1, 2]}
    assert records[0]["computed_at"] == "2026-11-28T09:00:00.000000+00:00"
    records, _, _ = run_tap(config, state=state)
    assert [r["id"] for r in records] == ["b"]


def test_sessions_are_read_only(pg_schema):
    load_rows(pg_schema, [trigger_row(1, T0)])
    tap = TapWarehouse(config=pg_config(pg_schema), parse_env_config=False)
    with tap.tap_connector._connect() as conn, pytest.raises(sa.exc.DBAPIError, match="read-only"):
        conn.execute(sa.text(f'delete from "{pg_schema}".email_triggers'))


def test_missing_table_error_hides_the_password(pg_schema):
    with pytest.raises(ConfigValidationError) as info:
        run_tap(pg_config(pg_schema))
    message = str(info.value)
    assert pg_schema in message
    assert ":***@" in message
    assert f":{sa.engine.make_url(SA_URL).password}@" not in message


def test_payload_is_valid_json_text(pg_schema):
    load_rows(pg_schema, [trigger_row(1, T0)])
    [record], _, _ = run_tap(pg_config(pg_schema))
    assert json.loads(record["payload"])["currency"] == "EUR"


def test_bad_credentials_fail_clearly_without_the_password(pg_schema):
    wrong = sa.engine.make_url(SA_URL).set(password="not-the-Secret-42")
    with pytest.raises(WarehouseConnectionError) as info:
        run_tap(
            {"sqlalchemy_url": wrong.render_as_string(hide_password=False), "schema": pg_schema}
        )
    message = str(info.value)
    assert message.startswith(f"Cannot connect to {wrong.render_as_string(hide_password=True)}")
    assert ":***@" in message
    assert "password authentication failed" in message
    assert "not-the-Secret-42" not in message


def test_column_comments_become_descriptions(pg_schema):
    load_rows(pg_schema, [])
    engine = sa.create_engine(SA_URL, poolclass=sa.pool.NullPool)
    with engine.begin() as conn:
        conn.execute(sa.text(f"comment on column \"{pg_schema}\".email_triggers.payload is 'JSON'"))
    catalog = json.loads(TapWarehouse(config=pg_config(pg_schema)).run_discovery())
    assert catalog["streams"][0]["schema"]["properties"]["payload"]["description"] == "JSON"
