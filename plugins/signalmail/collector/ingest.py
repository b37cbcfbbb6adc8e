"""Request bodies to enriched RudderStack events, the way rudder-server's gateway does it.

Pure functions (no I/O besides reading the body stream) so the rules are unit-testable:

- `read_body` enforces the size limit on the bytes received *and* on the decompressed bytes,
  decompressing gzip incrementally with a cap, so a gzip bomb costs at most the limit in memory.
- `parse_events` applies rudder-server's request checks. A batch is accepted or rejected as a
  whole, as rudder-server does: one event without anonymousId and userId fails the request with
  400 `request neither has anonymousId nor userId` (partial acceptance would leave the SDK unable
  to tell which events to resend).
- `enrich` adds receivedAt, request_ip, rudderId, messageId when missing, type from the path,
  sentAt/originalTimestamp when missing, and the skew-corrected timestamp when the client
  sent none.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import uuid
import zlib
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import msgspec

#: rudder-server's default maxReqSize: 4000 KB.
DEFAULT_MAX_REQUEST_BYTES = 4000 * 1024

#: rudder-server's event types; `merge` (mergeProperties: two identifiers of one person) is its
#: identity-resolution call (gateway/handle_http.go webMergeHandler)
EVENT_TYPES = frozenset({"track", "identify", "page", "screen", "group", "alias", "merge"})

_decoder = msgspec.json.Decoder()


class IngestError(Exception):
    """A request the collector refuses; `status` and `message` are what the client sees."""

    def __init__(self, status: int, message: str, reason: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        #: short label for the rejected-by-reason counters
        self.reason = reason or message.replace(" ", "_")


def too_large(limit: int) -> IngestError:
    """Build the 413 answer; the text names the limit so a client can size its batches."""
    return IngestError(413, f"request size exceeds max limit of {limit} bytes", "too_large")


async def read_body(
    chunks: AsyncIterator[bytes],
    content_encoding: str | None,
    content_length: str | None,
    limit: int = DEFAULT_MAX_REQUEST_BYTES,
) -> bytes:
    """Read a request body, gunzipping it if needed, never holding more than `limit` bytes.

    Raises IngestError 413 when the body, compressed or decompressed, exceeds `limit`; 400 for a
    corrupt or truncated gzip stream; 415 for an encoding other than gzip/identity.
    """
    if content_length is not None:
        try:
            if int(content_length) > limit:
                raise too_large(limit)
        except ValueError:
            raise IngestError(400, "invalid content-length", "invalid_content_length") from None
    encoding = (content_encoding or "").strip().lower()
    if encoding not in ("", "identity", "gzip", "x-gzip"):
        raise IngestError(415, f"unsupported content encoding {encoding!r}", "unsupported_encoding")
    gunzip = encoding in ("gzip", "x-gzip")
    decompressor = zlib.decompressobj(wbits=31) if gunzip else None
    received = produced = 0
    parts: list[bytes] = []
    try:
        async for chunk in chunks:
            received += len(chunk)
            if received > limit:
                raise too_large(limit)
            if decompressor is None:
                parts.append(chunk)
                continue
            while chunk:
                out = decompressor.decompress(chunk, limit + 1 - produced)
                produced += len(out)
                if produced > limit or decompressor.unconsumed_tail:
                    raise too_large(limit)
                parts.append(out)
                chunk = b""
                if decompressor.eof and decompressor.unused_data:
                    # concatenated gzip members are one valid gzip stream
                    chunk = decompressor.unused_data
                    decompressor = zlib.decompressobj(wbits=31)
        if decompressor is not None:
            out = decompressor.flush()
            produced += len(out)
            if produced > limit:
                raise too_large(limit)
            parts.append(out)
            if not decompressor.eof:
                raise IngestError(400, "invalid gzip body: truncated stream", "invalid_gzip")
    except zlib.error as exc:
        raise IngestError(400, f"invalid gzip body: {exc}", "invalid_gzip") from None
    return b"".join(parts)


def parse_events(body: bytes, path_type: str) -> list[dict[str, Any]]:
    """Check a decoded body the way rudder-server's gateway does; returns its events.

    `path_type` is "batch" or one of EVENT_TYPES (the single-event endpoints, whose `type` is
    forced to the path's, as rudder-server does).
    """
    try:
        payload = _decoder.decode(body)
    except (msgspec.DecodeError, RecursionError, UnicodeDecodeError):
        # malformed, nested past the decoder's depth limit, or not UTF-8: the client's fault,
        # answered 400 (a 500 would have the SDK retry the same body forever)
        raise IngestError(400, "invalid json", "invalid_json") from None
    if not isinstance(payload, dict):
        raise IngestError(400, "invalid json", "invalid_json")
    if path_type == "batch":
        events = payload.get("batch")
        if events is None or events == []:
            raise IngestError(400, "empty batch payload", "empty_batch")
        if not isinstance(events, list) or not all(isinstance(e, dict) for e in events):
            raise IngestError(400, "invalid json", "invalid_json")
        # An item's `type` is not checked here, as rudder-server's gateway does not: one item
        # with a missing or unknown type must not cost the batch (SDKs do not retry a 400).
        # tap-rudderstack quarantines it in `rejected_events` with its reason.
    else:
        events = [payload]
        payload["type"] = path_type
    for event in events:
        if not _present(event.get("anonymousId")) and not _present(event.get("userId")):
            raise IngestError(400, "request neither has anonymousId nor userId", "no_identity")
    return events


#: the library name of the events the signed Mandrill webhook route makes (webhooks.LIBRARY)
WEBHOOK_LIBRARY_NAME = "signalmail-mandrill-webhook"


def refuse_reserved_library(events: list[dict[str, Any]]) -> None:
    """Refuse a client's events that name the webhook's library (see Collector._stamp_and_commit).

    400 for the request, as for any event rudder-server refuses: a forged bounce or
    unsubscribe would otherwise stop a stranger's email for good.
    """
    for event in events:
        context = event.get("context")
        library = context.get("library") if isinstance(context, dict) else None
        name = library.get("name") if isinstance(library, dict) else None
        if isinstance(name, str) and name.strip().lower() == WEBHOOK_LIBRARY_NAME:
            raise IngestError(
                400,
                f"context.library.name {WEBHOOK_LIBRARY_NAME} is reserved for /webhooks/mandrill",
                "reserved_library",
            )


def check_import_parts(events: list[dict[str, Any]], limit: int) -> None:
    """Refuse an import whose part for one user (rudderId) is over `limit` bytes of JSON."""
    sizes: dict[str, int] = {}
    for event in events:
        key = rudder_id(_text_or_none(event.get("userId")), _text_or_none(event.get("anonymousId")))
        sizes[key] = sizes.get(key, 0) + len(msgspec.json.encode(event))
        if sizes[key] > limit:
            raise too_large(limit)


def _text_or_none(value: Any) -> str | None:
    return None if value is None else str(value)


def body_fields(body: bytes) -> dict[str, Any]:
    """Return the top-level fields of a JSON body (none when it is not an object).

    Segment's browser protocol puts the `writeKey` there, and analytics.js batching one
    `sentAt` for the batch. It decodes in its own frame, called from the route: msgspec's
    depth limit depends on how deep in the stack it runs, and a body parse_events just took
    must decode here too (a helper frame more refused a body nested just under the limit,
    with a 500).
    """
    payload = _decoder.decode(body)
    return payload if isinstance(payload, dict) else {}


def _present(value: Any) -> bool:
    return value is not None and value != ""


def format_ts(moment: datetime) -> str:
    """RFC 3339 in UTC with milliseconds and Z, as rudder-server writes its time fields."""
    if moment.utcoffset():
        moment = moment.astimezone(UTC)
    return moment.isoformat(timespec="milliseconds")[:23] + "Z"


def parse_ts(value: Any) -> datetime | None:
    """Parse an ISO 8601 timestamp as an aware UTC datetime; None when absent or unusable.

    "Unusable" includes an offset that pushes the instant off the calendar
    (`0001-01-01T00:00:00+05:00`): converting it later would raise and fail the whole request.
    """
    if not isinstance(value, str) or not value:
        return None
    try:
        parsed = datetime.fromisoformat(value)
        return parsed.astimezone(UTC) if parsed.tzinfo else parsed.replace(tzinfo=UTC)
    except (ValueError, OverflowError):
        return None


@functools.lru_cache(maxsize=65536)
def rudder_id(user_id: Any, anonymous_id: Any) -> str:
    """rudder-server's rudderId: the MD5 of "userId:anonymousId" with UUID version 4 bits.

    As rudder-go-kit's `uuid.GetMD5UUID` (uuid/uuid.go), which rudder-server's gateway calls
    (gateway/handle.go): byte 6 gets version 4, byte 8 the RFC 4122 variant, so the ids match
    a shop's RudderStack history. Cached: a batch usually repeats one user, and the hash is a
    measurable share of ingest CPU.
    """
    text = f"{'' if user_id is None else user_id}:{'' if anonymous_id is None else anonymous_id}"
    h = hashlib.md5(text.encode(), usedforsecurity=False).hexdigest()
    variant = "89ab"[int(h[16], 16) & 0x3]
    return f"{h[:8]}-{h[8:12]}-4{h[13:16]}-{variant}{h[17:20]}-{h[20:32]}"


class RequestInfo:
    """Per-request facts every event of the request is stamped with (formatted once)."""

    __slots__ = ("received_at", "received_text", "request_ip")

    def __init__(self, received_at: datetime, request_ip: str) -> None:
        self.received_at = received_at
        self.received_text = format_ts(received_at)
        self.request_ip = request_ip


def device_time_as_original(event: dict[str, Any], batch_sent_at: Any = None) -> None:
    """Read analytics.js's `timestamp` as the device's time of the call (Segment's protocol).

    analytics.js sends the device clock's time of the call as `timestamp` and its time of
    sending as `sentAt`; Segment's API keeps the first as `originalTimestamp` and corrects the
    skew. Kept as `timestamp`, a laptop clock two hours slow would make a cart two hours old at
    its first tick, and its abandonment email go out while the shopper is still shopping.
    `enrich` then computes `timestamp` as for the RudderStack SDKs. In batching mode
    analytics.js takes each event's `sentAt` off and sends one for the batch
    (`batch_sent_at`; packages/browser/src/plugins/segmentio/batched-dispatcher.ts).
    """
    if "sentAt" not in event and batch_sent_at is not None:
        event["sentAt"] = batch_sent_at
    if "originalTimestamp" not in event and "timestamp" in event and "sentAt" in event:
        event["originalTimestamp"] = event.pop("timestamp")


def enrich(event: dict[str, Any], info: RequestInfo) -> dict[str, Any]:
    """Stamp one event in place (and return it).

    Time fields follow rudder-server's processor (`enhanceWithTimeFields`,
    processor/processor.go): originalTimestamp and sentAt are the event's, else receivedAt (a
    batch-level sentAt is not passed on); a `timestamp` the client sent is kept, else
    ``timestamp = receivedAt - (sentAt - originalTimestamp)``
    corrects the client's clock skew. Unparseable client times fall back to receivedAt, as
    rudder-server does, and so does a correction that leaves the calendar: one client's absurd
    clock must not fail its batch.
    """
    received = info.received_at
    message_id = event.get("messageId")
    if message_id is None or message_id == "":
        event["messageId"] = str(uuid.uuid4())
    elif not isinstance(message_id, str):
        event["messageId"] = str(message_id)
    user_id = event.get("userId")
    if user_id is not None and not isinstance(user_id, str):
        event["userId"] = user_id = str(user_id)
    anonymous_id = event.get("anonymousId")
    if anonymous_id is not None and not isinstance(anonymous_id, str):
        event["anonymousId"] = anonymous_id = str(anonymous_id)
    original = parse_ts(event.get("originalTimestamp"))
    sent = parse_ts(event.get("sentAt"))
    client_time = parse_ts(event.get("timestamp"))
    if sent is not None:
        sent_text = format_ts(sent)
    else:
        sent, sent_text = received, info.received_text
    if original is None:
        original, original_text = received, info.received_text
    else:
        original_text = format_ts(original)
    event["originalTimestamp"] = original_text
    event["sentAt"] = sent_text
    event["receivedAt"] = info.received_text
    if client_time is not None:
        event["timestamp"] = format_ts(client_time)
    elif sent == original:
        event["timestamp"] = info.received_text
    else:
        try:
            event["timestamp"] = format_ts(received - (sent - original))
        except OverflowError:  # a "skew" beyond the calendar (year 1 vs 9999): use our clock
            event["timestamp"] = info.received_text
    event["request_ip"] = info.request_ip
    event["rudderId"] = rudder_id(user_id, anonymous_id)
    return event


def client_ip(forwarded_for: str | None, peer: str | None, trust_forwarded: bool = True) -> str:
    """Pick the caller's address: the first X-Forwarded-For entry (as rudder-server), else peer."""
    if trust_forwarded and forwarded_for:
        first = forwarded_for.split(",")[0].strip()
        if first:
            return first
    return peer or ""


