"""`signalmail simulate`: a storefront's traffic, sent to a data plane or written to a spool.

Two clocks:

- live (default): the stream plays at `--rate` events per wall-clock second and every event is
  stamped with the current time, like a storefront that is open right now;
- `--compress-time`: weeks of behaviour starting at `--start` (default: `--days` ago, so the
  history ends now) are sent as fast as the data plane takes them (or at `--rate` if given),
  each event keeping its simulated `originalTimestamp`.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import click

from signalmail.progress import progress_bar
from signalmail.simulate.clock import Pacer
from signalmail.simulate.model import Simulation, SimulationConfig, SimulationStats, iso
from signalmail.simulate.sinks import EventSink, SdkSink, SinkError, SpoolSink

F = TypeVar("F", bound=Callable[..., Any])

DEFAULT_LIVE_RATE = 50.0


def parse_start(value: str | None) -> datetime | None:
    """`--start` as an aware UTC datetime: a date (`2026-01-01`) or an ISO instant."""
    if value is None:
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise click.BadParameter(
            f"{value!r} is not a date or ISO 8601 time (e.g. 2026-01-01 or 2026-01-01T08:00:00Z)"
        ) from None
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)


def destination_options(default_source_id: str) -> Callable[[F], F]:
    """Add the options choosing where events go; `simulate` and `replay` share them."""

    def decorate(command: F) -> F:
        for option in reversed(
            (
                click.option(
                    "--data-plane-url",
                    envvar="SIGNALMAIL_DATA_PLANE_URL",
                    help="Send through rudder-sdk-python to this RudderStack-compatible data "
                    "plane (a `signalmail collect` URL or RudderStack).",
                ),
                click.option(
                    "--write-key",
                    envvar="SIGNALMAIL_WRITE_KEY",
                    help="Source write key for --data-plane-url [env SIGNALMAIL_WRITE_KEY].",
                ),
                click.option(
                    "--spool",
                    type=click.Path(file_okay=False),
                    help="Write straight into this spool (directory or s3:// URL) instead of HTTP.",
                ),
                click.option(
                    "--source-id",
                    default=default_source_id,
                    show_default=True,
                    help="Source id of spool segments written with --spool.",
                ),
                click.option(
                    "--batch-size",
                    type=click.IntRange(min=1),
                    default=500,
                    show_default=True,
                    help="Events per SDK upload.",
                ),
                click.option(
                    "--max-retries",
                    type=click.IntRange(min=0),
                    default=3,
                    show_default=True,
                    help="SDK retries per batch (exponential backoff) before counting it as "
                    "failed.",
                ),
            )
        ):
            command = option(command)
        return command

    return decorate


def check_destination(data_plane_url: str | None, write_key: str | None, spool: str | None) -> None:
    """Refuse option combinations that name no destination, two, or an HTTP one without a key."""
    if bool(data_plane_url) == bool(spool):
        raise click.UsageError("give exactly one of --data-plane-url and --spool")
    if data_plane_url and not write_key:
        raise click.UsageError(
            "--write-key (or SIGNALMAIL_WRITE_KEY) is required with --data-plane-url"
        )


def make_sink(
    data_plane_url: str | None,
    write_key: str | None,
    spool: str | None,
    source_id: str,
    received_at: str = "now",
    live: bool = False,
    **sdk_options: Any,
) -> EventSink:
    """Build the one sink the options ask for (exactly one of data plane URL and spool).

    `live`: events are stamped with the wall clock as they are sent (simulate's live mode).
    """
    check_destination(data_plane_url, write_key, spool)
    if spool:
        return SpoolSink(spool, source_id, received_at=received_at, live=live)
    if received_at != "now":
        raise click.UsageError("--received-at event writes history into a --spool only")
    return SdkSink(str(data_plane_url), str(write_key), **sdk_options)


@dataclass
class Handed:
    """How many events `run` has handed to the sink so far; still right after `run` raised."""

    count: int = 0


def run(
    sim: Simulation,
    sink: EventSink,
    *,
    compress_time: bool,
    rate: float | None,
    limit: int | None,
    progress: bool = False,
    handed: Handed | None = None,
) -> int:
    """Feed the simulation into the sink; returns the number of events handed over.

    The SDK sink raises `SinkError` from `send` once a batch failed for good (a wrong write key,
    an unreachable data plane after its retries), so a misconfigured run fails in seconds. Pass
    `handed` to know how far a run that raised (or was interrupted) got.
    """
    pacer = Pacer(rate) if rate else None
    done = handed if handed is not None else Handed()
    with progress_bar(
        "simulating",
        total=limit,
        enabled=progress,
    ) as bar:
        for _, event in sim.timed():
            if pacer is not None:
                pacer.wait()
            if not compress_time:
                event["originalTimestamp"] = iso(time.time())
            sink.send(event)
            done.count += 1
            if done.count % 500 == 0:
                bar.update(done.count)
            if limit is not None and done.count >= limit:
                break
        bar.update(done.count)
    return done.count


def summary(
    stats: SimulationStats, config: SimulationConfig, handed: int, elapsed: float
) -> dict[str, Any]:
    """Describe what the run produced as a JSON-ready dict (printed as text or `--json`)."""
    return {
        "seed": config.seed,
        "users": config.users,
        "shoppers_active": len(stats.shoppers_active),
        "shoppers_identified": len(stats.identified),
        "sessions": stats.sessions,
        "events": handed,
        "events_by_name": dict(sorted(stats.events.items(), key=lambda kv: (-kv[1], kv[0]))),
        "carts": len(stats.carts),
        "orders": len(stats.ordered_carts),
        "cart_abandonment_rate": round(stats.cart_abandonment_rate, 4),
        "browse_abandoned_sessions": stats.browse_abandoned_sessions,
        "email_click_sessions": stats.email_sessions,
        "start": iso(config.start.timestamp()),
        "elapsed_s": round(elapsed, 3),
        "events_per_s": round(handed / elapsed, 1) if elapsed > 0 else None,
    }


def print_summary(data: dict[str, Any]) -> None:
    """Human-readable summary on stdout."""
    click.echo(
        f"simulated {data['users']} users ({data['shoppers_active']} active, "
        f"{data['shoppers_identified']} identified), {data['sessions']} sessions, "
        f"{data['events']} events in {data['elapsed_s']}s ({data['events_per_s']} events/s)"
    )
    click.echo(
        f"carts {data['carts']}, orders {data['orders']}, cart abandonment "
        f"{data['cart_abandonment_rate']:.1%}, browse-abandoned sessions "
        f"{data['browse_abandoned_sessions']}, sessions from email clicks "
        f"{data['email_click_sessions']}"
    )
    for name, count in data["events_by_name"].items():
        click.echo(f"  {count:>9}  {name}")


@click.command()
@destination_options(default_source_id="simulator")
@click.option(
    "--seed",
    type=int,
    default=42,
    show_default=True,
    help="Same seed, same stream (messageIds and timestamps included).",
)
@click.option("--users", type=click.IntRange(min=1), default=200, show_default=True)
@click.option(
    "--days",
    type=click.FloatRange(min=0, min_open=True),
    default=14.0,
    show_default=True,
    help="Length of simulated time.",
)
@click.option("--start", help="Simulated day 0 (UTC date or ISO time); default --days ago.")
@click.option(
    "--compress-time",
    is_flag=True,
    help="Keep simulated event times and send as fast as possible (or at --rate).",
)
@click.option(
    "--rate",
    type=click.FloatRange(min=0, min_open=True),
    help=f"Events per wall-clock second (live mode default {DEFAULT_LIVE_RATE:g}).",
)
@click.option("--limit", type=click.IntRange(min=1), help="Stop after this many events.")
@click.option("--catalog-size", type=click.IntRange(min=8), default=300, show_default=True)
@click.option("--sync", is_flag=True, help="SDK sync mode: one blocking request per event.")
@click.option(
    "--sent-at",
    type=click.Choice(["wall", "event"]),
    default="wall",
    show_default=True,
    help="wall: real sentAt, so the data plane's timestamp is the simulated time; "
    "event: sentAt = simulated time, so timestamp ~ receivedAt.",
)
@click.option(
    "--received-at",
    type=click.Choice(["now", "event"]),
    default="now",
    show_default=True,
    help="With --spool: now, as a collector receiving the events now; event, as received when "
    "they happened (a backfill of history: receivedAt = sentAt = the simulated time).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
def simulate(
    data_plane_url: str | None,
    write_key: str | None,
    spool: str | None,
    source_id: str,
    seed: int,
    users: int,
    days: float,
    start: str | None,
    compress_time: bool,
    rate: float | None,
    limit: int | None,
    catalog_size: int,
    batch_size: int,
    max_retries: int,
    sync: bool,
    sent_at: str,
    received_at: str,
    as_json: bool,
) -> None:
    """Simulate shoppers (catalog, identities, funnels, abandonment, email clicks)."""
    start_at = parse_start(start)
    if start_at is None:
        now = datetime.now(UTC).replace(microsecond=0)
        start_at = now - timedelta(days=days) if compress_time else now
    if not compress_time and rate is None:
        rate = DEFAULT_LIVE_RATE
    config = SimulationConfig(
        seed=seed, users=users, days=days, start=start_at, catalog_size=catalog_size
    )
    try:
        sink = make_sink(
            data_plane_url,
            write_key,
            spool,
            source_id,
            received_at=received_at,
            live=not compress_time,
            batch_size=batch_size,
            max_retries=max_retries,
            sync=sync,
            sent_at=sent_at,
        )
    except click.UsageError:
        raise
    except Exception as exc:  # SpoolError (source locked by a running collector), bad URL, ...
        raise click.ClickException(f"cannot open the destination: {exc}") from exc
    sim = Simulation(config)
    began = time.monotonic()
    handed = Handed()
    failure: str | None = None
    try:
        run(
            sim,
            sink,
            compress_time=compress_time,
            rate=rate,
            limit=limit,
            progress=sys.stderr.isatty() and not as_json,
            handed=handed,
        )
    except KeyboardInterrupt:
        click.echo("interrupted: flushing what was generated", err=True)
    except SinkError as exc:
        failure = str(exc)
    finally:
        try:
            sink.close()
        except SinkError as exc:
            failure = str(exc)  # the complete account: every reason with its event count
    data = summary(sim.stats, config, handed.count, time.monotonic() - began)
    data["delivered_to"] = spool if spool else data_plane_url
    data["accepted"] = sink.sent - getattr(sink, "failed", 0)
    if as_json:
        click.echo(json.dumps(data, indent=2))
    else:
        print_summary(data)
    if failure:
        raise click.ClickException(failure)


if __name__ == "__main__":  # pragma: no cover
    simulate(prog_name=os.path.basename(sys.argv[0]))
