"""The watch's parts one by one: settings, bookmarks, latency figures, the in-process Singer pipe,
the status every view reads, /metrics and the terminal view."""

from __future__ import annotations

import datetime as dt
import io
import json
import math
import os
import signal
import time
import urllib.request
from pathlib import Path

import pytest
from rich.console import Console
from signalmail.watch.late import LateEvents
from signalmail.watch.latency import LatencyBook, Summary, percentile
from signalmail.watch.metrics import WatchMetrics
from signalmail.watch.settings import (
    SettingsError,
    WatchSettings,
    domain_list,
    from_environment,
    redact_url,
    sqlalchemy_postgres_url,
)
from signalmail.watch.singer import construct, run_tap, run_target
from signalmail.watch.state import StateFile
from signalmail.watch.status import WatchStatus
from signalmail.watch.steps import StepResult
from signalmail.watch.view import LineView, render_panel, render_summary

from tests.helpers.spool import event, write_segment

ROOT = Path("/srv/shop")


# -- settings ---------------------------------------------------------------------------------


def test_settings_resolve_paths_against_the_project_and_keep_urls():
    settings = WatchSettings(project_root=ROOT, spool="s3://bucket/events", mandrill_api_key="k")
    assert settings.spool_location == "s3://bucket/events"
    assert settings.loader_config()["filepath"] == "/srv/shop/data/warehouse.duckdb"
    assert (
        settings.tap_warehouse_config()["sqlalchemy_url"]
        == "duckdb:////srv/shop/data/warehouse.duckdb"
    )
    assert settings.tap_warehouse_config()["duckdb_read_only"] is False
    assert settings.loader_config()["checkpoint_at_end"] is False
    local = WatchSettings(project_root=ROOT, spool="/var/spool/shop")
    assert local.spool_location == "/var/spool/shop"
    assert local.tap_rudderstack_config()["batch_config"]["storage"]["root"] == (
        "file:///srv/shop/data/watch/batches"
    )


def test_postgres_settings_need_a_url_and_share_it_everywhere():
    with pytest.raises(SettingsError, match="SIGNALMAIL_PG_URL"):
        WatchSettings(project_root=ROOT, engine="postgres")
    with pytest.raises(SettingsError, match="postgresql://"):
        WatchSettings(project_root=ROOT, engine="postgres", pg_url="mysql://x@h/d")
    url = "postgresql://etl:s3cr%40t@db.internal:5433/wh"
    settings = WatchSettings(project_root=ROOT, engine="postgres", pg_url=url, mandrill_api_key="k")
    psycopg = "postgresql+psycopg://etl:s3cr%40t@db.internal:5433/wh"
    assert settings.loader_config()["sqlalchemy_url"] == psycopg
    assert settings.tap_warehouse_config()["sqlalchemy_url"] == psycopg
    assert settings.target_config()["ledger_url"] == psycopg
    assert "tap_rudderstack" not in json.dumps(settings.tap_rudderstack_config())
    # BATCH files, as prod's tap writes them for target-postgres-bulk, which deletes them
    assert settings.tap_rudderstack_config()["batch_config"]["encoding"]["format"] == "jsonl"
    assert settings.loader_config()["delete_batch_files"] is True
    assert settings.dbt_env()["SIGNALMAIL_PG_URL"] == url
    assert "s3cr" not in settings.describe()
    assert "s3cr" not in repr(settings)


def test_settings_errors_name_the_variable_to_set():
    with pytest.raises(SettingsError, match="SIGNALMAIL_MANDRILL_API_KEY"):
        WatchSettings(project_root=ROOT).target_config()
    with pytest.raises(SettingsError, match="SIGNALMAIL_WRITE_KEY"):
        WatchSettings(
            project_root=ROOT, mandrill_api_key="k", data_plane_url="http://127.0.0.1:9"
        ).target_config()
    with pytest.raises(SettingsError, match="SIGNALMAIL_DBT_TARGET"):
        WatchSettings(project_root=ROOT, engine="snowflake")
    with pytest.raises(SettingsError, match="SIGNALMAIL_SEND_CONCURRENCY must be at least 1"):
        WatchSettings(project_root=ROOT, send_concurrency=0)


