"""`signalmail watch` killed with SIGKILL at the worst moments, then started again.

Whatever the moment, the restart must lose no event and send no email twice:
- `capture:loaded`: rows committed to the warehouse, the capture bookmark not yet saved (the
  restart reads the same segments again; the loader's upsert keeps each event once);
- `activate:sent`: emails sent and recorded, the activate bookmark not yet saved (the restart
  offers the same triggers again; the ledger knows them);
- mid-send: the process dies while its send-template call is at Mandrill (the restart finds
  the landed messages with messages/search before sending anything);
- DuckDB invalidating the warehouse (an internal error) after a tick: the watch restarts
  itself as a new process, which resumes from the bookmarks;
- `capture:saved` after a late load: late events committed and bookmarked, the tick that
  would look back far enough to count them not yet run (the restart still widens its tick).
"""

from __future__ import annotations

import datetime as dt
import os
import secrets
import signal
import subprocess
from collections import Counter
from pathlib import Path

import duckdb
import pytest
from signalmail.collector.readback import read_spool
from signalmail.services import publish_starter_templates, running_collector
from signalmail.watch.steps import FATAL_ENV, KILL_ENV

from tests.integration.watch_support import (
    EXPECTED,
    SOURCE_ID,
    Services,
    run_watch,
    script_first_day,
    services,
    watch_command,
    write_late_cart,
)
from tests.support import REPO_ROOT, wait_until

pytestmark = pytest.mark.slow


def by_recipient(messages: list[dict]) -> Counter[tuple[str, str]]:
    return Counter((m["email"], m["metadata"]["campaign"]) for m in messages)


def duckdb_env(tmp_path: Path) -> dict[str, str]:
    return {
        "SIGNALMAIL_DBT_TARGET": "duckdb",
        "SIGNALMAIL_DUCKDB_PATH": str(tmp_path / "warehouse.duckdb"),
        "SIGNALMAIL_LEDGER_PATH": str(tmp_path / "ledger.duckdb"),
    }


def raw_message_ids(env: dict[str, str]) -> Counter[str]:
    """Every message id in the raw tables, with how often it is there."""
    if env["SIGNALMAIL_DBT_TARGET"] == "postgres":
        import psycopg

        ids: Counter[str] = Counter()
        with psycopg.connect(env["SIGNALMAIL_PG_URL"]) as conn:
            tables = [
                name
                for (name,) in conn.execute(
                    "select table_name from information_schema.tables "
                    "where table_schema = 'rudderstack_raw' and table_name <> 'rejected_events'"
                )
            ]
            for table in tables:
                ids.update(
                    mid
                    for (mid,) in conn.execute(f'select message_id from rudderstack_raw."{table}"')
                )
        return ids
    with duckdb.connect(env["SIGNALMAIL_DUCKDB_PATH"], read_only=True) as con:
        tables = [
            name
            for (name,) in con.execute(
                "select table_name from duckdb_tables() where schema_name = 'rudderstack_raw' "
                "and table_name <> 'rejected_events'"
            ).fetchall()
        ]
        ids: Counter[str] = Counter()
        for table in tables:
            ids.update(
                mid
                for (mid,) in con.execute(
                    f'select message_id from rudderstack_raw."{table}"'
                ).fetchall()
            )
    return ids


def spool_message_ids(svc: Services) -> set[str]:
    return read_spool(svc.spool, SOURCE_ID).message_ids


@pytest.mark.parametrize(
    ("engine", "point"),
    [
        ("duckdb", "capture:loaded"),
        ("duckdb", "activate:sent"),
        pytest.param("postgres", "capture:loaded", marks=pytest.mark.postgres),
    ],
)
def test_a_killed_watch_resumes_without_losing_or_repeating(tmp_path, engine, point, request):
    if engine == "duckdb":
        env = duckdb_env(tmp_path)
    else:
        env = {
            "SIGNALMAIL_DBT_TARGET": "postgres",
            "SIGNALMAIL_PG_URL": request.getfixturevalue("pg_database"),
        }
    with services(tmp_path, env) as svc:
        shop = svc.shop()
        script_first_day(shop)
        svc.wait_for_spool(shop.sent)

        killed = run_watch(svc, "--exit-when-idle", extra_env={KILL_ENV: point})
        assert killed.returncode == -signal.SIGKILL, killed.stdout + killed.stderr
        if point == "activate:sent":  # the kill came after the sends: they are out
            assert by_recipient(svc.messages()) == Counter(EXPECTED.items())

        again = run_watch(svc, "--exit-when-idle", "--fail-fast")
        assert again.returncode == 0, again.stdout + again.stderr
        assert by_recipient(svc.messages()) == Counter(EXPECTED.items()), again.stdout

        # every event of the spool is in the warehouse, once (Email Sent and webhooks too,
        # once the collector has published them and a last run has loaded them)
        published = spool_message_ids(svc)
        final = run_watch(svc, "--exit-when-idle", "--fail-fast")
        assert final.returncode == 0, final.stdout + final.stderr
        loaded = raw_message_ids(env)
        assert published <= set(loaded)
        assert max(loaded.values()) == 1
        assert by_recipient(svc.messages()) == Counter(EXPECTED.items())


