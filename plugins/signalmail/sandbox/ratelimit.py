"""Mandrill's per-key call limit on messages/search, so clients meet RequestLimitExceeded here."""

from __future__ import annotations

import threading
import time
from collections import deque

from signalmail.sandbox.errors import MandrillError


class PerMinuteLimit:
    """At most `limit` calls per API key in any sliding 60 s window; 0 or less: unlimited.

    Measured on the monotonic clock, not the configurable one: tests that move the sandbox's
    clock a day ahead must not reset (or trip) the limit.
    """

    def __init__(self, operation: str) -> None:
        self.operation = operation
        self._calls: dict[str, deque[float]] = {}
        self._lock = threading.Lock()

    def check(self, key_hash: str, limit: int) -> None:
        """Count one call for `key_hash`, or raise RequestLimitExceeded (HTTP 429).

        `limit` comes with each call rather than once at construction so that a sandbox whose
        config is changed while it runs applies the new limit at once.
        """
        if limit <= 0:
            return
        now = time.monotonic()
        with self._lock:
            calls = self._calls.setdefault(key_hash, deque())
            while calls and calls[0] <= now - 60:
                calls.popleft()
            if len(calls) >= limit:
                raise MandrillError(
                    "RequestLimitExceeded",
                    f"Too many {self.operation} calls: at most {limit} per minute",
                    429,
                )
            calls.append(now)
