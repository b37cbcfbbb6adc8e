"""webhooks/*: registering the URLs that receive events (delivery is `sandbox.webhooks`)."""

from __future__ import annotations

import secrets
import urllib.parse
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from signalmail.sandbox.errors import MandrillError
from signalmail.sandbox.events import SIMULATED_EVENTS
from signalmail.sandbox.store import mandrill_time
from signalmail.sandbox.webhooks import probe

if TYPE_CHECKING:
    from signalmail.sandbox.core import Sandbox

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


def add(sandbox: Sandbox, body: dict[str, Any]) -> dict[str, Any]:
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
    if sandbox.config.probe_webhooks:
        problem = probe(url)
        if problem:
            raise MandrillError("ValidationError", f"Your URL could not be verified: {problem}", -2)
    return _create(sandbox, url, events, body.get("description"), None)


def install_configured(sandbox: Sandbox) -> None:
    """Register the `--webhook-url` hooks at startup, or re-key them when the key changed.

    A restart re-opens the same database, so a hook already there is kept (its counters and
    id survive) rather than added twice.
    """
    config = sandbox.config
    existing = {h["url"]: h for h in sandbox.store.list_webhooks()}
    for url in config.webhook_urls:
        hook = existing.get(url)
        if hook is None:
            _create(
                sandbox,
                url,
                [*list(SIMULATED_EVENTS), "send", "reject"],
                "configured on the command line",
                config.webhook_key,
            )
        elif config.webhook_key and hook.get("auth_key") != config.webhook_key:
            sandbox.store.update_webhook(hook["id"], auth_key=config.webhook_key)


def _create(
    sandbox: Sandbox, url: str, events: list[str], description: str | None, auth_key: str | None
) -> dict[str, Any]:
    """Store a hook; without a given key it gets a random one, as Mandrill generates them."""
    return sandbox.store.add_webhook(
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


OPERATIONS: dict[str, Callable[[Sandbox, dict[str, Any]], Any]] = {
    "webhooks/add": add,
    "webhooks/list": lambda sandbox, body: sandbox.store.list_webhooks(),
}
