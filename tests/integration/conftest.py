"""Fixtures shared by the integration tests (pytest finds them here; nothing imports them)."""

from __future__ import annotations

import pytest


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
