"""The collector's HTTP surface: a Starlette app over one `SpoolWriter`.

Every accepted request waits for its own events to be fsync'd before it is answered 200, but
never blocks the event loop: the spool's commit thread completes a future per request, so
hundreds of in-flight requests share each fsync (group commit).

Back-pressure: `queue_capacity` bounds the events accepted but not yet durable. A request that
would exceed it is answered 429 (the SDKs back off and retry), so a slow disk shows up as
throttling instead of unbounded memory. A request larger than the whole capacity is still taken
when nothing else is in flight, so no batch can be refused forever.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import hmac
import logging
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from signalmail.collector import ingest, webhooks
from signalmail.collector.cors import RudderCors
from signalmail.collector.ingest import IngestError
from signalmail.collector.spool import SpoolBusy, SpoolError, SpoolWriter, encode_events

log = logging.getLogger("signalmail.collector")

DEFAULT_QUEUE_CAPACITY = 200_000


#: analytics-next's paths: the first letter of the event type, `b` for a batch
SEGMENT_PATHS = {
    "t": "track", "p": "page", "i": "identify", "g": "group", "a": "alias", "s": "screen",
    "b": "batch",
}  # fmt: skip


@dataclass(frozen=True)
class CollectorSettings:
    """What the HTTP layer needs to know; the CLI builds it from options and environment."""

    write_key: str
    max_request_bytes: int = ingest.DEFAULT_MAX_REQUEST_BYTES
    queue_capacity: int = DEFAULT_QUEUE_CAPACITY
    mandrill_webhook_key: str | None = None
    mandrill_webhook_url: str | None = None
    trust_forwarded_for: bool = True
    #: accept unsigned webhooks when there is no key (anyone who reaches the port could then
    #: suppress any address): only by an explicit choice
    insecure_webhooks: bool = False
    #: seconds a client may take to send its whole body (slow clients hold file handles)
    body_timeout_s: float = 30.0
    #: Mandrill posts up to 1,000 events per webhook (a click with its user agent and URL is
    #: about 3 KB, form-encoded more) and disables a webhook after about 20 failed retries:
    #: its limit is its own, well above the HTTP API's
    max_webhook_bytes: int = 32 * 1024 * 1024
    #: /v1/import bodies (bulk loads) may be large; each user's part keeps max_request_bytes
    max_import_bytes: int = 256 * 1024 * 1024

    def __repr__(self) -> str:  # never print secrets, even in a traceback's locals
        return (
            f"CollectorSettings(write_key=<redacted>, max_request_bytes={self.max_request_bytes},"
            f" queue_capacity={self.queue_capacity}, mandrill_webhook_key="
            f"{'<redacted>' if self.mandrill_webhook_key else None}, "
            f"mandrill_webhook_url={self.mandrill_webhook_url!r})"
        )


class Metrics:
    """Counters for /metrics; the event loop is the only writer, so no locks are needed."""

    def __init__(self) -> None:
        self.started_at = datetime.now(UTC)
        self.accepted_requests = 0
        self.accepted_events = 0
        self.bytes_received = 0
        self.bytes_decoded = 0
        self.rejected: Counter[str] = Counter()
        self.webhook: Counter[str] = Counter()
        self.in_flight_events = 0


class Collector:
    """Request handlers bound to one writer, settings and metrics."""

    def __init__(self, settings: CollectorSettings, writer: SpoolWriter) -> None:
        self.settings = settings
        self.writer = writer
        self.metrics = Metrics()
        token = base64.b64encode(f"{settings.write_key}:".encode()).decode()
        self._expected_auth = f"Basic {token}"

    # -- RudderStack HTTP API ---------------------------------------------------------------

    def endpoint_for(self, path_type: str) -> Any:
        """Build the handler of POST /v1/<path_type> ("batch" or an event type)."""

        async def endpoint(request: Request) -> Response:
            return await self.ingest(request, path_type)

        endpoint.__name__ = f"ingest_{path_type}"
        return endpoint

    def segment_for(self, letter: str) -> Any:
        """Build the handler of POST /v1/<letter> (see `segment`)."""

        async def endpoint(request: Request) -> Response:
            return await self.segment(request, SEGMENT_PATHS[letter])

        endpoint.__name__ = f"segment_{letter}"
        return endpoint

    async def segment(self, request: Request, path_type: str) -> Response:
        """POST /v1/t|p|i|g|a|s|b: Segment's analytics.js (analytics-next) protocol.

        It posts `text/plain` JSON to the first letter of the event type (`b` for a batch) with
        the write key in the body and no Authorization header (segmentio/analytics-next,
        packages/browser/src/plugins/segmentio). The key is taken out of the body; the rest is
        handled as /v1/<type> or /v1/batch.
        """
        try:
            body = await self._read(request)
            events = ingest.parse_events(body, path_type)
        except ingest.IngestError as exc:
            return self._reject(exc)
        try:
            found = [event.pop("writeKey", None) for event in events]
            top = ingest.body_fields(body)
            found.append(top.get("writeKey"))
            if any(k is not None and not isinstance(k, str) for k in found):
                # a list or an object is no key (and a set of them is no set: TypeError, 500)
                raise ingest.IngestError(401, "invalid write key", "invalid_write_key")
            keys = {k for k in found if k is not None}
            if len(keys) != 1:
                raise ingest.IngestError(401, "invalid write key", "missing_write_key")
            self._check_key(keys.pop())
        except ingest.IngestError as exc:
            return self._reject(exc)
        batch_sent_at = top.get("sentAt") if path_type == "batch" else None
        for event in events:
            ingest.device_time_as_original(event, batch_sent_at)
        return await self._stamp_and_commit(request, events)

    async def import_batch(self, request: Request) -> Response:
        """POST /v1/import: a bulk batch, as rudder-server takes it (gateway/import_handler.go).

        The request as a whole may exceed the batch limit; rudder-server splits it by user
        (rudderId) and holds each user's part to the limit, so one user's part over it is
        413 and nothing of the request is written.
        """
        try:
            self._authenticate(request)
            body = await self._read(request, self.settings.max_import_bytes)
            events = ingest.parse_events(body, "batch")
            ingest.check_import_parts(events, self.settings.max_request_bytes)
        except ingest.IngestError as exc:
            return self._reject(exc)
        return await self._stamp_and_commit(request, events)

    async def beacon(self, request: Request) -> Response:
        """POST /beacon/v1/batch?writeKey=...: navigator.sendBeacon cannot set headers.

        As rudder-server (gateway/handle_http_beacon.go): the write key comes from the query
        (401 without one), then the body is a batch like /v1/batch's.
        """
        key = request.query_params.get("writeKey")
        if not key:
            return self._reject(
                ingest.IngestError(
                    401, "failed to read writekey from query params", "missing_write_key"
                )
            )
        return await self.ingest(request, "batch", write_key=key)

    async def pixel(self, request: Request) -> Response:
        """GET /pixel/v1/track|page: an event from an image URL; always a 1x1 GIF.

        As rudder-server (gateway/handle_http_pixel.go): each query parameter's first value is
        set on `{"channel": "web", "integrations": {"All": true}}` (dotted keys nest), with
        originalTimestamp and sentAt the server's time; a page without a name is
        "Unknown Page", a track without an event is dropped. The answer is the GIF whatever
        happened (an image tag shows nothing else); the outcome is counted in /metrics.
        """
        kind = request.path_params["kind"]
        event = ingest.pixel_event(kind, request.query_params.multi_items())
        key = request.query_params.get("writeKey") or ""
        if event is not None and key:
            try:
                self._check_key(key)
            except ingest.IngestError as exc:
                self._reject(exc)
            else:
                await self._stamp_and_commit(request, [event])
        elif event is None:
            self.metrics.rejected["pixel_without_event"] += 1
        else:
            self.metrics.rejected["missing_write_key"] += 1
        return Response(ingest.PIXEL_GIF, media_type="image/gif")

    async def ingest(
        self, request: Request, path_type: str, write_key: str | None = None
    ) -> Response:
        """POST /v1/<type>: authenticate, read, validate, enrich, make durable, answer."""
        try:
            if write_key is None:
                self._authenticate(request)
            else:
                self._check_key(write_key)
            if self.metrics.in_flight_events >= self.settings.queue_capacity:
                raise ingest.IngestError(
                    429, "too many requests: ingest queue is full", "queue_full"
                )
            body = await self._read(request)
            events = ingest.parse_events(body, path_type)
        except ingest.IngestError as exc:
            return self._reject(exc)
        return await self._stamp_and_commit(request, events)

    async def _stamp_and_commit(
        self, request: Request, events: list[dict[str, Any]], *, from_webhook: bool = False
    ) -> Response:
        """Enrich the request's events as rudder-server does, make them durable, answer.

        Only the signed webhook route may send events under the webhook's library name: the
        dbt models take suppression (bounces, complaints, unsubscribes) from those events
        alone, and the write key of every other route is public (it is in the shop's pages).
        """
        if not from_webhook:
            try:
                ingest.refuse_reserved_library(events)
            except ingest.IngestError as exc:
                return self._reject(exc)
        info = ingest.RequestInfo(datetime.now(UTC), self._client_ip(request))
        for event in events:
            ingest.enrich(event, info)
        return await self._commit(events)

    def _authenticate(self, request: Request) -> None:
        given = request.headers.get("authorization")
        if given is None:
            raise ingest.IngestError(401, "invalid write key", "missing_write_key")
        if hmac.compare_digest(given.encode(), self._expected_auth.encode()):
            return
        # Accept any password and any casing of the scheme, as rudder-server does; compare the
        # user name (the write key) in constant time.
        scheme, _, token = given.partition(" ")
        if scheme.lower() == "basic":
            try:
                user = base64.b64decode(token.strip(), validate=True).decode().partition(":")[0]
            except (binascii.Error, UnicodeDecodeError):
                user = ""
            if hmac.compare_digest(user.encode(), self.settings.write_key.encode()):
                return
        raise ingest.IngestError(401, "invalid write key", "invalid_write_key")

    def _check_key(self, key: str) -> None:
        """Compare a write key given in a query string, in constant time."""
        if not hmac.compare_digest(key.encode(), self.settings.write_key.encode()):
            raise ingest.IngestError(401, "invalid write key", "invalid_write_key")

    async def _read(self, request: Request, limit: int | None = None) -> bytes:
        counted = _Counting(request.stream())
        try:
            body = await asyncio.wait_for(
                ingest.read_body(
                    counted,
                    request.headers.get("content-encoding"),
                    request.headers.get("content-length"),
                    limit or self.settings.max_request_bytes,
                ),
                self.settings.body_timeout_s,
            )
        except ClientDisconnect:
            # the client gave up mid-body: nothing was accepted, nobody is left to answer
            raise ingest.IngestError(400, "client disconnected", "client_disconnected") from None
        except TimeoutError:
            raise ingest.IngestError(
                408,
                f"request body not received within {self.settings.body_timeout_s:g}s",
                "body_timeout",
            ) from None
        self.metrics.bytes_received += counted.total
        self.metrics.bytes_decoded += len(body)
        return body

    def _client_ip(self, request: Request) -> str:
        peer = request.client.host if request.client else None
        return ingest.client_ip(
            request.headers.get("x-forwarded-for"), peer, self.settings.trust_forwarded_for
        )

    async def _commit(self, events: list[dict[str, Any]]) -> Response:
        count = len(events)
        metrics = self.metrics
        if (
            count
            and metrics.in_flight_events
            and (metrics.in_flight_events + count > self.settings.queue_capacity)
        ):
            return self._reject(
                ingest.IngestError(429, "too many requests: ingest queue is full", "queue_full")
            )
        try:
            data, count = encode_events(events)
        except RecursionError:
            # Nested deeper than the encoder can go from this stack: a pixel's dotted keys
            # (`a.a.a...`), or a body just under the decoder's depth limit, which encoding,
            # called from deeper in the stack, then exceeds. The client's fault, as a body too
            # deep to parse is: 400, never 500.
            return self._reject(ingest.IngestError(400, "invalid json", "invalid_json"))
        if not count:
            return PlainTextResponse("OK")
        metrics.in_flight_events += count
        try:
            await asyncio.wrap_future(self.writer.submit_lines(data, count))
        except SpoolBusy:  # out of file handles or disk space for now: the client retries
            return self._reject(
                ingest.IngestError(503, "storage busy, retry shortly", "storage_busy")
            )
        except SpoolError as exc:
            log.error("refusing %d events: %s", count, exc)
            return self._reject(ingest.IngestError(503, "storage unavailable", "storage_error"))
        finally:
            metrics.in_flight_events -= count
        metrics.accepted_requests += 1
        metrics.accepted_events += count
        return PlainTextResponse("OK")

    # IngestError by name: in this class body `ingest` is the method below, not the module
    def _reject(self, exc: IngestError | webhooks.WebhookError) -> Response:
        self.metrics.rejected[exc.reason] += 1
        headers = {"Retry-After": "1"} if exc.status in (429, 503) else None
        return PlainTextResponse(exc.message, status_code=exc.status, headers=headers)

    # -- Mandrill webhooks ------------------------------------------------------------------

    async def mandrill_head(self, request: Request) -> Response:
        """HEAD /webhooks/mandrill: Mandrill probes the URL before it saves a webhook."""
        return Response(status_code=200)

    async def mandrill_post(self, request: Request) -> Response:
        """POST /webhooks/mandrill: verify, convert, make durable, answer 200."""
        try:
            if self.metrics.in_flight_events >= self.settings.queue_capacity:
                raise ingest.IngestError(
                    429, "too many requests: ingest queue is full", "queue_full"
                )
            key = self.settings.mandrill_webhook_key
            if not key and not self.settings.insecure_webhooks:
                raise webhooks.WebhookError(
                    403,
                    "webhooks need a key: start the collector with --mandrill-webhook-key "
                    "(the key Mandrill shows for this webhook)",
                    "webhook_key_missing",
                )
            encoding = request.headers.get("content-encoding", "").strip().lower()
            if encoding not in ("", "identity"):
                # Mandrill posts plain forms: a compressed body here is nobody's webhook, and
                # 32 KB of gzip decompressed to the 32 MB limit before the signature is checked
                raise ingest.IngestError(
                    415, f"webhooks are not taken compressed ({encoding})", "webhook_encoded"
                )
            body = await self._read(request, self.settings.max_webhook_bytes)
            url = self.settings.mandrill_webhook_url or str(request.url)
            signature = request.headers.get("x-mandrill-signature")
            # the signature covers the parsed form, so parsing comes first; off the event loop,
            # so that a large body (unsigned, for all this code knows yet) holds no other client
            raw_events = await asyncio.to_thread(
                _verified_webhook_events, body, key, url, signature
            )
        except (ingest.IngestError, webhooks.WebhookError) as exc:
            return self._reject(exc)
        events, counts = webhooks.convert(raw_events)
        self.metrics.webhook.update(counts)
        return await self._stamp_and_commit(request, events, from_webhook=True)

    # -- operations -------------------------------------------------------------------------

    async def health(self, request: Request) -> Response:
        """GET /health: 200 while the spool accepts writes, 503 once it cannot."""
        ok = self.writer.healthy
        body: dict[str, str | None] = {
            "status": "ok" if ok else "failing",
            "source_id": self.writer.source_id,
        }
        if not ok:
            body["error"] = self.writer.stats.last_error
        return JSONResponse(body, status_code=200 if ok else 503)

    def snapshot(self) -> dict[str, Any]:
        """All counters as one JSON-able dict."""
        metrics, stats = self.metrics, self.writer.stats
        return {
            "started_at": ingest.format_ts(metrics.started_at),
            "accepted_requests": metrics.accepted_requests,
            "accepted_events": metrics.accepted_events,
            "rejected_requests": dict(metrics.rejected),
            "bytes_received": metrics.bytes_received,
            "bytes_decoded": metrics.bytes_decoded,
            "queue_depth_events": metrics.in_flight_events,
            "queue_capacity_events": self.settings.queue_capacity,
            "webhook_events": dict(metrics.webhook),
            "spool": {
                "groups": stats.groups,
                "fsyncs": stats.fsyncs,
                "events_written": stats.events_written,
                "journal_bytes": stats.journal_bytes,
                "segments_written": stats.segments_written,
                "segment_bytes": stats.segment_bytes,
                "segments_recovered": stats.segments_recovered,
                "journals_already_published": stats.journals_already_published,
                "torn_lines_dropped": stats.torn_lines_dropped,
                "publish_failures": stats.publish_failures,
                "busy_refusals": stats.busy_refusals,
                "healthy": self.writer.healthy,
            },
        }

    async def metrics_endpoint(self, request: Request) -> Response:
        """GET /metrics: JSON; Prometheus text with ?format=prometheus."""
        snap = self.snapshot()
        if request.query_params.get("format") == "prometheus":
            return PlainTextResponse(_prometheus(snap), media_type="text/plain; version=0.0.4")
        return JSONResponse(snap)


class _Counting:
    """Wraps a body stream to count the bytes that came over the wire."""

    def __init__(self, stream: Any) -> None:
        self.stream = stream
        self.total = 0

    def __aiter__(self) -> _Counting:
        return self

    async def __anext__(self) -> bytes:
        chunk = await self.stream.__anext__()
        self.total += len(chunk)
        return chunk


def _prometheus(snap: dict[str, Any]) -> str:
    lines = []

    def metric(name: str, value: Any, labels: str = "", kind: str = "counter") -> None:
        if not labels:
            lines.append(f"# TYPE signalmail_collector_{name} {kind}")
        lines.append(f"signalmail_collector_{name}{labels} {int(value)}")

    metric("accepted_requests_total", snap["accepted_requests"])
    metric("accepted_events_total", snap["accepted_events"])
    metric("bytes_received_total", snap["bytes_received"])
    metric("queue_depth_events", snap["queue_depth_events"], kind="gauge")
    lines.append("# TYPE signalmail_collector_rejected_requests_total counter")
    for reason, count in sorted(snap["rejected_requests"].items()):
        metric("rejected_requests_total", count, f'{{reason="{reason}"}}')
    lines.append("# TYPE signalmail_collector_webhook_events_total counter")
    for outcome, count in sorted(snap["webhook_events"].items()):
        metric("webhook_events_total", count, f'{{outcome="{outcome}"}}')
    for key, value in snap["spool"].items():
        metric(f"spool_{key}", value, kind="gauge" if key == "healthy" else "counter")
    return "\n".join(lines) + "\n"


def create_app(
    settings: CollectorSettings, writer: SpoolWriter, *, close_writer: bool = False
) -> Starlette:
    """Build the ASGI app.

    With `close_writer`, the app closes (flushes and publishes) the writer at lifespan shutdown,
    i.e. after the server has stopped accepting and finished its in-flight requests, so every
    request answered 200 is in a published segment when the process ends. (uvicorn re-raises
    SIGTERM/SIGINT once `run()` returns; `signalmail collect` absorbs that replay to exit 0, but
    publishing here does not depend on it.) Otherwise the caller owns the writer.
    """
    collector = Collector(settings, writer)

    @contextlib.asynccontextmanager
    async def lifespan(_app: Starlette) -> AsyncIterator[None]:
        yield
        if close_writer:
            await asyncio.to_thread(writer.close, 60)
            log.info("spool closed: %s", collector.snapshot()["spool"])

    routes = [
        Route(f"/v1/{kind}", collector.endpoint_for(kind), methods=["POST"])
        for kind in ("batch", *sorted(ingest.EVENT_TYPES))
    ]
    routes += [
        Route("/v1/import", collector.import_batch, methods=["POST"]),
        Route("/beacon/v1/batch", collector.beacon, methods=["POST"]),
        *(
            Route(f"/v1/{letter}", collector.segment_for(letter), methods=["POST"])
            for letter in SEGMENT_PATHS
        ),
        Route("/pixel/v1/{kind:str}", collector.pixel, methods=["GET"]),
        Route("/webhooks/mandrill", collector.mandrill_head, methods=["HEAD"]),
        Route("/webhooks/mandrill", collector.mandrill_post, methods=["POST"]),
        Route("/health", collector.health, methods=["GET"]),
        Route("/metrics", collector.metrics_endpoint, methods=["GET"]),
    ]
    app = Starlette(routes=routes, lifespan=lifespan, middleware=[Middleware(RudderCors)])
    app.state.collector = collector
    return app


def _verified_webhook_events(
    body: bytes, key: str | None, url: str, signature: str | None
) -> list[Any]:
    """Parse a Mandrill webhook form, check its signature (when a key is set), return its events.

    Runs in a worker thread (mandrill_post): all of it is CPU work over a body of up to
    `max_webhook_bytes`.
    """
    params = webhooks.parse_form(body)
    if key and not webhooks.verify(key, url, params, signature):
        raise webhooks.WebhookError(403, "invalid webhook signature", "bad_signature")
    return webhooks.parse_events(params)