def test_numeric_variables_say_what_they_expect(monkeypatch):
    monkeypatch.setenv("SIGNALMAIL_SEND_CONCURRENCY", "2")
    monkeypatch.setenv("SIGNALMAIL_MANDRILL_API_KEY", "k")
    assert from_environment(ROOT).target_config()["concurrency"] == 2
    monkeypatch.setenv("SIGNALMAIL_SEND_CONCURRENCY", "two")
    with pytest.raises(SettingsError, match="a whole number of calls, not 'two'"):
        from_environment(ROOT)
    monkeypatch.setenv("SIGNALMAIL_SEND_CONCURRENCY", "2")
    monkeypatch.setenv("SIGNALMAIL_RECONCILE_GRACE_SECONDS", "1.5")
    with pytest.raises(SettingsError, match="RECONCILE_GRACE_SECONDS must be whole seconds"):
        from_environment(ROOT)


def test_environment_variables_are_the_settings_and_options_win(monkeypatch):
    monkeypatch.setenv("SIGNALMAIL_SPOOL", "/data/spool")
    monkeypatch.setenv("SIGNALMAIL_MANDRILL_API_KEY", "from-env")
    monkeypatch.setenv("SIGNALMAIL_MANDRILL_BASE_URL", "http://127.0.0.1:8/api/1.3")
    settings = from_environment(ROOT, spool="/cli/spool")
    assert settings.spool == "/cli/spool"
    assert settings.mandrill_api_key == "from-env"
    assert settings.target_config()["base_url"] == "http://127.0.0.1:8/api/1.3"


def test_urls_lose_their_password_in_messages():
    assert redact_url("postgresql://u:pw@h/d") == "postgresql://u:***@h/d"
    assert redact_url("postgresql://u@h/d") == "postgresql://u@h/d"
    assert sqlalchemy_postgres_url("postgres://u@h/d") == "postgresql+psycopg://u@h/d"


# -- bookmarks --------------------------------------------------------------------------------


def test_bookmarks_survive_a_new_process_and_leave_no_temporary_file(tmp_path):
    path = tmp_path / "watch" / "state.json"
    state = StateFile(path)
    assert state.get("capture") == {}
    state.save("capture", {"bookmarks": {"tracks": {"spool": {"high_ts": 5}}}})
    state.save("activate", {"bookmarks": {"email_triggers": {"replication_key_value": "x"}}})
    again = StateFile(path)
    assert again.get("capture")["bookmarks"]["tracks"]["spool"]["high_ts"] == 5
    assert again.get("activate")["bookmarks"]["email_triggers"]["replication_key_value"] == "x"
    assert [p.name for p in path.parent.iterdir()] == ["state.json"]


def test_a_corrupt_state_file_is_reported_with_what_to_do(tmp_path):
    path = tmp_path / "state.json"
    path.write_text("{not json")
    with pytest.raises(RuntimeError, match="move it away"):
        StateFile(path)


# -- late events ------------------------------------------------------------------------------

T0 = dt.datetime(2026, 12, 6, 8, 0, tzinfo=dt.UTC)


def _late(tmp_path: Path) -> LateEvents:
    return LateEvents(StateFile(tmp_path / "state.json"), lookback_seconds=10)


def test_in_order_loads_keep_the_usual_lookback(tmp_path):
    late = _late(tmp_path)
    late.state.save_many({"signals": late.noted(T0, T0 + dt.timedelta(seconds=1))})
    late.counted()
    for second in range(2, 6):  # each load a second after the last, re-sent receipts within 10 s
        at = T0 + dt.timedelta(seconds=second)
        late.state.save_many({"signals": late.noted(at - dt.timedelta(seconds=9), at)})
        assert late.tick_lookback() is None
        late.counted()
    assert late.counted_until == T0 + dt.timedelta(seconds=5)


