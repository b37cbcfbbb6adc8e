"""Run the dbt project against a chosen warehouse from tests and benches.

Each call is a `dbt` CLI subprocess: dbt-duckdb keeps one DuckDB handle per process and dbtRunner
cannot switch profiles safely inside one process, so tests that use several warehouses isolate
every invocation. `TickRunner` is the long-lived dbtRunner of the bench (one per process).
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

PROJECT_DIR = Path(__file__).resolve().parents[1]
DBT = Path(sys.executable).with_name("dbt")


class DbtFailed(RuntimeError):
    """A dbt invocation exited non-zero; the message carries dbt's own error lines."""


@dataclass
class Warehouse:
    """Where one dbt run reads raw events and writes models.

    dialect: "duckdb" or "postgres". For DuckDB `duckdb_path` and `ledger_path` are files; for
    Postgres the connection comes from `pg` (host, port, user, password, database).
    """

    dialect: str
    schema: str
    raw_schema: str = "rudderstack_raw"
    ledger_schema: str = "signalmail_ledger"
    duckdb_path: Path | None = None
    ledger_path: Path | None = None
    pg: dict[str, str] = field(default_factory=dict)
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
        else:
            for key, value in self.pg.items():
                env[f"SIGNALMAIL_PG_{key.upper()}"] = str(value)
        if self.target_dir is not None:
            env["DBT_TARGET_PATH"] = str(self.target_dir / "target")
            env["DBT_LOG_PATH"] = str(self.target_dir / "logs")
        return env

    def dbt_vars(self, **extra: Any) -> str:
        """Build the --vars argument: schemas of the inputs plus any overrides."""
        values = {"raw_schema": self.raw_schema, "ledger_schema": self.ledger_schema, **extra}
        return json.dumps(values)


def pg_settings(url: str) -> dict[str, str]:
    """`Warehouse.pg` from a postgresql:// URL (profiles.yml's SIGNALMAIL_PG_* settings)."""
    parts = urlparse(url)
    return {
        "host": parts.hostname or "127.0.0.1",
        "port": str(parts.port or 5432),
        "user": parts.username or "",
        "password": parts.password or "",
        "database": parts.path.lstrip("/"),
    }


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


class TickRunner:
    """A long-lived dbtRunner for near-real-time ticks: the project is parsed once, not per tick.

    Use one per process and warehouse (dbt-duckdb keeps one DuckDB handle per process, and holds
    the file open between invocations: on DuckDB the loader must write through the same process).

    dbt keeps compile state on the manifest's nodes (`compiled`, `extra_ctes_injected`), so a
    reused manifest would neither re-inject ephemeral models on the next invocation
    (`__dbt__cte__... does not exist`) nor recompile them (stg_signalmail__send_ledger decides at
    compile time whether the ledger exists). `invoke()` clears that state first, as a fresh
    parse would.
    Each invocation skips writing manifest.json and run_results.json: the result comes back in
    memory, and rewriting an unchanged manifest was a tenth of a tick.

    It logs nothing by default: dbt formats every event (each SQL statement, each node) for
    each logger before the logger's level filters it, so even `--quiet` or a file log at
    `warn` pays for debug-level formatting: a fifth of a tick's Python time (py-spy). Failures
    still come back, as DbtFailed with each failed node's message. Pass
    `file_log_level="debug"` to see a tick's statements in `logs/dbt.log`.
    """

    def __init__(
        self,
        warehouse: Warehouse,
        dbt_vars: dict[str, Any] | None = None,
        file_log_level: str = "none",
    ) -> None:
        from dbt.cli.main import dbtRunner

        os.environ.update(warehouse.env())
        self.common = [
            *project_args(warehouse, dbt_vars),
            "--log-level",
            "none",
            "--log-level-file",
            file_log_level,
        ]
        parsed = dbtRunner().invoke(["parse", "--quiet", *self.common])
        if not parsed.success:
            raise DbtFailed(f"dbt parse failed: {parsed.exception}")
        self.manifest = parsed.result
        self.runner = dbtRunner(manifest=self.manifest)

    def invoke(self, *args: str) -> Any:
        """Run `dbt <args>` on the parsed project; return dbt's result or raise DbtFailed."""
        for node in self.manifest.nodes.values():
            if hasattr(node, "extra_ctes_injected"):
                node.compiled = False
                node.extra_ctes_injected = False
                node.extra_ctes = []
                if hasattr(node, "_pre_injected_sql"):
                    node._pre_injected_sql = None
        result = self.runner.invoke([*args, "--no-write-json", *self.common])
        if not result.success:
            failed = [
                f"{item.node.unique_id}: {item.message}"
                for item in getattr(result.result, "results", None) or []
                if str(item.status) in ("error", "fail")
            ]
            raise DbtFailed(f"dbt {' '.join(args)} failed: {failed or result.exception}")
        return result


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
