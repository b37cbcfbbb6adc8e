"""The `Sandbox`: the state every endpoint group works on, and the gate every API call passes.

The state is the SQLite store, the config (with its clock), the spec validator, the fault
injector, the webhook dispatcher, the messages/search call limit and the one-thread delivery
executor. The endpoint logic lives in `signalmail.sandbox.endpoints`, one module per Mandrill
endpoint group; `Sandbox.handlers` maps each operation ("messages/send", ...) to it. None of
this knows about HTTP: `signalmail.sandbox.app` serves it.
"""

from __future__ import annotations

import functools
import json
import random
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from signalmail.sandbox import events
from signalmail.sandbox.checks import key_hash
from signalmail.sandbox.config import SandboxConfig
from signalmail.sandbox.endpoints import (
    mctemplates,
    messages,
    metadata,
    rejects,
    sending,
    templates,
    users,
    webhooks,
)
from signalmail.sandbox.errors import SPEC_STATUS, MandrillError
from signalmail.sandbox.faults import FaultInjector
from signalmail.sandbox.ratelimit import PerMinuteLimit
from signalmail.sandbox.store import Store
from signalmail.sandbox.validation import SpecValidator, mandrill_message
from signalmail.sandbox.webhooks import WebhookDispatcher

_ENDPOINT_GROUPS = (sending, messages, templates, mctemplates, rejects, users, webhooks, metadata)


class Sandbox:
    """The sandbox's state and its API gate, independent of HTTP (the app wraps it).

    Endpoint logic lives in `signalmail.sandbox.endpoints`, reached through `handlers` (or
    `call`, which authenticates and validates first).
    """

    def __init__(self, config: SandboxConfig) -> None:
        if config.error_style not in ("mandrill", "spec"):
            raise ValueError("error_style must be 'mandrill' or 'spec'")
        if not config.api_keys:
            raise ValueError("at least one API key is required")
        # annotated: the endpoint modules read these through an import cycle mypy cannot infer
        self.config: SandboxConfig = config
        self.store: Store = Store(config.db_path)
        self.validator: SpecValidator = SpecValidator()
        self.faults: FaultInjector = FaultInjector(config.faults)
        self.dispatcher: WebhookDispatcher = WebhookDispatcher(
            self.store, config.webhook_max_attempts, config.webhook_backoff_s
        )
        self.search_limit: PerMinuteLimit = PerMinuteLimit("messages/search")
        self._keys = {key_hash(k) for k in config.api_keys}
        self._random_lock = threading.Lock()
        self._random = random.Random(config.seed)  # noqa: S311 - reproducible simulation
        # one worker: post-send work runs in the order of the sends, and so do their events
        self._delivery = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sandbox-delivery")
        webhooks.install_configured(self)
        if config.mc_templates_file:
            self.seed_mc_templates(json.loads(Path(config.mc_templates_file).read_text()))
        self.handlers: dict[str, Callable[[dict[str, Any]], Any]] = {
            operation: functools.partial(handler, self)
            for group in _ENDPOINT_GROUPS
            for operation, handler in group.OPERATIONS.items()
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
        if not isinstance(key, str) or key_hash(key) not in self._keys:
            code = 401 if self.config.error_style == "spec" else -1
            raise MandrillError("Invalid_Key", "Invalid API key", code)
        return key_hash(key)

    def call(self, operation: str, body: dict[str, Any]) -> Any:
        """Authenticate, validate and run one API operation (synchronous; thread pool)."""
        handler = self.handlers.get(operation)
        if handler is None:
            raise MandrillError(
                "ValidationError",
                f"the sandbox does not implement {operation}; it serves {sorted(self.handlers)}",
                -1,
            )
        caller = self.check_key(body)
        problems = self.validator.request_problems(operation, body)
        if problems:
            raise MandrillError("ValidationError", mandrill_message(problems), -2)
        # endpoints see who called (search filters and stored messages record it) but not the key
        body = {**body, "_key_hash": caller}
        return handler(body)

    def http_status(self, error: MandrillError) -> int:
        """HTTP status for an error under the configured style."""
        if error.name == "RequestLimitExceeded":
            return 429
        if self.config.error_style == "mandrill":
            return 500
        return SPEC_STATUS.get(error.name, 500)

    # ------------------------------------------------------------------ shared by endpoint groups

    def after_send(self, sent: list[str], rejected: list[str], waiting: list[str]) -> None:
        """Hand stored messages to the delivery thread (`events.after_send`).

        The answer to a send must not wait for webhooks or simulated engagement, as Mandrill's
        does not; queued messages become `sent` there too.
        """
        self._delivery.submit(events.after_send, self, sent, rejected, waiting)

    def random_draws(self, names: tuple[str, ...]) -> dict[str, float]:
        """Draw one number per name from the seeded stream, together under one lock.

        A message's draws stay consecutive even if another thread draws too, so with the single
        delivery thread the same seed gives the same simulated events.
        """
        with self._random_lock:
            return {name: self._random.random() for name in names}

    # ------------------------------------------------------------------ admin (no API key)

    def simulate(self, message_id: str, event: str, url: str | None = None) -> dict[str, Any]:
        """Apply an open/click/bounce/spam/unsub to a stored message and fire its webhook."""
        return events.simulate(self, message_id, event, url)

    def seed_mc_templates(self, templates: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Create or replace Mailchimp templates (they are made in Mailchimp, not via the API)."""
        return mctemplates.seed(self, templates)
