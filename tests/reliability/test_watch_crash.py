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

And stopped the graceful way: SIGINT or SIGTERM while a send is at Mandrill lets the step
finish and save its bookmark, so the restart has nothing to load and nothing to send.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import secrets
import signal
import subprocess
import threading
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import duckdb
import pytest
from signalmail.collector.readback import read_spool
from signalmail.services import publish_starter_templates, running_collector
from signalmail.watch.steps import FATAL_ENV, KILL_ENV

from tests.helpers import REPO_ROOT
from tests.helpers.servers import wait_until
from tests.helpers.watch import (
    EXPECTED,
    SOURCE_ID,
    Services,
    run_watch,
    script_first_day,
    services,
    watch_command,
    write_late_cart,
)

if TYPE_CHECKING:
    from signalmail.sandbox.testing import RunningSandbox

pytestmark = pytest.mark.slow

SEND = "messages/send-template"


def by_recipient(messages: list[dict]) -> Counter[tuple[str, str]]:
    return Counter((m["email"], m["metadata"]["campaign"]) for m in messages)


def duckdb_env(tmp_path: Path) -> dict[str, str]:
    return {
        "SIGNALMAIL_DBT_TARGET": "duckdb",
        "SIGNALMAIL_DUCKDB_PATH": str(tmp_path / "warehouse.duckdb"),
        "SIGNALMAIL_LEDGER_PATH": str(tmp_path / "ledger.duckdb"),
    }


def engine_env(engine: str, tmp_path: Path, request: pytest.FixtureRequest) -> dict[str, str]:
    """The watch's engine settings: DuckDB files in tmp_path, or a fresh PostgreSQL database."""
    if engine == "duckdb":
        return duckdb_env(tmp_path)
    return {
        "SIGNALMAIL_DBT_TARGET": "postgres",
        "SIGNALMAIL_PG_URL": request.getfixturevalue("pg_database"),
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
        # each point on one engine in `make test`, the other two in `make faults` (soak)
        ("duckdb", "capture:loaded"),
        pytest.param("duckdb", "activate:sent", marks=pytest.mark.soak),
        pytest.param("postgres", "capture:loaded", marks=[pytest.mark.postgres, pytest.mark.soak]),
        pytest.param("postgres", "activate:sent", marks=pytest.mark.postgres),
    ],
)
def test_a_killed_watch_resumes_without_losing_or_repeating(tmp_path, engine, point, request):
    env = engine_env(engine, tmp_path, request)
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


@contextlib.contextmanager
def one_send_at_a_time(
    tmp_path: Path, env: dict[str, str]
) -> Iterator[tuple[Services, RunningSandbox]]:
    """A collector and an in-thread sandbox (the test reaches into it), one send in flight.

    One call in flight at a time: with more, a second call can be marked `sending` and die
    before its bytes leave; nothing can tell that apart from a call Mandrill holds, so it waits
    for proof of absence (`reconcile_grace_seconds`), which these tests do not wait for. The
    sandbox posts no webhooks and the watch no Email Sent events: the spool holds the shop's
    events and nothing else, whatever the watch did.
    """
    from signalmail.sandbox.testing import run_sandbox

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
            None,  # type: ignore[arg-type]  # these tests read the in-thread sandbox directly
            {
                **env,
                "SIGNALMAIL_SPOOL": str(tmp_path / "spool"),
                "SIGNALMAIL_MANDRILL_API_KEY": "watch-key",
                "SIGNALMAIL_MANDRILL_BASE_URL": sandbox.api_host,
                "SIGNALMAIL_SEND_CONCURRENCY": "1",
            },
        )
        yield svc, sandbox


@pytest.mark.parametrize("engine", ["duckdb", pytest.param("postgres", marks=pytest.mark.postgres)])
def test_a_watch_killed_while_its_send_is_at_mandrill_sends_it_once(tmp_path, engine, request):
    """The sandbox holds the send-template call 3 s; the watch dies meanwhile."""
    with one_send_at_a_time(tmp_path, engine_env(engine, tmp_path, request)) as (svc, sandbox):
        shop = svc.shop()
        script_first_day(shop)
        svc.wait_for_spool(shop.sent)

        sandbox.set_faults(timeout=1.0, timeout_s=3.0, only=[SEND])
        arrived: list[str] = []
        injector = sandbox.sandbox.faults
        original_draw = injector.draw

        def draw(operation):  # observe the call reaching "Mandrill"
            arrived.append(operation)
            return original_draw(operation)

        injector.draw = draw
        proc = _start_watch(svc)
        try:
            wait_until(lambda: SEND in arrived, timeout=120, what="the send at Mandrill")
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


