"""Predicted intent on the real models: simulated shop -> dbt -> `signalmail intent train` -> dbt.

The shop is `signalmail simulate`'s (shoppers with their own visit rates, carts abandoned or
ordered) over eight weeks, loaded into the raw tables; dbt builds int_purchase_features, the
CLI trains and scores, and the next dbt run shows the scores in user_signals and uses them in
the trigger decisions. On DuckDB and PostgreSQL (the scores are written differently).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from datetime import UTC, datetime, timedelta

import duckdb
import pytest
from signalmail.simulate.model import Simulation, SimulationConfig, iso
from testkit import raw_events
from testkit.harness import Warehouse, run_dbt

from tests.helpers import REPO_ROOT

pytestmark = pytest.mark.slow

NOW = datetime(2026, 3, 1, 3, 0, tzinfo=UTC)
AS_OF = {"as_of": "2026-03-01 03:00:00"}
SHOPPERS = 700
DAYS = 56


def shop_events():
    config = SimulationConfig(seed=11, users=SHOPPERS, days=DAYS, start=NOW - timedelta(days=DAYS))
    for event in Simulation(config):
        sent = datetime.fromisoformat(str(event["originalTimestamp"]).replace("Z", "+00:00"))
        if sent <= NOW:
            yield {**event, "sentAt": event["originalTimestamp"],
                   "receivedAt": iso(sent.timestamp() + 0.25),
                   "timestamp": event["originalTimestamp"]}  # fmt: skip


def connect(wh: Warehouse):
    if wh.dialect == "duckdb":
        return duckdb.connect(str(wh.duckdb_path))
    import psycopg

    return psycopg.connect(wh.pg_url, autocommit=True)


def query(wh: Warehouse, sql: str) -> list[tuple]:
    with connect(wh) as conn:
        return list(conn.execute(sql).fetchall())


def train(wh: Warehouse, tmp_path) -> dict:
    env = {**os.environ, **wh.env(), "MELTANO_PROJECT_ROOT": str(tmp_path)}
    done = subprocess.run(
        [sys.executable, "-m", "signalmail", "intent", "train", "--target", wh.dialect,
         "--json", "--card", str(tmp_path / "model.json")],
        env=env, capture_output=True, text=True, check=False, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    return json.loads(done.stdout)


def build_shop(wh: Warehouse) -> Warehouse:
    with connect(wh) as conn:
        raw_events.create_raw_tables(conn, wh.dialect, wh.raw_schema)
        raw_events.load_events(conn, wh.dialect, shop_events(), wh.raw_schema)
    run_dbt(wh, "run", "--select", "+int_purchase_features", dbt_vars=AS_OF)
    return wh


def duckdb_warehouse(tmp_path) -> Warehouse:
    return Warehouse(
        dialect="duckdb",
        schema="signals",
        duckdb_path=tmp_path / "warehouse.duckdb",
        ledger_path=tmp_path / "ledger.duckdb",
        target_dir=tmp_path / "dbt",
    )


@pytest.fixture(scope="module")
def built_duckdb_shop(tmp_path_factory) -> Warehouse:
    """The DuckDB shop, simulated and built once for the module (half a minute): tests copy it."""
    return build_shop(duckdb_warehouse(tmp_path_factory.mktemp("intent-shop")))


def copied_duckdb_shop(built: Warehouse, tmp_path) -> Warehouse:
    """A test's own copy of the built shop's files, so that what it writes stays its own."""
    assert built.duckdb_path is not None
    for name in ("warehouse.duckdb", "warehouse.duckdb.wal", "ledger.duckdb", "ledger.duckdb.wal"):
        if (built.duckdb_path.parent / name).exists():
            shutil.copyfile(built.duckdb_path.parent / name, tmp_path / name)
    return duckdb_warehouse(tmp_path)


@pytest.fixture(params=["duckdb", pytest.param("postgres", marks=pytest.mark.postgres)])
def shop(request, tmp_path):
    """The shop on each engine: the scores are written differently (registered arrays, COPY)."""
    if request.param == "duckdb":
        return copied_duckdb_shop(request.getfixturevalue("built_duckdb_shop"), tmp_path)
    return build_shop(
        Warehouse(
            dialect="postgres",
            schema="signals",
            pg_url=request.getfixturevalue("pg_database"),
            target_dir=tmp_path / "dbt",
        )
    )


@pytest.fixture
def duckdb_shop(built_duckdb_shop, tmp_path):
    """The shop on DuckDB alone: the features' SQL is the same on both engines."""
    return copied_duckdb_shop(built_duckdb_shop, tmp_path)


