"""Each recipient of a send: its status, its rendering and the message row stored for it.

Every recipient gets an answer of its own (`sent`, `queued`, `scheduled`, `rejected` or
`invalid`): a bad or denylisted address never fails the others. A recipient's faulty metadata
or a rendering error does still refuse the whole call, before anything is stored.
"""

from __future__ import annotations

import datetime as dt
import uuid
from dataclasses import dataclass
from typing import Any

from signalmail.sandbox import handlebars
from signalmail.sandbox.checks import is_valid_email
from signalmail.sandbox.config import SandboxConfig
from signalmail.sandbox.endpoints.send_checks import check_metadata
from signalmail.sandbox.errors import MandrillError
from signalmail.sandbox.events import smtp_event
from signalmail.sandbox.plain_text import html_to_text
from signalmail.sandbox.rendering import render, unsub_link

#: local parts (before @) that make the sandbox reject a recipient with that reason
REJECT_LOCAL_PARTS = {
    "hard-bounce": "hard-bounce",
    "hard_bounce": "hard-bounce",
    "soft-bounce": "soft-bounce",
    "soft_bounce": "soft-bounce",
    "spam": "spam",
    "unsub": "unsub",
}
REJECT_DOMAIN = "reject.example"  # any address @reject.example: rejected, reason "custom"
INVALID_DOMAIN = "invalid.example"  # any address @invalid.example: status "invalid"


@dataclass
class Content:
    """What every recipient is sent before merging: the message's own, or its template's."""

    html: str
    text: str
    subject: str | None
    from_email: str | None
    from_name: str | None
    template: str | None = None  # the template's slug, what messages/info reports
    mc_template: str | None = None


@dataclass
class Recipient:
    """One `to` entry with everything looked up for it in bulk before rendering starts."""

    message_id: str
    entry: dict[str, Any]  # as sent, for the To header
    email: str
    merge_vars: dict[str, Any]
    metadata: dict[str, Any]  # not yet size-checked: see `send_one`


@dataclass
class Call:
    """What one call decided once, before its first recipient; read by every recipient."""

    body: dict[str, Any]
    message: dict[str, Any]
    content: Content
    now: float
    send_at: float | None
    queued: bool
    many_recipients: bool
    visible_to: list[dict[str, Any]]  # the To header lists these under preserve_recipients
    merge: bool
    language: str
    rejects: dict[str, str]  # lower-cased address -> reason, from the denylist
    parts: tuple[Any, Any, Any] = ("", "", "")  # html, subject, text; parsed once (handlebars)


def override_vars(global_vars: dict[Any, Any], own: dict[Any, Any]) -> dict[Any, Any]:
    """Return the message-wide merge vars with a recipient's own over them.

    Names are case-insensitive in Mandrill: a recipient's `fname` replaces a global `FNAME`,
    which a plain dict update would keep beside it (and the global one could then render).
    """
    folded = {str(name).lower() for name in own}
    kept = {name: value for name, value in global_vars.items() if str(name).lower() not in folded}
    return {**kept, **own}


def resolve_recipients(message: dict[str, Any]) -> list[Recipient]:
    """Give each `to` entry its message id, merge vars and metadata, matched by address.

    Per-recipient merge vars and metadata are matched case-insensitively on the address
    (`rcpt`), and override the message-wide ones of the same name.
    """
    metadata = message.get("metadata") or {}
    global_vars = {v.get("name"): v.get("content") for v in message.get("global_merge_vars") or []}
    per_rcpt = {
        (m.get("rcpt") or "").lower(): {
            v.get("name"): v.get("content") for v in m.get("vars") or []
        }
        for m in message.get("merge_vars") or []
    }
    per_meta = {
        (m.get("rcpt") or "").lower(): m.get("values") or {}
        for m in message.get("recipient_metadata") or []
    }
    resolved = []
    for entry in message.get("to") or []:
        email = (entry.get("email") or "").strip()
        resolved.append(
            Recipient(
                message_id=uuid.uuid4().hex,
                entry=entry,
                email=email,
                merge_vars=override_vars(global_vars, per_rcpt.get(email.lower(), {})),
                metadata={**metadata, **per_meta.get(email.lower(), {})},
            )
        )
    return resolved


def parse_parts(call: Call) -> tuple[Any, Any, Any]:
    """Parse handlebars once per call, not once per recipient (bulk sends render thousands)."""
    content = call.content
    parts: tuple[Any, Any, Any] = (content.html, content.subject or "", content.text)
    if call.merge and call.language == "handlebars":
        try:
            return (
                handlebars.parse(parts[0]),
                handlebars.parse(parts[1]),
                handlebars.parse(parts[2]),
            )
        except handlebars.TemplateError as exc:
            raise MandrillError("Invalid_Template", f"cannot render: {exc}", 6) from exc
    return parts