class HeldSend:
    """Hold the first send-template call at the sandbox until `release()`; see it arrive.

    The hook runs on the sandbox's event loop, so holding it holds every call: with one send
    in flight at a time (`one_send_at_a_time`) the watch is then inside its activate step,
    waiting for Mandrill's answer, for as long as the test wants.
    """

    def __init__(self, sandbox: RunningSandbox) -> None:
        self.arrived = threading.Event()
        self._release = threading.Event()
        injector = sandbox.sandbox.faults
        original_draw = injector.draw

        def draw(operation: str) -> Any:
            if operation == SEND and not self.arrived.is_set():
                self.arrived.set()
                self._release.wait(timeout=120)  # a bound for a test that failed meanwhile
            return original_draw(operation)

        injector.draw = draw

    def wait_arrived(self, timeout: float) -> None:
        assert self.arrived.wait(timeout), f"no send reached the sandbox within {timeout}s"

    def release(self) -> None:
        self._release.set()


# SIGTERM (what systemd, Docker and Kubernetes send); Ctrl-C's SIGINT goes to the same handler
# (loop.run installs it for both, test_watch_parts checks they stay installed)
@pytest.mark.parametrize("stop", [signal.SIGTERM], ids=["SIGTERM"])
def test_a_watch_stopped_during_a_send_finishes_the_step_and_restarts_with_nothing_to_do(
    tmp_path, stop
):
    with one_send_at_a_time(tmp_path, duckdb_env(tmp_path)) as (svc, sandbox):
        shop = svc.shop()
        script_first_day(shop)
        svc.wait_for_spool(shop.sent)

        held = HeldSend(sandbox)
        output = tmp_path / "watch.out"
        # no --exit-when-idle: only the signal can end this watch
        proc = _start_watch(svc, output, exit_when_idle=False)
        try:
            held.wait_arrived(timeout=180)  # the first cycle's activate step, at Mandrill
            os.kill(proc.pid, stop)
            held.release()
            proc.wait(timeout=120)
        finally:
            held.release()
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        shown = output.read_text()
        assert proc.returncode == 0, shown
        # the step finished every send after the signal, then the watch closed cleanly
        assert "the current step finished, stopping" in shown, shown
        assert "warehouse checkpointed and closed" in shown, shown
        assert f"{len(EXPECTED)} emails sent" in shown, shown
        assert "Traceback" not in shown, shown
        bookmarks = json.loads((tmp_path / "watch" / "state.json").read_text())["bookmarks"]
        assert bookmarks.get("capture"), bookmarks
        assert bookmarks.get("activate"), bookmarks  # saved by the step the signal came in
        assert by_recipient(_messages(sandbox)) == Counter(EXPECTED.items()), shown

        again = run_watch(svc, "--exit-when-idle", "--fail-fast")
        assert again.returncode == 0, again.stdout + again.stderr
        summary = json.loads((tmp_path / "watch" / "summary.json").read_text())
        assert summary["totals"]["events"] == 0, again.stdout  # the capture bookmark held
        assert sum(summary["emails_by_campaign"].values()) == 0, again.stdout
        assert by_recipient(_messages(sandbox)) == Counter(EXPECTED.items()), again.stdout


def _messages(sandbox) -> list[dict]:
    found = sandbox.client("watch-key").messages.search({"query": "*", "limit": 1000})
    return found if isinstance(found, list) else []


def _start_watch(
    svc: Services, output: Path | None = None, exit_when_idle: bool = True
) -> subprocess.Popen[str]:
    """The watch in the background, as `run_watch` runs it; its output into `output`."""
    args = ("--exit-when-idle",) if exit_when_idle else ()
    with open(output or os.devnull, "w") as sink:  # the child keeps its own descriptor
        return subprocess.Popen(
            watch_command(svc.root, *args),
            cwd=REPO_ROOT,
            env={**os.environ, **svc.env},
            stdout=sink,
            stderr=subprocess.STDOUT,
            text=True,
        )
