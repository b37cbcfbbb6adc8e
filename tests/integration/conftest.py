"""Fixtures shared by the integration tests (pytest finds them here; nothing imports them)."""

from __future__ import annotations

import subprocess

import pytest

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
