"""`signalmail demo`: signalmail end to end on embedded defaults.

The capture half lives here; the load/model/send half in `signalmail.demo_pipeline`. Capture
starts `signalmail collect` as a child process on a free port with its spool under
./data/demo/spool, drives the storefront simulator through rudder-sdk-python against it with
compressed time, stops the collector with SIGTERM (so its last segment is published), then reads
the spool segments back and prints what was captured. It fails loudly if any event the SDK
handed over is missing from the spool.
"""

from __future__ import annotations

import contextlib
import gzip
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import click

DEMO_SOURCE_ID = "demo"
DEFAULT_SPOOL = Path("data/demo/spool")
#: <unix_ts>.<source_id>.<uuid>.json.gz, the only files a spool reader may look at
SEGMENT_SUFFIX = ".json.gz"


class DemoError(click.ClickException):
    """The demo could not complete; the message says which step and why."""


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class CollectorProcess:
    """A `signalmail collect` child process and how to reach it."""

    process: subprocess.Popen[bytes]
    url: str
    log_path: Path

    def log_tail(self, lines: int = 20) -> str:
        """Return the end of the collector's log, for error messages."""
        return _log_tail(self.log_path, lines)

    def stop(self, timeout: float = 30.0) -> int:
        """SIGTERM and wait: the collector closes its spool, publishing the open segment."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
                raise DemoError(
                    f"collector did not stop within {timeout}s of SIGTERM; killed it. "
                    f"Log:\n{self.log_tail()}"
                ) from None
        return int(self.process.returncode)


def _healthy(url: str, source_id: str) -> bool:
    """Tell whether the collector we started answers /health for our source.

    Checking the source id, not just a 200, keeps a different server that happens to hold the
    port (another run grabbed it between `free_port()` and our bind) from passing as ours.
    """
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=1) as answer:  # noqa: S310
            body = json.loads(answer.read())
    except (urllib.error.URLError, OSError, ValueError):
        return False
    return isinstance(body, dict) and body.get("source_id") == source_id


def _log_tail(log_path: Path, lines: int = 20) -> str:
    """Return the end of a child process's log, for error messages."""
    try:
        return "\n".join(log_path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return f"(no log at {log_path})"


def wait_until_ready(
    process: subprocess.Popen[bytes],
    ready: Callable[[], bool],
    what: str,
    log_path: Path,
    timeout: float,
) -> None:
    """Poll `ready` until it holds; fail with the child's log if it exits or times out first.

    Readiness polling, not a sleep standing in for synchronisation: the loop ends the moment
    the server answers.
    """
    deadline = time.monotonic() + timeout
    while not ready():
        if process.poll() is not None:
            raise DemoError(
                f"{what} exited with {process.returncode} during start-up. "
                f"Log:\n{_log_tail(log_path)}"
            )
        if time.monotonic() > deadline:
            raise DemoError(f"{what} not ready after {timeout}s. Log:\n{_log_tail(log_path)}")
        time.sleep(0.05)


@contextlib.contextmanager
def running_collector(
    spool: Path,
    write_key: str,
    source_id: str = DEMO_SOURCE_ID,
    port: int | None = None,
    startup_timeout: float = 30.0,
    extra_args: tuple[str, ...] = (),
    extra_env: dict[str, str] | None = None,
) -> Iterator[CollectorProcess]:
    """Run `signalmail collect` for the duration of the block; stop it cleanly afterwards.

    The write key goes through the environment, never the command line (visible in `ps`).
    Readiness is GET /health answering 200; a collector that exits during start-up is reported
    with the tail of its log.
    """
    port = port or free_port()
    spool.mkdir(parents=True, exist_ok=True)
    log_path = spool.parent / "collector.log"
    command = [
        sys.executable,
        "-c",
        "from signalmail.cli import main; main()",
        "collect",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--spool",
        str(spool),
        "--source-id",
        source_id,
        *extra_args,
    ]
    env = dict(os.environ, SIGNALMAIL_WRITE_KEY=write_key, **(extra_env or {}))
    with log_path.open("wb") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env)  # noqa: S603
    collector = CollectorProcess(process, f"http://127.0.0.1:{port}", log_path)
    try:
        wait_until_ready(
            process,
            lambda: _healthy(collector.url, source_id),
            "collector",
            log_path,
            startup_timeout,
        )
        yield collector
    finally:
        collector.stop()