def test_a_late_load_widens_the_next_tick_only_and_survives_a_restart(tmp_path):
    late = _late(tmp_path)
    late.state.save_many({"signals": late.noted(T0, T0 + dt.timedelta(minutes=30))})
    late.counted()
    # a recovered journal: received 20 minutes before what the ticks counted to
    late.state.save_many({"signals": late.noted(T0 + dt.timedelta(minutes=10), T0)})
    later = T0 + dt.timedelta(minutes=31)
    late.state.save_many({"signals": late.noted(later, later)})  # and the live stream goes on
    again = _late(tmp_path)  # a new process reads the pending account
    assert again.late_from == T0 + dt.timedelta(minutes=10)
    assert again.tick_lookback() == 20 * 60 + 10 + 1
    again.counted()
    assert again.tick_lookback() is None
    assert again.counted_until == later


def test_a_first_load_with_no_account_counts_everything_it_loaded(tmp_path):
    late = _late(tmp_path)
    late.state.save_many({"signals": late.noted(T0, T0 + dt.timedelta(days=2))})
    assert late.tick_lookback() == 2 * 86400 + 11


def test_bookmarks_saved_together_are_all_kept(tmp_path):
    state = StateFile(tmp_path / "state.json")
    state.save_many({"capture": {"a": 1}, "signals": {"b": 2}})
    assert StateFile(tmp_path / "state.json").values == {"capture": {"a": 1}, "signals": {"b": 2}}


# -- latency ----------------------------------------------------------------------------------


def test_percentiles_are_nearest_rank():
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 0.5) == 50
    assert percentile(values, 0.95) == 95
    assert percentile([7.0], 0.95) == 7
    assert math.isnan(percentile([], 0.5))
    assert Summary.of([]).text() == "n=0"
    assert Summary.of([1.0, 2.0, 3.0]).text() == "n=3 p50=2.0s p95=3.0s max=3.0s"


def test_latency_is_kept_by_the_minute_it_was_sent_in():
    book = LatencyBook()
    t = dt.datetime(2026, 12, 6, 10, 0, 30)
    book.add("cart_abandonment", t, 4.0)
    book.add("cart_abandonment", t + dt.timedelta(seconds=20), 6.0)
    book.add("browse_abandonment", t + dt.timedelta(minutes=1), 12.0)
    book.add("post_purchase", t, None)  # no due time: counted apart, not as zero
    assert book.without_due_time == 1
    assert [(m.minute, s.count) for m, s in book.minutes()] == [(0, 2), (1, 1)]
    assert book.minute(t).max == 6.0
    assert book.last_minutes(t + dt.timedelta(minutes=1), minutes=1).count == 1
    assert book.last_minutes(t + dt.timedelta(minutes=1), minutes=2).count == 3
    assert book.overall().p95 == 12.0
    assert sorted(book.by_campaign) == ["browse_abandonment", "cart_abandonment"]
    # a reconciled send enters its own, older minute after the newer ones: still counted right
    book.add("cart_abandonment", t - dt.timedelta(hours=2), 30.0)
    assert book.last_minutes(t + dt.timedelta(minutes=1), minutes=2).count == 3
    # hours of sends later, the last minutes are found among the minutes entered last
    for n in range(1, 500):
        book.add("cart_abandonment", t + dt.timedelta(minutes=1 + n), 1.0)
    assert book.last_minutes(t + dt.timedelta(minutes=500), minutes=2).count == 2


def test_a_months_long_watch_keeps_bounded_lists_and_true_counts():
    """One or two cycles a second for months: the kept cycles and step durations are the
    latest; the numbers of cycles and runs are all of them."""
    from signalmail.watch.status import KEEP_CYCLES, KEEP_DURATIONS

    status = WatchStatus()
    for _ in range(KEEP_CYCLES + 5):
        cycle = status.begin_cycle()
    status.record(cycle, StepResult("capture", 0.5))
    for _ in range(KEEP_DURATIONS + 5):
        status.record(cycle, StepResult("signals", 1.0))
    assert len(status.cycles) == KEEP_CYCLES
    assert status.cycle_count == KEEP_CYCLES + 5
    assert status.cycles[-1].number == KEEP_CYCLES + 5
    assert len(status.durations["signals"]) == KEEP_DURATIONS
    assert status.step_runs["signals"] == KEEP_DURATIONS + 5
    assert status.step_summary("signals").p95 == 1.0


