"""`signalmail demo`: signalmail end to end, in real time, on embedded defaults.

1. A collector (`signalmail collect`, one-second segments) and a Mandrill sandbox (`signalmail
   sandbox`, its webhooks posting back to the collector) start on free ports of 127.0.0.1; the
   starter templates are pushed with `signalmail templates sync` and published.
2. Two weeks of a simulated storefront's history go through rudder-sdk-python into the
   collector (compressed time), and the spool is read back: every event once.
3. `signalmail watch` starts (the same process a user runs), catches up with the history, and
   then runs while the simulator sends live traffic; its step timings and latencies print as
   they happen. Abandonment delays are shortened (a cart counts as abandoned after a minute)
   so that live shoppers get their emails within the demo.
4. The watch stops like a user stops it (SIGTERM), writes output/demo/report/index.html, and the
   demo prints what happened, including the emails deferred to a shopper's best hour.

Everything lives under data/demo/ and output/; `--keep` adds to what is there.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import click

from signalmail.collector.readback import print_spool_summary, read_spool
from signalmail.services import (
    SIGNALMAIL,
    CollectorProcess,
    ServiceError,
    free_port,
    publish_starter_templates,
    running_collector,
    running_sandbox,
)

DEMO_SOURCE_ID = "demo"
DATA = Path("data/demo")
#: the demo's report, apart from output/report, where `signalmail report` writes a pipeline's
REPORT = Path("output/demo/report")
#: dbt vars of the demo's watch: delays short enough for a live demo of a few minutes; the
#: rest (quiet hours, best hours, hold-outs) as a shop would have them
DEMO_VARS = {"cart_abandon_minutes": 1, "browse_abandon_minutes": 2}
#: after the live traffic: the last carts become due a minute after their last change
WIND_DOWN_SECONDS = 75.0


class DemoError(ServiceError):
    """The demo could not complete; the message says which step and why."""


def capture_history(
    collector: CollectorProcess, users: int, days: float, seed: int
) -> dict[str, Any]:
    """Simulate `days` of history through rudder-sdk-python into the collector."""
    from signalmail.simulate.cli import run, summary
    from signalmail.simulate.model import Simulation, SimulationConfig
    from signalmail.simulate.sinks import SdkSink, SinkError

    start = datetime.now(UTC).replace(microsecond=0) - timedelta(days=days)
    config = SimulationConfig(seed=seed, users=users, days=days, start=start)
    sim = Simulation(config)
    began = time.monotonic()
    sink = SdkSink(collector.url, collector.write_key, batch_size=500)
    try:
        # two weeks of a shop take a while: the bar shows how far it got (on a terminal only)
        handed = run(
            sim, sink, compress_time=True, rate=None, limit=None, progress=sys.stderr.isatty()
        )
    finally:
        try:
            sink.close()
        except SinkError as exc:
            raise DemoError(f"the collector did not accept every event: {exc}") from exc
    return summary(sim.stats, config, handed, time.monotonic() - began)


def wait_for_spool(spool: Path, events: int, timeout: float = 60.0) -> None:
    """Until the collector's segments hold `events` events (segments publish every second)."""
    deadline = time.monotonic() + timeout
    while read_spool(spool, DEMO_SOURCE_ID).events < events:
        if time.monotonic() > deadline:
            raise DemoError(f"the spool does not hold the {events} events after {timeout}s")
        time.sleep(0.2)