@dataclass
class SpoolSummary:
    """What the spool holds, read back segment by segment."""

    segments: list[Path] = field(default_factory=list)
    events: int = 0
    message_ids: set[str] = field(default_factory=set)
    by_type: Counter[str] = field(default_factory=Counter)
    by_name: Counter[str] = field(default_factory=Counter)
    user_ids: set[str] = field(default_factory=set)
    anonymous_ids: set[str] = field(default_factory=set)
    opted_in: set[str] = field(default_factory=set)
    first: str | None = None
    last: str | None = None

    @property
    def duplicates(self) -> int:
        """Events whose messageId appeared before."""
        return self.events - len(self.message_ids)


def read_spool(root: Path, source_id: str | None = None) -> SpoolSummary:
    """Summarise every published segment under `root` (optionally of one source).

    Only names of the published pattern are read; journals and `.partial` files are skipped,
    as any spool reader must.
    """
    summary = SpoolSummary()
    base = root / "rudder-logs"
    pattern = f"*/*/*{SEGMENT_SUFFIX}" if source_id is None else f"{source_id}/*/*{SEGMENT_SUFFIX}"
    consent: dict[str, bool] = {}
    for path in sorted(base.glob(pattern)):
        if path.name.startswith("."):
            continue
        summary.segments.append(path)
        with gzip.open(path, "rt", encoding="utf-8") as handle:
            for line in handle:
                event = json.loads(line)
                summary.events += 1
                summary.message_ids.add(event["messageId"])
                summary.by_type[event["type"]] += 1
                if event["type"] == "track":
                    summary.by_name[event["event"]] += 1
                if event.get("userId"):
                    summary.user_ids.add(event["userId"])
                if event.get("anonymousId"):
                    summary.anonymous_ids.add(event["anonymousId"])
                traits = event.get("traits") or (event.get("context") or {}).get("traits") or {}
                if event["type"] == "identify" and "email_opt_in" in traits:
                    consent[event["userId"]] = bool(traits["email_opt_in"])
                stamp = event.get("timestamp")
                if stamp:
                    summary.first = min(summary.first or stamp, stamp)
                    summary.last = max(summary.last or stamp, stamp)
    summary.opted_in = {user for user, ok in consent.items() if ok}
    return summary


def print_spool_summary(summary: SpoolSummary, root: Path) -> None:
    """Print the captured data, as a person would want to see it after the demo."""
    click.echo(
        f"\ncaptured in {root}: {len(summary.segments)} segments, {summary.events} events "
        f"({summary.duplicates} duplicate messageIds)"
    )
    click.echo(f"  event time {summary.first} .. {summary.last}")
    click.echo(
        f"  users: {len(summary.user_ids)} identified ({len(summary.opted_in)} opted in to "
        f"email), {len(summary.anonymous_ids)} devices (anonymousIds)"
    )
    for kind, count in summary.by_type.most_common():
        click.echo(f"  {count:>8}  {kind}")
    for name, count in summary.by_name.most_common():
        click.echo(f"  {count:>8}    track: {name}")
    for path in summary.segments[:5]:
        click.echo(f"  segment {path.relative_to(root)}")
    if len(summary.segments) > 5:
        click.echo(f"  ... and {len(summary.segments) - 5} more")