# -- the in-process Singer pipe ---------------------------------------------------------------


def test_a_tap_piped_into_a_loader_in_process_commits_and_returns_the_bookmark(tmp_path):
    from tap_rudderstack import TapRudderStack
    from target_duckdb_bulk import TargetDuckDBBulk

    spool = tmp_path / "spool"
    events = [event("track", i) for i in range(5)] + [event("identify", 9)]
    write_segment(spool, 1_796_000_000, events)
    tap = construct(TapRudderStack, config={"source": str(spool)}, parse_env_config=False)
    output = run_tap(tap)
    assert output.records == {"tracks": 5, "identifies": 1}
    loader = construct(
        TargetDuckDBBulk,
        config={"filepath": str(tmp_path / "w.duckdb")},
        parse_env_config=False,
    )
    bookmark = run_target(loader, output)
    output.close()
    assert bookmark["bookmarks"]["tracks"]["spool"]["done"]
    import duckdb

    with duckdb.connect(str(tmp_path / "w.duckdb"), read_only=True) as con:
        assert con.execute("select count(*) from rudderstack_raw.tracks").fetchone() == (5,)

    # the next run from that bookmark reads nothing new
    again = construct(
        TapRudderStack, config={"source": str(spool)}, state=bookmark, parse_env_config=False
    )
    rerun = run_tap(again)
    assert rerun.record_count == 0
    assert again.last_sync_counts["files"] == 0
    rerun.close()


def test_a_capture_clears_batch_files_an_earlier_capture_never_loaded(tmp_path):
    """A load that failed (the warehouse down) or a watch killed between tap and loader leaves
    its BATCH files; their events are read again from the unsaved bookmark, so each retry of an
    outage would add another set. The next capture starts from an empty folder."""
    from signalmail.watch.steps import Capture

    spool = tmp_path / "spool"
    write_segment(spool, 1_796_000_000, [event("track", i) for i in range(3)])
    settings = WatchSettings(project_root=tmp_path, spool=str(spool))
    settings.batches_dir.mkdir(parents=True)
    left = [settings.batches_dir / f"tap-rudderstack--tracks-{n}-1.jsonl" for n in range(2)]
    for path in left:
        path.write_text('{"message_id": "from-a-failed-load"}\n')
    state = StateFile(settings.state_path)
    result = Capture(settings, state, LateEvents(state, 3600)).run()
    assert result.counts["events"] == 3
    assert list(settings.batches_dir.iterdir()) == []  # the strays, and what this one loaded


