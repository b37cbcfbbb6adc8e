"""`signalmail collect`: run the RudderStack-compatible capture endpoint.

Secrets (the write key, the Mandrill webhook key) can come from the environment so they need
not sit on a command line (visible in `ps`); neither is ever logged.
"""

from __future__ import annotations

import json
import logging
import re
import signal
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from types import FrameType
from typing import Any

import click

from signalmail.collector import ingest
from signalmail.collector.app import DEFAULT_QUEUE_CAPACITY, CollectorSettings, create_app
from signalmail.collector.connections import connection_limit, guarded_protocol
from signalmail.collector.spool import (
    DEFAULT_GZIP_LEVEL,
    DEFAULT_MAX_SEGMENT_AGE_S,
    DEFAULT_MAX_SEGMENT_BYTES,
    SpoolError,
    SpoolWriter,
)

log = logging.getLogger("signalmail.collector")

#: `writeKey=<value>` in a query string (the beacon and pixel routes take the key there)
_WRITE_KEY_IN_QUERY = re.compile(r"((?:^|[?&])writeKey=)[^&#\s]*", re.IGNORECASE)


class RedactWriteKey(logging.Filter):
    """Blank the write key in uvicorn's access log lines (`--access-log`).

    The browser's beacon and the tracking pixel carry the key in the query string, and uvicorn
    logs each request's path with its query: without this, every such line held the key.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        """Rewrite the record's arguments; never drop the line."""
        if isinstance(record.args, tuple):
            record.args = tuple(
                _WRITE_KEY_IN_QUERY.sub(r"\1<redacted>", arg) if isinstance(arg, str) else arg
                for arg in record.args
            )
        return True


def redact_access_log() -> None:
    """Install RedactWriteKey on uvicorn's access logger (once)."""
    access = logging.getLogger("uvicorn.access")
    if not any(isinstance(f, RedactWriteKey) for f in access.filters):
        access.addFilter(RedactWriteKey())


#: the signals uvicorn turns into a graceful shutdown
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


@dataclass
class StopSignals:
    """What `absorb_replayed_stop_signals` saw; `run_returned` is set by the caller."""

    received: list[int] = field(default_factory=list)
    run_returned: bool = False


@contextmanager
def absorb_replayed_stop_signals(server: Any) -> Iterator[StopSignals]:
    """Keep a graceful shutdown from ending the process with "killed by signal" (-15 / 143).

    uvicorn handles SIGTERM/SIGINT by draining requests and running the lifespan shutdown
    (which publishes the spool), then restores the handlers it found and raises the same signal
    again, so the process dies by it and supervisors (systemd, Kubernetes, shell scripts) see
    143 or 130 for a stop that lost nothing. Installing a recording handler before uvicorn runs
    makes that replayed signal land here instead, and the caller exits 0. The previous handlers
    are restored on the way out.

    The handler also asks `server` (a `uvicorn.Server`) to exit, exactly as uvicorn's own handler
    does, so a signal arriving before uvicorn has installed its handlers still stops it. Once the
    caller has set `run_returned`, a further stop signal is an operator insisting: it raises
    KeyboardInterrupt, abandoning the final publish (the journals stay for recovery).
    """
    state = StopSignals()

    def record(signum: int, _frame: FrameType | None) -> None:
        state.received.append(signum)
        server.should_exit = True
        if state.run_returned:
            raise KeyboardInterrupt

    previous = {sig: signal.signal(sig, record) for sig in STOP_SIGNALS}
    try:
        yield state
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _storage_options(_ctx: click.Context, _param: click.Parameter, value: str | None) -> Any:
    if not value:
        return None
    try:
        parsed = json.loads(value)
    except json.JSONDecodeError as exc:
        raise click.BadParameter(f"must be a JSON object: {exc}") from None
    if not isinstance(parsed, dict):
        raise click.BadParameter("must be a JSON object")
    return parsed


