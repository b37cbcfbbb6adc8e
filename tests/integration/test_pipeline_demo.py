"""The whole pipeline through `signalmail demo`: real collector, SDK, watch, dbt, sandbox, report.

Two demo runs on the same data directory: the second must load what the first one's sends and
webhooks produced, and must never send a trigger the first run already sent.

And, fast, what the demo and the report say about the emails deferred to a later send time:
never that they are due, always the time they are deferred to, computed from a UTC now whatever
the machine's time zone.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from signalmail.demo import DATA as DEMO_DATA
from signalmail.demo import print_outcome
from signalmail.report.data import ReportData
from signalmail.report.render import render

from tests.helpers import REPO_ROOT

duckdb = pytest.importorskip("duckdb")

DATA = REPO_ROOT / "data" / "demo"
#: "due" said of an email, except in "not yet due"
CALLED_DUE = re.compile(r"(?<!not yet )\bdue\b", re.IGNORECASE)


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


@pytest.mark.slow
def test_demo_runs_the_pipeline_twice_without_sending_twice():
    shutil.rmtree(DATA, ignore_errors=True)
    first = _demo("--users", "80", "--days", "14", "--seed", "7", "--live-seconds", "0")
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    assert "emails accepted by Mandrill" in first.stdout
    assert (REPO_ROOT / "output" / "demo" / "report" / "index.html").exists()

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


# -- deferred emails: wording and time zone -----------------------------------------------------


def utcnow_naive() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(tzinfo=None, second=0, microsecond=0)


@pytest.fixture(params=["America/New_York", "Asia/Tokyo"])
def local_zone(request) -> Iterator[str]:
    """The machine's zone, hours from UTC either way (DuckDB's session zone follows TZ)."""
    before = os.environ.get("TZ")
    os.environ["TZ"] = request.param
    time.tzset()
    try:
        yield request.param
    finally:
        if before is None:
            del os.environ["TZ"]
        else:
            os.environ["TZ"] = before
        time.tzset()


def demo_warehouse(root: Path, send_after: dict[str, list[dt.datetime]]) -> None:
    """A demo warehouse whose email_triggers hold these send times (naive UTC) per campaign."""
    path = root / DEMO_DATA / "warehouse.duckdb"
    path.parent.mkdir(parents=True)
    with duckdb.connect(str(path)) as con:
        con.execute("create schema signals")
        con.execute("create table signals.email_triggers (campaign varchar, send_after timestamp)")
        for campaign, times in send_after.items():
            for at in times:
                con.execute("insert into signals.email_triggers values (?, ?)", [campaign, at])


def test_the_demo_lists_deferred_emails_from_a_utc_now_with_the_time_they_go(
    tmp_path, capsys, local_zone
):
    now = utcnow_naive()
    # due two hours ago: sent, whatever the zone (the local-time bug listed it 5 h west of UTC)
    # and seven hours ahead: deferred (the bug hid it 9 h east of UTC)
    demo_warehouse(
        tmp_path,
        {
            "cart_abandonment": [now - dt.timedelta(hours=2)],
            "browse_abandonment": [now + dt.timedelta(hours=3), now + dt.timedelta(hours=5)],
            "post_purchase": [now + dt.timedelta(hours=7)],
        },
    )
    summary = tmp_path / "summary.json"
    summary.write_text(
        json.dumps({
            "cycles": [{}], "totals": {"events": 12}, "emails_by_campaign": {"cart_abandonment": 1},
            "latency": {"count": 0},
        })
    )  # fmt: skip

    print_outcome(tmp_path, summary)

    out = capsys.readouterr().out
    deferred = [line.strip() for line in out.splitlines() if "deferred" in line]
    first = f"{now + dt.timedelta(hours=3):%Y-%m-%d %H:%M}"
    later = f"{now + dt.timedelta(hours=7):%Y-%m-%d %H:%M}"
    assert deferred[1:] == [
        f"2  browse_abandonment, the first deferred to {first} UTC",
        f"1  post_purchase, the first deferred to {later} UTC",
    ], out
    assert deferred[0].startswith("not yet due: deferred to the shopper's best hour"), out
    assert not CALLED_DUE.search(out), out


def test_the_demo_says_nothing_of_deferred_emails_when_none_wait(tmp_path, capsys):
    demo_warehouse(tmp_path, {"cart_abandonment": [utcnow_naive() - dt.timedelta(minutes=1)]})
    summary = tmp_path / "summary.json"
    summary.write_text(
        json.dumps({"cycles": [], "totals": {}, "emails_by_campaign": {}, "latency": {"count": 0}})
    )

    print_outcome(tmp_path, summary)

    assert "deferred" not in capsys.readouterr().out


def deferred_section(html: str) -> str:
    """The text of the report's `#deferred` section, tags stripped."""
    found = re.search(r'<section id="deferred">(.*?)</section>', html, re.DOTALL)
    assert found, "no #deferred section"
    return " ".join(re.sub(r"<[^>]+>", " ", found.group(1)).split())


def test_the_reports_deferred_section_gives_the_time_and_never_calls_them_due():
    first = dt.datetime(2026, 3, 10, 14, 0)
    data = ReportData(
        generated_at=dt.datetime(2026, 3, 10, 9, 30),
        engine="duckdb",
        deferred=[("browse_abandonment", 2, first)],
    )

    text = deferred_section(render(data))

    assert text.startswith("Scheduled for later Not yet due: emails deferred to"), text
    assert "browse abandonment 2 2026-03-10 14:00" in text, text
    assert "the first deferred to (UTC)" in text, text
    assert not CALLED_DUE.search(text), text
