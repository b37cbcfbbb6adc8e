"""What happens to a message after it is taken: delivery, webhook events, simulated engagement.

Mandrill answers a send at once and delivers afterwards, so the sandbox does the same: the
send endpoints store the messages and hand their ids to `after_send` on the sandbox's single
delivery thread. Opens, clicks, bounces, spam reports and unsubscribes never happen by
themselves in a sandbox; `simulate` applies one on request (the `/sandbox/events` admin
endpoint, the unsubscribe link) or at the configured automatic rates.
"""

from __future__ import annotations

import logging
import re
import uuid
from typing import TYPE_CHECKING, Any

from signalmail.sandbox.store import mandrill_time

if TYPE_CHECKING:
    from signalmail.sandbox.core import Sandbox

log = logging.getLogger(__name__)

SIMULATED_EVENTS = ("open", "click", "hard_bounce", "soft_bounce", "spam", "unsub", "delivered")
_BAD_MAILBOX_DIAG = "smtp;550 5.1.1 The email account that you tried to reach does not exist."


def smtp_event(ts: float, size: int) -> dict[str, Any]:
    """Build the one SMTP log entry of a delivered message, as messages/info shows it."""
    return {
        "ts": int(ts),
        "type": "sent",
        "diag": "250 2.0.0 OK (sandbox)",
        "source_ip": "127.0.0.1",
        "destination_ip": "127.0.0.1",
        "size": size,
    }


def after_send(sandbox: Sandbox, sent: list[str], rejected: list[str], waiting: list[str]) -> None:
    """Background: deliver queued messages, fire send/reject webhooks, auto events.

    Runs on the delivery thread, where an exception would vanish with the future nobody
    reads, so failures are logged instead.
    """
    try:
        sandbox.store.mark_sent(waiting, sandbox.config.clock())
        delivered = sent + waiting
        auto = sandbox.config.auto_events
        if not sandbox.store.list_webhooks() and not (auto.open or auto.hard_bounce or auto.unsub):
            return  # nobody listens: skip building events (bulk sends stay fast)
        events = [event_payload(sandbox, "send", m) for m in delivered]
        events += [event_payload(sandbox, "reject", m) for m in rejected]
        sandbox.dispatcher.publish([e for e in events if e])
        _auto_events(sandbox, delivered)
    except Exception:
        log.exception("post-send processing failed")


def _auto_events(sandbox: Sandbox, message_ids: list[str]) -> None:
    """Engagement at the configured rates; a hard bounce rules out every other event."""
    rates = sandbox.config.auto_events
    for message_id in message_ids:
        draws = sandbox.random_draws(("open", "click", "hard_bounce", "unsub"))
        if draws["hard_bounce"] < rates.hard_bounce:
            simulate(sandbox, message_id, "hard_bounce")
            continue
        if draws["open"] < rates.open:
            simulate(sandbox, message_id, "open")
            if draws["click"] < rates.click:  # nobody clicks what they never opened
                simulate(sandbox, message_id, "click")
        if draws["unsub"] < rates.unsub:
            simulate(sandbox, message_id, "unsub")


def simulate(
    sandbox: Sandbox, message_id: str, event: str, url: str | None = None
) -> dict[str, Any]:
    """Apply an open/click/bounce/spam/unsub to a stored message and fire its webhook.

    Raises ValueError for an unknown event and LookupError for an unknown message: the admin
    endpoint answers those 400 and 404, not as Mandrill errors (this is no Mandrill call).
    """
    if event not in SIMULATED_EVENTS:
        raise ValueError(f"event must be one of {SIMULATED_EVENTS}, got {event!r}")
    store = sandbox.store
    row = store.get_message(message_id)
    if row is None:
        raise LookupError(f"No message exists with the id '{message_id}'")
    now = int(sandbox.config.clock())
    detail = {"ts": now, "ip": "127.0.0.1", "location": "Sandbox", "ua": "Sandbox/1.0"}
    extra: dict[str, Any] = {"ip": "127.0.0.1", "location": None, "user_agent": "Sandbox/1.0"}
    if event == "open":
        store.update_message(message_id, opens_detail=[*row["opens_detail"], detail])
    elif event == "click":
        url = url or _first_link(row["html"]) or "https://example.com/"
        store.update_message(
            message_id, clicks_detail=[*row["clicks_detail"], {**detail, "url": url}]
        )
        extra["url"] = url
    elif event in ("hard_bounce", "soft_bounce"):
        # as in Mandrill, a bounce also puts the address on the reject list
        store.update_message(message_id, state="bounced")
        reason = event.replace("_", "-")
        store.add_reject(
            row["email"].lower(), reason, "bounced in the sandbox", row["subaccount"] or ""
        )
    elif event in ("spam", "unsub"):
        store.add_reject(
            row["email"].lower(), event, f"{event} in the sandbox", row["subaccount"] or ""
        )
    payload = event_payload(sandbox, event, message_id, extra if event in ("open", "click") else {})
    assert payload is not None
    sandbox.dispatcher.publish([payload])
    return payload


def event_payload(
    sandbox: Sandbox, event: str, message_id: str, extra: dict[str, Any] | None = None
) -> dict[str, Any] | None:
    """One webhook event in Mandrill's shape, from the message as stored now.

    None when the message is gone, so a batch built in the background skips it.
    """
    row = sandbox.store.get_message(message_id)
    if row is None:
        return None
    msg: dict[str, Any] = {
        "ts": row["ts"],
        "_id": row["id"],
        "state": row["state"],
        "subject": row["subject"],
        "email": row["email"],
        "sender": row["sender"],
        "tags": row["tags"],
        "metadata": row["metadata"],
        "template": row["template"],
        "subaccount": row["subaccount"],
        "opens": [{"ts": o["ts"]} for o in row["opens_detail"]],
        "clicks": [{"ts": c["ts"], "url": c["url"]} for c in row["clicks_detail"]],
        "smtp_events": row["smtp_events"],
        "resends": [],
        "_version": uuid.uuid4().hex[:22],
    }
    if event in ("hard_bounce", "soft_bounce"):
        msg["bounce_description"] = "bad_mailbox" if event == "hard_bounce" else "mailbox_full"
        msg["diag"] = _BAD_MAILBOX_DIAG
    if event == "reject":
        msg["reject"] = {"reason": row["reject_reason"], "last_event_at": mandrill_time()}
    return {
        "event": event,
        "_id": row["id"],
        "ts": int(sandbox.config.clock()),
        "msg": msg,
        **(extra or {}),
    }


def _first_link(html: str) -> str | None:
    """Where a simulated click without a URL goes: the message's first link, as a reader would."""
    match = re.search(r"""href\s*=\s*["'](https?://[^"']+)["']""", html)
    return match.group(1) if match else None