#: rudder-server's pixel answer: a transparent 1x1 GIF89a (gateway/response.go).
PIXEL_GIF = base64.b64decode("R0lGODlhAQABAIAAAP///wAAACH5BAEAAAAALAAAAAABAAEAAAICRAEAOw==")


def pixel_event(kind: str, params: list[tuple[str, str]]) -> dict[str, Any] | None:
    """Build the event of a pixel request, or None when it carries none (see Collector.pixel)."""
    if kind not in ("track", "page"):
        return None
    now = format_ts(datetime.now(UTC))
    event: dict[str, Any] = {
        "channel": "web",
        "integrations": {"All": True},
        "originalTimestamp": now,
        "sentAt": now,
    }
    seen: set[str] = set()
    for key, value in params:
        if key in seen or key == "writeKey" or not key:
            continue
        seen.add(key)
        if key == "anonymousId":
            value = value.strip('"')
        _set_path(event, key.split("."), value)
    event["type"] = kind
    if kind == "page" and not event.get("name"):
        event["name"] = "Unknown Page"
    if kind == "track" and not event.get("event"):
        return None
    if not _present(event.get("anonymousId")) and not _present(event.get("userId")):
        return None
    return event


def _set_path(target: dict[str, Any], parts: list[str], value: str) -> None:
    for part in parts[:-1]:
        child = target.get(part)
        if not isinstance(child, dict):
            child = target[part] = {}
        target = child
    target[parts[-1]] = value
