"""Run the dbt project against a chosen warehouse from tests and benches.

Each call is a `dbt` CLI subprocess: dbt-duckdb keeps one DuckDB handle per process and dbtRunner
cannot switch profiles safely inside one process, so tests that use several warehouses isolate
every invocation. `TickRunner` is the long-lived dbtRunner of `signalmail watch` (one per
process).
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

from signalmail.watch import DbtFailed, WarmDbt

from testkit.spark import iceberg_jar

__all__ = [
    "PROJECT_DIR",
    "DbtFailed",
    "TickRunner",
    "Warehouse",
    "relation_rows",
    "run_dbt",
    "snapshot",
    "start_spark",
]

PROJECT_DIR = Path(__file__).resolve().parents[1]
DBT = Path(sys.executable).with_name("dbt")


@dataclass
class Warehouse:
    """Where one dbt run reads raw events and writes models.

    dialect: "duckdb", "postgres" or "spark". For DuckDB `duckdb_path` and `ledger_path` are
    files; for Postgres the connection is `pg_url` (postgresql://user:password@host:port/database);
    for Spark `spark_dir` holds the Iceberg warehouse and the Derby metastore, and every dbt call
    runs inside this process (testkit.spark).
    """

    dialect: str
    schema: str
    raw_schema: str = "rudderstack_raw"
    ledger_schema: str = "signalmail_ledger"
    duckdb_path: Path | None = None
    ledger_path: Path | None = None
    pg_url: str | None = None
    spark_dir: Path | None = None
    target_dir: Path | None = None

    def env(self) -> dict[str, str]:
        """Environment for a dbt subprocess (profiles.yml reads only these)."""
        env = dict(os.environ)
        env["SIGNALMAIL_DBT_TARGET"] = self.dialect
        env["SIGNALMAIL_DBT_SCHEMA"] = self.schema
        env["DBT_SEND_ANONYMOUS_USAGE_STATS"] = "false"
        if self.dialect == "duckdb":
            env["SIGNALMAIL_DUCKDB_PATH"] = str(self.duckdb_path)
            env["SIGNALMAIL_LEDGER_PATH"] = str(self.ledger_path)
        elif self.dialect == "spark":
            env["SIGNALMAIL_SPARK_DIR"] = str(self.spark_dir)
            env["SIGNALMAIL_SPARK_JARS"] = str(iceberg_jar())
        elif self.pg_url:
            env["SIGNALMAIL_PG_URL"] = self.pg_url
        if self.target_dir is not None:
            env["DBT_TARGET_PATH"] = str(self.target_dir / "target")
            env["DBT_LOG_PATH"] = str(self.target_dir / "logs")
        return env

    def dbt_vars(self, **extra: Any) -> str:
        """Build the --vars argument: schemas of the inputs plus any overrides."""
        values = {"raw_schema": self.raw_schema, "ledger_schema": self.ledger_schema, **extra}
        return json.dumps(values)


def project_args(warehouse: Warehouse, dbt_vars: dict[str, Any] | None = None) -> list[str]:
    """Build the arguments every dbt invocation here takes: project, profiles, vars."""
    return [
        "--project-dir",
        str(PROJECT_DIR),
        "--profiles-dir",
        str(PROJECT_DIR),
        "--vars",
        warehouse.dbt_vars(**(dbt_vars or {})),
    ]


def run_dbt(warehouse: Warehouse, *args: str, dbt_vars: dict[str, Any] | None = None) -> str:
    """Run `dbt <args>` for the warehouse; return its output or raise DbtFailed with it."""
    if warehouse.dialect == "spark":
        return _run_dbt_in_process(warehouse, list(args), dbt_vars)
    command = [str(DBT), *args, *project_args(warehouse, dbt_vars)]
    completed = subprocess.run(  # noqa: S603 - fixed executable, arguments built here
        command,
        env=warehouse.env(),
        cwd=PROJECT_DIR,
        capture_output=True,
        text=True,
        check=False,
    )
    if completed.returncode != 0:
        tail = "\n".join(completed.stdout.splitlines()[-60:])
        raise DbtFailed(f"dbt {' '.join(args)} exited {completed.returncode}:\n{tail}")
    return completed.stdout


def start_spark(warehouse: Warehouse) -> None:
    """Start this process's Spark session as dbt's profile configures it (Iceberg, metastore).

    The first dbt call creates it; a Spark session started any other way would lack the
    profile's settings, which only apply when the JVM starts.
    """
    run_dbt(warehouse, "show", "--inline", "select 1 as ready")


def _run_dbt_in_process(
    warehouse: Warehouse, args: list[str], dbt_vars: dict[str, Any] | None
) -> str:
    """Run dbt on Spark in this process.

    One Spark session (one JVM, the only one the embedded metastore admits) then serves every
    call and the test's own queries (testkit.spark).
    """
    from dbt.cli.main import dbtRunner

    # profiles.yml reads these through env_var(); dbt has no other way to be given them. They
    # are put back afterwards, so that later calls and tests in this process see their own.
    saved = dict(os.environ)
    os.environ.update(warehouse.env())
    try:
        result = dbtRunner().invoke([*args, *project_args(warehouse, dbt_vars)])
    finally:
        os.environ.clear()
        os.environ.update(saved)
    DbtFailed.raise_for(result, args)
    return str(result.result)


class TickRunner(WarmDbt):
    """The long-lived dbtRunner of `signalmail watch` (WarmDbt) on a test or bench warehouse.

    One per process and warehouse: dbt-duckdb keeps one DuckDB handle per process and holds the
    file open between invocations, so on DuckDB the loader must write through the same process.
    """

    def __init__(
        self,
        warehouse: Warehouse,
        dbt_vars: dict[str, Any] | None = None,
        file_log_level: str = "none",
    ) -> None:
        values = {"raw_schema": warehouse.raw_schema, "ledger_schema": warehouse.ledger_schema}
        super().__init__(
            PROJECT_DIR, warehouse.env(), {**values, **(dbt_vars or {})}, file_log_level
        )


def _normalise(value: Any) -> Any:
    if isinstance(value, float | Decimal):
        number = float(value)
        return None if math.isnan(number) else round(number, 6)
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, dict | list):
        return json.dumps(value, sort_keys=True)
    if isinstance(value, str) and value[:1] in "{[":
        try:
            return json.dumps(_round_json(json.loads(value)), sort_keys=True)
        except ValueError:
            return value
    return value


def _round_json(value: Any) -> Any:
    if isinstance(value, float):
        return round(value, 6)
    if isinstance(value, dict):
        return {key: _round_json(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_round_json(item) for item in value]
    return value


def relation_rows(conn: Any, schema: str, relation: str) -> list[tuple[Any, ...]]:
    """All rows of a relation, normalised (floats rounded, JSON canonical) and sorted."""
    cursor = conn.execute(f'select * from "{schema}"."{relation}"')  # noqa: S608
    rows = [tuple(_normalise(value) for value in row) for row in cursor.fetchall()]
    return sorted(rows, key=repr)


def snapshot(conn: Any, schema: str, relations: list[str]) -> dict[str, list[tuple[Any, ...]]]:
    """Rows of several relations, for comparing two builds of the same data."""
    return {relation: relation_rows(conn, schema, relation) for relation in relations}