def send_one(
    config: SandboxConfig, call: Call, recipient: Recipient
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Check, render and answer one recipient; return its answer and its row to store.

    Its metadata is checked here, after its status and before its rendering, rather than for
    all recipients up front: when several recipients are faulty, the error answered is the
    first faulty recipient's first problem, and a client's tests may depend on which it is.
    """
    email = recipient.email
    status, reason = _status(call, email)
    check_metadata(config, recipient.metadata)
    html, subject, text = _render(config, call, recipient)
    # the spec's enums admit no null, so absent reasons are left out
    result: dict[str, Any] = {"email": email, "status": status, "_id": recipient.message_id}
    if status == "rejected":
        result["reject_reason"] = reason
    if status == "queued" and call.many_recipients:
        result["queued_reason"] = "multiple-recipients"
    content = call.content
    row = {
        "id": recipient.message_id,
        "ts": int(call.now),
        "email": email,
        "recipient_name": recipient.entry.get("name"),
        "sender": content.from_email or "",
        "from_name": content.from_name,
        "subject": subject,
        "template": content.template,
        "mc_template": content.mc_template,
        "tags": call.message.get("tags") or [],
        "metadata": recipient.metadata,
        "state": {"invalid": "rejected"}.get(status, status),
        "reject_reason": reason,
        "html": html,
        "text": text,
        "headers": _headers(call, recipient, subject),
        "smtp_events": [smtp_event(call.now, len(html))] if status == "sent" else [],
        "send_at": int(call.send_at) if call.send_at else None,
        "subaccount": call.message.get("subaccount"),
        "api_key_hash": call.body["_key_hash"],
    }
    return result, row


def _status(call: Call, email: str) -> tuple[str, str | None]:
    """Decide a recipient's status and reject reason: why it is not delivered, or when.

    Besides the denylist, reserved addresses (`hard-bounce@...`, `...@reject.example`,
    `...@invalid.example`) give each outcome on demand, so clients can test their handling
    of rejections without a real bounce.
    """
    from_email = call.content.from_email
    if not is_valid_email(email) or email.lower().endswith("@" + INVALID_DOMAIN):
        return "invalid", None
    if not from_email:
        return "rejected", "invalid-sender"
    local, _, domain = email.lower().partition("@")
    if local in REJECT_LOCAL_PARTS:
        return "rejected", REJECT_LOCAL_PARTS[local]
    if domain == REJECT_DOMAIN:
        return "rejected", "custom"
    if email.lower() in call.rejects:
        return "rejected", call.rejects[email.lower()]
    return "scheduled" if call.send_at else "queued" if call.queued else "sent", None


def _render(config: SandboxConfig, call: Call, recipient: Recipient) -> tuple[str, str, str]:
    """Render (html, subject, text) as this recipient receives them.

    Rejected and invalid recipients are rendered too: their messages are stored like any
    other and messages/content shows them. `auto_text` fills the text part only when there is
    none, so a text part the sender wrote (or a template supplied) is kept.
    """
    now = call.now
    options = handlebars.RenderOptions(
        now=lambda: dt.datetime.fromtimestamp(now, dt.UTC),
        unsub_link=unsub_link(config, recipient.message_id, recipient.email),
    )
    content = call.content
    html, subject, text = content.html, content.subject or "", content.text
    if call.merge:
        html, subject, text = render(call.language, call.parts, recipient.merge_vars, options)
    if call.message.get("auto_text") and not text and html:
        text = html_to_text(html)
    return html, subject, text


def _headers(call: Call, recipient: Recipient, subject: str) -> dict[str, str]:
    """Build the stored headers: a recipient sees only itself unless preserve_recipients."""
    message = call.message
    to_header = (
        ", ".join(_address(r) for r in call.visible_to)
        if message.get("preserve_recipients")
        else _address(recipient.entry)
    )
    headers = {
        "To": to_header,
        "Subject": subject,
        "From": _address({"email": call.content.from_email or "", "name": call.content.from_name}),
    }
    headers.update({k: str(v) for k, v in (message.get("headers") or {}).items()})
    return headers


def _address(recipient: dict[str, Any]) -> str:
    name = recipient.get("name")
    return f'"{name}" <{recipient.get("email")}>' if name else str(recipient.get("email") or "")
