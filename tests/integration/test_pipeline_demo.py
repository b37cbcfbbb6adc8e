"""The whole pipeline through `signalmail demo`: real collector, SDK, watch, dbt, sandbox, report.

Two demo runs on the same data directory: the second must load what the first one's sends and
webhooks produced, and must never send a trigger the first run already sent.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest

from tests.support import REPO_ROOT

duckdb = pytest.importorskip("duckdb")

pytestmark = pytest.mark.slow

DATA = REPO_ROOT / "data" / "demo"


def _demo(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", "from signalmail.cli import main; main()", "demo", *args],
        cwd=REPO_ROOT,
        env=dict(os.environ),
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )


def _ledger() -> list[tuple[str, str, str, bool]]:
    with duckdb.connect(str(DATA / "ledger.duckdb"), read_only=True) as con:
        return con.execute(
            "select trigger_id, campaign, state, user_id is not null "
            "from signalmail_ledger.send_ledger"
        ).fetchall()


def _sandbox_messages() -> list[tuple[str, str]]:
    import sqlite3

    with sqlite3.connect(DATA / "sandbox" / "sandbox.sqlite") as con:
        tables = {name for (name,) in con.execute("select name from sqlite_master")}
        assert "messages" in tables, tables
        return con.execute("select email, metadata from messages").fetchall()


def test_demo_runs_the_pipeline_twice_without_sending_twice():
    shutil.rmtree(DATA, ignore_errors=True)
    first = _demo("--users", "80", "--days", "14", "--seed", "7", "--live-seconds", "0")
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    assert "emails accepted by Mandrill" in first.stdout
    assert (REPO_ROOT / "output" / "report" / "index.html").exists()

    ledger = _ledger()
    sent_first = {trigger for trigger, _, state, _ in ledger if state in {"sent", "queued"}}
    assert sent_first, "the demo data must produce sends"
    held_out = {trigger for trigger, _, state, _ in ledger if state == "held_out"}
    assert not sent_first & held_out

    with duckdb.connect(str(DATA / "warehouse.duckdb"), read_only=True) as con:
        # every sent trigger went to a user whose latest email_opt_in is true
        due = dict(con.execute("select trigger_id, user_id from signals.email_triggers").fetchall())
        consent = dict(
            con.execute(
                """
                select user_id, opted_in from (
                    select
                        user_id,
                        coalesce(
                            json_extract(traits, '$.email_opt_in'),
                            json_extract(context, '$.traits.email_opt_in')
                        )::boolean as opted_in,
                        row_number() over (
                            partition by user_id order by timestamp desc
                        ) as latest
                    from rudderstack_raw.identifies
                    where coalesce(
                        json_extract(traits, '$.email_opt_in'),
                        json_extract(context, '$.traits.email_opt_in')
                    ) is not null
                ) where latest = 1
                """
            ).fetchall()
        )
    for trigger in sent_first & due.keys():
        assert consent.get(due[trigger]) is True, f"{trigger} sent without consent"

    messages_first = _sandbox_messages()
    assert len(messages_first) == len(sent_first)

    second = _demo("--users", "80", "--days", "14", "--seed", "7", "--keep", "--live-seconds", "0")
    assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-3000:]

    # the first run's Email Sent events are now in the warehouse, joined to the ledger
    with duckdb.connect(str(DATA / "warehouse.duckdb"), read_only=True) as con:
        email_sent = {
            trigger
            for (trigger,) in con.execute(
                "select json_extract_string(properties, '$.trigger_id') "
                "from rudderstack_raw.tracks where event = 'Email Sent'"
            ).fetchall()
        }
    assert sent_first <= email_sent

    ledger_after = _ledger()
    assert len({row[0] for row in ledger_after}) == len(ledger_after)
    messages_after = _sandbox_messages()
    sent_ids = [json.loads(metadata)["trigger_id"] for _, metadata in messages_after]
    assert len(sent_ids) == len(set(sent_ids)), "a trigger reached Mandrill twice"
    sent_after = {trigger for trigger, _, state, _ in ledger_after if state in {"sent", "queued"}}
    # nothing the first run sent was sent again: one sandbox message per sent trigger
    assert sent_first <= sent_after
    assert len(messages_after) == len(sent_after)
