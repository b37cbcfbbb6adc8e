"""The bench's long-lived dbtRunner (testkit.harness.TickRunner) builds what the dbt CLI builds.

It parses the project once and reuses the manifest; dbt keeps compile state on that manifest, so
without TickRunner's reset the second tick would lose its ephemeral CTEs and keep the send-ledger
model compiled for a warehouse without a ledger. The runner lives in a child process, as in the
bench: dbt-duckdb holds one DuckDB handle per process.
"""

from __future__ import annotations

import gc
import multiprocessing
import re
from datetime import datetime

import duckdb
import pytest
from testkit import raw_events, scenario
from testkit.harness import DbtFailed, TickRunner, Warehouse, run_dbt

pytestmark = pytest.mark.slow

AS_OF = {"as_of": scenario.AS_OF}
TICK = ("build", "--selector", "trigger_path")


def _triggers(conn) -> dict[tuple[str, str], str]:
    rows = conn.execute("select user_id, campaign, trigger_id from signals.email_triggers")
    return {(user, campaign): trigger for user, campaign, trigger in rows.fetchall()}


def _compiled_cutoff(runner: TickRunner, overrides: dict | None) -> str:
    """The incremental cutoff literal in stg_rudderstack__tracks as compiled with `overrides`."""
    result = runner.invoke(
        "compile", "--select", "stg_rudderstack__tracks", vars_override=overrides
    )
    sql = result.result.results[0].node.compiled_code
    return re.findall(r"cast\('([0-9-]+ [0-9:.]+)' as timestamp\)", sql)[0]


def _runner_ticks(wh: Warehouse, sent_user: str, queue) -> None:
    """Child: tick, record the ledger's first send of `sent_user`'s cart email, tick again."""
    try:
        runner = TickRunner(wh, dbt_vars=AS_OF)
        runner.invoke(*TICK)
        frozen = gc.get_freeze_count()
        with duckdb.connect(str(wh.duckdb_path)) as conn:  # the runner's database, in-process
            first = _triggers(conn)
        # vars given to one invocation reach the SQL it compiles, though the manifest is kept
        cutoffs = [
            _compiled_cutoff(runner, overrides)
            for overrides in ({"lookback_minutes": 1}, {"lookback_minutes": 90}, None)
        ]
        with duckdb.connect(str(wh.ledger_path)) as ledger:
            raw_events.create_ledger(ledger)
            raw_events.insert_ledger_rows(
                ledger,
                [
                    {
                        "trigger_id": first[(sent_user, "cart_abandonment")],
                        "campaign": "cart_abandonment",
                        "user_id": sent_user,
                        "state": "sent",
                        "created_at": datetime(2026, 3, 10, 11, 0),
                    }
                ],
            )
        runner.invoke(*TICK)
        # the manifest and dbt's caches were frozen after the first tick, and only then: the
        # count falls as kept objects are replaced (a second freeze would add this tick's)
        frozen = (frozen, gc.get_freeze_count())
        with duckdb.connect(str(wh.duckdb_path)) as conn:
            second = _triggers(conn)
            # a tick that fails says which model and why, though the runner logs nothing
            conn.execute("alter table rudderstack_raw.tracks rename to tracks_gone")
        try:
            runner.invoke(*TICK)
            failure = None
        except DbtFailed as error:
            failure = str(error)
        with duckdb.connect(str(wh.duckdb_path)) as conn:
            conn.execute("alter table rudderstack_raw.tracks_gone rename to tracks")
        # an operation's failure is reported as a model's is (its result names no node and
        # carries no message: dbt logs the reason, which the CLI call below shows); the
        # snapshot upkeep refuses arguments that would expire more than asked
        refused = []
        for arguments in ("{retain_last: 0}", "{older_than_hours: -1}", "{older_than_hours: x}"):
            try:
                runner.invoke("run-operation", "expire_snapshots", "--args", arguments)
            except DbtFailed as error:
                refused.append(str(error))
        runner.invoke("run-operation", "expire_snapshots")  # DuckDB: nothing to expire
        queue.put(("ok", (first, second, failure, cutoffs, frozen, refused)))
    except Exception as error:  # reported to the parent, which fails the test
        queue.put(("error", repr(error)))


def test_tick_runner_matches_the_cli_tick_after_tick(tmp_path):
    wh = Warehouse(
        dialect="duckdb",
        schema="signals",
        duckdb_path=tmp_path / "warehouse.duckdb",
        ledger_path=tmp_path / "ledger.duckdb",  # appears between the runner's two ticks
        target_dir=tmp_path,
    )
    with duckdb.connect(str(wh.duckdb_path)) as conn:
        raw_events.create_raw_tables(conn, "duckdb")
        raw_events.load_events(conn, "duckdb", scenario.background())
        raw_events.load_events(conn, "duckdb", scenario.scenario(), spool_key="scenario")
    run_dbt(wh, "build", dbt_vars=AS_OF)
    with duckdb.connect(str(wh.duckdb_path), read_only=True) as conn:
        built = _triggers(conn)
    assert ("s-cart", "cart_abandonment") in built

    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    child = context.Process(target=_runner_ticks, args=(wh, "s-cart", queue))
    child.start()
    status, payload = queue.get(timeout=600)
    child.join()
    assert status == "ok", payload
    first, second, failure, cutoffs, frozen, refused = payload
    # the runner's long-lived objects leave the cyclic collector's scans after its first tick
    assert frozen[0] > 100_000, frozen
    assert frozen[1] <= frozen[0], frozen
    one_minute, ninety_minutes, project_default = (datetime.fromisoformat(c) for c in cutoffs)
    assert (one_minute - ninety_minutes).total_seconds() == 89 * 60
    assert (one_minute - project_default).total_seconds() == 59 * 60  # lookback_minutes: 60

    assert first == built
    # the second tick compiled the ledger model afresh: the sent email is the ledger's now
    assert ("s-cart", "cart_abandonment") not in second
    assert second == {
        key: value for key, value in built.items() if key != ("s-cart", "cart_abandonment")
    }

    assert failure is not None
    assert "model.signalmail.stg_rudderstack__tracks" in failure
    assert "tracks" in failure.split("stg_rudderstack__tracks", 1)[1]
    assert len(refused) == 3, refused
    assert all("run-operation expire_snapshots" in message for message in refused), refused
    assert all("macro.signalmail.expire_snapshots" in message for message in refused), refused
    with pytest.raises(DbtFailed, match="must be a number of hours, 0 or more"):
        run_dbt(wh, "run-operation", "expire_snapshots", "--args", "{retain_last: 0}")

    # and the CLI agrees with the runner's second tick
    run_dbt(wh, *TICK, dbt_vars=AS_OF)
    with duckdb.connect(str(wh.duckdb_path), read_only=True) as conn:
        assert _triggers(conn) == second
