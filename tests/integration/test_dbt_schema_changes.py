"""`on_schema_change` still guards the incremental models (macros/schema_changes.sql).

The project replaces dbt's check with one that reads columns through the macro instead of the
adapter method. These runs prove it still sees a change: staging appends a column its stored
table lacks, and a state model whose stored table has a column its SQL no longer makes stops
with dbt's own error instead of silently ignoring it.
"""

from __future__ import annotations

import sys

import duckdb
import pytest

from tests.conftest import REPO_ROOT

sys.path.insert(0, str(REPO_ROOT / "dbt_project"))

from testkit import raw_events, scenario
from testkit.harness import DbtFailed, Warehouse, run_dbt

pytestmark = pytest.mark.slow

AS_OF = {"as_of": scenario.AS_OF}


def _columns(conn, table: str) -> list[str]:
    rows = conn.execute(
        "select column_name from information_schema.columns"
        " where table_schema = 'signals' and table_name = ? order by ordinal_position",
        [table],
    ).fetchall()
    return [name for (name,) in rows]


def test_schema_changes_are_appended_or_refused(tmp_path):
    wh = Warehouse(
        dialect="duckdb",
        schema="signals",
        duckdb_path=tmp_path / "warehouse.duckdb",
        ledger_path=tmp_path / "ledger.duckdb",
        target_dir=tmp_path,
    )
    with duckdb.connect(str(wh.duckdb_path)) as conn:
        raw_events.create_raw_tables(conn, "duckdb")
        raw_events.load_events(conn, "duckdb", scenario.scenario())
    run_dbt(wh, "run", "--select", "+int_orders", dbt_vars=AS_OF)
    with duckdb.connect(str(wh.duckdb_path)) as conn:
        built = _columns(conn, "stg_rudderstack__identifies")
        assert "locale" in built
        conn.execute("alter table signals.stg_rudderstack__identifies drop column locale")
        conn.execute("alter table signals.int_orders add column retired_column integer")

    # staging: append_new_columns puts the missing column back, at the end
    run_dbt(wh, "run", "--select", "stg_rudderstack__identifies", dbt_vars=AS_OF)
    with duckdb.connect(str(wh.duckdb_path)) as conn:
        appended = _columns(conn, "stg_rudderstack__identifies")
    assert sorted(appended) == sorted(built)
    assert appended[-1] == "locale"
    # and it was this project's check that saw it (dbt's own logs "Schema changed: True")
    log = (tmp_path / "logs" / "dbt.log").read_text()
    assert 'stg_rudderstack__identifies": schema changed: True' in log

    # state models: fail, naming the column
    with pytest.raises(DbtFailed) as failure:
        run_dbt(wh, "run", "--select", "int_orders", dbt_vars=AS_OF)
    assert "out of sync" in str(failure.value)
    assert "retired_column" in str(failure.value)
