"""On PostgreSQL the long-lived dbtRunner keeps each thread's connection from node to node.

dbt itself closes a connection after every node and opens one for the next; the watch's runner
keeps a healthy one (signalmail.watch.dbt.keep_postgres_connections). Counted here by the
server: `pg_stat_database.sessions` of a database only this test uses. What the kept
connections build must be what the dbt CLI builds, and a node that fails on a kept connection
must not take the next node on that connection with it (its transaction rolled back first).
The runner lives in a child process: the change is process-wide, and other tests' dbt calls in
this process should meet dbt as it is.
"""

from __future__ import annotations

import multiprocessing
import re
from typing import Any

import psycopg
import pytest
from testkit import raw_events, scenario
from testkit.harness import DbtFailed, TickRunner, Warehouse, run_dbt

pytestmark = [pytest.mark.slow, pytest.mark.postgres]

AS_OF = {"as_of": scenario.AS_OF}
TICK = ("build", "--selector", "trigger_path")


def _sessions(url: str) -> int:
    """Sessions ever opened to the database of `url`, this query's own included."""
    with psycopg.connect(url) as conn:
        row = conn.execute(
            "select sessions from pg_stat_database where datname = current_database()"
        ).fetchone()
    assert row is not None
    return int(row[0])


def _triggers(url: str) -> dict[tuple[str, str], str]:
    with psycopg.connect(url) as conn:
        rows = conn.execute("select user_id, campaign, trigger_id from signals.email_triggers")
        return {(user, campaign): trigger for user, campaign, trigger in rows.fetchall()}


def _runner_ticks(wh: Warehouse, queue: Any) -> None:
    """Child: a tick counted by the server, then a tick with one model failing."""
    try:
        assert wh.pg_url is not None
        runner = TickRunner(wh, dbt_vars=AS_OF)
        before = _sessions(wh.pg_url)
        result = runner.invoke(*TICK, reuse_connections=True)
        # minus this count's own session: what the tick opened
        opened = _sessions(wh.pg_url) - before - 1
        nodes = len(result.result.results)
        triggers = _triggers(wh.pg_url)
        # an invocation that does not ask (the nightly: long builds) connects per node
        before = _sessions(wh.pg_url)
        runner.invoke(*TICK)
        opened_per_node = _sessions(wh.pg_url) - before - 1
        with psycopg.connect(wh.pg_url, autocommit=True) as conn:
            conn.execute("alter table rudderstack_raw.tracks rename to tracks_gone")
        try:
            runner.invoke(*TICK, reuse_connections=True)
            failure = None
        except DbtFailed as error:
            failure = str(error)
        with psycopg.connect(wh.pg_url, autocommit=True) as conn:
            conn.execute("alter table rudderstack_raw.tracks_gone rename to tracks")
        runner.invoke(*TICK, reuse_connections=True)
        result = (opened, opened_per_node, nodes, triggers, failure, _triggers(wh.pg_url))
        queue.put(("ok", result))
    except Exception as error:  # reported to the parent, which fails the test
        queue.put(("error", repr(error)))


def test_runner_keeps_a_connection_per_thread_on_postgres(tmp_path, pg_database):
    wh = Warehouse(dialect="postgres", schema="signals", pg_url=pg_database, target_dir=tmp_path)
    with psycopg.connect(pg_database, autocommit=True) as conn:
        raw_events.create_raw_tables(conn, "postgres")
        raw_events.load_events(conn, "postgres", scenario.background())
        raw_events.load_events(conn, "postgres", scenario.scenario(), spool_key="scenario")
    run_dbt(wh, "build", dbt_vars=AS_OF)
    built = _triggers(pg_database)
    assert ("s-cart", "cart_abandonment") in built

    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    child = context.Process(target=_runner_ticks, args=(wh, queue))
    child.start()
    status, payload = queue.get(timeout=600)
    child.join()
    assert status == "ok", payload
    opened, opened_per_node, nodes, triggers, failure, after_failure = payload

    # a connection for each thread dbt uses (its main thread's hooks, the relation cache, the
    # two threads that run the nodes): 4 when measured, against 25 for these 23 nodes when
    # dbt releases each node's connection
    assert nodes > 20, nodes
    assert opened <= 5, (opened, nodes)
    assert opened_per_node >= nodes, (opened_per_node, nodes)
    assert triggers == built

    # the models reading the missing table fail; the nodes that ran after them on their
    # connections did not fail with them ("current transaction is aborted")
    assert failure is not None
    failed = set(re.findall(r"((?:model|test)\.signalmail\.\w+): ", failure))
    assert failed == {
        f"model.signalmail.stg_rudderstack__{name}"
        for name in ("tracks", "product_events", "email_events")
    }, failure
    assert after_failure == built