def test_scores_reach_user_signals_and_the_decisions(shop, tmp_path):
    card = train(shop, tmp_path)
    assert card["horizon_days"] == 7
    assert card["model"]["positives"] >= 20
    assert card["model"]["rows"] > card["model"]["positives"]
    for figures in (card["model"], card["baseline_intent_score"]):
        assert 0.5 < figures["roc_auc"] <= 1.0
    assert (tmp_path / "model.json").exists()
    scored = card["scored_users"]
    assert scored > 0

    # the scores are a source the next build reads
    run_dbt(shop, "run", "--select", "+user_signals +email_triggers", dbt_vars=AS_OF)
    rows = query(shop, "select user_id, purchase_probability, purchase_model_version "
                       "from signals.user_signals")  # fmt: skip
    with_scores = [r for r in rows if r[1] is not None]
    assert len(with_scores) == scored
    assert {r[2] for r in with_scores} == {card["version"]}
    assert all(0 < float(r[1]) < 1 for r in with_scores)

    # a campaign minimum above every score leaves only unscored users for that campaign
    top = max(float(r[1]) for r in with_scores)
    strict = {
        name: {**settings, "min_purchase_probability": round(top + 0.01, 4)}
        for name, settings in _campaigns().items()
    }
    run_dbt(shop, "run", "--select", "trigger_decisions",
            dbt_vars={**AS_OF, "campaigns": strict})  # fmt: skip
    decided = query(shop, "select d.decision, s.purchase_probability from "
                          "signals.trigger_decisions d left join signals.user_signals s "
                          "on d.user_id = s.user_id")  # fmt: skip
    below = [p for decision, p in decided if decision == "below_min_probability"]
    assert below, "the simulated shop has scored users with due triggers"
    assert all(p is not None for p in below)
    assert not [p for decision, p in decided if decision == "send" and p is not None]


def test_a_snapshot_reads_nothing_after_its_moment(duckdb_shop):
    """Deleting every event after a snapshot leaves its features as they were."""
    shop = duckdb_shop
    days_back = 14
    columns = ", ".join(f"f.{c}" for c in _feature_columns())
    before = _snapshot(shop, days_back, columns)
    assert len(before) > 50
    # an event is received 0.25 s after its time: a minute later, all of it is after the cut
    cut = (NOW - timedelta(days=days_back, minutes=-1)).replace(tzinfo=None)
    with connect(shop) as conn:
        for table in ("tracks", "pages", "identifies", "aliases"):
            conn.execute(f"delete from {shop.raw_schema}.{table} where received_at > '{cut}'")
    run_dbt(shop, "run", "--select", "+int_purchase_features", "--full-refresh", dbt_vars=AS_OF)
    after = _snapshot(shop, days_back, columns)
    assert after == before


def _snapshot(wh: Warehouse, days_back: int, columns: str) -> list[tuple]:
    sql = (
        f"select f.user_id, {columns} from signals.int_purchase_features f "
        f"where f.days_back = {days_back}"
    )
    return sorted(query(wh, sql))


def _feature_columns() -> list[str]:
    from signalmail.intent import FEATURES

    return list(FEATURES)


def _campaigns() -> dict:
    import yaml

    project = yaml.safe_load((REPO_ROOT / "dbt_project" / "dbt_project.yml").read_text())
    return project["vars"]["campaigns"]
