"""`signalmail watch`: capture, compute and activate continuously (docs/watch.md)."""

from __future__ import annotations

import datetime as dt
import json
import logging
import logging.handlers
from pathlib import Path
from typing import Any

import click

from signalmail.watch.options import project_options
from signalmail.watch.settings import SettingsError, from_environment


def _nightly_at(_ctx: click.Context, _param: click.Parameter, value: str) -> dt.time | None:
    if value in ("", "never", "off"):
        return None
    try:
        return dt.time.fromisoformat(value)
    except ValueError:
        raise click.BadParameter(f"{value!r} is not HH:MM (or 'never')") from None


def _dbt_vars(_ctx: click.Context, _param: click.Parameter, value: str | None) -> dict[str, Any]:
    if not value:
        return {}
    try:
        parsed = json.loads(value)
    except ValueError as exc:
        raise click.BadParameter(f"not JSON: {exc}") from None
    if not isinstance(parsed, dict):
        raise click.BadParameter("must be a JSON object, e.g. '{\"cart_abandon_minutes\": 0}'")
    return parsed


#: watch.log rolls over at this size, keeping this many older files (watch.log.1, ...): the
#: watch runs for months, and each idle capture logs a line or two
LOG_MAX_BYTES = 50 * 1024 * 1024
LOG_BACKUPS = 5


