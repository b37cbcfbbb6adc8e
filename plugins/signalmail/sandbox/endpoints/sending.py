"""messages/send, send-template and send-mc-template: taking a message and answering per recipient.

A send runs in Mandrill's order, and the order matters because the first problem found is the
error the client sees:

1. the whole call is refused (nothing stored) for an unknown subaccount or template
   (`_resolve_content`), then for what `send_checks.validate_message` finds: a bad sender,
   reserved tag/merge-var/metadata names, oversized metadata, a bad `send_at`;
2. otherwise each recipient gets a status and a rendering of its own (`send_recipients`);
3. every recipient's message is stored, rejected ones included, since messages/info and
   search show those too (`_record`), and delivery, webhooks and automatic events follow on
   the delivery thread (`events.after_send`), as Mandrill answers before it delivers.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from signalmail.sandbox import handlebars
from signalmail.sandbox.checks import check_subaccount
from signalmail.sandbox.endpoints import mctemplates, templates
from signalmail.sandbox.endpoints.send_checks import parse_send_at, validate_message
from signalmail.sandbox.endpoints.send_recipients import (
    Call,
    Content,
    parse_parts,
    resolve_recipients,
    send_one,
)
from signalmail.sandbox.errors import MandrillError

if TYPE_CHECKING:
    from signalmail.sandbox.core import Sandbox

#: Mandrill queues (answers `queued`, delivers later) any call with more recipients than this
MAX_IMMEDIATE_RECIPIENTS = 10


def send(sandbox: Sandbox, body: dict[str, Any], kind: str) -> list[dict[str, Any]]:
    """messages/send, send-template and send-mc-template: one result per recipient.

    `kind` is "send", "template" or "mc-template": the three calls differ only in where the
    content comes from (`_resolve_content`).
    """
    message = body["message"]
    now = sandbox.config.clock()
    check_subaccount(sandbox.config, message.get("subaccount"))
    content = _resolve_content(sandbox, body, kind)
    validate_message(sandbox.config, message, content.from_email)
    send_at = parse_send_at(body.get("send_at"), now)
    if not (message.get("to") or []):
        # Mandrill answers an empty list (which mailchimp-transactional then hands back as
        # a raw requests.Response: the quirk callers must treat as "nothing was sent")
        return []
    recipients = resolve_recipients(message)
    many = len(recipients) > MAX_IMMEDIATE_RECIPIENTS
    call = Call(
        body=body,
        message=message,
        content=content,
        now=now,
        send_at=send_at,
        queued=bool(body.get("async")) or many,
        many_recipients=many,
        visible_to=[r.entry for r in recipients if (r.entry.get("type") or "to") != "bcc"],
        merge=_wants_merge(message, kind),
        language=message.get("merge_language") or "mailchimp",
        # one query for the whole batch: a 1,000-recipient call must not make 1,000 lookups
        rejects=sandbox.store.find_rejects(
            [r.email for r in recipients], message.get("subaccount") or ""
        ),
    )
    call.parts = parse_parts(call)
    results: list[dict[str, Any]] = []
    rows: list[dict[str, Any]] = []
    for recipient in recipients:
        result, row = send_one(sandbox.config, call, recipient)
        results.append(result)
        rows.append(row)
    _record(sandbox, rows)
    return results


def _resolve_content(sandbox: Sandbox, body: dict[str, Any], kind: str) -> Content:
    """Body, subject and sender: the message's own, or its template's with the message's overrides.

    Mandrill lets a template send override the template's subject, sender and text from the
    message, so each field falls back to the template only when the message leaves it empty.
    """
    message = body["message"]
    if kind == "template":
        return _template_content(sandbox, body, message)
    if kind == "mc-template":
        return _mc_template_content(sandbox, body, message)
    return Content(
        html=message.get("html") or "",
        text=message.get("text") or "",
        subject=message.get("subject"),
        from_email=message.get("from_email"),
        from_name=message.get("from_name"),
    )


def _template_content(sandbox: Sandbox, body: dict[str, Any], message: dict[str, Any]) -> Content:
    """send-template: the published version with `template_content` filled into mc:edit regions.

    The draft is never sent: a template added with `publish: false` is an error until it is
    published, which is what keeps half-edited templates out of customers' inboxes.
    """
    template = templates.find(sandbox, body["template_name"])
    if template is None:
        raise MandrillError("Unknown_Template", f'No such template "{body["template_name"]}"')
    if template["published_at"] is None:
        raise MandrillError(
            "Unknown_Template",
            f'Template "{template["slug"]}" has no published version; publish it first',
        )
    slug = template["slug"]
    contents = {c.get("name"): c.get("content") or "" for c in body["template_content"]}
    try:
        code = handlebars.apply_mc_edit(template["publish_code"] or "", contents)
    except handlebars.TemplateError as exc:
        raise MandrillError("Invalid_Template", f'Template "{slug}": {exc}', 6) from exc
    return Content(
        html=code,
        text=message.get("text") or template["publish_text"] or "",
        subject=message.get("subject") or template["publish_subject"],
        from_email=message.get("from_email") or template["publish_from_email"],
        from_name=message.get("from_name") or template["publish_from_name"],
        template=slug,
    )


def _mc_template_content(
    sandbox: Sandbox, body: dict[str, Any], message: dict[str, Any]
) -> Content:
    """send-mc-template: the published Mailchimp template, or its draft when asked for."""
    version = body.get("mc_template_version") or "published"
    template = mctemplates.get(sandbox, body["mc_template_id"])
    if version == "published" and not template.get("published_at"):
        raise MandrillError(
            "Unknown_Message",
            f"Mailchimp template {body['mc_template_id']} has no published version",
            11,
        )
    prefix = "publish_" if version == "published" else ""
    # a Mailchimp template keeps one subject and sender: only its code and text are versioned
    return Content(
        html=template[prefix + "code"],
        text=message.get("text") or template[prefix + "text"] or "",
        subject=message.get("subject") or template["subject"],
        from_email=message.get("from_email") or template["from_email"],
        from_name=message.get("from_name") or template["from_name"],
        mc_template=template["mc_template_name"],
    )


def _wants_merge(message: dict[str, Any], kind: str) -> bool:
    """Whether merge tags are rendered: as `merge` says, else when there is something to merge.

    Without `merge`, a message that brings merge vars is merged, and so is every template
    send, since templates are written to be merged.
    """
    merge = message.get("merge")
    if merge is None:
        return bool(message.get("global_merge_vars") or message.get("merge_vars") or kind != "send")
    return merge


def _record(sandbox: Sandbox, rows: list[dict[str, Any]]) -> None:
    """Store every recipient's message in one transaction, then hand them to after-send.

    Stored before the answer goes out, so a client reading messages/info right after the
    answer finds them; delivery and webhooks follow on the delivery thread, as Mandrill
    answers before it delivers.
    """
    sandbox.store.insert_messages(rows)
    sent = [r["id"] for r in rows if r["state"] == "sent"]
    # invalid addresses are stored as rejected without a reason and fire no `reject` event
    rejected = [r["id"] for r in rows if r["state"] == "rejected" and r["reject_reason"]]
    waiting = [r["id"] for r in rows if r["state"] == "queued"]
    sandbox.after_send(sent, rejected, waiting)


OPERATIONS: dict[str, Callable[[Sandbox, dict[str, Any]], Any]] = {
    "messages/send": lambda sandbox, body: send(sandbox, body, "send"),
    "messages/send-template": lambda sandbox, body: send(sandbox, body, "template"),
    "messages/send-mc-template": lambda sandbox, body: send(sandbox, body, "mc-template"),
}