@click.command()
@click.option(
    "--host",
    default="127.0.0.1",
    show_default=True,
    envvar="SIGNALMAIL_COLLECT_HOST",
    help="Interface to listen on.",
)
@click.option(
    "--port",
    default=8080,
    show_default=True,
    type=int,
    envvar="SIGNALMAIL_COLLECT_PORT",
    help="TCP port to listen on.",
)
@click.option(
    "--spool",
    required=True,
    envvar="SIGNALMAIL_SPOOL",
    help="Spool root: a local directory or an fsspec URL such as s3://bucket/prefix.",
)
@click.option(
    "--write-key",
    required=True,
    envvar="SIGNALMAIL_WRITE_KEY",
    help="Write key SDKs send as the basic-auth user (env SIGNALMAIL_WRITE_KEY).",
)
@click.option(
    "--source-id",
    default="signalmail",
    show_default=True,
    envvar="SIGNALMAIL_SOURCE_ID",
    help="Source id: the rudder-logs/<source_id>/ folder the segments go to.",
)
@click.option(
    "--journal-dir",
    default=None,
    envvar="SIGNALMAIL_JOURNAL_DIR",
    help="Local directory of the durable journal (default: <spool>/.journal/<source> "
    "for a local spool, $XDG_STATE_HOME/signalmail/journal/... for object storage).",
)
@click.option(
    "--max-segment-bytes",
    default=DEFAULT_MAX_SEGMENT_BYTES,
    show_default=True,
    type=click.IntRange(min=1),
    envvar="SIGNALMAIL_MAX_SEGMENT_BYTES",
    help="Rotate a segment once its uncompressed JSON lines reach this size.",
)
@click.option(
    "--max-segment-age",
    default=DEFAULT_MAX_SEGMENT_AGE_S,
    show_default=True,
    type=click.FloatRange(min=0.01),
    envvar="SIGNALMAIL_MAX_SEGMENT_AGE",
    help="Rotate a segment this many seconds after its first event (bounds latency).",
)
@click.option(
    "--queue-capacity",
    default=DEFAULT_QUEUE_CAPACITY,
    show_default=True,
    type=click.IntRange(min=1),
    envvar="SIGNALMAIL_QUEUE_CAPACITY",
    help="Events accepted but not yet fsync'd before requests get 429.",
)
@click.option(
    "--max-request-bytes",
    default=ingest.DEFAULT_MAX_REQUEST_BYTES,
    show_default=True,
    type=click.IntRange(min=1024),
    envvar="SIGNALMAIL_MAX_REQUEST_BYTES",
    help="413 above this many bytes, compressed or decompressed (rudder-server: 4000 KB).",
)
@click.option(
    "--max-webhook-bytes",
    default=32 * 1024 * 1024,
    show_default=True,
    type=click.IntRange(min=1024),
    envvar="SIGNALMAIL_MAX_WEBHOOK_BYTES",
    help="413 above this many bytes on /webhooks/mandrill (Mandrill posts up to 1,000 events "
    "at once and disables a webhook that keeps failing).",
)
@click.option(
    "--max-import-bytes",
    default=256 * 1024 * 1024,
    show_default=True,
    type=click.IntRange(min=1024),
    envvar="SIGNALMAIL_MAX_IMPORT_BYTES",
    help="413 above this many bytes on /v1/import, compressed or decompressed (bulk loads; "
    "each user's part keeps --max-request-bytes). Lower it where no bulk load comes in: the "
    "write key is public, and a small gzip body expands to this much work.",
)
@click.option(
    "--gzip-level",
    default=DEFAULT_GZIP_LEVEL,
    show_default=True,
    type=click.IntRange(1, 9),
    envvar="SIGNALMAIL_GZIP_LEVEL",
    help="Compression level of published segments.",
)
@click.option(
    "--storage-options",
    default=None,
    callback=_storage_options,
    envvar="SIGNALMAIL_STORAGE_OPTIONS",
    help='fsspec options as JSON, e.g. \'{"client_kwargs": {"endpoint_url": "..."}}\'.',
)
@click.option(
    "--mandrill-webhook-key",
    default=None,
    envvar="SIGNALMAIL_MANDRILL_WEBHOOK_KEY",
    help="Mandrill webhook key; when set, unsigned or badly signed webhooks get 403.",
)
@click.option(
    "--insecure-webhooks",
    is_flag=True,
    envvar="SIGNALMAIL_INSECURE_WEBHOOKS",
    help="Without a webhook key, accept UNSIGNED webhooks (anyone who reaches the port can "
    "then post bounces and unsubscribes). Without either, webhooks get 403.",
)
@click.option(
    "--max-connections",
    default=1000,
    show_default=True,
    type=click.IntRange(min=8),
    envvar="SIGNALMAIL_MAX_CONNECTIONS",
    help="Concurrent connections before new requests get 503 (kept below the file-handle "
    "limit minus what the spool needs).",
)
@click.option(
    "--client-timeout",
    default=30.0,
    show_default=True,
    type=click.FloatRange(min=0.1),
    envvar="SIGNALMAIL_CLIENT_TIMEOUT",
    help="Seconds a client may take to send a request head, and again its body; slower "
    "connections are closed (head) or answered 408 (body).",
)
@click.option(
    "--mandrill-webhook-url",
    default=None,
    envvar="SIGNALMAIL_MANDRILL_WEBHOOK_URL",
    help="The URL registered in Mandrill (signatures cover it; proxies change the "
    "URL the collector sees). Default: the request URL.",
)
@click.option(
    "--trust-forwarded-for/--no-trust-forwarded-for",
    default=True,
    show_default=True,
    envvar="SIGNALMAIL_TRUST_FORWARDED_FOR",
    help="Take request_ip from X-Forwarded-For (as rudder-server does).",
)
@click.option(
    "--access-log/--no-access-log",
    default=False,
    show_default=True,
    help="Log every request line (uvicorn's access log).",
)
@click.option(
    "--log-level",
    default="info",
    show_default=True,
    type=click.Choice(["debug", "info", "warning", "error"]),
)
def collect(
    host: str,
    port: int,
    spool: str,
    write_key: str,
    source_id: str,
    journal_dir: str | None,
    max_segment_bytes: int,
    max_segment_age: float,
    queue_capacity: int,
    max_request_bytes: int,
    max_webhook_bytes: int,
    max_import_bytes: int,
    gzip_level: int,
    storage_options: dict[str, Any] | None,
    mandrill_webhook_key: str | None,
    insecure_webhooks: bool,
    max_connections: int,
    client_timeout: float,
    mandrill_webhook_url: str | None,
    trust_forwarded_for: bool,
    access_log: bool,
    log_level: str,
) -> None:
    """Accept RudderStack/Segment SDK traffic and Mandrill webhooks into a durable spool.

    Every request answered 200 is fsync'd; segments appear atomically as
    rudder-logs/<source_id>/<YYYY-MM-DD>/<unix_ts>.<source_id>.<uuid>.json.gz.
    """
    import uvicorn

    logging.basicConfig(
        level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    if not write_key.strip():
        raise click.BadParameter("must not be empty", param_hint="--write-key")
    try:
        writer = SpoolWriter(
            spool,
            source_id,
            max_segment_bytes=max_segment_bytes,
            max_segment_age_s=max_segment_age,
            storage_options=storage_options,
            journal_dir=journal_dir,
            gzip_level=gzip_level,
        )
    except SpoolError as exc:
        raise click.ClickException(str(exc)) from None
    except OSError as exc:  # a read-only or missing spool, a journal folder it cannot create
        raise click.ClickException(
            f"cannot write the spool at {spool}: {exc.strerror or exc} ({exc.filename or spool})"
        ) from None
    settings = CollectorSettings(
        write_key=write_key,
        max_request_bytes=max_request_bytes,
        max_webhook_bytes=max_webhook_bytes,
        max_import_bytes=max_import_bytes,
        queue_capacity=queue_capacity,
        mandrill_webhook_key=mandrill_webhook_key or None,
        mandrill_webhook_url=mandrill_webhook_url or None,
        trust_forwarded_for=trust_forwarded_for,
        insecure_webhooks=insecure_webhooks,
        body_timeout_s=client_timeout,
    )
    if not mandrill_webhook_key and insecure_webhooks:
        log.warning(
            "--insecure-webhooks: /webhooks/mandrill accepts UNSIGNED requests; anyone who "
            "reaches this port can suppress any address or fake clicks"
        )
    elif not mandrill_webhook_key:
        log.info("no Mandrill webhook key: /webhooks/mandrill answers 403 (see --help)")
    limit = connection_limit(max_connections)
    app = create_app(settings, writer, close_writer=True)
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        log_level=log_level,
        access_log=access_log,
        lifespan="on",
        http=guarded_protocol(client_timeout),
        limit_concurrency=limit,
        timeout_keep_alive=5,
    )
    redact_access_log()  # after uvicorn.Config, which (re)configures its loggers
    server = uvicorn.Server(config)
    log.info(
        "collecting on http://%s:%d into %s (source %s, journal %s, at most %d connections)",
        host,
        port,
        spool,
        source_id,
        writer.journal_dir,
        limit,
    )
    with absorb_replayed_stop_signals(server) as stop:
        try:
            server.run()
        finally:
            stop.run_returned = True
            writer.close(timeout=60)  # no-op after a clean lifespan shutdown
    if stop.received:  # asked to stop: what was acknowledged is published or left for recovery
        log.info("stopped on %s", signal.Signals(stop.received[0]).name)
        return
    if not server.started:
        sys.exit(1)  # uvicorn already logged why (port in use, say)