def metric(port: int, name: str) -> float | None:
    """One value of the watch's /metrics, or None while it does not answer."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as answer:
            text = answer.read().decode()
    except OSError:
        return None
    for line in text.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            return float(line.rsplit(" ", 1)[1])
    return None


def wait_for_cycles(watch: subprocess.Popen[bytes], port: int, cycles: int, timeout: float) -> None:
    """Until the watch has finished `cycles` cycles (its /metrics says so)."""
    deadline = time.monotonic() + timeout
    while (metric(port, "signalmail_watch_cycles_total") or 0) < cycles:
        if watch.poll() is not None:
            raise DemoError(f"signalmail watch exited with {watch.returncode}")
        if time.monotonic() > deadline:
            raise DemoError(f"signalmail watch did not finish {cycles} cycle(s) in {timeout}s")
        time.sleep(0.5)


def reset(project_root: Path, spool: Path) -> None:
    """Remove what an earlier demo left (only the demo's own folders and files)."""
    data = project_root / DATA
    for leftover in (
        spool / "rudder-logs" / DEMO_SOURCE_ID,
        spool / ".journal" / DEMO_SOURCE_ID,
        data / "watch",
        data / "sandbox",
        project_root / REPORT,
    ):
        shutil.rmtree(leftover, ignore_errors=True)
    for name in ("warehouse.duckdb", "warehouse.duckdb.wal", "ledger.duckdb", "ledger.duckdb.wal"):
        (data / name).unlink(missing_ok=True)


def live_traffic(
    collector: CollectorProcess, users: int, seed: int, seconds: float, rate: float
) -> subprocess.CompletedProcess[str]:
    """Open the storefront right now: `rate` events a second for `seconds`."""
    env = {k: v for k, v in os.environ.items() if k != "SIGNALMAIL_DATA_PLANE_URL"}
    env["SIGNALMAIL_WRITE_KEY"] = collector.write_key
    return subprocess.run(  # noqa: S603
        [
            *SIGNALMAIL,
            "simulate",
            "--data-plane-url",
            collector.url,
            "--users",
            str(users),
            "--seed",
            str(seed),
            "--rate",
            str(rate),
            "--limit",
            str(int(rate * seconds)),
            "--json",
        ],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )


def print_outcome(project_root: Path, summary_path: Path) -> None:
    """Print what the watch did, from its summary and the warehouse."""
    summary = json.loads(summary_path.read_text())
    latency = summary["latency"]
    totals = summary["totals"]
    click.echo(
        f"\nthe watch ran {len(summary['cycles'])} cycles: {totals.get('events', 0):,} events "
        f"loaded, {sum(summary['emails_by_campaign'].values()):,} emails accepted by Mandrill, "
        f"{totals.get('held_out', 0):,} held out"
    )
    for campaign, count in sorted(summary["emails_by_campaign"].items()):
        click.echo(f"  {count:>6}  {campaign}")
    if latency["count"]:
        click.echo(
            f"event-to-Mandrill latency: p50 {latency['p50']:.1f}s, p95 {latency['p95']:.1f}s, "
            f"max {latency['max']:.1f}s over {latency['count']} emails"
        )
    waiting = deferred_emails(project_root / DATA / "warehouse.duckdb")
    if waiting:
        click.echo(
            "not yet due: deferred to the shopper's best hour (or the end of their quiet hours); "
            "each goes out with the first run after its time"
        )
    for campaign, count, first in waiting:
        click.echo(f"  {count:>6}  {campaign}, the first deferred to {first:%Y-%m-%d %H:%M} UTC")


def deferred_emails(
    warehouse: Path, now: datetime | None = None
) -> list[tuple[str, int, datetime]]:
    """Campaign, count and earliest send time of the emails whose `send_after` is to come.

    `send_after` is naive UTC, so it is compared with a naive UTC now passed in: DuckDB's
    `now()::timestamp` is the machine's local time (hours off anywhere but UTC).
    """
    import duckdb

    now = now or datetime.now(UTC).replace(tzinfo=None)
    with duckdb.connect(str(warehouse), read_only=True) as con:
        rows = con.execute(
            "select campaign, count(*), min(send_after) from signals.email_triggers "
            "where send_after > ? group by 1 order by 3",
            [now],
        ).fetchall()
    return [(campaign, int(count), first) for campaign, count, first in rows]


@click.command()
@click.option("--users", type=click.IntRange(min=1), default=300, show_default=True)
@click.option(
    "--days", type=click.FloatRange(min=0, min_open=True), default=14.0, show_default=True
)
@click.option("--seed", type=int, default=42, show_default=True)
@click.option(
    "--live-seconds",
    type=click.FloatRange(min=0),
    default=60.0,
    show_default=True,
    help="How long the storefront sends live traffic while the watch runs.",
)
@click.option(
    "--rate",
    type=click.FloatRange(min=1),
    default=50.0,
    show_default=True,
    help="Live events per second.",
)
@click.option(
    "--spool",
    type=click.Path(file_okay=False, path_type=Path),
    default=DATA / "spool",
    show_default=True,
    help="Spool directory the demo's collector writes.",
)
@click.option(
    "--fresh/--keep",
    default=True,
    show_default=True,
    help="Start from an empty demo (spool, warehouse, ledger, state, sandbox), or add to it.",
)
@click.option(
    "--capture-only",
    is_flag=True,
    help="Stop after the history's capture: collector + simulator + spool read-back.",
)
def demo(
    users: int,
    days: float,
    seed: int,
    live_seconds: float,
    rate: float,
    spool: Path,
    fresh: bool,
    capture_only: bool,
) -> None:
    """Run signalmail end to end, in real time, on embedded defaults."""
    from signalmail.simulate.cli import print_summary

    project_root = Path.cwd()
    if not capture_only and not (project_root / "dbt_project").is_dir():
        raise DemoError("run the demo from the signalmail project folder (where meltano.yml is)")
    if fresh:
        reset(project_root, spool)
    data = project_root / DATA
    write_key, webhook_key = secrets.token_urlsafe(16), secrets.token_urlsafe(16)
    with running_collector(
        spool,
        write_key,
        DEMO_SOURCE_ID,
        extra_args=("--max-segment-age", "1"),
        extra_env={"SIGNALMAIL_MANDRILL_WEBHOOK_KEY": webhook_key},
    ) as collector:
        click.echo(f"collector up at {collector.url} (spool {spool})")
        before = read_spool(spool, DEMO_SOURCE_ID).events
        click.echo(f"simulating {users} shoppers over {days:g} days of history (seed {seed})")
        history = capture_history(collector, users, days, seed)
        print_summary(history)
        wait_for_spool(spool, before + history["events"])
        spooled = read_spool(spool, DEMO_SOURCE_ID)
        print_spool_summary(spooled, spool)
        if spooled.duplicates:
            raise DemoError(f"{spooled.duplicates} events are in the spool twice")
        if fresh:
            click.echo(f"\nall {history['events']} simulated events are in the spool, once each")
        if capture_only:
            return
        with running_sandbox(
            data / "sandbox", f"{collector.url}/webhooks/mandrill", webhook_key
        ) as sandbox:
            slugs = publish_starter_templates(
                project_root, sandbox.api_key, sandbox.api_host, data / "sandbox" / "sync.json"
            )
            click.echo(f"sandbox up at {sandbox.url}; published templates: {', '.join(slugs)}")
            run_watch(project_root, spool, collector, sandbox, users, seed, live_seconds, rate)
    click.echo(
        f"\nreport: {project_root / REPORT / 'index.html'}  (open it in a browser)"
        "\n\nto shop yourself and watch your own emails arrive: run `signalmail collect`, "
        "`signalmail sandbox` and `signalmail watch` (docs/watch.md), then\n"
        "  signalmail storefront --data-plane-url http://127.0.0.1:8080 --write-key <key>\n"
        "and open http://127.0.0.1:8090/ (sign up with an email and tick the box, add to cart, "
        "leave: the cart email arrives in the sandbox)"
    )


#: prefixes of the variables a user's pipeline sets that the demo's watch must not inherit
DEMO_FOREIGN_VARIABLES = ("SIGNALMAIL_", "TAP_", "TARGET_", "DBT_")


def demo_environment(environ: Mapping[str, str], **settings: str) -> dict[str, str]:
    """Return the demo watch's environment: the shell's, without a pipeline's settings.

    A pipeline's variables in the shell (another dbt schema, another logs folder, a real
    Mandrill key) would point the demo's watch away from what the demo set up.
    """
    kept = {k: v for k, v in environ.items() if not k.startswith(DEMO_FOREIGN_VARIABLES)}
    return {**kept, **settings}


def run_watch(
    project_root: Path,
    spool: Path,
    collector: CollectorProcess,
    sandbox: Any,
    users: int,
    seed: int,
    live_seconds: float,
    rate: float,
) -> None:
    """Start the watch, let it catch up, send live traffic, stop it as a user would."""
    data = project_root / DATA
    port = free_port()
    env = demo_environment(
        os.environ,
        SIGNALMAIL_DBT_TARGET="duckdb",
        SIGNALMAIL_SPOOL=str(spool),
        SIGNALMAIL_DUCKDB_PATH=str(data / "warehouse.duckdb"),
        SIGNALMAIL_LEDGER_PATH=str(data / "ledger.duckdb"),
        SIGNALMAIL_MANDRILL_API_KEY=sandbox.api_key,
        SIGNALMAIL_MANDRILL_BASE_URL=sandbox.api_host,
        SIGNALMAIL_DATA_PLANE_URL=collector.url,
        SIGNALMAIL_WRITE_KEY=collector.write_key,
    )
    summary = data / "watch" / "summary.json"
    command = [
        *SIGNALMAIL, "watch", "--project-root", str(project_root),
        "--state-dir", str(data / "watch"), "--view", "lines", "--nightly-at", "never",
        "--idle-tick-seconds", "2",
        "--metrics-port", str(port), "--vars", json.dumps(DEMO_VARS),
        "--summary-json", str(summary), "--report", str(project_root / REPORT),
    ]  # fmt: skip
    click.echo(f"\n$ signalmail watch  (metrics at http://127.0.0.1:{port}/metrics)")
    watch = subprocess.Popen(command, env=env, cwd=project_root)  # noqa: S603
    try:
        wait_for_cycles(watch, port, 1, timeout=600)
        if live_seconds:
            click.echo(
                f"\nthe storefront is open: {rate:g} events a second for {live_seconds:g}s "
                "(a cart counts as abandoned after a minute)"
            )
            live = live_traffic(collector, users, seed + 1, live_seconds, rate)
            if live.returncode != 0:
                raise DemoError(f"live traffic failed:\n{live.stdout[-2000:]}{live.stderr[-2000:]}")
            # the carts abandoned last become due a minute later: the watch keeps going
            click.echo(
                f"\nthe storefront is closed; the watch runs {WIND_DOWN_SECONDS:g}s more for the "
                "carts and browsing abandoned at the end"
            )
            deadline = time.monotonic() + WIND_DOWN_SECONDS
            while time.monotonic() < deadline and watch.poll() is None:
                time.sleep(0.5)
    finally:
        if watch.poll() is None:
            watch.send_signal(signal.SIGTERM)
        code = watch.wait(timeout=600)
    if code != 0:
        raise DemoError(f"signalmail watch exited with {code}")
    print_outcome(project_root, summary)