def capture(
    spool: Path,
    users: int,
    days: float,
    seed: int,
    fresh: bool = True,
    max_segment_age: float = 5.0,
) -> tuple[dict[str, Any], SpoolSummary]:
    """Collector + simulator + read-back; returns (simulation summary, spool summary)."""
    from signalmail.simulate.cli import run, summary
    from signalmail.simulate.model import Simulation, SimulationConfig
    from signalmail.simulate.sinks import SdkSink, SinkError

    if fresh:  # only the demo's own source: never wipe anything else under a given directory
        for leftover in (
            spool / "rudder-logs" / DEMO_SOURCE_ID,
            spool / ".journal" / DEMO_SOURCE_ID,
        ):
            shutil.rmtree(leftover, ignore_errors=True)
    write_key = secrets.token_urlsafe(16)
    start = datetime.now(UTC).replace(microsecond=0) - timedelta(days=days)
    config = SimulationConfig(seed=seed, users=users, days=days, start=start)
    sim = Simulation(config)
    began = time.monotonic()
    with running_collector(
        spool, write_key, extra_args=("--max-segment-age", str(max_segment_age))
    ) as collector:
        click.echo(
            f"collector up at {collector.url} (spool {spool}); simulating {users} users "
            f"over {days:g} days with seed {seed}"
        )
        sink = SdkSink(collector.url, write_key, batch_size=500)
        try:
            handed = run(sim, sink, compress_time=True, rate=None, limit=None)
        finally:
            try:
                sink.close()
            except SinkError as exc:
                raise DemoError(f"the collector did not accept every event: {exc}") from exc
        code = collector.stop()
    if code != 0:  # a graceful SIGTERM stop exits 0; anything else lost the last segment
        raise DemoError(f"collector exited with {code}. Log:\n{collector.log_tail()}")
    sim_summary = summary(sim.stats, config, handed, time.monotonic() - began)
    spooled = read_spool(spool, DEMO_SOURCE_ID)
    return sim_summary, spooled


@click.command()
@click.option("--users", type=click.IntRange(min=1), default=200, show_default=True)
@click.option(
    "--days", type=click.FloatRange(min=0, min_open=True), default=14.0, show_default=True
)
@click.option("--seed", type=int, default=42, show_default=True)
@click.option(
    "--spool",
    type=click.Path(file_okay=False, path_type=Path),
    default=DEFAULT_SPOOL,
    show_default=True,
    help="Spool directory the demo's collector writes.",
)
@click.option(
    "--fresh/--keep",
    default=True,
    show_default=True,
    help="Start from an empty demo (spool, warehouse, ledger, state), or add to what is there.",
)
@click.option(
    "--capture-only",
    is_flag=True,
    help="Stop after capture: collector + simulator + spool read-back, no Meltano or dbt.",
)
def demo(users: int, days: float, seed: int, spool: Path, fresh: bool, capture_only: bool) -> None:
    """Run signalmail end to end on embedded defaults.

    Capture (collector + simulated storefront through rudder-sdk-python), then one
    `meltano run` that loads the spool into DuckDB, builds the dbt signals and sends the due
    emails into a local Mandrill sandbox, whose webhooks flow back into the collector.
    """
    from signalmail.simulate.cli import print_summary

    project_root = Path.cwd()
    if not capture_only and not (project_root / "meltano.yml").exists():
        raise DemoError("run the demo from the signalmail project folder (where meltano.yml is)")
    if fresh and not capture_only:
        for leftover in ("warehouse.duckdb", "ledger.duckdb", "state", "outbox"):
            path = project_root / "data" / "demo" / leftover
            if path.is_dir():
                shutil.rmtree(path)
            else:
                path.unlink(missing_ok=True)
        (project_root / "data" / "demo" / "sandbox.sqlite").unlink(missing_ok=True)
    sim_summary, spooled = capture(spool, users, days, seed, fresh=fresh)
    print_summary(sim_summary)
    print_spool_summary(spooled, spool)
    if fresh:
        missing = sim_summary["events"] - len(spooled.message_ids)
        if missing:
            raise DemoError(f"{missing} events handed to the SDK are not in the spool")
        click.echo(f"\nall {sim_summary['events']} simulated events are in the spool, once each")
    if capture_only:
        return

    from signalmail.demo_pipeline import activate

    write_key = secrets.token_urlsafe(16)
    webhook_key = secrets.token_urlsafe(16)
    with running_collector(
        spool,
        write_key,
        extra_args=("--max-segment-age", "5"),
        extra_env={"SIGNALMAIL_MANDRILL_WEBHOOK_KEY": webhook_key},
    ) as collector:
        activate(project_root, collector.url, write_key, webhook_key)
        code = collector.stop()
    if code != 0:
        raise DemoError(f"collector exited with {code}. Log:\n{collector.log_tail()}")
    click.echo(
        "opens, clicks and Email Sent events are in the spool now; "
        "`meltano --environment demo run tap-rudderstack target-duckdb-bulk` loads them"
    )
