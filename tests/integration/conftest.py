"""Fixtures shared by the integration tests (pytest finds them here; nothing imports them)."""

from __future__ import annotations

import subprocess
import uuid
from collections.abc import Iterator

import pytest
from testkit.harness import Warehouse

from tests.helpers import REPO_ROOT
from tests.helpers.meltano import MELTANO


@pytest.fixture(params=["duckdb", pytest.param("postgres", marks=pytest.mark.postgres)])
def engine_env(request, tmp_path) -> dict[str, str]:
    """The watch's engine settings: a DuckDB warehouse and ledger in tmp_path, or PostgreSQL."""
    if request.param == "duckdb":
        return {
            "SIGNALMAIL_DBT_TARGET": "duckdb",
            "SIGNALMAIL_DUCKDB_PATH": str(tmp_path / "warehouse.duckdb"),
            "SIGNALMAIL_LEDGER_PATH": str(tmp_path / "ledger.duckdb"),
        }
    return {
        "SIGNALMAIL_DBT_TARGET": "postgres",
        "SIGNALMAIL_PG_URL": request.getfixturevalue("pg_database"),
    }


@pytest.fixture(scope="session")
def meltano_installed() -> None:
    """The plugin venvs exist (`make test` runs `meltano install`; do it here when run alone)."""
    wanted = [
        REPO_ROOT / ".meltano/extractors/tap-rudderstack/venv/bin/tap-rudderstack",
        REPO_ROOT / ".meltano/loaders/target-duckdb-jwills/venv/bin/target-duckdb",
        REPO_ROOT / ".meltano/loaders/target-postgres/venv/bin/target-postgres",
    ]
    if not all(path.exists() for path in wanted):
        done = subprocess.run(
            [MELTANO, "install"], cwd=REPO_ROOT, capture_output=True, text=True, timeout=600
        )
        assert done.returncode == 0, done.stderr[-3000:]


@pytest.fixture
def pg_warehouse(tmp_path, pg_url: str, pg_schema: str) -> Iterator[Warehouse]:
    """A PostgreSQL warehouse in the test's schema, with raw and ledger schemas of its own.

    The models go to `pg_schema` (dropped by its fixture); the raw tables and the send ledger
    to two more schemas, dropped here afterwards.
    """
    import psycopg

    wh = Warehouse(
        dialect="postgres",
        schema=pg_schema,
        raw_schema=f"{pg_schema}_raw",
        ledger_schema=f"{pg_schema}_ledger_{uuid.uuid4().hex[:8]}",
        pg_url=pg_url,
        target_dir=tmp_path,
    )
    yield wh
    with psycopg.connect(pg_url, autocommit=True) as conn:
        for schema in (wh.raw_schema, wh.ledger_schema):
            conn.execute(f'drop schema if exists "{schema}" cascade')
