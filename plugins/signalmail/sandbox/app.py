"""The Mandrill-compatible sandbox: a Starlette app serving `/api/1.3/<path>.json`.

Every API call goes through the same gate, in Mandrill's order: JSON body -> injected faults ->
`key` (missing: ValidationError "You must specify a key value"; unknown: Invalid_Key) -> the
OpenAPI request schema (ValidationError naming each field) -> the endpoint. Errors are Mandrill's
JSON `{"status": "error", "code", "name", "message"}`. With `error_style="mandrill"` (default)
every error is HTTP 500 and Invalid_Key has code -1, as the live service answers; with
`error_style="spec"` statuses and codes follow the OpenAPI document (401 / 404 / 422 ...).
RequestLimitExceeded is HTTP 429 in both styles.

Endpoints run in Starlette's thread pool (they touch SQLite and, for webhooks/add, probe a URL),
so a slow one never stalls the event loop that injects latency or timeouts into others.

Sandbox-only admin endpoints live under `/sandbox/` (no key; bind to 127.0.0.1): faults, event
simulation, Mailchimp-template seeding, unsubscribe links, webhook drain, health.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import hashlib
import json
import logging
import random
import re
import secrets
import threading
import time
import urllib.parse
import uuid
from collections import deque
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import Route

from signalmail.sandbox import handlebars
from signalmail.sandbox.faults import ERRORS, FaultInjector, FaultPlan
from signalmail.sandbox.plain_text import html_to_text
from signalmail.sandbox.search import QueryError, matches, parse_query
from signalmail.sandbox.store import Store, mandrill_time
from signalmail.sandbox.validation import SpecValidator, mandrill_message
from signalmail.sandbox.webhooks import WebhookDispatcher, probe

log = logging.getLogger(__name__)

API_PREFIX = "/api/1.3"
WEBHOOK_EVENTS = (
    "send",
    "deferral",
    "hard_bounce",
    "soft_bounce",
    "open",
    "click",
    "spam",
    "unsub",
    "reject",
    "blacklist",
    "whitelist",
    "delivered",
)
SIMULATED_EVENTS = ("open", "click", "hard_bounce", "soft_bounce", "spam", "unsub", "delivered")
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
_EMAIL_RE = re.compile(
    r"^[^@\s\"(),:;<>\[\\\]]+@[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)+$"
)

#: error name -> HTTP status in error_style "spec" (the OpenAPI document's response table)
SPEC_STATUS = {
    "Invalid_Key": 401,
    "PaymentRequired": 402,
    "Unknown_Template": 404,
    "Unknown_Message": 404,
    "Unknown_Subaccount": 404,
    "Invalid_Reject": 404,
    "Unknown_Webhook": 404,
    "Invalid_Template": 422,
    "ValidationError": 422,
    "RequestLimitExceeded": 429,
    "ServiceUnavailable": 503,
    "GeneralError": 500,
}


class MandrillError(Exception):
    """An error answered in Mandrill's JSON shape; `name` is what clients classify on."""

    def __init__(self, name: str, message: str, code: int | None = None) -> None:
        super().__init__(message)
        self.name = name
        self.message = message
        self.code = code if code is not None else ERRORS.get(name, (-1, ""))[0]


def is_valid_email(address: str) -> bool:
    """Syntactic address check (what Mandrill answers `invalid` for)."""
    return bool(_EMAIL_RE.match(address or "")) and len(address) <= 254


@dataclass
class AutoEvents:
    """Rates (0..1) of events simulated automatically after each delivered message."""

    open: float = 0.0
    click: float = 0.0
    hard_bounce: float = 0.0
    unsub: float = 0.0


@dataclass
class SandboxConfig:
    """Everything the sandbox can be told; the CLI and `testing.run_sandbox` fill it."""

    db_path: Path
    api_keys: list[str] = field(default_factory=lambda: ["sandbox-key"])
    public_url: str = "http://127.0.0.1:8025"
    error_style: str = "mandrill"
    search_calls_per_minute: int = 20
    max_metadata_bytes: int = 250
    index_all_metadata: bool = False
    subaccounts: list[str] = field(default_factory=list)
    faults: FaultPlan = field(default_factory=FaultPlan)
    webhook_urls: list[str] = field(default_factory=list)
    webhook_key: str | None = None
    webhook_max_attempts: int = 5
    webhook_backoff_s: float = 0.5
    probe_webhooks: bool = True
    auto_events: AutoEvents = field(default_factory=AutoEvents)
    seed: int = 0
    mc_templates_file: Path | None = None
    clock: Callable[[], float] = time.time


