"""`on_schema_change` still guards the incremental models (macros/schema_changes.sql).

The project replaces dbt's check with one query that lists the new columns and counts those
that differ from the stored table's, and falls back to dbt's comparison only when some do.
These runs prove, on DuckDB and on Postgres, that an unchanged model takes the one-query path,
and that a change is still seen: staging appends a column its stored table lacks, and a state
model whose stored table has a column its SQL no longer makes stops with dbt's own error
instead of silently ignoring it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import duckdb
import pytest
from testkit import raw_events, scenario
from testkit.harness import DbtFailed, Warehouse, run_dbt

from tests.helpers.dbt_log import log_lines, log_size

pytestmark = pytest.mark.slow

AS_OF = {"as_of": scenario.AS_OF}


def _columns(conn: Any, schema: str, table: str) -> list[str]:
    rows = conn.execute(
        "select column_name from information_schema.columns"
        f" where table_schema = '{schema}' and table_name = '{table}' order by ordinal_position"
    ).fetchall()
    return [name for (name,) in rows]


def check_schema_changes(connect: Callable[[], Any], dialect: str, wh: Warehouse) -> None:
    with connect() as conn:
        raw_events.create_raw_tables(conn, dialect, wh.raw_schema)
        raw_events.load_events(conn, dialect, scenario.scenario(), wh.raw_schema)
    run_dbt(wh, "run", "--select", "+int_orders", dbt_vars=AS_OF)

    # nothing changed: the check is the one query, and says so in its short form
    start = log_size(wh)
    run_dbt(wh, "run", "--select", "int_orders", dbt_vars=AS_OF)
    checks = [line for line in log_lines(wh, start) if "schema changed:" in line]
    assert any(line.endswith('int_orders": schema changed: False') for line in checks), checks

    with connect() as conn:
        built = _columns(conn, wh.schema, "stg_rudderstack__identifies")
        assert "locale" in built
        conn.execute(f'alter table "{wh.schema}".stg_rudderstack__identifies drop column locale')
        conn.execute(f'alter table "{wh.schema}".int_orders add column retired_column integer')

    # staging: append_new_columns puts the missing column back, at the end
    start = log_size(wh)
    run_dbt(wh, "run", "--select", "stg_rudderstack__identifies", dbt_vars=AS_OF)
    with connect() as conn:
        appended = _columns(conn, wh.schema, "stg_rudderstack__identifies")
    assert sorted(appended) == sorted(built)
    assert appended[-1] == "locale"
    # and it was this project's check that saw it, through dbt's comparison (dbt's own check
    # logs "Schema changed: True")
    checks = [line for line in log_lines(wh, start) if "schema changed:" in line]
    assert any(
        'stg_rudderstack__identifies": schema changed: True; source columns not in target:' in line
        and "locale" in line
        for line in checks
    ), checks

    # state models: fail, naming the column
    with pytest.raises(DbtFailed) as failure:
        run_dbt(wh, "run", "--select", "int_orders", dbt_vars=AS_OF)
    assert "out of sync" in str(failure.value)
    assert "retired_column" in str(failure.value)


def test_schema_changes_duckdb(tmp_path):
    wh = Warehouse(
        dialect="duckdb",
        schema="signals",
        duckdb_path=tmp_path / "warehouse.duckdb",
        ledger_path=tmp_path / "ledger.duckdb",
        target_dir=tmp_path,
    )
    check_schema_changes(lambda: duckdb.connect(str(wh.duckdb_path)), "duckdb", wh)


@pytest.mark.postgres
def test_schema_changes_postgres(pg_warehouse):
    import psycopg

    def connect():
        return psycopg.connect(pg_warehouse.pg_url, autocommit=True)

    check_schema_changes(connect, "postgres", pg_warehouse)