def _setup_logging(path: Path) -> None:
    """Everything the plugins and dbt log goes to a file; the terminal keeps the view."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handler = logging.handlers.RotatingFileHandler(
        path, maxBytes=LOG_MAX_BYTES, backupCount=LOG_BACKUPS, encoding="utf-8"
    )
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.INFO)


@click.command()
@project_options
@click.option("--spool", envvar="SIGNALMAIL_SPOOL", help="Spool root [env SIGNALMAIL_SPOOL].")
@click.option(
    "--duckdb-path",
    type=click.Path(dir_okay=False, path_type=Path),
    envvar="SIGNALMAIL_DUCKDB_PATH",
    help="DuckDB warehouse file [env SIGNALMAIL_DUCKDB_PATH; default data/warehouse.duckdb].",
)
@click.option(
    "--ledger-path",
    type=click.Path(dir_okay=False, path_type=Path),
    envvar="SIGNALMAIL_LEDGER_PATH",
    help="DuckDB send ledger [env SIGNALMAIL_LEDGER_PATH; default data/ledger.duckdb].",
)
@click.option(
    "--state-dir",
    type=click.Path(file_okay=False, path_type=Path),
    envvar="SIGNALMAIL_WATCH_STATE_DIR",
    default="data/watch",
    show_default=True,
    help="Bookmarks, batch files, dbt's target folder and the log "
    "[env SIGNALMAIL_WATCH_STATE_DIR].",
)
@click.option(
    "--vars",
    "dbt_vars",
    callback=_dbt_vars,
    help="dbt vars as JSON, e.g. '{\"cart_abandon_minutes\": 0}'.",
)
@click.option(
    "--lookback-seconds",
    type=click.FloatRange(min=1),
    default=10,
    show_default=True,
    help="The ticks' lookback (dbt var lookback_minutes, in seconds): every tick re-reads "
    "this window of events before its high-water mark. A capture that loads events received "
    "before the window (a collector publishing a recovered journal) widens the next tick to "
    "reach them.",
)
@click.option(
    "--late-file-minutes",
    type=click.IntRange(min=1),
    default=10,
    show_default=True,
    help="tap-rudderstack's late_file_window_minutes: a segment published this long after an "
    "already-read one is still read. The collector publishes within seconds; hourly "
    "RudderStack dumps in object storage need the tap's 120.",
)
@click.option("--poll-seconds", type=click.FloatRange(min=0.05), default=0.5, show_default=True)
@click.option(
    "--idle-tick-seconds",
    type=click.FloatRange(min=1),
    default=5.0,
    show_default=True,
    help="Tick at least this often without new events: time alone makes a trigger due (a cart "
    "idle for the abandonment delay), so this bounds the latency of those emails.",
)
@click.option(
    "--checkpoint-wal-mb",
    type=click.IntRange(min=0),
    default=256,
    show_default=True,
    help="DuckDB: checkpoint once the write-ahead log passes this size (0: only at exit).",
)
@click.option(
    "--nightly-at",
    default="03:00",
    show_default=True,
    callback=_nightly_at,
    help="UTC time of the daily full build with every test, or 'never'.",
)
@click.option(
    "--metrics-port",
    type=click.IntRange(min=0, max=65535),
    envvar="SIGNALMAIL_WATCH_METRICS_PORT",
    default=9464,
    show_default=True,
    help="Prometheus /metrics port (0: off) [env SIGNALMAIL_WATCH_METRICS_PORT].",
)
@click.option("--metrics-host", default="127.0.0.1", show_default=True)
@click.option(
    "--view",
    type=click.Choice(["auto", "live", "lines", "quiet"]),
    default="auto",
    show_default=True,
    help="auto: a live panel on a terminal, one line per cycle otherwise.",
)
@click.option("--max-cycles", type=click.IntRange(min=1), help="Stop after this many cycles.")
@click.option(
    "--exit-when-idle",
    is_flag=True,
    help="Stop after the first cycle that found nothing new to load or send (scripts, tests).",
)
@click.option(
    "--summary-json",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write every cycle's timings and every email's latency here at exit.",
)
@click.option(
    "--report",
    "report_dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="At exit, write the HTML report (signalmail report) into this folder.",
)
@click.option("--fail-fast", is_flag=True, help="Stop at the first failed step (tests).")
def watch(
    project_root: Path,
    engine: str | None,
    spool: str | None,
    duckdb_path: Path | None,
    ledger_path: Path | None,
    state_dir: Path,
    dbt_vars: dict[str, Any],
    lookback_seconds: float,
    late_file_minutes: int,
    poll_seconds: float,
    idle_tick_seconds: float,
    checkpoint_wal_mb: int,
    nightly_at: dt.time | None,
    metrics_port: int,
    metrics_host: str,
    view: str,
    max_cycles: int | None,
    exit_when_idle: bool,
    summary_json: Path | None,
    report_dir: Path | None,
    fail_fast: bool,
) -> None:
    """Capture, compute and activate continuously: events to emails in seconds.

    One process loads new spool events (tap-rudderstack), runs the dbt tick through a warm
    in-process dbt, and sends due emails (tap-warehouse -> target-mailchimp-transactional),
    cycle after cycle. Secrets and endpoints come from the environment:
    SIGNALMAIL_MANDRILL_API_KEY, SIGNALMAIL_MANDRILL_BASE_URL, SIGNALMAIL_PG_URL,
    SIGNALMAIL_DATA_PLANE_URL and SIGNALMAIL_WRITE_KEY (for Email Sent events).
    Ctrl-C or SIGTERM finishes the current step and stops.
    """
    from signalmail.watch.loop import Watch
    from signalmail.watch.metrics import WatchMetrics
    from signalmail.watch.restart import TooManyRestarts, restart_process
    from signalmail.watch.status import WatchStatus
    from signalmail.watch.view import make_view

    root = project_root.resolve()
    try:
        settings = from_environment(
            root,
            engine=engine,
            spool=spool,
            duckdb_path=duckdb_path,
            ledger_path=ledger_path,
            state_dir=state_dir,
            dbt_vars=dbt_vars,
            lookback_seconds=lookback_seconds,
            late_file_minutes=late_file_minutes,
            poll_seconds=poll_seconds,
            idle_tick_seconds=idle_tick_seconds,
            checkpoint_wal_mb=checkpoint_wal_mb,
            nightly_at=nightly_at,
        )
        settings.target_config()  # the Mandrill key is needed from the first cycle
    except SettingsError as exc:
        raise click.UsageError(str(exc)) from None
    if not settings.dbt_project_dir.is_dir():
        raise click.UsageError(
            f"no dbt project at {settings.dbt_project_dir}: run the watch from the signalmail "
            "project (or give --project-root)"
        )
    _setup_logging(settings.path(settings.state_dir) / "watch.log")
    status = WatchStatus()
    metrics = WatchMetrics()
    shown = make_view(view, status)
    runner = Watch(
        settings,
        shown,
        status,
        metrics,
        fail_fast=fail_fast,
        report_dir=settings.path(report_dir) if report_dir else None,
    )
    if metrics_port:
        port = metrics.serve(metrics_host, metrics_port)
        shown.note(f"metrics at http://{metrics_host}:{port}/metrics")
    try:
        runner.run(max_cycles=max_cycles, exit_when_idle=exit_when_idle)
    finally:
        if summary_json is not None:
            runner.write_summary(settings.path(summary_json))
    if status.restart_reason is not None:
        try:
            restart_process(status.restart_reason)
        except TooManyRestarts as exc:
            raise click.ClickException(str(exc)) from None
    if fail_fast and status.totals["errors"]:
        raise click.ClickException("a step failed; see the log")