def test_plugins_built_in_process_leave_the_watchs_signal_handlers_alone():
    from tap_rudderstack import TapRudderStack

    def mine(*_args):
        return None

    previous = {sig: signal.signal(sig, mine) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        construct(TapRudderStack, config={"source": "/nowhere"}, parse_env_config=False)
        assert signal.getsignal(signal.SIGTERM) is mine
        assert signal.getsignal(signal.SIGINT) is mine
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


# -- status, metrics, view ---------------------------------------------------------------------


def _activate(sent: list[tuple[str, float]]) -> StepResult:
    now = dt.datetime(2026, 12, 6, 10, 0, 5)
    return StepResult(
        "activate",
        0.4,
        counts={"sent": len(sent), "held_out": 1, "deferred_not_due": 2},
        accepted=[(campaign, now, seconds) for campaign, seconds in sent],
        next_deferred_at=dt.datetime(2026, 12, 6, 14, 0),
    )


def _status() -> WatchStatus:
    status = WatchStatus()
    cycle = status.begin_cycle()
    status.record(cycle, StepResult("capture", 0.2, counts={"events": 800, "rejected": 1}))
    status.record(cycle, StepResult("signals", 2.5, counts={"nodes": 18}))
    status.record(cycle, _activate([("cart_abandonment", 4.2), ("cart_abandonment", 6.1)]))
    status.record(cycle, StepResult("capture", 0.1, ran=False))  # nothing new: not counted
    return status


def test_the_status_adds_up_steps_events_emails_and_latency():
    status = _status()
    cycle = status.cycles[0]
    assert cycle.steps == {"capture": 0.2, "signals": 2.5, "activate": 0.4}
    assert (cycle.events, cycle.emails) == (800, 2)
    assert status.totals["events"] == 800
    assert status.emails_sent == 2
    assert status.totals["held_out"] == 1
    assert status.emails_by_campaign == {"cart_abandonment": 2}
    assert status.latency.overall().max == 6.1
    assert status.next_deferred_at == dt.datetime(2026, 12, 6, 14, 0)
    status.error("signals", "dbt failed")
    assert status.totals["errors"] == 1
    assert "signals: dbt failed" in status.errors[-1]
    # the scheduled send is gone before its time (the shopper bought): an activation that
    # reads nothing forgets it, instead of rebuilding the read every cycle until a new one
    status.record(status.begin_cycle(), StepResult("activate", 0.1, ran=False))
    assert status.next_deferred_at is None


def test_metrics_serve_the_same_figures_over_http():
    metrics = WatchMetrics()
    status = _status()
    for result in status.last.values():
        metrics.step(result)
    metrics.step(StepResult("capture", 0.2, counts={"events": 800}))
    metrics.error("signals")
    metrics.cycle_finished(status)
    port = metrics.serve("127.0.0.1", 0)
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as answer:
            text = answer.read().decode()
    finally:
        metrics.stop()
    assert 'signalmail_watch_emails_sent_total{campaign="cart_abandonment"} 2.0' in text
    assert "signalmail_watch_events_loaded_total 1600.0" in text
    assert 'signalmail_watch_step_errors_total{step="signals"} 1.0' in text
    assert 'signalmail_watch_triggers_total{outcome="held_out"} 1.0' in text
    assert "signalmail_watch_email_latency_seconds_count 2.0" in text
    assert 'signalmail_watch_step_last_seconds{step="signals"} 2.5' in text
    assert "signalmail_watch_emails_deferred 2.0" in text


def test_the_panel_and_the_summary_show_timings_totals_and_latency():
    status = _status()
    console = Console(record=True, width=120)
    console.print(render_panel(status))
    console.print(render_summary(status))
    text = console.export_text()
    assert "capture" in text
    assert "signals" in text
    assert "2.50s" in text
    assert "events loaded 800" in text
    assert "emails sent 2" in text
    assert "cart_abandonment 2" in text
    assert "next scheduled send 2026-12-06 14:00 UTC" in text
    assert "p95=6.1s" in text


def test_the_line_view_prints_a_cycle_with_work_and_its_errors():
    out = io.StringIO()
    view = LineView(out)
    status = _status()
    status.error("activate", "Mandrill answered Invalid_Key")
    view.cycle_finished(status, status.cycles[0])
    idle = status.begin_cycle()
    view.cycle_finished(status, idle)  # nothing happened: no line
    lines = out.getvalue().splitlines()
    assert any(
        "cycle 1: capture 0.20s signals 2.50s activate 0.40s | 800 events, 2 emails" in line
        for line in lines
    )
    assert any("error" in line and "Invalid_Key" in line for line in lines)
    assert not any("cycle 2" in line for line in lines)


# -- restart after DuckDB invalidated the database --------------------------------------------


def test_duckdbs_fatal_errors_are_recognised_through_dbts_wrapping():
    import duckdb
    from signalmail.watch.dbt import DbtFailed
    from signalmail.watch.restart import invalidates_duckdb

    outer = RuntimeError("step failed")
    outer.__cause__ = duckdb.FatalException("FATAL Error: the database has been invalidated")
    assert invalidates_duckdb(outer)
    dbt_said = DbtFailed(
        "dbt build failed: model.signalmail.int_events: INTERNAL Error: Attempted to access "
        "index 9223372036854775807 within vector of size 11"
    )
    assert invalidates_duckdb(dbt_said)
    assert not invalidates_duckdb(DbtFailed("dbt build failed: model.x: Binder Error: no column"))
    assert not invalidates_duckdb(duckdb.ConstraintException("duplicate key"))


def test_the_watch_restarts_with_its_command_line_until_restarts_stop_helping(monkeypatch):
    from signalmail.watch.restart import RESTARTS_ENV, TooManyRestarts, restart_process

    monkeypatch.delenv(RESTARTS_ENV, raising=False)
    monkeypatch.setattr("sys.orig_argv", ["python3", "-m", "signalmail", "watch", "--view", "q"])
    calls: list[tuple[str, list[str]]] = []
    for _ in range(3):
        restart_process(
            "signals: INTERNAL Error", execv=lambda path, argv: calls.append((path, argv))
        )
    assert [argv[1:] for _, argv in calls] == [["-m", "signalmail", "watch", "--view", "q"]] * 3
    assert len(os.environ[RESTARTS_ENV].split(",")) == 3
    with pytest.raises(TooManyRestarts, match=r"4 times within an hour.*INTERNAL Error"):
        restart_process("signals: INTERNAL Error", execv=lambda path, argv: calls.append(argv))
    assert len(calls) == 3
    # restarts older than an hour no longer count
    monkeypatch.setenv(RESTARTS_ENV, ",".join(str(time.time() - 7200) for _ in range(5)))
    restart_process("again", execv=lambda path, argv: calls.append((path, argv)))
    assert len(calls) == 4


# -- the loop's decisions ------------------------------------------------------------------


class _Script:
    """A step that fails while `failing` is set and records each run (with its arguments)."""

    def __init__(self, name: str, failing: bool = False) -> None:
        self.name = name
        self.failing = failing
        self.calls: list[tuple] = []

    def __call__(self, *args: object, **kwargs: object) -> StepResult:
        self.calls.append((args, kwargs))
        if self.failing:
            raise RuntimeError(f"{self.name} is down")
        # a capture that found nothing new, as on a quiet shop: no reason to tick
        return StepResult(self.name, 0.01, ran=self.name != "capture")


class _Warehouse:
    def __init__(self) -> None:
        self.missing = ["int_products"]

    def missing_tables(self, schema: str, names: list[str]) -> list[str]:
        return list(self.missing)

    def wal_bytes(self) -> int:
        return 0


def _loop(tmp_path: Path):
    """A Watch with its steps replaced by scripts: what each cycle decides to run."""
    from types import SimpleNamespace

    from signalmail.watch.loop import Watch

    watch = Watch(
        WatchSettings(project_root=tmp_path, spool=str(tmp_path / "spool"), nightly_at=None),
        LineView(io.StringIO()),
        WatchStatus(),
    )
    steps = {name: _Script(name) for name in ("capture", "signals", "nightly", "activate")}
    watch.capture = SimpleNamespace(run=steps["capture"])
    watch.activate = SimpleNamespace(run=steps["activate"])
    watch.signals = SimpleNamespace(
        run=steps["signals"], build_nightly_models=steps["nightly"], nightly_models=lambda: []
    )
    watch.warehouse = _Warehouse()
    return watch, steps


def test_a_failed_start_keeps_the_reconciliation_and_the_nightly_models_due(tmp_path):
    """Mandrill or the warehouse down when the watch starts: the forced activation (which
    settles sends a crash left) and the first build of the nightly models are tried again on
    the following cycles until each has worked once, not only in the first cycle."""
    watch, steps = _loop(tmp_path)
    steps["activate"].failing = True
    steps["nightly"].failing = True
    watch.cycle()
    watch.cycle()
    assert len(steps["nightly"].calls) == 2
    assert [c[1] for c in steps["activate"].calls] == [{"force": True}] * 2
    steps["activate"].failing = False
    steps["nightly"].failing = False
    watch.cycle()  # both work now: the models are built, the reconciliation ran
    assert (watch._bootstrap_due, watch._reconcile_due) == (False, False)
    forced = len(steps["activate"].calls)
    for _ in range(2):
        watch._tick_now = True  # ticks due: the activations that follow are the plain kind
        watch.cycle()
    assert len(steps["nightly"].calls) == 3
    later = steps["activate"].calls[forced:]
    assert later == [((), {"force": False})] * 2


def test_the_backoff_holds_while_a_step_keeps_failing_between_its_runs(tmp_path):
    """A tick is due only every few seconds: the cycles between two failed ticks run no tick,
    and must not count as the tick working again (the pause would never grow)."""
    watch, steps = _loop(tmp_path)
    watch.warehouse.missing = []
    watch.cycle()
    steps["signals"].failing = True
    watch._tick_now = True
    watch.cycle()
    assert watch._failures == 1
    watch.cycle()  # no tick due (idle_tick_seconds not passed): still failing as far as known
    assert watch._failures == 1
    watch._tick_now = True
    watch.cycle()
    assert watch._failures == 2
    steps["signals"].failing = False
    watch._tick_now = True
    watch.cycle()
    assert watch._failures == 0


def _captures(watch, more: list[bool]) -> None:
    """Script the loop's captures: each loads 10 events and says whether the spool has more."""

    def capture() -> StepResult:
        return StepResult("capture", 0.1, counts={"events": 10}, more=more.pop(0))

    watch.capture.run = capture


def test_a_backlog_is_loaded_in_steps_and_no_rule_sees_part_of_it(tmp_path):
    """A capture that stopped at its record limit leaves more in the spool (a cart's order may
    be in the next step): no tick and no send until a capture comes back short, then at once."""
    watch, steps = _loop(tmp_path)
    watch.warehouse.missing = []
    _captures(watch, more=[True, True, False])
    watch.cycle()
    watch.cycle()
    assert steps["signals"].calls == []
    assert steps["activate"].calls == []
    watch.cycle()  # the last step is in
    assert len(steps["signals"].calls) == 1
    assert [c[1] for c in steps["activate"].calls] == [{"force": True}]


def test_the_nightly_waits_for_the_end_of_a_backlog(tmp_path):
    """The nightly trains the intent model on every order so far: run in the middle of a
    backlog, orders still in the spool would label their buyers as not having bought."""
    import dataclasses
    from types import SimpleNamespace

    watch, _steps = _loop(tmp_path)
    watch.warehouse.missing = []
    watch.settings = dataclasses.replace(watch.settings, nightly_at=dt.time(0, 0))
    nightly, intent = _Script("nightly build"), _Script("intent")
    watch.signals.nightly = nightly
    watch.intent = SimpleNamespace(run=intent)
    watch.retention = SimpleNamespace(run=_Script("retention"))
    _captures(watch, more=[True, True, False])
    watch.cycle()
    watch.cycle()
    assert (nightly.calls, intent.calls) == ([], [])
    watch.cycle()  # the last step is in
    assert (len(nightly.calls), len(intent.calls)) == (1, 1)


def test_the_tap_logs_folder_is_meltanos_variable_for_it(monkeypatch):
    """TAP_RUDDERSTACK_LOGS_FOLDER is how Meltano sets the tap's logs_folder over meltano.yml:
    the watch's own tap, and forget and retention after it, read the same folder."""
    monkeypatch.setenv("TAP_RUDDERSTACK_LOGS_FOLDER", "events")
    settings = from_environment(ROOT)
    assert settings.logs_folder == "events"
    assert settings.tap_rudderstack_config()["logs_folder"] == "events"
    monkeypatch.delenv("TAP_RUDDERSTACK_LOGS_FOLDER")
    assert from_environment(ROOT).tap_rudderstack_config()["logs_folder"] == "rudder-logs"


def test_link_domains_read_as_meltano_passes_an_array_or_as_a_list():
    assert domain_list('["shop.example.com", "cdn.example.net"]') == (
        "shop.example.com",
        "cdn.example.net",
    )
    assert domain_list(" shop.example.com, cdn.example.net ,") == (
        "shop.example.com",
        "cdn.example.net",
    )
    assert domain_list("") == ()
    with pytest.raises(SettingsError, match="JSON array"):
        domain_list('["shop.example.com"')
    with pytest.raises(SettingsError, match="JSON array"):
        domain_list("[1, 2]")
