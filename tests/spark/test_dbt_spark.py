"""The dbt project on Apache Spark in local mode: Iceberg tables, the project's incremental
strategies, the email_triggers contract with its not_null constraints (docs/spark.md).

One test, folded so that the JVM starts once and the run stays within 10-15 minutes: the scenario
of tests/integration/test_dbt_incremental.py (an initial full refresh, two near-real-time
ticks of the trigger path, a nightly run, each after a messy batch) must give the same rows
in every persisted model as the nightly build from scratch into a second schema, which also
runs the data and unit tests on Spark. Every dbt call runs in this process (testkit.spark), whose
Spark session is configured once, at its start: so one test per process and Spark directory.
"""

from __future__ import annotations

import json

import pytest
from testkit.harness import DbtFailed, Warehouse, relation_rows, run_dbt, start_spark
from testkit.spark import SparkConnection

from tests.helpers.dbt_log import log_lines, log_size
from tests.integration.test_dbt_contract import check_null_stops_build, check_required_columns
from tests.integration.test_dbt_incremental import COMPARED, INCREMENTAL, check_equivalence

pytestmark = [
    pytest.mark.spark,
    pytest.mark.slow,
    # py4j's sockets to the JVM and dbt's log files, both owned by code outside the project,
    # stay open across in-process calls until the process ends
    pytest.mark.filterwarnings("ignore::ResourceWarning"),
    pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning"),
]

# The nightly build (selectors.yml: every node) from scratch, data and unit tests included, but
# for one: the scenario loads an event without a receipt time on purpose (the models must keep
# it; the loader never writes one), which staging's not_null test on received_at reports.
NIGHTLY_BUILD = (
    "build",
    "--full-refresh",
    "--exclude",
    "not_null_stg_rudderstack__tracks_received_at",
)


def staged_builds(wh: Warehouse, since: int) -> int:
    """Builds of email_triggers that went through the stage since byte `since` of dbt's log."""
    stage = f"create table {wh.schema}.email_triggers__dbt_contract "
    return sum(stage in line for line in log_lines(wh, since))


def snapshot_counts(conn: SparkConnection, schema: str) -> dict[str, int]:
    """Iceberg snapshots of each persisted model (its `snapshots` metadata table)."""
    return {
        relation: conn.execute(
            f"select count(*) from spark_catalog.{schema}.{relation}.snapshots"
        ).fetchone()[0]
        for relation in COMPARED
    }


def check_expire_snapshots(wh: Warehouse) -> None:
    """The upkeep operation leaves each table its newest snapshot, and every row."""
    with SparkConnection() as conn:
        before = snapshot_counts(conn, wh.schema)
        rows = {relation: relation_rows(conn, wh.schema, relation) for relation in COMPARED}
    # the ticks committed several to each incremental table
    assert before["int_sessions"] > 1, before
    # refused, before it expires anything
    with pytest.raises(DbtFailed, match=r"macro\.signalmail\.expire_snapshots"):
        run_dbt(wh, "run-operation", "expire_snapshots", "--args", "{retain_last: 0}")
    with SparkConnection() as conn:
        assert snapshot_counts(conn, wh.schema) == before
    run_dbt(
        wh, "run-operation", "expire_snapshots", "--args", "{older_than_hours: 0, retain_last: 1}"
    )
    with SparkConnection() as conn:
        after = snapshot_counts(conn, wh.schema)
        assert {relation: relation_rows(conn, wh.schema, relation) for relation in COMPARED} == rows
    assert after == dict.fromkeys(COMPARED, 1), after


def test_incremental_equals_full_refresh_spark(tmp_path, spark_ready):
    common = {"dialect": "spark", "spark_dir": tmp_path / "spark"}
    incremental = Warehouse(schema="signals", target_dir=tmp_path / "inc", **common)
    full = Warehouse(schema="signals_full", target_dir=tmp_path / "full", **common)
    start_spark(incremental)

    check_equivalence(SparkConnection, "spark", incremental, full, full_refresh=NIGHTLY_BUILD)

    with SparkConnection() as conn:
        formats = {
            row[0]: row[1]
            for row in conn.execute("show tblproperties signals.int_sessions").fetchall()
        }
        triggers = conn.execute(
            "select campaign, payload from signals_full.email_triggers"
        ).fetchall()
        stages = conn.execute("show tables in signals like '*__dbt_stage'").fetchall()
    # Iceberg tables (a row-level delete needs them), and no stage table left behind
    assert formats.get("format", "").startswith("iceberg"), formats
    assert stages == []
    # the trigger path reached email_triggers: payloads are JSON objects with the merged keys
    assert triggers, "no email_triggers row: the scenario's triggers did not fire"
    for campaign, payload in triggers:
        document = json.loads(payload)
        assert document["campaign"] == campaign
        assert "trigger_id" in document
        assert "first_name" in document  # null members kept (ignoreNullFields off)

    # every unit test ran in the nightly build, and passed: their SQL fixtures name their types
    # through the project's fixture_* vars, which read Spark's names on Spark
    target = tmp_path / "full" / "target"
    declared = json.loads((target / "manifest.json").read_text())["unit_tests"]
    ran = {
        result["unique_id"]: result["status"]
        for result in json.loads((target / "run_results.json").read_text())["results"]
        if result["unique_id"].startswith("unit_test.")
    }
    assert declared
    assert set(ran) == set(declared), set(declared) ^ set(ran)
    assert set(ran.values()) == {"pass"}, ran

    # email_triggers' not_null constraints hold on Iceberg: required columns, built from
    # scratch and by the ticks, and a null stops the build without touching the table
    with SparkConnection() as conn:
        check_required_columns(conn, "spark", full.schema)
        check_required_columns(conn, "spark", incremental.schema)
    start = log_size(incremental)
    check_null_stops_build(SparkConnection, "spark", incremental, INCREMENTAL)
    # the table is as its definition makes it: each build was the one-commit overwrite
    assert staged_builds(incremental, start) == 0

    # A table replaced another way (as dbt-spark's own path would, with the contract off for
    # a hotfix) keeps the contract's property, since Iceberg keeps a replaced table's
    # properties, but not its required columns: the next build must see that, check the rows
    # in a stage before it replaces the table (so a null still leaves the table as it was),
    # and give the required columns back
    with SparkConnection() as conn:
        conn.execute(
            "create or replace table signals.email_triggers using iceberg"
            " as select * from signals_full.email_triggers"
        )
        kept = dict(conn.execute("show tblproperties signals.email_triggers").fetchall())
        loose = conn.session.table("signals.email_triggers").schema.fields
    assert "signalmail.contract" in kept, kept
    assert all(field.nullable for field in loose)
    start = log_size(incremental)
    check_null_stops_build(SparkConnection, "spark", incremental, INCREMENTAL)
    assert staged_builds(incremental, start) == 2  # the spoiled build and the mended one
    with SparkConnection() as conn:
        check_required_columns(conn, "spark", incremental.schema)
        stages = conn.execute("show tables in signals like '*__dbt_contract'").fetchall()
    assert stages == []

    # the nightly upkeep: the ticks' snapshots expire, the rows stay
    check_expire_snapshots(incremental)
