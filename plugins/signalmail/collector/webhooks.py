"""Mandrill (Mailchimp Transactional) webhooks: signature check and conversion to track events.

Mandrill POSTs ``application/x-www-form-urlencoded`` with one field, ``mandrill_events``: a JSON
array of events. It signs each POST with ``X-Mandrill-Signature = base64(HMAC-SHA1(webhook key,
url + concat(sorted key + value of every POST field)))`` where `url` is exactly the URL the
webhook was registered with: behind a proxy that is not the URL the collector sees, hence the
``mandrill_webhook_url`` setting.

Mapping (docs/contracts.md, section 2):

| Mandrill event | track event | extra properties |
|---|---|---|
| open | Email Opened | ip, user_agent, location |
| click | Email Link Clicked | url, ip, user_agent, location |
| hard_bounce / soft_bounce | Email Bounced | bounce_type hard/soft, bounce_description, diag |
| spam | Marked as Spam | |
| unsub | Unsubscribed | |
| reject | Email Rejected | reject_reason |
| delivered | Email Delivered | |

``send`` is not converted: the email target already emits ``Email Sent`` (with the template and
variant it chose) the moment Mandrill accepts the message, and a second copy from the webhook
would double-count sends. ``deferral`` is a temporary delay, not an outcome (it ends as a send or
a bounce); sync events (whitelist/blacklist) and inbound messages carry no message metadata.
These are counted as ignored, never silently dropped from the counters.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import uuid
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qsl

import msgspec

from signalmail.collector.ingest import WEBHOOK_LIBRARY_NAME

log = logging.getLogger("signalmail.collector.webhooks")

#: Namespace of the deterministic messageIds of webhook events (uuid5 of the event's identity).
MANDRILL_NAMESPACE = uuid.UUID("6f1c6a4e-5a63-4d55-9b43-0f6b7c0e4d21")

EVENT_NAMES: dict[str, str] = {
    "open": "Email Opened",
    "click": "Email Link Clicked",
    "hard_bounce": "Email Bounced",
    "soft_bounce": "Email Bounced",
    "spam": "Marked as Spam",
    "unsub": "Unsubscribed",
    "reject": "Email Rejected",
    # accepted by the recipient's mail server (Mailchimp Transactional's `delivered` event)
    "delivered": "Email Delivered",
}
IGNORED_EVENTS = frozenset({"send", "deferral"})
#: Mandrill's sync events (rejects and allowlist changes), counted but not converted
SYNC_TYPES = frozenset({"blacklist", "whitelist"})
METADATA_KEYS = ("trigger_id", "campaign", "variant", "user_id")
LIBRARY = {"name": WEBHOOK_LIBRARY_NAME, "version": "1"}


class WebhookError(Exception):
    """A webhook request the collector refuses; `status`/`message` are the answer."""

    def __init__(self, status: int, message: str, reason: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.reason = reason


def parse_form(body: bytes) -> dict[str, str]:
    """Form fields of a urlencoded body; for repeated keys the last wins (as Mandrill's PHP)."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise WebhookError(400, "invalid form body: not UTF-8", "invalid_form") from None
    return dict(parse_qsl(text, keep_blank_values=True))


def signature(key: str, url: str, params: dict[str, str]) -> str:
    """Mandrill's X-Mandrill-Signature for `url` and the POST `params`."""
    signed = url + "".join(name + params[name] for name in sorted(params))
    digest = hmac.new(key.encode(), signed.encode(), hashlib.sha1).digest()
    return base64.b64encode(digest).decode()


def verify(key: str, url: str, params: dict[str, str], given: str | None) -> bool:
    """Constant-time check of a request's signature."""
    if not given:
        return False
    return hmac.compare_digest(signature(key, url, params), given.strip())


def parse_events(params: dict[str, str]) -> list[Any]:
    """Decode the `mandrill_events` array of a webhook POST."""
    raw = params.get("mandrill_events")
    if raw is None:
        raise WebhookError(400, "missing form field mandrill_events", "missing_events")
    try:
        events = msgspec.json.decode(raw)
    except (msgspec.DecodeError, RecursionError, UnicodeDecodeError):
        raise WebhookError(400, "mandrill_events is not valid JSON", "invalid_events") from None
    if not isinstance(events, list):
        raise WebhookError(400, "mandrill_events must be a JSON array", "invalid_events")
    return events


def anonymous_id_for(email: str) -> str:
    """Stable anonymousId for a recipient without a user_id (contracts.md, section 2)."""
    digest = hashlib.sha1(email.strip().lower().encode(), usedforsecurity=False).hexdigest()
    return f"mandrill:{digest}"


def message_id_for(mandrill_id: str, event: str, ts: Any, url: str | None = None) -> str:
    """Deterministic messageId so Mandrill's retries of one webhook deduplicate downstream.

    Derived from the Mandrill message `_id`, the event name and `ts`; for clicks the url is
    included too, since two links clicked within the same second are two events.
    """
    name = f"{mandrill_id}:{event}:{ts}"
    if url:
        name += f":{url}"
    return str(uuid.uuid5(MANDRILL_NAMESPACE, name))


def _iso_or_none(ts: Any) -> str | None:
    """Mandrill's epoch-seconds `ts` as RFC 3339, or None when it is not a usable time.

    A `ts` out of datetime's range (1e20, inf) must make only its own event malformed: an
    exception here would fail the whole POST, and Mandrill would retry it forever.
    """
    if isinstance(ts, bool) or not isinstance(ts, int | float):
        return None
    try:
        moment = datetime.fromtimestamp(float(ts), UTC)
    except (OverflowError, OSError, ValueError):
        return None
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def convert(
    events: Iterable[Any],
) -> tuple[list[dict[str, Any]], dict[str, int]]:
    """Track events for the convertible Mandrill events; returns (events, counts by outcome).

    Counts use keys ``converted``, ``ignored_<event>`` and ``malformed``. A malformed event is
    logged and skipped rather than failing the request: Mandrill retries a failed POST with the
    same batch, so one bad event would otherwise block its neighbours forever.
    """
    out: list[dict[str, Any]] = []
    counts: dict[str, int] = {}

    def bump(key: str) -> None:
        counts[key] = counts.get(key, 0) + 1

    for item in events:
        if not isinstance(item, dict):
            bump("malformed")
            log.warning("skipping Mandrill webhook item that is not an object")
            continue
        kind = item.get("event")
        # counts are /metrics labels: only names we know, never the sender's text; a name is
        # looked up only once it is a string (a list or an object cannot be, and would raise)
        if kind is None and "type" in item:  # sync events: {"type": "blacklist", ...}
            sync = item.get("type")
            known = isinstance(sync, str) and sync in SYNC_TYPES
            bump(f"ignored_{sync}" if known else "ignored_unknown")
            continue
        if not isinstance(kind, str):
            bump("ignored_unknown")
            continue
        if kind in IGNORED_EVENTS:
            bump(f"ignored_{kind}")
            continue
        if kind not in EVENT_NAMES:
            bump("ignored_unknown")
            continue
        track = _convert_one(item, kind)
        if track is None:
            bump("malformed")
            continue
        out.append(track)
        bump("converted")
    return out, counts


def _convert_one(item: dict[str, Any], kind: str) -> dict[str, Any] | None:
    raw_msg = item.get("msg")
    msg: dict[str, Any] = raw_msg if isinstance(raw_msg, dict) else {}
    mandrill_id = item.get("_id") or msg.get("_id")
    ts = item.get("ts")
    email = msg.get("email") or item.get("email")
    event_time = _iso_or_none(ts)
    if not mandrill_id or event_time is None or not isinstance(email, str):
        log.warning(
            "skipping Mandrill %s event without _id, a valid numeric ts or msg.email (_id=%s)",
            kind,
            mandrill_id,
        )
        return None
    raw_metadata = msg.get("metadata")
    metadata: dict[str, Any] = raw_metadata if isinstance(raw_metadata, dict) else {}
    properties: dict[str, Any] = {key: metadata.get(key) for key in METADATA_KEYS}
    properties.update(
        {
            "mandrill_id": mandrill_id,
            "email": email,
            "mandrill_event": kind,
            "subject": msg.get("subject"),
            "sender": msg.get("sender"),
            "template": msg.get("template"),
            "tags": msg.get("tags") or [],
            "state": msg.get("state"),
            "metadata": metadata,
        }
    )
    url = item.get("url") if kind == "click" else None
    if kind == "click":
        properties["url"] = url
    if kind in ("open", "click"):
        properties.update(
            ip=item.get("ip"), user_agent=item.get("user_agent"), location=item.get("location")
        )
    if kind in ("hard_bounce", "soft_bounce"):
        properties.update(
            bounce_type="hard" if kind == "hard_bounce" else "soft",
            bounce_description=msg.get("bounce_description"),
            diag=msg.get("diag"),
        )
    if kind == "reject":
        # Mandrill's message info carries it as reject.reason (MessagesEmailInfo in its
        # OpenAPI description); the flat names are kept for older payloads
        reject = msg.get("reject")
        properties["reject_reason"] = (
            (reject.get("reason") if isinstance(reject, dict) else None)
            or msg.get("reject_reason")
            or item.get("reject_reason")
        )
    track: dict[str, Any] = {
        "type": "track",
        "event": EVENT_NAMES[kind],
        "messageId": message_id_for(str(mandrill_id), kind, ts, url),
        "properties": properties,
        "originalTimestamp": event_time,
        "channel": "server",
        "context": {
            "library": LIBRARY,
            "ip": item.get("ip"),
            "userAgent": item.get("user_agent"),
            "traits": {"email": email},
        },
        "integrations": {"All": True},
    }
    user_id = metadata.get("user_id")
    if user_id is not None and user_id != "":
        track["userId"] = str(user_id)
    else:
        track["anonymousId"] = anonymous_id_for(email)
    return track