class Sandbox:
    """The sandbox's state and endpoint logic, independent of HTTP (the app wraps it)."""

    def __init__(self, config: SandboxConfig) -> None:
        if config.error_style not in ("mandrill", "spec"):
            raise ValueError("error_style must be 'mandrill' or 'spec'")
        if not config.api_keys:
            raise ValueError("at least one API key is required")
        self.config = config
        self.store = Store(config.db_path)
        self.validator = SpecValidator()
        self.faults = FaultInjector(config.faults)
        self.dispatcher = WebhookDispatcher(
            self.store, config.webhook_max_attempts, config.webhook_backoff_s
        )
        self._keys = {_key_hash(k) for k in config.api_keys}
        self._search_calls: dict[str, deque[float]] = {}
        self._lock = threading.Lock()
        self._random = random.Random(config.seed)  # noqa: S311 - reproducible simulation
        self._delivery = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sandbox-delivery")
        self._install_cli_webhooks()
        if config.mc_templates_file:
            self.seed_mc_templates(json.loads(Path(config.mc_templates_file).read_text()))
        self.handlers: dict[str, Callable[[dict[str, Any]], Any]] = {
            "messages/send": lambda b: self.send(b, "send"),
            "messages/send-template": lambda b: self.send(b, "template"),
            "messages/send-mc-template": lambda b: self.send(b, "mc-template"),
            "messages/search": self.search,
            "messages/info": self.message_info,
            "messages/content": self.message_content,
            "templates/add": self.template_add,
            "templates/update": self.template_update,
            "templates/info": lambda b: self._template(b["name"]),
            "templates/list": self.template_list,
            "templates/publish": self.template_publish,
            "templates/delete": self.template_delete,
            "templates/render": self.template_render,
            "mctemplates/list": self.mctemplate_list,
            "mctemplates/info": lambda b: self._mctemplate(b["mc_template_id"]),
            "mctemplates/render": self.mctemplate_render,
            "rejects/list": self.rejects_list,
            "rejects/add": self.rejects_add,
            "rejects/delete": self.rejects_delete,
            "users/ping": lambda b: "PONG!",
            "users/ping2": lambda b: {"PING": "PONG!"},
            "webhooks/list": lambda b: self.store.list_webhooks(),
            "webhooks/add": self.webhook_add,
            "metadata/add": self.metadata_add,
            "metadata/list": lambda b: self.store.list_metadata_fields(),
        }

    def close(self) -> None:
        """Stop background work and release the database."""
        self._delivery.shutdown(wait=True)
        self.dispatcher.close()
        self.store.close()

    # ------------------------------------------------------------------ gate

    def check_key(self, body: dict[str, Any]) -> str:
        """Return the caller's key hash; raise Mandrill's errors for a missing or unknown key."""
        key = body.get("key")
        if not key:
            raise MandrillError("ValidationError", "You must specify a key value", -1)
        if not isinstance(key, str) or _key_hash(key) not in self._keys:
            code = 401 if self.config.error_style == "spec" else -1
            raise MandrillError("Invalid_Key", "Invalid API key", code)
        return _key_hash(key)

    def call(self, operation: str, body: dict[str, Any]) -> Any:
        """Authenticate, validate and run one API operation (synchronous; thread pool)."""
        handler = self.handlers.get(operation)
        if handler is None:
            raise MandrillError(
                "ValidationError",
                f"the sandbox does not implement {operation}; it serves {sorted(self.handlers)}",
                -1,
            )
        key_hash = self.check_key(body)
        problems = self.validator.request_problems(operation, body)
        if problems:
            raise MandrillError("ValidationError", mandrill_message(problems), -2)
        body = {**body, "_key_hash": key_hash}
        return handler(body)

    def http_status(self, error: MandrillError) -> int:
        """HTTP status for an error under the configured style."""
        if error.name == "RequestLimitExceeded":
            return 429
        if self.config.error_style == "mandrill":
            return 500
        return SPEC_STATUS.get(error.name, 500)

    # ------------------------------------------------------------------ sending

    def send(self, body: dict[str, Any], kind: str) -> list[dict[str, Any]]:
        """messages/send, send-template and send-mc-template: one result per recipient."""
        message = body["message"]
        now = self.config.clock()
        subaccount = message.get("subaccount")
        self._check_subaccount(subaccount)
        template_slug: str | None = None
        mc_template: str | None = None
        source = {
            "html": message.get("html") or "",
            "text": message.get("text") or "",
            "subject": message.get("subject"),
            "from_email": message.get("from_email"),
            "from_name": message.get("from_name"),
        }
        if kind == "template":
            template = self.store.get_template(body["template_name"]) or self._template_by_name(
                body["template_name"]
            )
            if template is None:
                raise MandrillError(
                    "Unknown_Template", f'No such template "{body["template_name"]}"'
                )
            if template["published_at"] is None:
                raise MandrillError(
                    "Unknown_Template",
                    f'Template "{template["slug"]}" has no published version; publish it first',
                )
            template_slug = template["slug"]
            contents = {c.get("name"): c.get("content") or "" for c in body["template_content"]}
            try:
                code = handlebars.apply_mc_edit(template["publish_code"] or "", contents)
            except handlebars.TemplateError as exc:
                raise MandrillError(
                    "Invalid_Template", f'Template "{template_slug}": {exc}', 6
                ) from exc
            source = {
                "html": code,
                "text": message.get("text") or template["publish_text"] or "",
                "subject": message.get("subject") or template["publish_subject"],
                "from_email": message.get("from_email") or template["publish_from_email"],
                "from_name": message.get("from_name") or template["publish_from_name"],
            }
        elif kind == "mc-template":
            version = body.get("mc_template_version") or "published"
            template = self._mctemplate(body["mc_template_id"])
            if version == "published" and not template.get("published_at"):
                raise MandrillError(
                    "Unknown_Message",
                    f"Mailchimp template {body['mc_template_id']} has no published version",
                    11,
                )
            mc_template = template["mc_template_name"]
            prefix = "publish_" if version == "published" else ""
            source = {
                "html": template[prefix + "code"],
                "text": message.get("text") or template[prefix + "text"] or "",
                "subject": message.get("subject") or template["subject"],
                "from_email": message.get("from_email") or template["from_email"],
                "from_name": message.get("from_name") or template["from_name"],
            }
        from_email = source["from_email"]
        if from_email and not is_valid_email(from_email):
            raise MandrillError(
                "ValidationError",
                "Validation error: "
                + json.dumps(
                    {"message": {"from_email": f"{from_email} is not a valid email address"}}
                ),
                -2,
            )
        tags = message.get("tags") or []
        for tag in tags:
            if tag.startswith("_"):
                raise MandrillError(
                    "ValidationError",
                    f"Tag {tag!r}: tags starting with an underscore are reserved",
                    -2,
                )
        # the spec's MergeVar: "Merge variable name (case-insensitive, may not start with _)"
        var_names = [v.get("name") for v in message.get("global_merge_vars") or []] + [
            v.get("name") for m in message.get("merge_vars") or [] for v in m.get("vars") or []
        ]
        for name in var_names:
            if isinstance(name, str) and name.startswith("_"):
                raise MandrillError(
                    "ValidationError",
                    f"Validation error: merge variable {name!r}: names may not start with _",
                    -2,
                )
        metadata = message.get("metadata") or {}
        self._check_metadata(metadata)
        send_at = _parse_send_at(body.get("send_at"), now)
        recipients = message.get("to") or []
        if not recipients:
            # Mandrill answers an empty list (which mailchimp-transactional then hands back as
            # a raw requests.Response: the quirk callers must treat as "nothing was sent")
            return []
        queued = bool(body.get("async")) or len(recipients) > 10
        language = message.get("merge_language") or "mailchimp"
        global_vars = {
            v.get("name"): v.get("content") for v in message.get("global_merge_vars") or []
        }
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
        merge = message.get("merge")
        if merge is None:
            merge = bool(global_vars or per_rcpt or kind != "send")
        preserve = bool(message.get("preserve_recipients"))
        visible_to = [r for r in recipients if (r.get("type") or "to") != "bcc"]
        ids = [uuid.uuid4().hex for _ in recipients]
        # one query for the whole batch: a 1,000-recipient call must not make 1,000 lookups
        rejects = self.store.find_rejects(
            [(r.get("email") or "").strip() for r in recipients], subaccount or ""
        )
        # parse once per call, render per recipient
        parts: tuple[Any, Any, Any] = (source["html"], source["subject"] or "", source["text"])
        if merge and language == "handlebars":
            try:
                parts = (
                    handlebars.parse(parts[0]),
                    handlebars.parse(parts[1]),
                    handlebars.parse(parts[2]),
                )
            except handlebars.TemplateError as exc:
                raise MandrillError("Invalid_Template", f"cannot render: {exc}", 6) from exc
        results: list[dict[str, Any]] = []
        rows: list[dict[str, Any]] = []
        for message_id, recipient in zip(ids, recipients, strict=True):
            email = (recipient.get("email") or "").strip()
            status, reason = self._recipient_status(email, from_email, rejects)
            if status == "ok":
                status = "scheduled" if send_at else "queued" if queued else "sent"
            merged = {**global_vars, **per_rcpt.get(email.lower(), {})}
            rcpt_metadata = {**metadata, **per_meta.get(email.lower(), {})}
            self._check_metadata(rcpt_metadata)
            options = handlebars.RenderOptions(
                now=lambda: dt.datetime.fromtimestamp(now, dt.UTC),
                unsub_link=self._unsub_link(message_id, email),
            )
            html, subject, text = source["html"], source["subject"] or "", source["text"]
            if merge:
                html, subject, text = self._render(language, parts, merged, options)
            if message.get("auto_text") and not text and html:
                text = html_to_text(html)
            to_header = (
                ", ".join(_address(r) for r in visible_to) if preserve else _address(recipient)
            )
            headers = {
                "To": to_header,
                "Subject": subject,
                "From": _address({"email": from_email or "", "name": source["from_name"]}),
            }
            headers.update({k: str(v) for k, v in (message.get("headers") or {}).items()})
            # the spec's enums admit no null, so absent reasons are left out
            result: dict[str, Any] = {"email": email, "status": status, "_id": message_id}
            if status == "rejected":
                result["reject_reason"] = reason
            if status == "queued" and len(recipients) > 10:
                result["queued_reason"] = "multiple-recipients"
            results.append(result)
            rows.append(
                {
                    "id": message_id,
                    "ts": int(now),
                    "email": email,
                    "recipient_name": recipient.get("name"),
                    "sender": from_email or "",
                    "from_name": source["from_name"],
                    "subject": subject,
                    "template": template_slug,
                    "mc_template": mc_template,
                    "tags": tags,
                    "metadata": rcpt_metadata,
                    "state": {"invalid": "rejected"}.get(status, status),
                    "reject_reason": reason,
                    "html": html,
                    "text": text,
                    "headers": headers,
                    "smtp_events": [_smtp_event(now, len(html))] if status == "sent" else [],
                    "send_at": int(send_at) if send_at else None,
                    "subaccount": subaccount,
                    "api_key_hash": body["_key_hash"],
                }
            )
        self.store.insert_messages(rows)
        sent = [r["id"] for r in rows if r["state"] == "sent"]
        # invalid addresses are stored as rejected without a reason and fire no `reject` event
        rejected = [r["id"] for r in rows if r["state"] == "rejected" and r["reject_reason"]]
        waiting = [r["id"] for r in rows if r["state"] == "queued"]
        self._delivery.submit(self._after_send, sent, rejected, waiting)
        return results

    def _render(
        self,
        language: str,
        parts: tuple[Any, Any, Any],
        merged: dict[str, Any],
        options: handlebars.RenderOptions,
    ) -> tuple[str, str, str]:
        """Render (html, subject, text); handlebars parts may be pre-parsed node lists."""
        html, subject, text = parts
        try:
            if language == "handlebars":
                return (
                    handlebars.render(html, merged, options),
                    handlebars.render(subject, merged, options),
                    handlebars.render(text, merged, options),
                )
            flat = {
                k: v if isinstance(v, str | int | float) else json.dumps(v)
                for k, v in merged.items()
            }
            return (
                handlebars.render_mailchimp(html, flat, options),
                handlebars.render_mailchimp(subject, flat, options),
                handlebars.render_mailchimp(text, flat, options),
            )
        except handlebars.TemplateError as exc:
            raise MandrillError("Invalid_Template", f"cannot render: {exc}", 6) from exc

    def _recipient_status(
        self, email: str, from_email: str | None, rejects: dict[str, str]
    ) -> tuple[str, str | None]:
        if not is_valid_email(email) or email.lower().endswith("@" + INVALID_DOMAIN):
            return "invalid", None
        if not from_email:
            return "rejected", "invalid-sender"
        local, _, domain = email.lower().partition("@")
        if local in REJECT_LOCAL_PARTS:
            return "rejected", REJECT_LOCAL_PARTS[local]
        if domain == REJECT_DOMAIN:
            return "rejected", "custom"
        if email.lower() in rejects:
            return "rejected", rejects[email.lower()]
        return "ok", None

    def _check_metadata(self, metadata: dict[str, Any]) -> None:
        for key, value in metadata.items():
            if str(key).startswith("_"):  # as merge var names: reserved by Mandrill
                raise MandrillError(
                    "ValidationError", f"metadata {key!r}: names may not start with _", -2
                )
            if isinstance(value, dict | list):
                raise MandrillError(
                    "ValidationError", f"metadata {key!r} must be a scalar (string or number)", -2
                )
        size = len(json.dumps(metadata, separators=(",", ":")).encode())
        if size > self.config.max_metadata_bytes:
            raise MandrillError(
                "ValidationError",
                f"metadata is {size} bytes; at most {self.config.max_metadata_bytes} are allowed",
                -2,
            )

    def _check_subaccount(self, subaccount: str | None) -> None:
        if subaccount and subaccount not in self.config.subaccounts:
            raise MandrillError(
                "Unknown_Subaccount", f"No subaccount exists with the id '{subaccount}'", 12
            )

    def _unsub_link(self, message_id: str, email: str) -> Callable[[str], str]:
        def link(redirect: str) -> str:
            query = urllib.parse.urlencode(
                {"md_id": message_id, "md_email": email, "md_url": redirect}
            )
            return f"{self.config.public_url.rstrip('/')}/sandbox/unsub?{query}"

        return link

    def _after_send(self, sent: list[str], rejected: list[str], waiting: list[str]) -> None:
        """Background: deliver queued messages, fire send/reject webhooks, auto events."""
        try:
            self.store.mark_sent(waiting, self.config.clock())
            delivered = sent + waiting
            auto = self.config.auto_events
            if not self.store.list_webhooks() and not (auto.open or auto.hard_bounce or auto.unsub):
                return  # nobody listens: skip building events (bulk sends stay fast)
            events = [self._event("send", m) for m in delivered]
            events += [self._event("reject", m) for m in rejected]
            self.dispatcher.publish([e for e in events if e])
            self._auto_events(delivered)
        except Exception:
            log.exception("post-send processing failed")

    def _auto_events(self, message_ids: list[str]) -> None:
        rates = self.config.auto_events
        for message_id in message_ids:
            with self._lock:
                draws = {
                    name: self._random.random()
                    for name in ("open", "click", "hard_bounce", "unsub")
                }
            if draws["hard_bounce"] < rates.hard_bounce:
                self.simulate(message_id, "hard_bounce")
                continue
            if draws["open"] < rates.open:
                self.simulate(message_id, "open")
                if draws["click"] < rates.click:
                    self.simulate(message_id, "click")
            if draws["unsub"] < rates.unsub:
                self.simulate(message_id, "unsub")

    # ------------------------------------------------------------------ events

    def simulate(self, message_id: str, event: str, url: str | None = None) -> dict[str, Any]:
        """Apply an open/click/bounce/spam/unsub to a stored message and fire its webhook."""
        if event not in SIMULATED_EVENTS:
            raise ValueError(f"event must be one of {SIMULATED_EVENTS}, got {event!r}")
        row = self.store.get_message(message_id)
        if row is None:
            raise LookupError(f"No message exists with the id '{message_id}'")
        now = int(self.config.clock())
        detail = {"ts": now, "ip": "127.0.0.1", "location": "Sandbox", "ua": "Sandbox/1.0"}
        extra: dict[str, Any] = {"ip": "127.0.0.1", "location": None, "user_agent": "Sandbox/1.0"}
        if event == "open":
            self.store.update_message(message_id, opens_detail=[*row["opens_detail"], detail])
        elif event == "click":
            url = url or _first_link(row["html"]) or "https://example.com/"
            self.store.update_message(
                message_id, clicks_detail=[*row["clicks_detail"], {**detail, "url": url}]
            )
            extra["url"] = url
        elif event in ("hard_bounce", "soft_bounce"):
            self.store.update_message(message_id, state="bounced")
            reason = event.replace("_", "-")
            self.store.add_reject(
                row["email"].lower(), reason, "bounced in the sandbox", row["subaccount"] or ""
            )
        elif event in ("spam", "unsub"):
            self.store.add_reject(
                row["email"].lower(), event, f"{event} in the sandbox", row["subaccount"] or ""
            )
        payload = self._event(event, message_id, extra if event in ("open", "click") else {})
        assert payload is not None
        self.dispatcher.publish([payload])
        return payload

    def _event(
        self, event: str, message_id: str, extra: dict[str, Any] | None = None
    ) -> dict[str, Any] | None:
        row = self.store.get_message(message_id)
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
            msg["diag"] = "smtp;550 5.1.1 The email account that you tried to reach does not exist."
        if event == "reject":
            msg["reject"] = {"reason": row["reject_reason"], "last_event_at": mandrill_time()}
        return {
            "event": event,
            "_id": row["id"],
            "ts": int(self.config.clock()),
            "msg": msg,
            **(extra or {}),
        }

    # ------------------------------------------------------------------ reading messages

    def _refresh(self, row: dict[str, Any]) -> dict[str, Any]:
        """Scheduled messages whose time has come are sent when next looked at."""
        if row["state"] == "scheduled" and row["send_at"] and row["send_at"] <= self.config.clock():
            events = [_smtp_event(row["send_at"], len(row["html"]))]
            self.store.update_message(row["id"], state="sent", smtp_events=events)
            row = {**row, "state": "sent", "smtp_events": events}
            self._delivery.submit(self._after_send, [row["id"]], [], [])
        return row

    def _message(self, message_id: str) -> dict[str, Any]:
        row = self.store.get_message(message_id)
        if row is None:
            raise MandrillError(
                "Unknown_Message", f"No message exists with the id '{message_id}'", 11
            )
        return self._refresh(row)

    @staticmethod
    def _info(row: dict[str, Any]) -> dict[str, Any]:
        info = {
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
            info["reject"] = {
                "reason": row["reject_reason"] or "invalid",
                "last_event_at": mandrill_time(),
            }
            info["bounce_description"] = row["reject_reason"] or "invalid"
        if row["state"] == "bounced":
            info["diag"] = (
                "smtp;550 5.1.1 The email account that you tried to reach does not exist."
            )
            info["bounce_description"] = "bad_mailbox"
        return info

    def message_info(self, body: dict[str, Any]) -> dict[str, Any]:
        """messages/info."""
        return self._info(self._message(body["id"]))

    def message_content(self, body: dict[str, Any]) -> dict[str, Any]:
        """messages/content: the rendered message as stored."""
        row = self._message(body["id"])
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

    def search(self, body: dict[str, Any]) -> list[dict[str, Any]]:
        """messages/search with its per-key call limit."""
        self._rate_limit(body["_key_hash"])
        try:
            tree = parse_query(body.get("query"))
        except QueryError as exc:
            raise MandrillError("ValidationError", str(exc), -2) from exc
        now = self.config.clock()
        ts_from = (
            _date_ts(body["date_from"], "date_from") if body.get("date_from") else now - 7 * 86400
        )
        ts_to = _date_ts(body["date_to"], "date_to") + 86400 if body.get("date_to") else now + 86400
        indexed = {f["name"] for f in self.store.list_metadata_fields()}
        is_indexed = (lambda key: True) if self.config.index_all_metadata else indexed.__contains__
        tags = set(body.get("tags") or [])
        senders = {s.lower() for s in body.get("senders") or []}
        key_hashes = {_key_hash(k) for k in body.get("api_keys") or []}
        limit = body.get("limit") or 100
        # the index lags the sends (FaultPlan.search_lag_s): newer messages are not found yet
        indexed_until = now - self.faults.plan.search_lag_s
        results = []
        for row in self.store.iter_messages(int(ts_from), int(ts_to)):
            if row["ts"] > indexed_until:
                continue
            if tags and not tags.intersection(row["tags"]):
                continue
            if senders and row["sender"].lower() not in senders:
                continue
            if key_hashes and row["api_key_hash"] not in key_hashes:
                continue
            if matches(tree, row, is_indexed):
                results.append(self._info(self._refresh(row)))
                if len(results) >= limit:
                    break
        return results

    def _rate_limit(self, key_hash: str) -> None:
        limit = self.config.search_calls_per_minute
        if limit <= 0:
            return
        now = time.monotonic()
        with self._lock:
            calls = self._search_calls.setdefault(key_hash, deque())
            while calls and calls[0] <= now - 60:
                calls.popleft()
            if len(calls) >= limit:
                raise MandrillError(
                    "RequestLimitExceeded",
                    f"Too many messages/search calls: at most {limit} per minute",
                    429,
                )
            calls.append(now)

    # ------------------------------------------------------------------ templates

    def _template_by_name(self, name: str) -> dict[str, Any] | None:
        return next((t for t in self.store.list_templates() if t["name"] == name), None)

    def _template(self, name: str) -> dict[str, Any]:
        template = self.store.get_template(name) or self._template_by_name(name)
        if template is None:
            raise MandrillError("Unknown_Template", f'No such template "{name}"', 5)
        return template

    def template_add(self, body: dict[str, Any]) -> dict[str, Any]:
        """templates/add: new template, published unless `publish` is false."""
        slug = _slugify(body["name"])
        if self.store.get_template(slug) or self._template_by_name(body["name"]):
            raise MandrillError(
                "Invalid_Template", f'A template with name "{body["name"]}" already exists', 6
            )
        self._check_from(body.get("from_email"))
        now = mandrill_time(micro=True)
        template = {
            "slug": slug,
            "name": body["name"],
            "labels": body.get("labels") or [],
            "code": body.get("code"),
            "subject": body.get("subject"),
            "from_email": body.get("from_email"),
            "from_name": body.get("from_name"),
            "text": body.get("text"),
            "publish_name": body["name"],
            "publish_code": None,
            "publish_subject": None,
            "publish_from_email": None,
            "publish_from_name": None,
            "publish_text": None,
            "published_at": None,
            "created_at": now,
            "updated_at": now,
            "draft_updated_at": now[:19],
            "is_broken_template": _is_broken(body.get("code")),
        }
        if body.get("publish", True):
            template = _publish(template)
        self.store.put_template(template)
        return template

    def template_update(self, body: dict[str, Any]) -> dict[str, Any]:
        """templates/update: change the draft; publish it too unless `publish` is false."""
        template = self._template(body["name"])
        self._check_from(body.get("from_email"))
        for name in ("code", "subject", "from_email", "from_name", "text", "labels"):
            if name in body and body[name] is not None:
                template[name] = body[name]
        now = mandrill_time(micro=True)
        template["updated_at"] = now
        template["draft_updated_at"] = now[:19]
        template["is_broken_template"] = _is_broken(template["code"])
        if body.get("publish", True):
            template = _publish(template)
        self.store.put_template(template)
        return template

    def template_publish(self, body: dict[str, Any]) -> dict[str, Any]:
        """templates/publish: the draft becomes what send-template uses."""
        template = _publish(self._template(body["name"]))
        self.store.put_template(template)
        return template

    def template_delete(self, body: dict[str, Any]) -> dict[str, Any]:
        """templates/delete: returns the template as it was."""
        template = self._template(body["name"])
        self.store.delete_template(template["slug"])
        return template

    def template_list(self, body: dict[str, Any]) -> list[dict[str, Any]]:
        """templates/list, optionally by label."""
        label = body.get("label")
        return [t for t in self.store.list_templates() if not label or label in t["labels"]]

    def template_render(self, body: dict[str, Any]) -> dict[str, Any]:
        """templates/render: published code (draft if never published) with content and vars.

        The request has no merge_language field; code containing `{{` renders as handlebars,
        anything else with Mailchimp merge tags.
        """
        template = self._template(body["template_name"])
        code = template["publish_code"] if template["published_at"] else template["code"]
        contents = {c.get("name"): c.get("content") or "" for c in body["template_content"]}
        merged = {v.get("name"): v.get("content") for v in body.get("merge_vars") or []}
        return {"html": self._render_code(code or "", contents, merged)}

    def _render_code(self, code: str, contents: dict[str, str], merged: dict[str, Any]) -> str:
        options = handlebars.RenderOptions(unsub_link=self._unsub_link("render-preview", ""))
        try:
            html = handlebars.apply_mc_edit(code, contents)
            language = "handlebars" if "{{" in html else "mailchimp"
            return self._render(language, (html, "", ""), merged, options)[0]
        except handlebars.TemplateError as exc:
            raise MandrillError("Invalid_Template", f"cannot render: {exc}", 6) from exc

    def _check_from(self, from_email: str | None) -> None:
        if from_email and not is_valid_email(from_email):
            raise MandrillError(
                "ValidationError",
                f'Validation error: {{"from_email":"{from_email} is not a valid email address"}}',
                -2,
            )

    # ------------------------------------------------------------------ Mailchimp templates

    def seed_mc_templates(self, templates: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Create or replace Mailchimp templates (they are made in Mailchimp, not via the API)."""
        stored = []
        existing = {t["mc_template_id"] for t in self.store.list_mctemplates()}
        for item in templates:
            if "mc_template_name" not in item or "code" not in item:
                raise ValueError("each Mailchimp template needs mc_template_name and code")
            template_id = int(item.get("mc_template_id") or (max(existing, default=10000) + 1))
            existing.add(template_id)
            now = mandrill_time(micro=True)
            published = item.get("publish", True)
            template = {
                "mc_template_id": template_id,
                "mc_template_name": item["mc_template_name"],
                "labels": item.get("labels", []),
                "code": item["code"],
                "subject": item.get("subject", ""),
                "from_email": item.get("from_email", ""),
                "from_name": item.get("from_name", ""),
                "text": item.get("text", ""),
                "publish_code": item["code"] if published else "",
                "publish_text": item.get("text", "") if published else "",
                "published_at": now[:19] if published else "",
                "created_at": now,
                "updated_at": now,
                "draft_updated_at": now[:19],
                "is_broken_template": _is_broken(item["code"]),
            }
            self.store.put_mctemplate(template)
            stored.append(template)
        return stored

    def _mctemplate(self, template_id: int) -> dict[str, Any]:
        template = self.store.get_mctemplate(template_id)
        if template is None:
            raise MandrillError(
                "Unknown_Message", f"No Mailchimp template found with id {template_id}", 11
            )
        return template

    def mctemplate_list(self, body: dict[str, Any]) -> list[dict[str, Any]]:
        """mctemplates/list, optionally filtered by a name substring."""
        query = (body.get("search_query") or "").lower()
        return [t for t in self.store.list_mctemplates() if query in t["mc_template_name"].lower()]

    def mctemplate_render(self, body: dict[str, Any]) -> dict[str, Any]:
        """mctemplates/render."""
        template = self._mctemplate(body["mc_template_id"])
        version = body.get("mc_template_version") or "published"
        if version == "published" and not template["published_at"]:
            raise MandrillError(
                "Unknown_Message",
                f"Mailchimp template {template['mc_template_id']} is not published",
                11,
            )
        code = template["publish_code" if version == "published" else "code"]
        merged = {v.get("name"): v.get("content") for v in body.get("merge_vars") or []}
        return {"html": self._render_code(code, {}, merged)}

    # ------------------------------------------------------------------ rejects, webhooks, metadata

    def rejects_add(self, body: dict[str, Any]) -> dict[str, Any]:
        """rejects/add: reason `custom`."""
        email = body["email"]
        if not is_valid_email(email):
            raise MandrillError(
                "ValidationError",
                f'Validation error: {{"email":"{email} is not a valid email address"}}',
                -2,
            )
        self._check_subaccount(body.get("subaccount"))
        self.store.add_reject(
            email.lower(),
            "custom",
            body.get("comment") or "Added manually",
            body.get("subaccount") or "",
        )
        return {"email": email, "added": True}

    def rejects_delete(self, body: dict[str, Any]) -> dict[str, Any]:
        """rejects/delete: Invalid_Reject when the address is not on the list."""
        email = body["email"]
        self._check_subaccount(body.get("subaccount"))
        if not self.store.delete_reject(email.lower(), body.get("subaccount") or ""):
            raise MandrillError(
                "Invalid_Reject", "Email address is not in the rejection list and is not invalid", 4
            )
        result = {"email": email, "deleted": True}
        if body.get("subaccount"):
            result["subaccount"] = body["subaccount"]
        return result

    def rejects_list(self, body: dict[str, Any]) -> list[dict[str, Any]]:
        """rejects/list."""
        self._check_subaccount(body.get("subaccount"))
        now = mandrill_time()
        return [
            {
                "email": r["email"],
                "reason": r["reason"],
                "detail": r["detail"],
                "created_at": r["created_at"],
                "last_event_at": r["last_event_at"],
                "expires_at": r["expires_at"],
                "expired": r["expires_at"] <= now,
                "sender": None,
                "subaccount": r["subaccount"] or None,
            }
            for r in self.store.list_rejects(
                body.get("email"), bool(body.get("include_expired")), body.get("subaccount")
            )
        ]

    def webhook_add(self, body: dict[str, Any]) -> dict[str, Any]:
        """webhooks/add: HEAD-probe the URL first, as Mandrill does."""
        events = body.get("events") or []
        unknown = [e for e in events if e not in WEBHOOK_EVENTS]
        if unknown:
            raise MandrillError(
                "ValidationError",
                f"unknown webhook events {unknown}; known: {list(WEBHOOK_EVENTS)}",
                -2,
            )
        url = body["url"]
        if urllib.parse.urlparse(url).scheme not in ("http", "https"):
            raise MandrillError(
                "ValidationError", f'Validation error: {{"url":"{url} is not an http(s) URL"}}', -2
            )
        if self.config.probe_webhooks:
            problem = probe(url)
            if problem:
                raise MandrillError(
                    "ValidationError", f"Your URL could not be verified: {problem}", -2
                )
        return self._create_webhook(url, events, body.get("description"), None)

    def _create_webhook(
        self, url: str, events: list[str], description: str | None, auth_key: str | None
    ) -> dict[str, Any]:
        return self.store.add_webhook(
            {
                "url": url,
                "description": description or "",
                "auth_key": auth_key or secrets.token_urlsafe(16),
                "events": events,
                "created_at": mandrill_time(micro=True),
                "last_sent_at": None,
                "batches_sent": 0,
                "events_sent": 0,
                "last_error": None,
            }
        )

    def _install_cli_webhooks(self) -> None:
        existing = {h["url"]: h for h in self.store.list_webhooks()}
        for url in self.config.webhook_urls:
            hook = existing.get(url)
            if hook is None:
                self._create_webhook(
                    url,
                    [*list(SIMULATED_EVENTS), "send", "reject"],
                    "configured on the command line",
                    self.config.webhook_key,
                )
            elif self.config.webhook_key and hook.get("auth_key") != self.config.webhook_key:
                self.store.update_webhook(hook["id"], auth_key=self.config.webhook_key)

    def metadata_add(self, body: dict[str, Any]) -> dict[str, Any]:
        """metadata/add: index a field for messages/search (at most 10, as Mandrill)."""
        name = body["name"]
        if len(self.store.list_metadata_fields()) >= 10:
            raise MandrillError(
                "ValidationError", "at most 10 custom metadata fields can be indexed", -2
            )
        field_ = self.store.add_metadata_field(name, body.get("view_template"))
        if field_ is None:
            raise MandrillError(
                "ValidationError", f"A metadata field named {name!r} already exists", -2
            )
        return field_


# ---------------------------------------------------------------------- helpers


def _key_hash(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def _slugify(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-") or "template"


def _publish(template: dict[str, Any]) -> dict[str, Any]:
    published = dict(template)
    for name in ("name", "code", "subject", "from_email", "from_name", "text"):
        published["publish_" + name] = template[name]
    published["published_at"] = mandrill_time()
    return published


def _is_broken(code: str | None) -> bool:
    if not code:
        return False
    try:
        if "{{" in code:
            handlebars.parse(code)
        else:
            handlebars.render_mailchimp(code, {})
        handlebars.apply_mc_edit(code, {name: "" for name in handlebars.mc_edit_regions(code)})
    except handlebars.TemplateError:
        return True
    return False


def _address(recipient: dict[str, Any]) -> str:
    name = recipient.get("name")
    return f'"{name}" <{recipient.get("email")}>' if name else str(recipient.get("email") or "")


def _smtp_event(ts: float, size: int) -> dict[str, Any]:
    return {
        "ts": int(ts),
        "type": "sent",
        "diag": "250 2.0.0 OK (sandbox)",
        "source_ip": "127.0.0.1",
        "destination_ip": "127.0.0.1",
        "size": size,
    }


def _first_link(html: str) -> str | None:
    match = re.search(r"""href\s*=\s*["'](https?://[^"']+)["']""", html)
    return match.group(1) if match else None


def _parse_send_at(value: str | None, now: float) -> float | None:
    """Mandrill's `YYYY-MM-DD HH:MM:SS` UTC (ISO accepted); past times send now."""
    if not value:
        return None
    try:
        when = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError as exc:
        raise MandrillError(
            "ValidationError", f"send_at {value!r} is not YYYY-MM-DD HH:MM:SS", -2
        ) from exc
    when = when if when.tzinfo else when.replace(tzinfo=dt.UTC)
    ts = when.timestamp()
    if ts <= now:
        return None
    if ts > now + 366 * 86400:
        raise MandrillError("ValidationError", "send_at is limited to one year from now", -2)
    return ts


def _date_ts(value: str, name: str) -> float:
    try:
        when = dt.datetime.fromisoformat(value)
    except ValueError as exc:
        raise MandrillError(
            "ValidationError", f"{name} {value!r} is not a date (YYYY-MM-DD)", -2
        ) from exc
    when = when if when.tzinfo else when.replace(tzinfo=dt.UTC)
    return when.timestamp()


# ---------------------------------------------------------------------- HTTP


def _error_response(sandbox: Sandbox, error: MandrillError) -> JSONResponse:
    payload = {"status": "error", "code": error.code, "name": error.name, "message": error.message}
    return JSONResponse(payload, status_code=sandbox.http_status(error))


def _lifespan(sandbox: Sandbox) -> Callable[[Starlette], Any]:
    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        try:
            yield
        finally:
            await run_in_threadpool(sandbox.close)

    return lifespan


def create_app(config: SandboxConfig) -> Starlette:
    """Build the ASGI app; `app.state.sandbox` is the `Sandbox` (closed on shutdown)."""
    sandbox = Sandbox(config)

    async def api(request: Request) -> Response:
        path = request.path_params["path"]
        operation, _, fmt = path.rpartition(".")
        if not operation:
            operation, fmt = path, "json"
        if request.method != "POST":
            return JSONResponse(
                {
                    "status": "error",
                    "code": -1,
                    "name": "ValidationError",
                    "message": "Mandrill API calls are POST",
                },
                status_code=405,
            )
        if fmt != "json":
            return _error_response(
                sandbox,
                MandrillError("ValidationError", f"the sandbox answers .json only, not .{fmt}", -1),
            )
        raw = await request.body()
        try:
            body = json.loads(raw or b"{}")
        except ValueError:
            return _error_response(
                sandbox, MandrillError("ValidationError", "the request body is not valid JSON", -1)
            )
        if not isinstance(body, dict):
            return _error_response(
                sandbox,
                MandrillError("ValidationError", "the request body must be a JSON object", -1),
            )
        plan = sandbox.faults.plan
        if plan.latency_ms and (not plan.only or operation in plan.only):
            await asyncio.sleep(plan.latency_ms / 1000)
        fault = sandbox.faults.draw(operation)
        if fault is not None and fault.kind != "lost_answer":  # that one answers after the call
            if fault.kind == "timeout":
                await asyncio.sleep(plan.timeout_s)
            elif fault.kind == "dropped":  # never carried out; the client gave up long ago
                await asyncio.sleep(plan.timeout_s)
                return Response(b"", status_code=504)
            elif fault.kind == "5xx":
                return Response(b"", status_code=plan.http_5xx_status)
            elif fault.kind == "429":
                return _error_response(
                    sandbox,
                    MandrillError("RequestLimitExceeded", ERRORS["RequestLimitExceeded"][1], 429),
                )
            else:
                code, message = ERRORS[fault.detail]
                if fault.detail == "Invalid_Key" and sandbox.config.error_style == "spec":
                    code = 401
                return _error_response(
                    sandbox, MandrillError(fault.detail, f"{message} (injected fault)", code)
                )
        try:
            result = await run_in_threadpool(sandbox.call, operation, body)
        except MandrillError as error:
            return _error_response(sandbox, error)
        except Exception:
            log.exception("sandbox failed on %s", operation)
            return _error_response(
                sandbox, MandrillError("GeneralError", ERRORS["GeneralError"][1], -1)
            )
        if fault is not None and fault.kind == "lost_answer":
            # The work is done (a send is stored), only the answer is lost.
            return JSONResponse([])
        return JSONResponse(result)

    async def faults(request: Request) -> Response:
        if request.method == "POST":
            try:
                plan = FaultPlan.from_dict(await request.json())
            except (ValueError, TypeError) as exc:
                return JSONResponse({"error": str(exc)}, status_code=400)
            sandbox.faults.set(plan)
        return JSONResponse(sandbox.faults.plan.to_dict())

    async def faults_injected(request: Request) -> Response:
        return JSONResponse(sandbox.faults.injected())

    async def events(request: Request) -> Response:
        data = await request.json()
        try:
            payload = await run_in_threadpool(
                sandbox.simulate, data.get("message_id", ""), data.get("event", ""), data.get("url")
            )
        except ValueError as exc:
            return JSONResponse({"error": str(exc)}, status_code=400)
        except LookupError as exc:
            return JSONResponse({"error": str(exc.args[0])}, status_code=404)
        return JSONResponse(payload)

    async def mctemplates(request: Request) -> Response:
        data = await request.json()
        try:
            stored = await run_in_threadpool(
                sandbox.seed_mc_templates, data if isinstance(data, list) else [data]
            )
        except (ValueError, TypeError) as exc:
            return JSONResponse({"error": str(exc)}, status_code=400)
        return JSONResponse(stored)

    async def unsub(request: Request) -> Response:
        message_id = request.query_params.get("md_id", "")
        redirect = request.query_params.get("md_url", "")
        try:
            await run_in_threadpool(sandbox.simulate, message_id, "unsub")
        except LookupError:
            return Response("Unknown message", status_code=404, media_type="text/plain")
        if redirect.startswith(("http://", "https://")):
            return RedirectResponse(redirect, status_code=302)
        return Response("You are unsubscribed.", media_type="text/plain")

    async def webhooks_wait(request: Request) -> Response:
        timeout = float(request.query_params.get("timeout", "10"))
        idle = await run_in_threadpool(sandbox.dispatcher.wait_idle, timeout)
        return JSONResponse({"idle": idle}, status_code=200 if idle else 504)

    async def health(request: Request) -> Response:
        return JSONResponse(
            {"ok": True, "messages": await run_in_threadpool(sandbox.store.count_messages)}
        )

    app = Starlette(
        routes=[
            Route(API_PREFIX + "/{path:path}", api, methods=["POST", "GET"]),
            Route("/sandbox/faults", faults, methods=["GET", "POST"]),
            Route("/sandbox/faults/injected", faults_injected, methods=["GET"]),
            Route("/sandbox/events", events, methods=["POST"]),
            Route("/sandbox/mctemplates", mctemplates, methods=["POST"]),
            Route("/sandbox/unsub", unsub, methods=["GET"]),
            Route("/sandbox/webhooks/wait", webhooks_wait, methods=["POST"]),
            Route("/sandbox/health", health, methods=["GET"]),
        ],
        lifespan=_lifespan(sandbox),
    )
    app.state.sandbox = sandbox
    return app