def test_a_watch_whose_duckdb_was_invalidated_restarts_itself_and_sends_once(tmp_path):
    with services(tmp_path, duckdb_env(tmp_path)) as svc:
        shop = svc.shop()
        script_first_day(shop)
        svc.wait_for_spool(shop.sent)

        done = run_watch(
            svc, "--exit-when-idle", "--fail-fast", extra_env={FATAL_ENV: "signals:built"}
        )
        assert done.returncode == 0, done.stdout + done.stderr
        assert "DuckDB invalidated the warehouse during signals" in done.stdout
        assert done.stdout.count("watch starting") == 2  # the same command, a new process
        assert by_recipient(svc.messages()) == Counter(EXPECTED.items()), done.stdout


def test_late_events_loaded_just_before_a_kill_are_counted_after_the_restart(tmp_path):
    with services(tmp_path, duckdb_env(tmp_path)) as svc:
        shop = svc.shop()
        script_first_day(shop)
        svc.wait_for_spool(shop.sent)
        first = run_watch(svc, "--exit-when-idle", "--fail-fast")
        assert first.returncode == 0, first.stdout + first.stderr
        assert by_recipient(svc.messages()) == Counter(EXPECTED.items())

        # a recovered journal: lea's cart, received two hours ago, published now
        write_late_cart(svc.spool, "lea", dt.timedelta(hours=2))
        killed = run_watch(svc, "--exit-when-idle", extra_env={KILL_ENV: "capture:saved"})
        assert killed.returncode == -signal.SIGKILL, killed.stdout + killed.stderr

        again = run_watch(svc, "--exit-when-idle", "--fail-fast")
        assert again.returncode == 0, again.stdout + again.stderr
        assert "late events received at" in again.stdout  # no capture ran: the bookmark said so
        expected = Counter({**EXPECTED, "lea@example.com": "cart_abandonment"}.items())
        assert by_recipient(svc.messages()) == expected, again.stdout


def test_a_watch_killed_while_its_send_is_at_mandrill_sends_it_once(tmp_path):
    """The sandbox holds the send-template call 3 s; the watch dies meanwhile.

    One call in flight at a time: with more, a second call can be marked `sending` and die
    before its bytes leave; nothing can tell that apart from a call Mandrill holds, so it waits
    for proof of absence (`reconcile_grace_seconds`), which this test does not wait for.
    """
    from signalmail.sandbox.testing import run_sandbox

    env = duckdb_env(tmp_path)
    write_key, webhook_key = secrets.token_urlsafe(12), secrets.token_urlsafe(12)
    with (
        running_collector(
            tmp_path / "spool",
            write_key,
            SOURCE_ID,
            extra_args=("--max-segment-age", "0.5"),
            extra_env={"SIGNALMAIL_MANDRILL_WEBHOOK_KEY": webhook_key},
        ) as collector,
        run_sandbox(
            tmp_path / "sandbox", api_keys=["watch-key"], search_calls_per_minute=600
        ) as sandbox,
    ):
        publish_starter_templates(REPO_ROOT, "watch-key", sandbox.api_host, tmp_path / "sync.json")
        svc = Services(
            tmp_path,
            collector,
            None,  # type: ignore[arg-type]  # this test reads the in-thread sandbox directly
            {
                **env,
                "SIGNALMAIL_SPOOL": str(tmp_path / "spool"),
                "SIGNALMAIL_MANDRILL_API_KEY": "watch-key",
                "SIGNALMAIL_MANDRILL_BASE_URL": sandbox.api_host,
                "SIGNALMAIL_SEND_CONCURRENCY": "1",
            },
        )
        shop = svc.shop()
        script_first_day(shop)
        svc.wait_for_spool(shop.sent)

        send = "messages/send-template"
        sandbox.set_faults(timeout=1.0, timeout_s=3.0, only=[send])
        arrived: list[str] = []
        injector = sandbox.sandbox.faults
        original_draw = injector.draw

        def draw(operation):  # observe the call reaching "Mandrill"
            arrived.append(operation)
            return original_draw(operation)

        injector.draw = draw
        proc = _start_watch(svc)
        try:
            wait_until(lambda: send in arrived, timeout=120, what="the send at Mandrill")
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
        finally:
            if proc.poll() is None:
                proc.kill()
        assert proc.returncode == -signal.SIGKILL
        sandbox.set_faults()
        wait_until(lambda: len(_messages(sandbox)) >= 1, timeout=15, what="the held call landing")

        again = run_watch(svc, "--exit-when-idle", "--fail-fast")
        assert again.returncode == 0, again.stdout + again.stderr
        assert by_recipient(_messages(sandbox)) == Counter(EXPECTED.items()), again.stdout


def _messages(sandbox) -> list[dict]:
    found = sandbox.client("watch-key").messages.search({"query": "*", "limit": 1000})
    return found if isinstance(found, list) else []


def _start_watch(svc: Services) -> subprocess.Popen[str]:
    """The watch in the background, as `run_watch` runs it."""
    return subprocess.Popen(
        watch_command(svc.root, "--exit-when-idle"),
        cwd=REPO_ROOT,
        env={**os.environ, **svc.env},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        text=True,
    )
