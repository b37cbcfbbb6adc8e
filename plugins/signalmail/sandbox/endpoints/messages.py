"""messages/info, content and search: reading back what was sent.

Scheduled messages (`send_at`) have no timer behind them: one whose time has come becomes
`sent` when it is next read here (`_refresh`), which is indistinguishable to a client that can
only observe messages by reading them.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from signalmail.sandbox.checks import key_hash
from signalmail.sandbox.errors import MandrillError
from signalmail.sandbox.events import smtp_event
from signalmail.sandbox.search import QueryError, matches, parse_query
from signalmail.sandbox.store import mandrill_time

if TYPE_CHECKING:
    from signalmail.sandbox.core import Sandbox

_DAY = 86400


def info(sandbox: Sandbox, body: dict[str, Any]) -> dict[str, Any]:
    """messages/info."""
    return _info(_message(sandbox, body["id"]))


def content(sandbox: Sandbox, body: dict[str, Any]) -> dict[str, Any]:
    """messages/content: the rendered message as stored."""
    row = _message(sandbox, body["id"])
    to: dict[str, Any] = {"email": row["email"]}
    if row["recipient_name"]:
        to["name"] = row["recipient_name"]
    return {
        "ts": row["ts"],
        "_id": row["id"],
        "tags": row["tags"],
        "from_email": row["sender"],
        "from_name": row["from_name"],
        "subject": row["subject"],
        "to": to,
        "headers": row["headers"],
        "text": row["text"],
        "html": row["html"],
        "attachments": [],
    }


def search(sandbox: Sandbox, body: dict[str, Any]) -> list[dict[str, Any]]:
    """messages/search with its per-key call limit."""
    config = sandbox.config
    sandbox.search_limit.check(body["_key_hash"], config.search_calls_per_minute)
    try:
        tree = parse_query(body.get("query"))
    except QueryError as exc:
        raise MandrillError("ValidationError", str(exc), -2) from exc
    now = config.clock()
    # Mandrill's defaults: the last 7 days; date_to is a day, so its whole day counts
    ts_from = _date_ts(body["date_from"], "date_from") if body.get("date_from") else now - 7 * _DAY
    ts_to = _date_ts(body["date_to"], "date_to") + _DAY if body.get("date_to") else now + _DAY
    indexed = {f["name"] for f in sandbox.store.list_metadata_fields()}
    is_indexed = (lambda key: True) if config.index_all_metadata else indexed.__contains__
    tags = set(body.get("tags") or [])
    senders = {s.lower() for s in body.get("senders") or []}
    key_hashes = {key_hash(k) for k in body.get("api_keys") or []}
    limit = body.get("limit") or 100
    # the index lags the sends (FaultPlan.search_lag_s): newer messages are not found yet
    indexed_until = now - sandbox.faults.plan.search_lag_s
    results = []
    for row in sandbox.store.iter_messages(int(ts_from), int(ts_to)):
        if row["ts"] > indexed_until:
            continue
        if tags and not tags.intersection(row["tags"]):
            continue
        if senders and row["sender"].lower() not in senders:
            continue
        if key_hashes and row["api_key_hash"] not in key_hashes:
            continue
        if matches(tree, row, is_indexed):
            results.append(_info(_refresh(sandbox, row)))
            if len(results) >= limit:
                break
    return results


def _message(sandbox: Sandbox, message_id: str) -> dict[str, Any]:
    row = sandbox.store.get_message(message_id)
    if row is None:
        raise MandrillError("Unknown_Message", f"No message exists with the id '{message_id}'", 11)
    return _refresh(sandbox, row)


def _refresh(sandbox: Sandbox, row: dict[str, Any]) -> dict[str, Any]:
    """Scheduled messages whose time has come are sent when next looked at."""
    if row["state"] == "scheduled" and row["send_at"] and row["send_at"] <= sandbox.config.clock():
        events = [smtp_event(row["send_at"], len(row["html"]))]
        sandbox.store.update_message(row["id"], state="sent", smtp_events=events)
        row = {**row, "state": "sent", "smtp_events": events}
        sandbox.after_send([row["id"]], [], [])
    return row


def _info(row: dict[str, Any]) -> dict[str, Any]:
    """Show a stored message in messages/info's shape (search answers a list of these)."""
    shown = {
        "ts": row["ts"],
        "_id": row["id"],
        "sender": row["sender"],
        "template": row["template"],
        "mc_template": row["mc_template"],
        "subject": row["subject"],
        "email": row["email"],
        "tags": row["tags"],
        "opens": len(row["opens_detail"]),
        "opens_detail": row["opens_detail"],
        "clicks": len(row["clicks_detail"]),
        "clicks_detail": row["clicks_detail"],
        "state": row["state"],
        "metadata": row["metadata"],
        "smtp_events": row["smtp_events"],
        "diag": None,
        "subaccount": row["subaccount"],
        "resends": [],
        "reject": None,
    }
    if row["state"] == "rejected":
        shown["reject"] = {
            "reason": row["reject_reason"] or "invalid",
            "last_event_at": mandrill_time(),
        }
        shown["bounce_description"] = row["reject_reason"] or "invalid"
    if row["state"] == "bounced":
        shown["diag"] = "smtp;550 5.1.1 The email account that you tried to reach does not exist."
        shown["bounce_description"] = "bad_mailbox"
    return shown


def _date_ts(value: str, name: str) -> float:
    """date_from/date_to: a date (or datetime), UTC unless it says otherwise."""
    try:
        when = dt.datetime.fromisoformat(value)
    except ValueError as exc:
        raise MandrillError(
            "ValidationError", f"{name} {value!r} is not a date (YYYY-MM-DD)", -2
        ) from exc
    when = when if when.tzinfo else when.replace(tzinfo=dt.UTC)
    return when.timestamp()


OPERATIONS: dict[str, Callable[[Sandbox, dict[str, Any]], Any]] = {
    "messages/search": search,
    "messages/info": info,
    "messages/content": content,
}
