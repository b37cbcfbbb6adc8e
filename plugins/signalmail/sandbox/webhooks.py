"""Mandrill webhooks: signing, verification, and asynchronous delivery with retries.

Mandrill POSTs `application/x-www-form-urlencoded` with one field, `mandrill_events`, a JSON array
of events, and signs it: `X-Mandrill-Signature = base64(HMAC-SHA1(auth_key, url + concat of
sorted(key + value) over POST fields))`. With a single field that is
`url + "mandrill_events" + <json>`. `verify_signature` is the receiver side, used by our tests and
usable by the collector.

Delivery runs on one daemon thread fed by a queue, so an API call never waits for a receiver.
A batch that fails (connection error or non-2xx) is retried with exponential backoff up to
`max_attempts`; the outcome is written to the webhook's `last_error`, `batches_sent`,
`events_sent` and `last_sent_at` fields, which webhooks/list shows.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import queue
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import requests

from signalmail.sandbox.store import Store, mandrill_time

log = logging.getLogger(__name__)


def sign(auth_key: str, url: str, params: Mapping[str, str]) -> str:
    """Mandrill's webhook signature for a POST of `params` to `url`."""
    signed = url + "".join(k + params[k] for k in sorted(params))
    digest = hmac.new(auth_key.encode(), signed.encode(), hashlib.sha1).digest()
    return base64.b64encode(digest).decode()


def verify_signature(auth_key: str, url: str, params: Mapping[str, str], signature: str) -> bool:
    """Return True when `signature` is Mandrill's signature of these POST fields (constant-time)."""
    return hmac.compare_digest(sign(auth_key, url, params), signature or "")


def probe(url: str, timeout: float = 5.0) -> str | None:
    """Mandrill's HEAD probe on webhooks/add: None when the URL answers 2xx, else the reason."""
    try:
        response = requests.head(url, timeout=timeout, allow_redirects=False)
    except requests.RequestException as exc:
        return f"{exc.__class__.__name__} contacting {url}"
    if not 200 <= response.status_code < 300:
        return f"{url} answered HEAD with HTTP {response.status_code}"
    return None


@dataclass
class _Batch:
    hook: dict[str, Any]
    events: list[dict[str, Any]]
    attempt: int = 0
    not_before: float = 0.0


class WebhookDispatcher:
    """Background delivery of event batches to every webhook subscribed to their event type."""

    def __init__(
        self,
        store: Store,
        max_attempts: int = 5,
        backoff_s: float = 0.5,
        timeout_s: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.store = store
        self.max_attempts = max_attempts
        self.backoff_s = backoff_s
        self.timeout_s = timeout_s
        self.clock = clock
        self._queue: queue.Queue[_Batch | None] = queue.Queue()
        self._pending: list[_Batch] = []
        self._idle = threading.Event()
        self._idle.set()
        self._inflight = 0
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name="sandbox-webhooks", daemon=True)
        self._session = requests.Session()
        self._thread.start()

    def publish(self, events: list[dict[str, Any]]) -> int:
        """Queue events for every subscribed webhook; returns how many batches were queued."""
        batches = 0
        for hook in self.store.list_webhooks():
            wanted = [e for e in events if e["event"] in hook.get("events", [])]
            if wanted:
                self._enqueue(_Batch(hook, wanted))
                batches += 1
        return batches

    def _enqueue(self, batch: _Batch) -> None:
        with self._lock:
            self._inflight += 1
            self._idle.clear()
        self._queue.put(batch)

    def wait_idle(self, timeout: float) -> bool:
        """Block until every queued batch is delivered or dropped (tests, shutdown)."""
        return self._idle.wait(timeout)

    def close(self) -> None:
        """Stop the worker; undelivered batches are dropped (they are not durable)."""
        self._queue.put(None)
        self._thread.join(timeout=5)
        self._session.close()

    def _done(self) -> None:
        with self._lock:
            self._inflight -= 1
            if self._inflight == 0:
                self._idle.set()

    def _run(self) -> None:
        while True:
            timeout = None
            if self._pending:
                timeout = max(0.0, min(b.not_before for b in self._pending) - self.clock())
            try:
                item = self._queue.get(timeout=timeout)
            except queue.Empty:
                item = _NOTHING
            if item is None:
                return
            if item is not _NOTHING:
                self._pending.append(item)
            now = self.clock()
            due = [b for b in self._pending if b.not_before <= now]
            self._pending = [b for b in self._pending if b.not_before > now]
            for batch in due:
                self._deliver(batch)

    def _deliver(self, batch: _Batch) -> None:
        hook = batch.hook
        params = {"mandrill_events": json.dumps(batch.events, separators=(",", ":"))}
        headers = {
            "X-Mandrill-Signature": sign(hook.get("auth_key") or "", hook["url"], params),
            "User-Agent": "Mandrill-Webhook/1.0",
        }
        error: str | None = None
        try:
            response = self._session.post(
                hook["url"], data=params, headers=headers, timeout=self.timeout_s
            )
            if not 200 <= response.status_code < 300:
                error = f"HTTP {response.status_code}"
        except requests.RequestException as exc:
            error = exc.__class__.__name__
        batch.attempt += 1
        try:
            if error is None:
                current = {h["id"]: h for h in self.store.list_webhooks()}.get(hook["id"], hook)
                self.store.update_webhook(
                    hook["id"],
                    batches_sent=current.get("batches_sent", 0) + 1,
                    events_sent=current.get("events_sent", 0) + len(batch.events),
                    last_sent_at=mandrill_time(),
                    last_error=None,
                )
                self._done()
                return
            log.warning("webhook %s attempt %d failed: %s", hook["id"], batch.attempt, error)
            self.store.update_webhook(hook["id"], last_error=error)
        except Exception:  # the store may be closing during shutdown
            log.exception("cannot record webhook delivery outcome")
        if batch.attempt < self.max_attempts:
            batch.not_before = self.clock() + self.backoff_s * 2 ** (batch.attempt - 1)
            self._pending.append(batch)
        else:
            log.error("webhook %s: dropping batch after %d attempts", hook["id"], batch.attempt)
            self._done()


_NOTHING: Any = object()
