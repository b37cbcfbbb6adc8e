"""email_triggers' contract stops a build that would store a null, on every engine.

The target sends what `email_triggers` holds, so a row without its `trigger_id` (the send's
idempotency key) or its `email` must never reach it. The YAML's `not_null` constraints become
the table's NOT NULL columns on DuckDB and PostgreSQL, and its required columns on Spark's
Iceberg tables (macros/adapters.sql, `spark__create_table_as`). Where the rules' union
`int_trigger_candidates` is a table (PostgreSQL, Spark; DuckDB inlines it), a candidate is
spoiled to prove the rest: the build fails, naming the column, and the table keeps the rows of
the last good build. The Spark test (tests/spark) runs the same checks.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import duckdb
import pytest
import yaml
from testkit import raw_events, scenario
from testkit.harness import PROJECT_DIR, DbtFailed, Warehouse, relation_rows, run_dbt

pytestmark = pytest.mark.slow

AS_OF = {"as_of": scenario.AS_OF}

# how each engine says that a null reached a required column
NULL_REFUSED = {
    "duckdb": "NOT NULL constraint failed",
    "postgres": "violates not-null constraint",
    "spark": "Null value appeared in non-nullable field",
}


def contract_required() -> set[str]:
    """The columns email_triggers' YAML gives a not_null constraint."""
    document = yaml.safe_load((PROJECT_DIR / "models/marts/email_triggers.yml").read_text())
    (model,) = document["models"]
    return {
        column["name"]
        for column in model["columns"]
        if any(c["type"] == "not_null" for c in column.get("constraints", []))
    }


def check_required_columns(conn: Any, dialect: str, schema: str) -> None:
    """The warehouse's email_triggers refuses nulls in exactly the contract's not_null columns."""
    if dialect == "spark":
        fields = conn.session.table(f"{schema}.email_triggers").schema.fields
        nullable = {field.name: field.nullable for field in fields}
    else:
        rows = conn.execute(
            "select column_name, is_nullable from information_schema.columns"
            f" where table_schema = '{schema}' and table_name = 'email_triggers'"
        ).fetchall()
        nullable = {name: flag == "YES" for name, flag in rows}
    required = contract_required()
    assert {"trigger_id", "email", "send_after"} <= required  # the YAML still says so
    assert {name for name, flag in nullable.items() if not flag} == required, nullable


def check_null_stops_build(
    connect: Callable[[], Any], dialect: str, wh: Warehouse, dbt_vars: dict[str, Any]
) -> None:
    """On a built warehouse: a candidate whose trigger_id turns null fails email_triggers' build,
    which leaves the table as it was; mended, the next build gives the same rows again."""
    with connect() as conn:
        before = relation_rows(conn, wh.schema, "email_triggers")
        assert before, "no email_triggers row: the check needs one to spoil"
        victim = before[0][0]  # trigger_id, the contract's first column
        conn.execute(
            f'update "{wh.schema}".int_trigger_candidates set trigger_id = null'
            f" where trigger_id = '{victim}'"
        )

    with pytest.raises(DbtFailed) as failed:
        run_dbt(wh, "run", "--select", "email_triggers", dbt_vars=dbt_vars)
    message = str(failed.value)
    assert NULL_REFUSED[dialect] in message, message[-2000:]
    assert "trigger_id" in message, message[-2000:]

    with connect() as conn:
        assert relation_rows(conn, wh.schema, "email_triggers") == before
        conn.execute(
            f"update \"{wh.schema}\".int_trigger_candidates set trigger_id = '{victim}'"
            " where trigger_id is null"
        )
    run_dbt(wh, "run", "--select", "email_triggers", dbt_vars=dbt_vars)
    with connect() as conn:
        assert relation_rows(conn, wh.schema, "email_triggers") == before


def build(connect: Callable[[], Any], dialect: str, wh: Warehouse) -> None:
    with connect() as conn:
        raw_events.create_raw_tables(conn, dialect, wh.raw_schema)
        raw_events.load_events(conn, dialect, scenario.background(), wh.raw_schema)
        raw_events.load_events(conn, dialect, scenario.scenario(), wh.raw_schema)
    run_dbt(wh, "run", "--full-refresh", dbt_vars=AS_OF)


def test_null_stops_build_duckdb(tmp_path):
    path = tmp_path / "warehouse.duckdb"
    wh = Warehouse(
        dialect="duckdb",
        schema="signals",
        duckdb_path=path,
        ledger_path=tmp_path / "none.duckdb",
        target_dir=tmp_path,
    )

    def connect():
        return duckdb.connect(str(path))

    build(connect, "duckdb", wh)
    with connect() as conn:
        check_required_columns(conn, "duckdb", wh.schema)


@pytest.mark.postgres
def test_null_stops_build_postgres(pg_warehouse):
    import psycopg

    def connect():
        return psycopg.connect(pg_warehouse.pg_url, autocommit=True)

    build(connect, "postgres", pg_warehouse)
    with connect() as conn:
        check_required_columns(conn, "postgres", pg_warehouse.schema)
    check_null_stops_build(connect, "postgres", pg_warehouse, AS_OF)
