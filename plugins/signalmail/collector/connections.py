"""Connections that cannot hold the collector's file handles hostage.

Every open connection costs a file handle, and the spool needs handles too (a journal per
segment, the directory it fsyncs). uvicorn times out an idle keep-alive connection only after
a first response, and a request head or body that trickles in one byte at a time is never
timed out at all: a few hundred such clients used to exhaust the process's handles. Here:

- a connection must deliver a complete request head within `head_timeout_s` of opening (or of
  its previous response), however it paces its bytes; else it is closed;
- the body must arrive within the app's `body_timeout_s` (answered 408, see app.py);
- `connection_limit()` keeps uvicorn's `limit_concurrency` below the handle limit, so the
  connections past it get a 503 instead of the spool failing to open its next journal.
"""

from __future__ import annotations

import asyncio
import logging
import resource
from typing import Any

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

log = logging.getLogger("signalmail.collector")

#: handles kept for the spool (journals, directories, segment uploads) and the process
RESERVED_HANDLES = 64


def connection_limit(wanted: int) -> int:
    """Give the most concurrent connections the handle limit allows, at most `wanted`."""
    soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return wanted
    return max(8, min(wanted, soft - RESERVED_HANDLES))


def guarded_protocol(head_timeout_s: float) -> type[H11Protocol]:
    """Build uvicorn's h11 protocol with a deadline on every request head (module doc)."""

    class GuardedH11Protocol(H11Protocol):
        _head_deadline: asyncio.TimerHandle | None = None

        def connection_made(self, transport: Any) -> None:
            super().connection_made(transport)
            self._arm_head_deadline()

        def handle_events(self) -> None:
            super().handle_events()
            if self._head_deadline is not None and self.conn.their_state is not h11.IDLE:
                self._head_deadline.cancel()  # the head is in; the body has its own timeout
                self._head_deadline = None

        def on_response_complete(self) -> None:
            super().on_response_complete()
            if not self.transport.is_closing():
                self._arm_head_deadline()  # the next request on this connection

        def connection_lost(self, exc: Exception | None) -> None:
            if self._head_deadline is not None:
                self._head_deadline.cancel()
                self._head_deadline = None
            super().connection_lost(exc)

        def _arm_head_deadline(self) -> None:
            if self._head_deadline is not None:
                self._head_deadline.cancel()
            self._head_deadline = self.loop.call_later(head_timeout_s, self._head_timed_out)

        def _head_timed_out(self) -> None:
            self._head_deadline = None
            if not self.transport.is_closing():
                log.debug("closing a connection that sent no request head in %ss", head_timeout_s)
                self.transport.close()

    return GuardedH11Protocol
